//! The service: connection with backoff, start-up (SPEC §5), the event loop
//! that feeds the tracker and executes its actions, and clean shutdown.

use super::dispatch::Dispatch;
use super::ips::IpLookup;
use super::metrics::{self, ErrorKind, Metrics, Node, Seen};
use super::privacy::Privacy;
use super::privileges::{self, Decision};
use super::publisher::{self, NodeNames, Publisher, SetupError};
use super::small::JidStr;
use super::tracker::{Action, Change, Tracker};
use super::trim::{release_free_memory, Trim};
use crate::config::{ComponentSettings, StandbySettings};
use crate::wire::presence::{self, PresenceKind};
use crate::wire::privilege::Permissions;
use crate::wire::status::ServiceStatus;
use crate::wire::user::{Status, UserItem};
use crate::wire::{self, ns, time, Attr};
use crate::xmpp::stream::{result_for, Wrapping};
use crate::xmpp::{connect_component, ConnectError, Connection, Disconnect, IqError};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use xmpp_parsers::minidom::Element;

/// What the service needs to run (built from the config file by the CLI).
#[derive(Clone)]
pub struct ServiceConfig {
    pub jid: String,
    pub servers: Vec<String>,
    pub secret: String,
    pub domain: String,
    pub pubsub: String,
    pub nodes: NodeNames,
    pub access_model: String,
    pub members: Vec<String>,
    pub probe_timeout: Duration,
    pub iq_timeout: Duration,
    pub instance: Option<String>,
    /// Send requests as XEP-0356 privileged IQs on behalf of this user when
    /// the server asks for them (`privileges::decide`).
    pub privileged_as: Option<String>,
    pub privacy: Privacy,
    /// Zero: no audits.
    pub audit_interval: Duration,
    /// Run as one of several instances (SPEC §8).
    pub standby: Option<StandbySettings>,
    /// `[metrics] listen`: serve `GET /metrics` there (bound by [`run`]).
    pub metrics: Option<SocketAddr>,
    /// What the service counts: a no-op until [`run`] serves `metrics`.
    pub telemetry: Metrics,
}

impl ServiceConfig {
    /// From the checked settings of a config file.
    pub fn from_settings(s: &ComponentSettings) -> ServiceConfig {
        ServiceConfig {
            jid: s.jid.to_string(),
            servers: s.servers.clone(),
            secret: s.secret.expose().to_string(),
            domain: s.domain.to_string(),
            pubsub: s.pubsub.to_string(),
            nodes: s.nodes.clone(),
            access_model: s.access.model.as_str().to_string(),
            members: s.access.members.iter().map(|m| m.to_string()).collect(),
            probe_timeout: s.probe_timeout,
            iq_timeout: s.iq_timeout,
            instance: s.instance_name(),
            privileged_as: s.privileged_as.as_ref().map(|j| j.to_string()),
            audit_interval: s.audit_interval,
            standby: s.standby.clone(),
            metrics: s.metrics,
            telemetry: Metrics::disabled(),
            privacy: Privacy {
                ip: s.privacy.ip,
                hide: s.privacy.hide.iter().map(|h| h.to_string()).collect(),
            },
        }
    }
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("jid", &self.jid)
            .field("servers", &self.servers)
            .field("secret", &"***")
            .field("domain", &self.domain)
            .field("pubsub", &self.pubsub)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Connect(ConnectError),
    #[error("{0}")]
    Setup(SetupError),
    /// The server's XEP-0356 set-up drops our requests (the text says what
    /// to change).
    #[error("{0}")]
    Privileges(String),
    /// The metrics endpoint could not listen (a configuration problem).
    #[error("metrics.listen = {addr}: cannot serve the metrics endpoint there: {err}")]
    Metrics {
        addr: SocketAddr,
        err: std::io::Error,
    },
}

enum Outcome {
    Shutdown,
    SteppedDown,
    Lost(String),
    /// The server dropped our XEP-0356 grant; the stream was closed so that
    /// a new connection gets it again. Not a loss of the active role.
    GrantLost,
    Fatal(RunError),
}

/// What the end of the connection task means for the session.
fn task_ended(r: Result<Disconnect, tokio::task::JoinError>) -> Outcome {
    match r {
        Ok(Disconnect::GrantLost) => Outcome::GrantLost,
        Ok(r) => Outcome::Lost(r.to_string()),
        Err(e) => Outcome::Lost(e.to_string()),
    }
}

/// Capped exponential backoff for reconnects.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const CAP: Duration = Duration::from_secs(30);

    fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    fn take(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        d
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Runs the component until `shutdown` turns true (then exits cleanly) or a
/// fatal error (wrong secret, a refused node configuration). With
/// `[standby]`, as one of several instances (see `standby`).
/// With `metrics`, the endpoint is bound first: an address that cannot be
/// bound is an error before anything connects.
pub async fn run(mut cfg: ServiceConfig, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    let endpoint = match cfg.metrics {
        Some(addr) => {
            let m = Metrics::new(cfg.standby.is_some());
            let (bound, task) = m
                .serve(addr)
                .await
                .map_err(|err| RunError::Metrics { addr, err })?;
            tracing::info!("metrics: serving http://{bound}{}", metrics::PATH);
            cfg.telemetry = m;
            Some(task)
        }
        None => None,
    };
    let r = match cfg.standby.clone() {
        Some(sb) => super::standby::run(cfg, sb, shutdown).await,
        None => component_loop(&cfg, shutdown, None).await.map(|_| ()),
    };
    if let Some(task) = endpoint {
        task.abort();
    }
    r
}

/// How the component loop ended (other than by a fatal error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopEnd {
    Shutdown,
    /// Fenced off by a newer instance (`step_down`).
    SteppedDown,
    /// With `step_down` given: the server said another connection holds the
    /// component's JID (Prosody's `conflict`).
    Conflict,
    /// With `step_down` given: the connection was lost. Whether to connect
    /// again is the standby logic's call (another instance may have taken
    /// over meanwhile; reconnecting blindly would publish `init` over it).
    Lost,
}

/// Connects as the component and keeps it connected: reconnects with capped
/// backoff, and runs the whole start-up on every connection. `step_down`
/// (standby mode) closes the stream at once, publishing nothing.
pub async fn component_loop(
    cfg: &ServiceConfig,
    mut shutdown: watch::Receiver<bool>,
    mut step_down: Option<watch::Receiver<bool>>,
) -> Result<LoopEnd, RunError> {
    let mut backoff = Backoff::new();
    let mut attempt = 0usize;
    // A clean stop of the other instance publishes `offline` a moment
    // before its stream closes: keep asking for a second before giving up.
    let mut conflict_until: Option<Instant> = None;
    loop {
        if *shutdown.borrow() {
            return Ok(LoopEnd::Shutdown);
        }
        let addr = &cfg.servers[attempt % cfg.servers.len()];
        attempt += 1;
        tracing::info!(server = %addr, jid = %cfg.jid, "connecting");
        let connected = tokio::select! {
            r = connect_component(addr, &cfg.jid, &cfg.secret, cfg.iq_timeout) => r,
            _ = shutdown.changed() => return Ok(LoopEnd::Shutdown),
        };
        match connected {
            Err(e) if e.is_fatal() => {
                cfg.telemetry.error(ErrorKind::Connect);
                return Err(RunError::Connect(e));
            }
            Err(ConnectError::Conflict { .. }) if step_down.is_some() => {
                let until =
                    *conflict_until.get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
                if Instant::now() >= until {
                    return Ok(LoopEnd::Conflict);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = shutdown.changed() => return Ok(LoopEnd::Shutdown),
                }
            }
            Err(e) => {
                cfg.telemetry.error(ErrorKind::Connect);
                let d = backoff.take();
                tracing::warn!("{e}; retrying in {d:?}");
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown.changed() => return Ok(LoopEnd::Shutdown),
                }
            }
            Ok((conn, inbound, task)) => {
                tracing::info!(server = %addr, "connected");
                let since = Instant::now();
                let (inbound, nodes, keepers) = if cfg.servers.len() > 1 {
                    let (i, n, k) =
                        attach_nodes(cfg, addr, conn.pending(), conn.wrapping(), inbound);
                    (i, Some(n), k)
                } else {
                    (inbound, None, Vec::new())
                };
                let outcome = run_session(
                    cfg,
                    conn,
                    inbound,
                    task,
                    &mut shutdown,
                    step_down.as_mut(),
                    nodes,
                )
                .await;
                for k in keepers {
                    k.abort();
                }
                match outcome {
                    Outcome::Shutdown => return Ok(LoopEnd::Shutdown),
                    Outcome::SteppedDown => {
                        cfg.telemetry.status(ServiceStatus::Init);
                        cfg.telemetry.tracked(0);
                        return Ok(LoopEnd::SteppedDown);
                    }
                    Outcome::Fatal(e) => return Err(e),
                    Outcome::GrantLost => {
                        // Still the active instance: connect again at once
                        // (the old stream's close was awaited, so the new
                        // connection's grant stays); the start-up's
                        // reconcile repairs what went unseen meanwhile.
                        cfg.telemetry.reconnect();
                        cfg.telemetry.status(ServiceStatus::Init);
                        cfg.telemetry.tracked(0);
                        tracing::warn!(
                            "connection lost: {}; reconnecting now",
                            Disconnect::GrantLost
                        );
                    }
                    Outcome::Lost(reason) if step_down.is_some() => {
                        cfg.telemetry.reconnect();
                        cfg.telemetry.status(ServiceStatus::Init);
                        cfg.telemetry.tracked(0);
                        tracing::warn!("connection lost: {reason}; back to standby");
                        return Ok(LoopEnd::Lost);
                    }
                    Outcome::Lost(reason) => {
                        cfg.telemetry.reconnect();
                        cfg.telemetry.status(ServiceStatus::Init);
                        cfg.telemetry.tracked(0);
                        if since.elapsed() > Duration::from_secs(30) {
                            backoff.reset();
                        }
                        let d = backoff.take();
                        tracing::warn!("connection lost: {reason}; reconnecting in {d:?}");
                        tokio::select! {
                            _ = tokio::time::sleep(d) => {}
                            _ = shutdown.changed() => return Ok(LoopEnd::Shutdown),
                        }
                    }
                }
            }
        }
    }
}

/// What start-up found: active's items and the server's sessions' IPs.
/// Start-up waiting for probe answers where no barrier proves they all
/// arrived (ejabberd answers the barrier before the probes). Users without a
/// subscription never answer, so waiting for every listed session would
/// always cost the whole `probe_timeout` (2 s of every takeover, seen on
/// ejabberd). Sessions already on active are known to answer: once they
/// all have, the wait ends as soon as answers stop coming for `SETTLE`,
/// and never later than `probe_timeout`. A session whose answer comes later
/// still is published the ordinary way when it arrives.
struct Waiting {
    discovery: Discovery,
    /// Listed sessions not answered yet, and those of them on active.
    unanswered: HashSet<String>,
    on_active: HashSet<String>,
    started: tokio::time::Instant,
    deadline: tokio::time::Instant,
    /// When the last answer came.
    progress: tokio::time::Instant,
}

/// How long the answers may pause before a settled wait ends.
const SETTLE: Duration = Duration::from_millis(250);

impl Waiting {
    fn wake_at(&self) -> tokio::time::Instant {
        if self.on_active.is_empty() {
            self.deadline.min(self.progress + SETTLE)
        } else {
            self.deadline
        }
    }
}

/// Durations of the start-up's steps, written as `nodes 12ms, listing 3ms, ...`.
struct Phases {
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

struct Discovery {
    phases: Phases,
    sessions: usize,
    /// Full JIDs the server listed (hidden users left out).
    listed: Vec<String>,
    /// The probe barrier proved every answer arrived (see `Listing::ordered`).
    answered: bool,
    active: Vec<UserItem>,
    capacity: Option<usize>,
    ips: HashMap<String, String>,
    users: usize,
}

enum Done {
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
}

#[derive(Debug, thiserror::Error)]
enum StartupError {
    #[error("{0}")]
    Setup(SetupError),
    #[error("{what}: {err}")]
    Iq { what: String, err: IqError },
}

struct Session<'a> {
    cfg: &'a ServiceConfig,
    conn: Connection,
    publisher: Publisher,
    tracker: Tracker,
    status: ServiceStatus,
    /// Users who receive our presence (they have us in their roster).
    /// Inline strings: kept for the session's life (see `small`).
    contacts: HashSet<JidStr>,
    done_tx: mpsc::UnboundedSender<Done>,
    /// How many items active can hold, if the server says.
    capacity: Option<usize>,
    over_capacity: bool,
    auditing: bool,
    audit_when_online: bool,
    /// How this server lists its sessions (learned on the first listing).
    listing: publisher::Listing,
    /// Discovery done, waiting (bounded) for listed sessions' presences.
    pending: Option<Waiting>,
    /// user-stats requests shared by a user's new connections.
    ips: IpLookup,
    /// Runs the tracker's actions, at most `IN_FLIGHT` at once.
    dispatch: Arc<Dispatch>,
    /// The server grants XEP-0356 presence permission.
    privileged: bool,
    checking: bool,
    /// Check sessions until then (after losing a cluster node).
    check_until: Option<tokio::time::Instant>,
    trim: Trim,
}

impl<'a> Session<'a> {
    fn new(
        cfg: &'a ServiceConfig,
        conn: Connection,
    ) -> (Session<'a>, mpsc::UnboundedReceiver<Done>) {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        cfg.telemetry.status(ServiceStatus::Init);
        cfg.telemetry.tracked(0);
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
                done_tx,
                capacity: None,
                over_capacity: false,
                auditing: false,
                audit_when_online: false,
                listing: publisher::Listing::default(),
                pending: None,
                ips: IpLookup::default(),
                dispatch: Arc::default(),
                privileged: false,
                checking: false,
                check_until: None,
                trim: Trim::new(),
            },
            done_rx,
        )
    }
}

/// One connected session: runs until shutdown, loss of the connection or a
/// fatal error.
async fn run_session(
    cfg: &ServiceConfig,
    conn: Connection,
    mut inbound: mpsc::UnboundedReceiver<Element>,
    mut task: tokio::task::JoinHandle<Disconnect>,
    shutdown: &mut watch::Receiver<bool>,
    mut step_down: Option<&mut watch::Receiver<bool>>,
    mut nodes: Option<mpsc::UnboundedReceiver<NodeEvent>>,
) -> Outcome {
    let (mut s, mut done_rx) = Session::new(cfg, conn);
    // After a takeover, an audit follows the start-up (SPEC §8).
    s.audit_when_online = step_down.is_some();
    if cfg.privileged_as.is_some() {
        // The first request must already go the way the server wants it.
        for el in await_permissions(&mut inbound).await {
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
            _ = trims.tick() => {
                if s.trim.tick() {
                    release_free_memory();
                }
            }
            _ = until(s.pending.as_ref().map(Waiting::wake_at)) => {
                if let Some(w) = s.pending.take() {
                    if !s.privileged {
                        // (With presence permission they are tracked all the
                        // same: `reconcile` says how they are published.)
                        tracing::info!(
                            "{} listed sessions sent no presence within {:?}: not tracked",
                            w.unanswered.len(),
                            w.started.elapsed()
                        );
                    }
                    s.reconcile(w.discovery);
                }
            }
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
                s.shutdown().await;
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
                if let Done::Discovered(_) = &done {
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

/// How long a component with `privileged_as` waits for the server's
/// permission message before its first request (ejabberd and Prosody send it
/// right after the handshake).
const PERMISSIONS_WAIT: Duration = Duration::from_secs(3);

/// The stanzas that arrived up to and including the permission message, or
/// within `PERMISSIONS_WAIT` when none came.
async fn await_permissions(inbound: &mut mpsc::UnboundedReceiver<Element>) -> Vec<Element> {
    let mut early = Vec::new();
    let deadline = tokio::time::sleep(PERMISSIONS_WAIT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            el = inbound.recv() => match el {
                Some(el) => {
                    let done = Permissions::parse(&el).is_some();
                    early.push(el);
                    if done {
                        return early;
                    }
                }
                None => return early,
            },
            _ = &mut deadline => {
                tracing::warn!(
                    "privileged_as is set but the server sent no XEP-0356 permissions within \
                     {PERMISSIONS_WAIT:?}: sending plain requests"
                );
                return early;
            }
        }
    }
}

/// A heartbeat gap this long means the process was stalled (standby mode).
const STALL: Duration = Duration::from_secs(1);

/// A cluster node's secondary connection came or went.
#[derive(Debug)]
pub enum NodeEvent {
    Up(String),
    Down(String, String),
}

async fn node_event(nodes: &mut Option<mpsc::UnboundedReceiver<NodeEvent>>) -> Option<NodeEvent> {
    match nodes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Keeps a receive-only connection to one more node of a cluster, with
/// capped backoff, forwarding its stanzas into the session's inbound.
async fn keep_node(
    cfg: ServiceConfig,
    addr: String,
    pending: crate::xmpp::Pending,
    wrapping: Wrapping,
    inbound: mpsc::UnboundedSender<Element>,
    events: mpsc::UnboundedSender<NodeEvent>,
) {
    let mut backoff = Backoff::new();
    loop {
        match crate::xmpp::stream::connect_secondary(
            &addr,
            &cfg.jid,
            &cfg.secret,
            pending.clone(),
            wrapping.clone(),
        )
        .await
        {
            Ok(mut node) => {
                backoff.reset();
                let _ = events.send(NodeEvent::Up(addr.clone()));
                while let Some(el) = node.inbound.recv().await {
                    if inbound.send(el).is_err() {
                        return;
                    }
                }
                let reason = match (&mut node.task).await {
                    Ok(r) => r.to_string(),
                    Err(e) => e.to_string(),
                };
                let _ = events.send(NodeEvent::Down(addr.clone(), reason));
            }
            Err(e) => {
                let d = backoff.take();
                tracing::warn!(node = %addr, "{e}; retrying in {d:?}");
                tokio::time::sleep(d).await;
                continue;
            }
        }
        let d = backoff.take();
        tokio::time::sleep(d).await;
    }
}

/// With several `server` entries: one connection per node. The first that
/// answered carries every request; the others bring their node's presences
/// (XEP-0356 presence comes only from the node the connection is on) and
/// whatever IQ answers come back there. Returns the merged inbound, the node
/// events and the keepers (aborted when the session ends).
fn attach_nodes(
    cfg: &ServiceConfig,
    primary: &str,
    pending: crate::xmpp::Pending,
    wrapping: &Wrapping,
    mut inbound: mpsc::UnboundedReceiver<Element>,
) -> (
    mpsc::UnboundedReceiver<Element>,
    mpsc::UnboundedReceiver<NodeEvent>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    let fwd = tx.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(el) = inbound.recv().await {
            if fwd.send(el).is_err() {
                return;
            }
        }
    }));
    for addr in cfg.servers.iter().filter(|a| a.as_str() != primary) {
        tasks.push(tokio::spawn(keep_node(
            cfg.clone(),
            addr.clone(),
            pending.clone(),
            wrapping.clone(),
            tx.clone(),
            ev_tx.clone(),
        )));
    }
    (rx, ev_rx, tasks)
}

/// How often, with XEP-0356 presence permission, the server's sessions are
/// listed to find sessions that ended without an unavailable presence
/// (SPEC §5: they must leave active within 15 s; one listing per check).
const SESSION_CHECK: Duration = Duration::from_secs(5);

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
    /// SPEC §8: fetch active, then list the server's sessions (in that
    /// order: an item fetched belongs to a session that existed before the
    /// listing was asked for), and let the tracker fix the difference.
    fn start_audit(&mut self) {
        if self.auditing || !self.tracker.is_running() || self.status != ServiceStatus::Online {
            return;
        }
        self.auditing = true;
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
                    tracing::warn!("checking the node configuration: {e}");
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

    fn finish_audit(
        &mut self,
        r: Result<(HashMap<String, UserItem>, Vec<publisher::OnlineSession>), IqError>,
    ) {
        self.auditing = false;
        let (on_active, sessions) = match r {
            Ok(v) => v,
            Err(e) => {
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
        let mut probed = HashSet::new();
        for jid in &audit.probe {
            if let Some((bare, _)) = jid.split_once('/') {
                if probed.insert(bare.to_string()) {
                    self.send(presence::build(&self.cfg.jid, bare, Some("probe"), None));
                }
            }
        }
        tracing::info!(
            checked = sessions.len(),
            on_active = on_active.len(),
            added = audit.repaired.len(),
            probed = audit.probe.len(),
            removed = audit.removed,
            "audit"
        );
        self.cfg
            .telemetry
            .audit(audit.removed, audit.repaired.len(), audit.probe.len());
        self.execute(audit.actions);
    }

    fn own_presence(&self, to: &str, kind: Option<&str>) -> Element {
        let show = (kind.is_none() && self.status != ServiceStatus::Online).then_some("dnd");
        presence::build(&self.cfg.jid, to, kind, show)
    }

    fn send(&self, el: Element) {
        // A send fails only when the connection is gone; the loop sees that.
        let _ = self.conn.send(el);
    }

    /// Steps 2–4 of SPEC §5, in a task; the result comes back as `Discovered`.
    fn start_discovery(&self) {
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
        tokio::spawn(async move {
            let r = discover(&cfg, &publisher, &listing).await;
            let _ = tx.send(Done::Discovered(r));
        });
    }

    /// Handles one inbound stanza; `Some` ends the session.
    fn handle_stanza(&mut self, el: Element) -> Option<Outcome> {
        match el.name() {
            "presence" => self.handle_presence(&el),
            "iq" => self.handle_iq(&el),
            "message" => return self.handle_privilege(&el),
            other => tracing::debug!(name = other, "ignoring unknown element"),
        }
        None
    }

    /// XEP-0356: the permissions message the server sends on connect
    /// (`urn:xmpp:privilege:1` from ejabberd 23.01, `:2` from Prosody's
    /// mod_privilege and ejabberd 24.10 on). With presence permission every
    /// user's presence arrives, roster or not; `privileges::decide` says
    /// how requests must go.
    fn handle_privilege(&mut self, el: &Element) -> Option<Outcome> {
        let perms = Permissions::parse(el)?;
        let presence =
            match privileges::decide(&perms, self.cfg.privileged_as.as_deref(), &self.cfg.domain) {
                Decision::Fatal(line) => {
                    tracing::error!("{line}");
                    return Some(Outcome::Fatal(RunError::Privileges(line)));
                }
                Decision::Wrap { user, presence } => {
                    if self.conn.wrapping().user().is_none() {
                        tracing::info!(
                            "XEP-0356 IQ permission: sending requests as privileged IQs on behalf \
                         of {user}"
                        );
                    }
                    self.conn.wrapping().enable(&user, perms);
                    presence
                }
                Decision::Plain { presence } => {
                    if self.cfg.privileged_as.is_some() {
                        tracing::info!(
                        "privileged_as is not used: this server takes the component's requests \
                         as they are"
                    );
                    }
                    presence
                }
            };
        match presence {
            Some(kind) => {
                if !self.privileged {
                    tracing::info!(
                        "XEP-0356 presence permission ({kind}): tracking every user's sessions, \
                         with or without a roster subscription; checking for sessions that end \
                         without an unavailable presence every {SESSION_CHECK:?}"
                    );
                }
                self.privileged = true;
            }
            None => tracing::info!(
                "XEP-0356 privileges without presence permission: tracking users who have \
                 the component in their roster"
            ),
        }
        None
    }

    /// Privileged mode: sessions that ended without an unavailable presence
    /// (ejabberd forwards none then) are found by one listing, compared with
    /// what was tracked before it was asked for.
    fn start_session_check(&mut self) {
        let after_node_loss = self
            .check_until
            .is_some_and(|t| tokio::time::Instant::now() < t);
        if !(self.privileged || after_node_loss)
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

    fn finish_session_check(
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

    fn handle_presence(&mut self, el: &Element) {
        self.handle_presence_inner(el);
        if self.pending.is_some() {
            // The tracker's key: the JID as the jid crate writes it.
            if let Some(from) = el
                .attr("from")
                .and_then(|f| xmpp_parsers::jid::Jid::new(f).ok())
            {
                self.check_pending(&from.to_string());
            }
        }
    }

    fn handle_presence_inner(&mut self, el: &Element) {
        let p = match presence::parse(el) {
            Ok(p) => p,
            Err(e) => {
                self.cfg.telemetry.error(ErrorKind::BadStanza);
                let from = el.attr("from").unwrap_or("?");
                tracing::warn!(from = %truncate(from), "ignored a presence: {e}");
                return;
            }
        };
        self.cfg.telemetry.presence(match p.kind {
            PresenceKind::Available(_) => Seen::Available,
            PresenceKind::Unavailable => Seen::Unavailable,
            _ => Seen::Other,
        });
        let bare = p.from.to_bare().to_string();
        let local = p.from.domain().as_str() == self.cfg.domain;
        match p.kind {
            PresenceKind::Subscribe => {
                self.send(presence::build(
                    &self.cfg.jid,
                    &bare,
                    Some("subscribed"),
                    None,
                ));
                self.send(presence::build(
                    &self.cfg.jid,
                    &bare,
                    Some("subscribe"),
                    None,
                ));
                self.send(self.own_presence(&bare, None));
                self.contacts.insert(JidStr::new(&bare));
            }
            PresenceKind::Unsubscribe => {
                self.send(presence::build(
                    &self.cfg.jid,
                    &bare,
                    Some("unsubscribed"),
                    None,
                ));
                self.contacts.remove(bare.as_str());
            }
            PresenceKind::Probe => {
                // Their server probes its users' contacts: this user has us
                // in their roster.
                self.contacts.insert(JidStr::new(&bare));
                let to = p.from.to_string();
                self.send(self.own_presence(&to, None));
            }
            PresenceKind::Subscribed | PresenceKind::Unsubscribed => {}
            PresenceKind::Error(e) => tracing::debug!(from = %p.from, "presence error: {e}"),
            PresenceKind::Available(status) => {
                let Ok(full) = p.from.try_as_full() else {
                    return;
                };
                if !local || self.cfg.privacy.hidden(&bare) {
                    return;
                }
                // With presence permission a presence says nothing of the
                // roster: only real contacts get our presence.
                if !self.privileged
                    && self.contacts.insert(JidStr::new(&bare))
                    && self.status == ServiceStatus::Online
                {
                    // First sign of this user since we came online: make
                    // sure they know we are.
                    self.send(self.own_presence(&bare, None));
                }
                let at = if self.tracker.is_running() {
                    time::now()
                } else {
                    p.delay.unwrap_or_else(time::now)
                };
                let acts =
                    self.tracker
                        .presence(&full.to_string(), &bare, Change::Available(status), at);
                self.execute(acts);
                self.check_capacity();
            }
            PresenceKind::Unavailable => {
                let Ok(full) = p.from.try_as_full() else {
                    return;
                };
                if !local || self.cfg.privacy.hidden(&bare) {
                    return;
                }
                let acts = self.tracker.presence(
                    &full.to_string(),
                    &bare,
                    Change::Unavailable,
                    time::now(),
                );
                self.execute(acts);
            }
        }
    }

    fn handle_iq(&mut self, el: &Element) {
        match el.attr("type") {
            Some("get") | Some("set") => {}
            _ => return, // an answer nobody waits for any more
        }
        let payload = el.children().next();
        let reply = match payload {
            Some(p) if el.attr("type") == Some("get") && p.is("ping", ns::PING) => {
                result_for(el, None)
            }
            Some(p)
                if el.attr("type") == Some("get")
                    && p.is("query", ns::DISCO_INFO)
                    && p.attr("node").is_none() =>
            {
                result_for(el, Some(disco_info()))
            }
            _ => wire::error_reply(el, "cancel", "service-unavailable"),
        };
        self.send(reply);
    }

    fn handle_done(&mut self, done: Done) -> Option<Outcome> {
        match done {
            Done::Ip { fulljid, ip } => {
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
                return Some(Outcome::Lost(format!(
                    "node {node} was deleted behind our back; recreating it"
                )));
            }
            Done::Written { fulljid, ok, .. } => {
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
                        self.send(self.own_presence(&c, None));
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
            Done::Checked(before, r) => self.finish_session_check(before, r),
            Done::Discovered(Ok(d)) => {
                let unanswered: HashSet<String> = self.untracked(&d.listed);
                if d.answered || unanswered.is_empty() {
                    self.reconcile(d);
                } else {
                    tracing::info!(
                        "waiting up to {:?} for the presence of {} listed sessions",
                        self.cfg.probe_timeout,
                        unanswered.len()
                    );
                    let now = tokio::time::Instant::now();
                    // With presence permission ejabberd answers no probe for
                    // users without a subscription, on active or not: then
                    // only the pause in answers ends the wait.
                    let on_active = if self.privileged {
                        HashSet::new()
                    } else {
                        d.active
                            .iter()
                            .filter(|i| unanswered.contains(&i.fulljid))
                            .map(|i| i.fulljid.clone())
                            .collect()
                    };
                    self.pending = Some(Waiting {
                        unanswered,
                        on_active,
                        discovery: d,
                        started: now,
                        deadline: now + self.cfg.probe_timeout,
                        progress: now,
                    });
                }
            }
            Done::Discovered(Err(StartupError::Setup(e))) if e.is_fatal() => {
                return Some(Outcome::Fatal(RunError::Setup(e)));
            }
            Done::Discovered(Err(e)) => {
                return Some(Outcome::Lost(format!("start-up failed: {e}")))
            }
        }
        None
    }

    /// A cluster node's connection came or went: an audit looks at what
    /// changed (a dead node's sessions vanish without any unavailable).
    fn node_event(&mut self, ev: NodeEvent) {
        match ev {
            NodeEvent::Up(addr) => tracing::info!(node = %addr, "connected to cluster node"),
            NodeEvent::Down(addr, why) => {
                tracing::warn!(node = %addr, "lost the connection to cluster node: {why}; retrying");
                // Its sessions vanish without any unavailable, and the other
                // nodes may list them a little longer: check for 20 s.
                self.check_until = Some(tokio::time::Instant::now() + Duration::from_secs(20));
            }
        }
        self.start_audit();
    }

    /// A presence from `from` arrived while waiting: once every listed
    /// session answered, stop waiting (see `Waiting` for the rest).
    fn check_pending(&mut self, from: &str) {
        let Some(w) = &mut self.pending else {
            return;
        };
        if !self.tracker.knows(from) || !w.unanswered.remove(from) {
            return;
        }
        w.on_active.remove(from);
        w.progress = tokio::time::Instant::now();
        if w.unanswered.is_empty() {
            if let Some(w) = self.pending.take() {
                self.reconcile(w.discovery);
            }
        }
    }

    /// SPEC §5 step 5, with what discovery found.
    /// The listed sessions the tracker has seen no presence of.
    fn untracked<C: FromIterator<String>>(&self, listed: &[String]) -> C {
        listed
            .iter()
            .filter(|j| !self.tracker.knows(j))
            .cloned()
            .collect()
    }

    fn reconcile(&mut self, d: Discovery) {
        if self.privileged && !self.listing.ordered() {
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
        let acts = self.tracker.reconcile(d.active, &d.ips, time::now());
        self.execute(acts);
        self.check_capacity();
    }

    /// Says loudly when active cannot hold every tracked connection: the
    /// server would drop items silently (notes/servers.md), the one failure
    /// a user of the feed cannot see.
    fn check_capacity(&mut self) {
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

    /// Runs the tracker's actions in worker tasks, at most `IN_FLIGHT` at
    /// once, in order; results come back through `done_tx`.
    /// Order per connection is the tracker's business: it never has two
    /// actions of one connection in flight.
    fn execute(&mut self, actions: Vec<Action>) {
        self.cfg.telemetry.tracked(self.tracker.len());
        for action in actions {
            if let Some(action) = self.dispatch.push(action) {
                self.spawn_worker(action);
            }
        }
    }

    /// A task that runs `action`, then whatever waits in `dispatch`, until
    /// nothing does: a finished action hands over to the next at once.
    fn spawn_worker(&self, action: Action) {
        let m = self.cfg.telemetry.clone();
        let tx = self.done_tx.clone();
        let publisher = self.publisher.clone();
        let domain = self.cfg.domain.clone();
        let instance = self.cfg.instance.clone();
        let privacy = self.cfg.privacy.clone();
        let ips = self.ips.clone();
        let dispatch = self.dispatch.clone();
        tokio::spawn(async move {
            let mut next = Some(action);
            while let Some(action) = next {
                let done = match action {
                    Action::FetchIp { fulljid, name } => {
                        let resource = fulljid.split_once('/').map(|(_, r)| r).unwrap_or("");
                        let ip = ips.ip_of(&publisher, &domain, &name, resource, &m).await;
                        Done::Ip {
                            fulljid,
                            ip: privacy.ip(&ip),
                        }
                    }
                    Action::SetActive { item } => {
                        let t = m.start();
                        let r = publisher.set_active(&item).await;
                        m.publish_done(Node::Active, t, r.is_ok());
                        log_write_error("publishing on active", &item.fulljid, &r);
                        Done::Written {
                            fulljid: item.fulljid,
                            ok: applied(&r),
                            node_gone: node_gone(&r).then(|| publisher.nodes.active.clone()),
                        }
                    }
                    Action::RetractActive { fulljid } => {
                        let r = publisher.retract_active(&fulljid).await;
                        count_retract(&m, &r);
                        log_write_error("retracting from active", &fulljid, &r);
                        Done::Written {
                            fulljid,
                            ok: applied(&r),
                            node_gone: None,
                        }
                    }
                    Action::PublishLive { item } if privacy.hidden(&item.name) => {
                        // The retraction of an earlier run's item: a hidden
                        // user never appears on live, not even going away.
                        Done::Written {
                            fulljid: item.fulljid,
                            ok: true,
                            node_gone: None,
                        }
                    }
                    Action::PublishLive { item } => {
                        let t = m.start();
                        let r = publisher.publish_live(&item).await;
                        m.publish_done(Node::Live, t, r.is_ok());
                        log_write_error("publishing on live", &item.fulljid, &r);
                        Done::Written {
                            fulljid: item.fulljid,
                            ok: applied(&r),
                            node_gone: node_gone(&r).then(|| publisher.nodes.live.clone()),
                        }
                    }
                    Action::ReconcileDone => {
                        let r = publisher
                            .publish_status(ServiceStatus::Online, instance.as_deref())
                            .await;
                        m.publish_done(Node::Status, None, r.is_ok());
                        Done::Status(ServiceStatus::Online, r)
                    }
                };
                let _ = tx.send(done);
                next = dispatch.next();
            }
        });
    }

    /// SIGTERM/SIGINT: `offline` on status, unavailable to our contacts,
    /// close the stream (SPEC §1).
    async fn shutdown(&mut self) {
        tracing::info!("shutting down: publishing offline");
        let r = tokio::time::timeout(
            Duration::from_secs(3),
            self.publisher
                .publish_status(ServiceStatus::Offline, self.cfg.instance.as_deref()),
        )
        .await;
        let published = matches!(r, Ok(Ok(())));
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
}

fn count_retract(m: &Metrics, r: &Result<(), IqError>) {
    match r {
        Ok(()) => m.retracted(),
        Err(_) => m.error(ErrorKind::Retract),
    }
}

/// Whether to go on as if a write was applied. A timeout says nothing: an
/// overloaded server usually applies the write late (seen in the benchmark
/// at 10,000 logins), and dropping the change would lose its live event
/// while active has it; if it really was lost, the next audit repairs active.
fn applied(r: &Result<(), IqError>) -> bool {
    matches!(r, Ok(()) | Err(IqError::Timeout(_)))
}

/// A publish answered `item-not-found`: the node itself is gone.
fn node_gone(r: &Result<(), IqError>) -> bool {
    matches!(r, Err(e) if e.condition() == Some("item-not-found"))
}

fn log_write_error(what: &str, fulljid: &str, r: &Result<(), IqError>) {
    let Err(e) = r else { return };
    let text = e.to_string();
    if text.contains("quota")
        || matches!(
            e.condition(),
            Some("resource-constraint") | Some("policy-violation")
        )
    {
        tracing::error!(
            "{what} {fulljid} refused: {e}. Active cannot hold every connection: raise \
             `pubsub_max_items` and `storage_archive_item_limit` on Prosody's pubsub component \
             (ejabberd: `max_items_node`)"
        );
    } else if let IqError::Timeout(_) = e {
        // See `applied`: late, most likely not lost; an audit would catch it.
        tracing::warn!("{what} {fulljid}: {e} (the server is busy); taking it as done");
    } else {
        tracing::error!("{what} {fulljid} failed: {e}");
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

fn disco_info() -> Element {
    Element::builder("query", ns::DISCO_INFO)
        .append(
            Element::builder("identity", ns::DISCO_INFO)
                .a("category", "component")
                .a("type", "presence")
                .a("name", "pubpresence")
                .build(),
        )
        .append(
            Element::builder("feature", ns::DISCO_INFO)
                .a("var", ns::DISCO_INFO)
                .build(),
        )
        .append(
            Element::builder("feature", ns::DISCO_INFO)
                .a("var", ns::PING)
                .build(),
        )
        .build()
}

/// SPEC §5 steps 2–4: `init`, nodes, then who is connected (admin listing,
/// user-stats, probes) and what active holds.
async fn discover(
    cfg: &ServiceConfig,
    publisher: &Publisher,
    listing: &publisher::Listing,
) -> Result<Discovery, StartupError> {
    let iq_err = |what: &str| {
        let what = what.to_string();
        move |err| StartupError::Iq { what, err }
    };
    let m = &cfg.telemetry;
    // How long each step took, for the start-up log line: where a slow
    // start-up spends its time (issue 6).
    let mut phases = Phases::start();
    publisher
        .ensure_status_node()
        .await
        .inspect_err(|_| m.error(ErrorKind::Setup))
        .map_err(StartupError::Setup)?;
    let r = publisher
        .publish_status(ServiceStatus::Init, cfg.instance.as_deref())
        .await;
    m.publish_done(Node::Status, None, r.is_ok());
    r.map_err(iq_err("publishing init on the status node"))?;
    publisher
        .setup_nodes(&cfg.access_model, &cfg.members)
        .await
        .inspect_err(|_| m.error(ErrorKind::Setup))
        .map_err(StartupError::Setup)?;
    phases.lap("nodes");
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
    // Probe every user with a session: the answers (from tracked users only)
    // arrive as ordinary presences.
    let users: HashSet<&str> = sessions.iter().map(|s| s.bare.as_str()).collect();
    for u in &users {
        let _ = conn.send(presence::build(&cfg.jid, u, Some("probe"), None));
    }
    // Addresses the listing stated; the others are learned with user-stats
    // when (and only if) the session turns out to be tracked.
    let ips: HashMap<String, String> = sessions
        .iter()
        .filter_map(|s| Some((s.fulljid.clone(), cfg.privacy.ip(s.ip.as_deref()?))))
        .collect();
    // A round trip behind the probes: Prosody answers a component's stanzas
    // in order, so once this returns every probe answer has been received.
    // ejabberd answers the ping before the probes (seen): there the session
    // waits for the listed sessions' answers instead, bounded by
    // probe_timeout (see `Session::discovered`).
    phases.lap("listing");
    let barrier = Element::builder("ping", ns::PING).build();
    let answered = match conn
        .iq_with_timeout("get", &cfg.domain, barrier, cfg.probe_timeout)
        .await
    {
        Ok(_) => listing.ordered(),
        Err(e) => {
            tracing::debug!("probe barrier: {e}");
            false
        }
    };
    phases.lap("probes");
    let (active, bad) = publisher
        .active_items()
        .await
        .inspect_err(|_| m.error(ErrorKind::Fetch))
        .map_err(iq_err("fetching the items of active"))?;
    for id in bad {
        tracing::info!(item = %truncate(&id), "retracting an unreadable item from active");
        let r = publisher.retract_active(&id).await;
        count_retract(m, &r);
    }
    let capacity = publisher.active_capacity().await;
    phases.lap("active");
    Ok(Discovery {
        phases,
        active,
        capacity,
        ips,
        users: users.len(),
        sessions: sessions.len(),
        listed: sessions
            .iter()
            .filter(|s| !cfg.privacy.hidden(&s.bare))
            .map(|s| s.fulljid.clone())
            .collect(),
        answered,
    })
}
