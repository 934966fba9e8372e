//! One connected session (docs/protocol.md, "What the component publishes,
//! and when"): the state, the event loop that feeds the tracker, the
//! results of the tasks it started, and the clean stop.

use super::audit::SESSION_CHECK;
use super::cluster::{node_event, NodeEvent};
use super::reconnect::{task_ended, Outcome};
use super::startup::{Discovery, StartupError};
use super::waiting::{Late, Waiting};
use super::{RunError, ServiceConfig};
use crate::component::dispatch::Dispatch;
use crate::component::ips::IpLookup;
use crate::component::metrics::Node;
use crate::component::privileges::{self, PERMISSIONS_WAIT};
use crate::component::publisher::{self, Publisher};
use crate::component::replaced::Recent;
use crate::component::saved::{self, Saved};
use crate::component::small::JidStr;
use crate::component::tracker::{Memory, Tracker};
use crate::component::trim::{release_free_memory, Trim};
use crate::wire::status::ServiceStatus;
use crate::wire::user::UserItem;
use crate::wire::{presence, time};
use crate::xmpp::{Connection, Disconnect, IqError};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use xmpp_parsers::minidom::Element;

/// What a task the session started reports back.
pub(super) enum Done {
    Ip {
        fulljid: String,
        ip: String,
    },
    Written {
        fulljid: String,
        ok: bool,
        /// The node written to no longer exists.
        node_gone: Option<String>,
    },
    Status(ServiceStatus, Result<(), IqError>),
    Discovered(Result<Discovery, StartupError>),
    Audited(Result<(HashMap<String, UserItem>, Vec<publisher::OnlineSession>), IqError>),
    /// The audit found a node gone (deleted behind our back).
    NodeGone(String),
    /// A session check: who was tracked before the listing, and the listing.
    Checked(Vec<String>, Result<Vec<publisher::OnlineSession>, IqError>),
    /// An audit found connections busy: time to look at them again.
    AuditAgain,
    /// The round trip behind the probes of the sessions kept as the saved
    /// copy had them returned (true), or failed (`Session::probe_late`).
    Confirmed(bool),
}

pub(super) struct Session<'a> {
    pub(super) cfg: &'a ServiceConfig,
    pub(super) conn: Connection,
    pub(super) publisher: Publisher,
    pub(super) tracker: Tracker,
    /// What active held at the end of this process's previous session
    /// (see [`run_session`]), until the start-up's reconcile has used it.
    pub(super) remembered: Memory,
    /// The copy of active saved at the last clean stop, until the start-up
    /// has looked at it (`startup::discover`).
    pub(super) saved: Option<Saved>,
    pub(super) reconciled: bool,
    pub(super) status: ServiceStatus,
    /// Users who receive our presence (they have us in their roster).
    /// Inline strings: kept for the session's life (see `small`).
    pub(super) contacts: HashSet<JidStr>,
    /// Recent availables, to probe after a departure that may be an
    /// earlier session's (see `replaced`).
    pub(super) recent: Recent,
    pub(super) done_tx: mpsc::UnboundedSender<Done>,
    /// How many items active can hold, if the server says.
    pub(super) capacity: Option<usize>,
    pub(super) over_capacity: bool,
    /// When the audit under way began; `None` when none is (what it cost
    /// the server is said when it is large: `audit::costly`).
    pub(super) audit_began: Option<tokio::time::Instant>,
    /// Tracker actions executing (`pubpresence_requests_in_flight`).
    pub(super) in_flight: usize,
    /// When a reader's probe last had the nodes checked (`check_nodes_on_probe`).
    pub(super) node_check: Option<tokio::time::Instant>,
    pub(super) audit_when_online: bool,
    /// Another instance asked for every user to be probed again before we
    /// were online (see `resync`).
    pub(super) resync_when_online: bool,
    /// An audit was asked for while one was under way.
    pub(super) audit_again: bool,
    /// The audit under way looks again at connections an earlier one found
    /// busy (it asks for no further look).
    pub(super) audit_follow_up: bool,
    /// How this server lists its sessions (learned on the first listing).
    pub(super) listing: publisher::Listing,
    /// Discovery done, waiting (bounded) for listed sessions' presences.
    pub(super) pending: Option<Waiting>,
    /// Listed sessions on active whose probe answer is late (see `waiting`).
    pub(super) late: Option<Late>,
    /// user-stats requests shared by a user's new connections.
    pub(super) ips: IpLookup,
    /// Runs the tracker's actions, at most `IN_FLIGHT` at once.
    pub(super) dispatch: Arc<Dispatch>,
    pub(super) checking: bool,
    /// Check sessions until then (after losing a cluster node).
    pub(super) check_until: Option<tokio::time::Instant>,
    pub(super) trim: Trim,
}

impl<'a> Session<'a> {
    fn new(
        cfg: &'a ServiceConfig,
        conn: Connection,
    ) -> (Session<'a>, mpsc::UnboundedReceiver<Done>) {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        cfg.telemetry.status(ServiceStatus::Init);
        cfg.telemetry.tracked(0);
        cfg.telemetry.in_flight(0);
        let publisher = Publisher {
            conn: conn.clone(),
            service: cfg.pubsub.clone(),
            nodes: cfg.nodes.clone(),
            access_model: cfg.access_model.clone(),
        };
        (
            Session {
                cfg,
                conn,
                publisher,
                tracker: Tracker::new(),
                status: ServiceStatus::Init,
                contacts: HashSet::new(),
                recent: Recent::default(),
                done_tx,
                capacity: None,
                over_capacity: false,
                audit_began: None,
                in_flight: 0,
                node_check: None,
                audit_when_online: false,
                resync_when_online: false,
                audit_again: false,
                audit_follow_up: false,
                listing: publisher::Listing::default(),
                pending: None,
                late: None,
                ips: IpLookup::default(),
                dispatch: Arc::default(),
                checking: false,
                check_until: None,
                trim: Trim::new(),
                remembered: Memory::new(),
                saved: None,
                reconciled: false,
            },
            done_rx,
        )
    }
}

/// One connected session: runs until shutdown, loss of the connection or a
/// fatal error.
///
/// `memory` is what active held at the end of the previous session of this
/// process, as far as it knew: a start-over that finds active emptied (a
/// node deleted behind our back) keeps each unchanged connection's `since`
/// (docs/protocol.md, "Items"). It is updated when the session ends.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_session(
    cfg: &ServiceConfig,
    conn: Connection,
    inbound: mpsc::UnboundedReceiver<Element>,
    task: tokio::task::JoinHandle<Disconnect>,
    shutdown: &mut watch::Receiver<bool>,
    step_down: Option<&mut watch::Receiver<bool>>,
    nodes: Option<mpsc::UnboundedReceiver<NodeEvent>>,
    memory: &mut Memory,
    saved: Option<Saved>,
) -> Outcome {
    let (mut s, done_rx) = Session::new(cfg, conn);
    s.remembered = std::mem::take(memory);
    s.saved = saved;
    let outcome = drive(&mut s, done_rx, inbound, task, shutdown, step_down, nodes).await;
    *memory = if s.reconciled {
        s.tracker.on_active()
    } else {
        std::mem::take(&mut s.remembered)
    };
    outcome
}

async fn drive(
    s: &mut Session<'_>,
    mut done_rx: mpsc::UnboundedReceiver<Done>,
    mut inbound: mpsc::UnboundedReceiver<Element>,
    mut task: tokio::task::JoinHandle<Disconnect>,
    shutdown: &mut watch::Receiver<bool>,
    mut step_down: Option<&mut watch::Receiver<bool>>,
    mut nodes: Option<mpsc::UnboundedReceiver<NodeEvent>>,
) -> Outcome {
    let cfg = s.cfg;
    // After a takeover, an audit follows the start-up (docs/protocol.md,
    // "What the component publishes, and when": audit).
    s.audit_when_online = step_down.is_some();
    if cfg.privileged_as.is_some() {
        // The first request must already go the way the server wants it.
        let (received, permissions) = privileges::await_permissions(&mut inbound).await;
        if permissions.is_none() {
            tracing::warn!(
                "privileged_as is set but the server sent no XEP-0356 permissions within \
                 {PERMISSIONS_WAIT:?}: sending plain requests"
            );
        }
        for el in received {
            if let Some(outcome) = s.handle_stanza(el) {
                task.abort();
                return outcome;
            }
        }
    }
    s.start_discovery();
    let mut audits = (!cfg.audit_interval.is_zero()).then(|| {
        let mut i = tokio::time::interval_at(
            tokio::time::Instant::now() + cfg.audit_interval,
            cfg.audit_interval,
        );
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut checks = tokio::time::interval(SESSION_CHECK);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut node_watch = tokio::time::interval_at(
        tokio::time::Instant::now() + super::audit::NODE_WATCH,
        super::audit::NODE_WATCH,
    );
    node_watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trims = tokio::time::interval(Trim::TICK);
    trims.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Standby mode: a heartbeat that notices when this process was stalled
    // (a SIGSTOP, a VM pause). Before handling anything that queued up
    // meanwhile, it asks the status node who is active: if another instance
    // took over, this one steps down without publishing anything.
    let standby = step_down.is_some();
    let mut beat = tokio::time::interval(Duration::from_millis(100));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_beat = tokio::time::Instant::now();
    let mut fencing = false;
    let (fence_tx, mut fence_rx) = mpsc::unbounded_channel::<bool>();
    loop {
        tokio::select! {
            // Polled first: after a stall the heartbeat sees the gap before
            // any queued stanza or result is looked at.
            biased;
            _ = beat.tick(), if standby => {
                let now = tokio::time::Instant::now();
                if now.duration_since(last_beat) > STALL && !fencing && s.status == ServiceStatus::Online {
                    fencing = true;
                    tracing::warn!(
                        "this process was stalled for {:?}: checking that no other instance took over",
                        now.duration_since(last_beat)
                    );
                    let publisher = s.publisher.clone();
                    let me = cfg.instance.clone();
                    let tx = fence_tx.clone();
                    tokio::spawn(async move {
                        let still_mine = match publisher.current_status().await {
                            Ok(Some((_, inst))) => inst == me,
                            Ok(None) => true,
                            // Cannot tell: stepping down is the safe side.
                            Err(_) => false,
                        };
                        let _ = tx.send(still_mine);
                    });
                }
                last_beat = now;
            }
            Some(still_mine) = fence_rx.recv() => {
                fencing = false;
                if !still_mine {
                    tracing::warn!("another instance is active: stepping down without publishing");
                    task.abort();
                    return Outcome::SteppedDown;
                }
            }
            _ = tick(&mut audits) => s.start_audit(),
            _ = checks.tick() => s.start_session_check(),
            _ = node_watch.tick() => s.check_nodes(),
            _ = trims.tick() => {
                if s.trim.tick() {
                    release_free_memory();
                }
            }
            _ = until(s.pending.as_ref().map(Waiting::wake_at)) => s.waited(),
            _ = until(s.late.as_ref().and_then(|l| l.deadline)) => s.late_expired(),
            _ = fenced(&mut step_down) => {
                // Drop the socket: whatever is still queued is never written.
                task.abort();
                return Outcome::SteppedDown;
            }
            Some(ev) = node_event(&mut nodes) => s.node_event(ev),
            r = &mut task => {
                // The connection we send on is gone (in a cluster, the other
                // nodes' inbound stays open: this is how its loss shows).
                return task_ended(r);
            }
            _ = shutdown.changed() => {
                // From now on no presence is read (docs/protocol.md,
                // "Status": `pubpresence#stopped`).
                let stopped = time::now();
                finish_writes(s, &mut done_rx).await;
                s.shutdown(stopped).await;
                task.abort();
                return Outcome::Shutdown;
            }
            el = inbound.recv(), if !fencing => match el {
                Some(el) => {
                    s.trim.event();
                    if let Some(outcome) = s.handle_stanza(el) {
                        s.conn.close().await;
                        task.abort();
                        return outcome;
                    }
                }
                None => return task_ended((&mut task).await),
            },
            Some(done) = done_rx.recv(), if !fencing => {
                s.trim.event();
                if let Done::Discovered(_) | Done::Confirmed(_) = &done {
                    // Presences the server sent before answering our
                    // barrier are in `inbound` already: apply them first.
                    while let Ok(el) = inbound.try_recv() {
                        if let Some(outcome) = s.handle_stanza(el) {
                            s.conn.close().await;
                            task.abort();
                            return outcome;
                        }
                    }
                }
                if let Some(outcome) = s.handle_done(done) {
                    s.conn.close().await;
                    task.abort();
                    return outcome;
                }
            }
        }
    }
}

/// How long a clean stop waits for the writes under way (`finish_writes`).
const FINISH_WRITES: Duration = Duration::from_secs(3);

/// A clean stop with `state_dir` first lets the writes under way finish,
/// taking no new presence meanwhile, for at most `FINISH_WRITES`: under
/// steady churn some write is nearly always in flight, and active's content
/// is only saved when it is known exactly (README, "Fast restarts:
/// `state_dir`"). The presences left unread are what the next start's
/// listing and probes find anyway.
async fn finish_writes(s: &mut Session<'_>, done_rx: &mut mpsc::UnboundedReceiver<Done>) {
    if s.cfg.state_dir.is_none() || s.status != ServiceStatus::Online || s.in_flight == 0 {
        return;
    }
    tracing::info!(
        "stopping: letting {} writes under way finish first (at most {FINISH_WRITES:?})",
        s.in_flight
    );
    let deadline = tokio::time::sleep(FINISH_WRITES);
    tokio::pin!(deadline);
    while s.in_flight > 0 {
        tokio::select! {
            done = done_rx.recv() => match done {
                // A node gone or a lost start-up: nothing exact to save;
                // `save_active` and the next start's checks see to that.
                Some(done) => if s.handle_done(done).is_some() { return },
                None => return,
            },
            _ = &mut deadline => return,
        }
    }
}

/// A heartbeat gap this long means the process was stalled (standby mode).
const STALL: Duration = Duration::from_secs(1);

/// Resolves at `deadline`; never without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the fence says stop; never without one.
async fn fenced(step_down: &mut Option<&mut watch::Receiver<bool>>) {
    match step_down {
        Some(rx) => {
            while !*rx.borrow() {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
        None => std::future::pending().await,
    }
}

/// The next audit tick, or never when audits are off.
async fn tick(i: &mut Option<tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl Session<'_> {
    pub(super) fn send(&self, el: Element) {
        // A send fails only when the connection is gone; the loop sees that.
        let _ = self.conn.send(el);
    }

    /// The server grants XEP-0356 presence permission: every user's presence
    /// arrives, roster or not. The connection notes it as it reads the
    /// server's permission message, so that one record serves the session,
    /// the start-up's probes and a cluster's other connections.
    pub(super) fn privileged(&self) -> bool {
        self.conn.presence_granted()
    }

    /// One action of the tracker's came back.
    fn answered(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.cfg.telemetry.in_flight(self.in_flight);
    }

    fn handle_done(&mut self, done: Done) -> Option<Outcome> {
        match done {
            Done::Ip { fulljid, ip } => {
                self.answered();
                let acts = self.tracker.ip_learned(&fulljid, ip);
                self.execute(acts);
            }
            Done::Written {
                node_gone: Some(node),
                ..
            }
            | Done::NodeGone(node) => {
                // Deleted behind our back (seen by a write, or by the audit):
                // everything on it is gone. Start over (init, nodes
                // recreated, active rebuilt, online).
                return Some(Outcome::NodeGone(format!(
                    "node {node} was deleted behind our back; recreating it"
                )));
            }
            Done::Written { fulljid, ok, .. } => {
                self.answered();
                let acts = self.tracker.done(&fulljid, ok);
                self.execute(acts);
            }
            Done::Status(st, Ok(())) => {
                if st == ServiceStatus::Online && self.status != ServiceStatus::Online {
                    self.status = ServiceStatus::Online;
                    self.cfg.telemetry.status(ServiceStatus::Online);
                    tracing::info!(
                        connections = self.tracker.len(),
                        "online: active is up to date"
                    );
                    release_free_memory();
                    self.trim.trimmed();
                    for c in self.contacts.clone() {
                        self.send(self.own_presence(&c));
                    }
                    self.probe_late();
                    if self.resync_when_online {
                        self.resync_when_online = false;
                        self.resync();
                    }
                    if self.audit_when_online {
                        self.start_audit();
                    }
                }
            }
            Done::Status(st, Err(e)) => {
                return Some(Outcome::Lost(format!(
                    "publishing status {} failed: {e}",
                    st.as_str()
                )));
            }
            Done::Audited(r) => self.finish_audit(r),
            Done::AuditAgain => {
                self.audit_follow_up = true;
                self.start_audit();
            }
            Done::Checked(before, r) => self.finish_session_check(before, r),
            Done::Discovered(Ok(d)) => self.discovered(d),
            // Every answer before the barrier is in: who has not answered
            // will not. On failure the late items' time limit stands.
            Done::Confirmed(true) => self.late_expired(),
            Done::Confirmed(false) => {}
            Done::Discovered(Err(StartupError::Setup(e))) if e.is_fatal() => {
                return Some(Outcome::Fatal(RunError::Setup(e)));
            }
            Done::Discovered(Err(e)) => {
                return Some(Outcome::Lost(format!("start-up failed: {e}")))
            }
        }
        None
    }

    /// SIGTERM/SIGINT: `offline` on status, unavailable to our contacts,
    /// close the stream (docs/protocol.md, "What the component publishes,
    /// and when": the clean stop).
    async fn shutdown(&mut self, stopped: time::Timestamp) {
        tracing::info!("shutting down: publishing offline");
        let token = self.save_active();
        let r = tokio::time::timeout(
            Duration::from_secs(3),
            self.publisher.publish_offline(
                self.cfg.instance.as_deref(),
                token.as_deref(),
                &stopped,
            ),
        )
        .await;
        let published = matches!(r, Ok(Ok(())));
        if let (Some(dir), false) = (&self.cfg.state_dir, published) {
            // No `offline` names it: it could never be used.
            let _ = std::fs::remove_file(dir.join(saved::FILE));
        }
        self.cfg
            .telemetry
            .publish_done(Node::Status, None, published);
        self.cfg.telemetry.status(ServiceStatus::Offline);
        if !published {
            tracing::warn!("could not publish offline before exiting");
        }
        for c in &self.contacts {
            self.send(presence::build(&self.cfg.jid, c, Some("unavailable"), None));
        }
        self.conn.close().await;
    }

    /// With `state_dir`: saves what active holds, when it is known exactly,
    /// for the next start; the token goes on the `offline` item (README,
    /// "Fast restarts: `state_dir`").
    fn save_active(&self) -> Option<String> {
        let dir = self.cfg.state_dir.as_ref()?;
        let exact = match self.status {
            ServiceStatus::Online => self.tracker.exact_copy(),
            _ => None,
        };
        let Some(items) = exact else {
            tracing::info!(
                "active's content not saved: writes to it were under way or failed, or the \
                 start-up was not over; the next start fetches it"
            );
            let _ = std::fs::remove_file(dir.join(saved::FILE));
            return None;
        };
        let copy = Saved {
            token: saved::new_token(),
            pubsub: self.cfg.pubsub.clone(),
            node: self.cfg.nodes.active.clone(),
            items,
        };
        match saved::save(dir, &copy) {
            Ok(()) => {
                tracing::info!(
                    "saved active's content ({} items) in {} for the next start",
                    copy.items.len(),
                    dir.display()
                );
                Some(copy.token)
            }
            Err(e) => {
                tracing::warn!("active's content not saved ({e}): the next start fetches it");
                None
            }
        }
    }
}
