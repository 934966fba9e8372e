//! Audits (README, "Audit: active heals itself"; docs/protocol.md, "What
//! the component publishes, and when") and, under XEP-0356 presence
//! permission or after losing a cluster node, session checks.

use super::session::{Done, Session};
use crate::component::metrics::ErrorKind;
use crate::component::publisher;
use crate::component::tracker::Change;
use crate::wire::presence;
use crate::wire::status::ServiceStatus;
use crate::wire::time;
use crate::wire::user::UserItem;
use crate::xmpp::IqError;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// How often, with XEP-0356 presence permission, the server's sessions are
/// listed to find sessions that ended without an unavailable presence
/// (docs/protocol.md, "What the component publishes, and when": they
/// must leave active within 15 s; one listing per check).
pub(super) const SESSION_CHECK: Duration = Duration::from_secs(5);

/// How often a reader's probe may have the nodes checked.
const NODE_CHECK_EVERY: Duration = Duration::from_secs(2);

/// How often the nodes are checked while online with nobody asking: a node
/// deleted while no presence changes is otherwise found only by the audit
/// (5 minutes by default), and a reader fetching active meanwhile finds
/// nothing. Six small requests (configuration and members of each node).
pub(super) const NODE_WATCH: Duration = Duration::from_secs(30);

/// What to say when an audit took more than a tenth of `interval`: the
/// server spends about that long answering it (on Prosody, active is built
/// into one answer on its only thread: a minute at 100,000 sessions,
/// docs/benchmarks.md, "Past the open-file limit: sessions held inside
/// Prosody"), and every other request waits meanwhile.
fn costly(took: Duration, interval: Duration) -> Option<String> {
    if interval.is_zero() || took * 10 <= interval {
        return None;
    }
    Some(format!(
        "the audit took {:.1} s, more than a tenth of audit_interval ({}): the server is \
         busy answering it for about that long; at this size raise audit_interval to at \
         least {}",
        took.as_secs_f64(),
        humantime::format_duration(interval),
        humantime::format_duration(Duration::from_secs((took * 10).as_secs().div_ceil(60) * 60)),
    ))
}

/// The line for a check of the nodes that failed. The checks run only
/// while online, when this connection's pubsub requests have been answered,
/// so a request not answered at all means a busy server (docs/benchmarks.md,
/// "Past the open-file limit: sessions held inside Prosody"), not one of the
/// set-up causes that `SetupError::NoAnswer` lists for a first connection.
fn check_failed(e: &publisher::SetupError) -> String {
    match e {
        publisher::SetupError::NoAnswer {
            what,
            node,
            service,
            timeout,
        } => format!(
            "checking the nodes: {what} node {node:?} on {service} got no answer within \
             {timeout:?}; {service} answered the component's requests before on this \
             connection, so it is most likely busy (at 100,000 sessions a fetch of active or \
             the answers to the probes after a restart take it about a minute); the nodes are \
             checked again in {}",
            humantime::format_duration(NODE_WATCH)
        ),
        e => format!("checking the nodes: {e}"),
    }
}

impl Session<'_> {
    /// Checks that the nodes exist (and are configured right): on a
    /// reader's probe, its word that it follows (docs/protocol.md, "Client
    /// procedure", steps 2-3), and every `NODE_WATCH`. A node deleted behind
    /// our back is otherwise seen only at the next write or audit, and a
    /// reader whose subscription went with it would wait that long. Six
    /// small requests, at most once per `NODE_CHECK_EVERY`.
    pub(super) fn check_nodes(&mut self) {
        let due = self
            .node_check
            .map_or(true, |t| t.elapsed() >= NODE_CHECK_EVERY);
        if !due || self.audit_began.is_some() || self.status != ServiceStatus::Online {
            return;
        }
        self.node_check = Some(tokio::time::Instant::now());
        let publisher = self.publisher.clone();
        let (model, members) = (self.cfg.access_model.clone(), self.cfg.members.clone());
        let (tx, m, floor) = (
            self.done_tx.clone(),
            self.cfg.telemetry.clone(),
            self.capacity,
        );
        tokio::spawn(async move {
            match publisher.check_nodes(&model, &members, floor).await {
                Ok(Some(node)) => {
                    let _ = tx.send(Done::NodeGone(node));
                }
                Ok(None) => {}
                Err(e) => {
                    m.error(ErrorKind::Setup);
                    tracing::warn!("{}", check_failed(&e));
                }
            }
        });
    }

    /// Whether `from` (a full JID) is the standby account's.
    pub(super) fn is_standby_account(&self, from: &str) -> bool {
        let Some(sb) = &self.cfg.standby else {
            return false;
        };
        let bare = from.split_once('/').map_or(from, |(b, _)| b);
        bare.eq_ignore_ascii_case(&sb.jid.to_string())
    }

    /// Another instance left after holding a connection as the component at
    /// the same time as this one (see `standby::ask_for_resync`): the
    /// presences the server gave it are lost. Probes every user with a
    /// tracked connection again (their answers bring each status as it is)
    /// and audits (sessions that came or went unseen). Not before `online`:
    /// then once online, as the start-up's own probes may have gone there too.
    /// Only the standby account asks (an instance of ours), once per leave.
    pub(super) fn resync(&mut self) {
        if self.status != ServiceStatus::Online {
            self.resync_when_online = true;
            return;
        }
        let users: std::collections::BTreeSet<String> = self
            .tracker
            .available()
            .into_iter()
            .map(|j| j.split_once('/').map_or(j.as_str(), |(b, _)| b).to_string())
            .collect();
        tracing::info!(
            users = users.len(),
            "another instance was connected as the component too: probing every user again"
        );
        for u in &users {
            self.send(presence::probe(&self.cfg.jid, u));
        }
        self.start_audit();
    }

    /// The audit (README, "Audit: active heals itself"): fetch active, then
    /// list the server's sessions (in that order: an item fetched belongs
    /// to a session that existed before the listing was asked for), and let
    /// the tracker fix the difference.
    pub(super) fn start_audit(&mut self) {
        if !self.tracker.is_running() || self.status != ServiceStatus::Online {
            return;
        }
        if self.audit_began.is_some() {
            // Its listing may predate what this one is for (a resync after
            // another instance left): another once it ends.
            self.audit_again = true;
            return;
        }
        self.audit_began = Some(tokio::time::Instant::now());
        // Writes that end from now on may or may not show in the fetch.
        self.tracker.audit_begins();
        let publisher = self.publisher.clone();
        let domain = self.cfg.domain.clone();
        let (model, members) = (self.cfg.access_model.clone(), self.cfg.members.clone());
        let tx = self.done_tx.clone();
        let m = self.cfg.telemetry.clone();
        let floor = self.capacity;
        // The request this server answers, as learned at start-up (ejabberd
        // refuses the ad-hoc listing: don't ask it again at every audit).
        let listing = self.listing.clone();
        tokio::spawn(async move {
            // Configuration changed behind our back drifts back here.
            match publisher.check_nodes(&model, &members, floor).await {
                Ok(Some(node)) => {
                    let _ = tx.send(Done::NodeGone(node));
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    m.error(ErrorKind::Setup);
                    tracing::warn!("{}", check_failed(&e));
                }
            }
            let r = async {
                let (items, _) = publisher
                    .active_items()
                    .await
                    .inspect_err(|_| m.error(ErrorKind::Fetch))?;
                let on_active = items.into_iter().map(|i| (i.fulljid.clone(), i)).collect();
                let sessions = publisher::online_sessions_via(&publisher.conn, &domain, &listing)
                    .await
                    .inspect_err(|_| m.error(ErrorKind::Listing))?;
                Ok((on_active, sessions))
            }
            .await;
            let _ = tx.send(Done::Audited(r));
        });
    }

    pub(super) fn finish_audit(
        &mut self,
        r: Result<(HashMap<String, UserItem>, Vec<publisher::OnlineSession>), IqError>,
    ) {
        if let Some(line) = self
            .audit_began
            .take()
            .and_then(|t| costly(t.elapsed(), self.cfg.audit_interval))
        {
            tracing::warn!("{line}");
        }
        let (on_active, sessions) = match r {
            Ok(v) => v,
            Err(e) => {
                self.tracker.audit_abandoned();
                tracing::warn!("audit failed: {e}");
                return;
            }
        };
        // Hidden users are never listed as far as active is concerned.
        let listed: HashSet<String> = sessions
            .iter()
            .filter(|s| !self.cfg.privacy.hidden(&s.bare))
            .map(|s| s.fulljid.clone())
            .collect();
        let audit = self.tracker.audit(&on_active, &listed, time::now());
        self.unseen(&listed, "audit");
        let mut probed = HashSet::new();
        for jid in &audit.probe {
            if let Some((bare, _)) = jid.split_once('/') {
                if probed.insert(bare.to_string()) {
                    self.send(presence::probe(&self.cfg.jid, bare));
                }
            }
        }
        tracing::info!(
            checked = sessions.len(),
            on_active = on_active.len(),
            added = audit.repaired.len() - audit.replaced,
            replaced = audit.replaced,
            probed = audit.probe.len(),
            removed = audit.removed,
            "audit"
        );
        self.cfg
            .telemetry
            .audit(audit.removed, audit.repaired.len(), audit.probe.len());
        self.execute(audit.actions);
        let was_follow_up = std::mem::take(&mut self.audit_follow_up);
        if std::mem::take(&mut self.audit_again) {
            self.start_audit();
        } else if audit.busy > 0 && !was_follow_up {
            // A session that left while its change was being written (an
            // answer lost to another connection of ours, say) would stay on
            // active until the periodic audit: look again once any such
            // write has had its `iq_timeout`. Once: under steady churn some
            // connection is always busy, and an audit reads all of active.
            let tx = self.done_tx.clone();
            let after = self.cfg.iq_timeout + Duration::from_secs(1);
            tracing::debug!(
                busy = audit.busy,
                "audit: connections busy; again in {after:?}"
            );
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(Done::AuditAgain);
            });
        }
    }

    /// Privileged mode: sessions that ended without an unavailable presence
    /// (ejabberd forwards none then) are found by one listing, compared with
    /// what was tracked before it was asked for.
    pub(super) fn start_session_check(&mut self) {
        let after_node_loss = self
            .check_until
            .is_some_and(|t| tokio::time::Instant::now() < t);
        if !(self.privileged() || after_node_loss)
            || self.checking
            || self.status != ServiceStatus::Online
        {
            return;
        }
        self.checking = true;
        let before = self.tracker.available();
        let conn = self.publisher.conn.clone();
        let domain = self.cfg.domain.clone();
        let listing = self.listing.clone();
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            let r = publisher::online_sessions_via(&conn, &domain, &listing).await;
            let _ = tx.send(Done::Checked(before, r));
        });
    }

    pub(super) fn finish_session_check(
        &mut self,
        before: Vec<String>,
        r: Result<Vec<publisher::OnlineSession>, IqError>,
    ) {
        self.checking = false;
        let sessions = match r {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("session check failed: {e}");
                return;
            }
        };
        let listed: HashSet<&str> = sessions.iter().map(|s| s.fulljid.as_str()).collect();
        let mut gone = 0;
        for jid in before.iter().filter(|j| !listed.contains(j.as_str())) {
            let Some((bare, _)) = jid.split_once('/') else {
                continue;
            };
            let acts = self
                .tracker
                .presence(jid, bare, Change::Unavailable, time::now());
            gone += usize::from(!acts.is_empty());
            self.execute(acts);
        }
        if gone > 0 {
            tracing::info!("session check: {gone} sessions ended without an unavailable presence");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{check_failed, costly};
    use crate::component::publisher::SetupError;
    use std::time::Duration;

    #[test]
    fn a_check_of_the_nodes_not_answered_while_online_names_a_busy_server() {
        let line = check_failed(&SetupError::NoAnswer {
            what: "reading the configuration of",
            node: "presence/status".into(),
            service: "pubsub.localhost".into(),
            timeout: Duration::from_secs(10),
        });
        assert_eq!(
            line,
            "checking the nodes: reading the configuration of node \"presence/status\" on \
             pubsub.localhost got no answer within 10s; pubsub.localhost answered the \
             component's requests before on this connection, so it is most likely busy (at \
             100,000 sessions a fetch of active or the answers to the probes after a restart \
             take it about a minute); the nodes are checked again in 30s"
        );
    }

    #[test]
    fn an_audit_past_a_tenth_of_its_interval_says_what_to_raise_it_to() {
        let five_min = Duration::from_secs(300);
        assert_eq!(costly(Duration::from_secs(30), five_min), None);
        assert_eq!(costly(Duration::from_secs(58), Duration::ZERO), None);
        assert_eq!(
            costly(Duration::from_millis(58_400), five_min).as_deref(),
            Some(
                "the audit took 58.4 s, more than a tenth of audit_interval (5m): the server \
                 is busy answering it for about that long; at this size raise audit_interval \
                 to at least 10m"
            )
        );
    }
}
