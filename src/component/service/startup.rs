//! Start-up (docs/protocol.md, "What the component publishes, and when",
//! steps 2–7): `init`, the nodes, who is connected, what active holds;
//! reconciliation. The bounded wait for probe answers between them, and the
//! sessions whose answers are late, are in `waiting`.

use super::session::{Done, Session};
use super::waiting::{unchanged_on, Deferred};
use super::worker::count_retract;
use super::{inbound::truncate, ServiceConfig};
use crate::component::metrics::{ErrorKind, Node};
use crate::component::publisher::{self, Publisher, SetupError};
use crate::component::saved::{self, Saved};
use crate::component::tracker::Change;
use crate::wire::presence;
use crate::wire::status::ServiceStatus;
use crate::wire::user::{Status, UserItem};
use crate::wire::{ns, time};
use crate::xmpp::{Connection, IqError};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::oneshot;
use xmpp_parsers::minidom::Element;

/// Durations of the start-up's steps, written as `nodes 12ms, listing 3ms, ...`.
pub(super) struct Phases {
    last: tokio::time::Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn start() -> Phases {
        Phases {
            last: tokio::time::Instant::now(),
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, what: &'static str) {
        let now = tokio::time::Instant::now();
        self.laps.push((what, now - self.last));
        self.last = now;
    }

    /// A step that ran beside others, with its own duration.
    fn push(&mut self, what: &'static str, took: Duration) {
        self.laps.push((what, took));
        self.last = tokio::time::Instant::now();
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (what, d)) in self.laps.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{what} {}ms", d.as_millis())?;
        }
        Ok(())
    }
}

/// What start-up found: active's items and the server's sessions' IPs.
pub(super) struct Discovery {
    phases: Phases,
    sessions: usize,
    /// Full JIDs the server listed (hidden users left out).
    pub(super) listed: Vec<String>,
    /// The probe barrier proved every answer arrived (see `Listing::ordered`),
    /// `confirming` aside.
    pub(super) answered: bool,
    /// Listed sessions shown as active has them, whose users are probed
    /// once online (see `Deferred`).
    pub(super) confirming: Option<Deferred>,
    pub(super) active: Vec<UserItem>,
    capacity: Option<usize>,
    ips: HashMap<String, String>,
    /// When the last run's clean stop stopped reading presence.
    stopped: Option<time::Timestamp>,
    users: usize,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum StartupError {
    #[error("{0}")]
    Setup(SetupError),
    #[error("{what}: {err}")]
    Iq { what: String, err: IqError },
}

/// docs/protocol.md, "What the component publishes, and when", steps 2–4:
/// `init`, nodes, then who is connected (admin listing,
/// user-stats, probes) and what active holds.
async fn discover(
    cfg: &ServiceConfig,
    publisher: &Publisher,
    listing: &publisher::Listing,
    saved: Option<Saved>,
) -> Result<Discovery, StartupError> {
    let iq_err = |what: &str| {
        let what = what.to_string();
        move |err| StartupError::Iq { what, err }
    };
    let m = &cfg.telemetry;
    // How long each step took, for the start-up log line: where a slow
    // start-up spends its time.
    let mut phases = Phases::start();
    publisher
        .ensure_status_node()
        .await
        .inspect_err(|_| m.error(ErrorKind::Setup))
        .map_err(StartupError::Setup)?;
    // Before `init` replaces it: the status node's item as the last run
    // left it, which tells whether the copy holds and when a clean stop
    // stopped reading presence.
    let last = publisher.last_status().await;
    let stopped = match &last {
        Ok(Some(l)) if l.status == ServiceStatus::Offline => l.stopped,
        _ => None,
    };
    let saved = match saved {
        Some(copy) => still_exact(cfg, copy, &last),
        None => None,
    };
    let r = publisher
        .publish_status(ServiceStatus::Init, cfg.instance.as_deref())
        .await;
    m.publish_done(Node::Status, None, r.is_ok());
    r.map_err(iq_err("publishing init on the status node"))?;
    let active_created = publisher
        .setup_nodes(&cfg.access_model, &cfg.members)
        .await
        .inspect_err(|_| m.error(ErrorKind::Setup))
        .map_err(StartupError::Setup)?;
    let saved = match saved {
        Some(_) if active_created => {
            tracing::info!("active was missing and is created empty: its saved copy is not used");
            None
        }
        s => s,
    };
    let active_step = if saved.is_some() {
        "active (saved copy)"
    } else {
        "active (beside them)"
    };
    phases.lap("nodes");
    // Who is connected and what active holds are independent questions:
    // asked together, the server's time on the listing and the probes
    // overlaps with the fetch of active, and a restart with nothing
    // changed waits for the longer of the two rather than their sum.
    let begun = tokio::time::Instant::now();
    // The items go to the probing too, as soon as they are known (see
    // `Deferred`): at once from the saved copy, after the fetch otherwise.
    let (items_tx, items_rx) = oneshot::channel();
    let (who, fetched) = tokio::join!(connected(cfg, publisher, listing, items_rx), async {
        let r = match saved {
            Some(copy) => {
                let _ = items_tx.send(copy.items.clone());
                Ok((copy.items, publisher.active_capacity().await))
            }
            None => {
                let r = active(cfg, publisher).await;
                match &r {
                    // Not cloned when the probing went without them.
                    Ok((items, _)) if !items_tx.is_closed() => {
                        let _ = items_tx.send(items.clone());
                    }
                    _ => {}
                }
                r
            }
        };
        (r, begun.elapsed())
    });
    let Connected {
        sessions,
        ips,
        users,
        answered,
        confirming,
        listed_in,
        probed_in,
    } = who?;
    let ((active, capacity), active_in) = (fetched.0?, fetched.1);
    phases.push("listing", listed_in);
    phases.push("probes", probed_in);
    phases.push(active_step, active_in);
    Ok(Discovery {
        phases,
        active,
        capacity,
        ips,
        stopped,
        users,
        sessions: sessions.len(),
        listed: sessions
            .iter()
            .filter(|s| !cfg.privacy.hidden(&s.bare))
            .map(|s| s.fulljid.clone())
            .collect(),
        answered,
        confirming,
    })
}

/// The copy of active saved at the last clean stop, if the status node
/// shows that nothing wrote since: its current item is the `offline` that
/// was published with the copy (every start publishes `init` before it
/// writes active). Otherwise None, said in the log.
fn still_exact(
    cfg: &ServiceConfig,
    copy: Saved,
    last: &Result<Option<crate::wire::status::Item>, IqError>,
) -> Option<Saved> {
    let why = match last {
        Ok(l) => {
            let status = l.as_ref().map(|l| (l.status, l.saved.clone()));
            saved::mismatch(&copy, &cfg.pubsub, &cfg.nodes.active, status)
        }
        Err(e) => Some(format!("reading the status node failed: {e}")),
    };
    match why {
        None => {
            tracing::info!(
                "active is as the last clean stop left it ({} items, saved in state_dir): not fetching it",
                copy.items.len()
            );
            Some(copy)
        }
        Some(why) => {
            tracing::info!(
                "not using the copy of active saved at the last stop ({why}): fetching active"
            );
            None
        }
    }
}

/// Who is connected, as the listing and the probes found it.
struct Connected {
    sessions: Vec<publisher::OnlineSession>,
    /// Addresses the listing stated, by full JID.
    ips: HashMap<String, String>,
    users: usize,
    /// The probe barrier proved every answer arrived.
    answered: bool,
    confirming: Option<Deferred>,
    listed_in: Duration,
    probed_in: Duration,
}

/// Who is connected: the listing, a probe to every user with a session,
/// and a round trip behind the probes. `items`: what active holds, once
/// known (see `Deferred`).
async fn connected(
    cfg: &ServiceConfig,
    publisher: &Publisher,
    listing: &publisher::Listing,
    items: oneshot::Receiver<Vec<UserItem>>,
) -> Result<Connected, StartupError> {
    let m = &cfg.telemetry;
    let t = tokio::time::Instant::now();
    let conn = &publisher.conn;
    let sessions = publisher::online_sessions_via(conn, &cfg.domain, listing)
        .await
        .map_err(|err| {
            m.error(ErrorKind::Listing);
            tracing::error!(
                "listing online sessions failed: {err}. {}",
                publisher::admin_hint(&err)
            );
            StartupError::Iq {
                what: "listing online sessions".into(),
                err,
            }
        })?;
    let listed_in = t.elapsed();
    // Probe every user with a session: the answers (from tracked users only)
    // arrive as ordinary presences. Not where the server already sent them
    // all: Prosody's mod_privilege, granting presence permission, sends the
    // current presence of every session right after the handshake, before
    // it answers anything (README, "Presence without rosters on Prosody").
    // There probes would only ask again, at a roster lookup and an answer
    // per user (to a user without a subscription, an `unsubscribed`).
    let users: HashSet<&str> = sessions.iter().map(|s| s.bare.as_str()).collect();
    let granted = listing.ordered() && conn.presence_granted();
    // Where the sessions listed as active has them are not waited for, the
    // probes wait for active's items. On Prosody that costs nothing: it
    // answers a component's requests one after the other, so probes sent
    // now would queue behind the fetch of active all the same.
    let on_active = if listing.ordered() && !granted {
        items.await.ok()
    } else {
        drop(items);
        None
    };
    let (later, later_jids) = match &on_active {
        Some(items) => unchanged_on(cfg, &sessions, items),
        None => (HashSet::new(), HashSet::new()),
    };
    let probing = tokio::time::Instant::now();
    if granted {
        tracing::info!(
            "not probing: the server sent every session's presence with its XEP-0356 \
             presence permission"
        );
    } else {
        for u in users.difference(&later) {
            let _ = conn.send(presence::probe(&cfg.jid, u));
        }
    }
    let users = users.len();
    // Addresses the listing stated; the others are learned with user-stats
    // when (and only if) the session turns out to be tracked.
    let ips: HashMap<String, String> = sessions
        .iter()
        .filter_map(|s| Some((s.fulljid.clone(), cfg.privacy.ip(s.ip.as_deref()?))))
        .collect();
    // A round trip behind the probes: Prosody answers a component's stanzas
    // in order, so once this returns every probe answer has been received.
    // There it is waited for as any answer (`iq_timeout`): a late barrier
    // means a busy server, whose probe answers come late too, not never (at
    // 19,000 sessions on Prosody 13 it waited behind the fetch of active for
    // 8 s; cut off at `probe_timeout`, some 2,000 live sessions went off
    // active and came back). ejabberd answers the ping before the probes
    // (seen): there the session waits for the listed sessions' answers
    // instead, bounded by probe_timeout (see `Session::discovered`).
    let wait = if listing.ordered() {
        cfg.iq_timeout.max(cfg.probe_timeout)
    } else {
        cfg.probe_timeout
    };
    let answered = match round_trip(conn, &cfg.domain, wait).await {
        Ok(_) => listing.ordered(),
        Err(e) => {
            tracing::debug!("probe barrier: {e}");
            false
        }
    };
    let probed_in = probing.elapsed();
    let confirming = (!later.is_empty()).then(|| Deferred {
        jids: later_jids,
        users: later.iter().map(|u| u.to_string()).collect(),
    });
    Ok(Connected {
        sessions,
        ips,
        users,
        answered,
        confirming,
        listed_in,
        probed_in,
    })
}

/// A ping to the server's domain behind what was sent. On a server that
/// answers a component's stanzas in order (Prosody), its answer proves that
/// everything sent before it was answered.
pub(super) async fn round_trip(
    conn: &Connection,
    domain: &str,
    wait: Duration,
) -> Result<Element, IqError> {
    let ping = Element::builder("ping", ns::PING).build();
    conn.iq_with_timeout("get", domain, ping, wait).await
}

/// What active holds (unreadable items retracted) and how many items it
/// can hold.
async fn active(
    cfg: &ServiceConfig,
    publisher: &Publisher,
) -> Result<(Vec<UserItem>, Option<usize>), StartupError> {
    let m = &cfg.telemetry;
    // Its capacity (one small read of its configuration) beside its items.
    let (items, capacity) = tokio::join!(publisher.active_items(), publisher.active_capacity());
    let (active, bad) = items
        .inspect_err(|_| m.error(ErrorKind::Fetch))
        .map_err(|err| StartupError::Iq {
            what: "fetching the items of active".into(),
            err,
        })?;
    for id in bad {
        tracing::info!(item = %truncate(&id), "retracting an unreadable item from active");
        let r = publisher.retract_active(&id).await;
        count_retract(m, &r);
    }
    Ok((active, capacity))
}

impl Session<'_> {
    /// Steps 2–4 of docs/protocol.md, "What the component publishes, and
    /// when", in a task; the result comes back as `Done::Discovered`.
    pub(super) fn start_discovery(&mut self) {
        // The server names itself in the start-up log (XEP-0092), beside
        // the discovery, never delaying it.
        let conn = self.conn.clone();
        let domain = self.cfg.domain.clone();
        tokio::spawn(async move {
            match publisher::server_version(&conn, &domain).await {
                Ok(Some(v)) => tracing::info!("server software: {v}"),
                Ok(None) => tracing::debug!("server software: the version answer names none"),
                Err(e) => tracing::debug!("server software not told: {e}"),
            }
        });
        let cfg = self.cfg.clone();
        let publisher = self.publisher.clone();
        let listing = self.listing.clone();
        let tx = self.done_tx.clone();
        let saved = self.saved.take();
        tokio::spawn(async move {
            let r = discover(&cfg, &publisher, &listing, saved).await;
            let _ = tx.send(Done::Discovered(r));
        });
    }

    /// Step 6 of docs/protocol.md, "What the component publishes, and
    /// when", with what discovery found.
    /// `late`: listed sessions on active whose probe answer has not come
    /// yet; their items stay (see `waiting`).
    pub(super) fn reconcile(&mut self, d: Discovery, late: &HashSet<String>) {
        self.unseen(d.listed.iter().filter(|j| !late.contains(*j)), "start-up");
        if self.privileged() && !self.listing.ordered() {
            // With presence permission every session is tracked; one that
            // sent nothing by now is older than us on a server that replays
            // nothing (ejabberd; Prosody's module replays every presence):
            // on active as `unknown` until it changes.
            let now = time::now();
            let silent: Vec<String> = self.untracked(&d.listed);
            if !silent.is_empty() {
                tracing::info!(
                    "{} sessions older than the component sent no presence: published as `unknown` until they change",
                    silent.len()
                );
            }
            for jid in silent {
                if let Some((bare, _)) = jid.split_once('/') {
                    let bare = bare.to_string();
                    self.tracker
                        .presence(&jid, &bare, Change::Available(Status::Unknown), now);
                }
            }
        }
        tracing::info!(
            users = d.users,
            sessions = d.sessions,
            tracked = self.tracker.len(),
            on_active = d.active.len(),
            took = %d.phases,
            "start-up discovery done, reconciling"
        );
        if let Some(c) = d.capacity {
            tracing::info!("active can hold {c} items");
        }
        self.capacity = d.capacity;
        let remembered = std::mem::take(&mut self.remembered);
        let r = self
            .tracker
            .reconcile(d.active, &d.ips, time::now(), &remembered, late, d.stopped);
        self.reconciled = true;
        let kept = r.addresses_kept;
        if kept > 0 {
            tracing::info!(
                kept,
                "addresses kept from active for {kept} sessions whose presence is unchanged \
                 since before the last clean stop (not asked with user-stats)"
            );
        }
        self.execute(r.actions);
        self.check_capacity();
    }

    /// Says loudly when active cannot hold every tracked connection: the
    /// server would drop items silently (README, "Configuring Prosody" and
    /// "Configuring ejabberd"), the one failure a user of the feed cannot
    /// see.
    pub(super) fn check_capacity(&mut self) {
        let Some(cap) = self.capacity else { return };
        let n = self.tracker.len();
        if n > cap && !self.over_capacity {
            self.over_capacity = true;
            tracing::error!(
                "{n} connections tracked but active can hold only {cap} items: connections are \
                 missing from active. Raise `pubsub_max_items` and `storage_archive_item_limit` on \
                 Prosody's pubsub component (ejabberd: `max_items_node` of mod_pubsub), then restart pubpresence"
            );
        } else if n <= cap && self.over_capacity {
            self.over_capacity = false;
            tracing::info!("{n} connections tracked: active can hold them all again");
        }
    }
}
