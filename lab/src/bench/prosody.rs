//! `pubpresence-lab bench`: latency, CPU, start-up and memory of the component
//! against a real Prosody on loopback.
//!
//! One run: a lab Prosody (pubsub storage `sql`, SQLite: the recommended
//! deployment), a watcher subscribed to `presence/live` and to a plain node
//! `bench/floor`, the component (a child `pubpresence run` when a binary is
//! given, so that its CPU and RSS are its own; in this process otherwise),
//! N simulated sessions connected (the base population), a restart of the
//! component with those N sessions connected (start-up), then for each rate
//! a load of simulated users changing status while `admin` publishes
//! equivalent items straight to `bench/floor` (the one-hop floor).
//!
//! Latency: from [`SimEvent::Change`]'s `at` (just before the presence is
//! sent) to the watcher reading the live notification; the floor: from just
//! before the publish IQ is sent to the watcher reading its notification.

use super::client::{client_iq, client_iq_id, read_status, ACTIVE, IQ_TIMEOUT, LIVE};
use super::error::{setup, BenchError};
use super::floors::{self, AsComponent, PublishFloor, RestartFloor};
use super::measure::{cpu_seconds, rss_kib, storage, Latency, Machine};
use super::mirror;
use crate::sim::{self, SimControl, SimEvent, SimOptions};
use crate::{LabError, Prosody, ProsodyOptions};
use pubpresence::component::service::{self, ServiceConfig};
use pubpresence::config::Config;
use pubpresence::jid::Jid;
use pubpresence::minidom::Element;
use pubpresence::wire::status::ServiceStatus;
use pubpresence::wire::user::{Status, UserItem};
use pubpresence::wire::{ns, pubsub};
use pubpresence::xmpp::c2s::{self, C2s, C2sOptions};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The latency floor's two nodes: a client publishing to active and then
/// to live, as the component does.
const FLOOR: &str = "bench/floor";
const FLOOR_ACTIVE: &str = "bench/floor-active-latency";
const WATCHER: &str = "watcher";
/// Connections per base account (fewer accounts: fewer prosodyctl calls).
const PER_ACCOUNT: usize = 10;
/// Connections per load account. Few: every presence change of a resource
/// is also sent to the account's other resources, so 60 resources per
/// account would make the server send 60 stanzas per change.
const LOAD_RESOURCES: usize = 4;
/// Changes per second of one load connection (the rest is more connections).
const PER_CONNECTION_RATE: f64 = 4.0;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Small numbers (CI): only changes what `quick()` sets.
    pub quick: bool,
    /// Base sessions connected during the start-up and memory figures.
    pub connections: usize,
    /// Steady change rates (all load connections together), one phase each.
    pub rates: Vec<f64>,
    /// Measured window of each rate phase.
    pub duration: Duration,
    /// Floor publishes per second during each phase.
    pub floor_rate: f64,
    /// The `pubpresence` binary to run the component as a child process
    /// (`pubpresence run --config`); `None`: in this process (its CPU and
    /// RSS then include the load generator and the watcher).
    pub component_bin: Option<PathBuf>,
    /// Prosody with `network_settings = { nagle = false }` (its
    /// default is Nagle's algorithm on every socket).
    pub tcp_nodelay: bool,
    /// Prosody's pubsub with `storage = "memory"` instead of SQLite.
    pub memory_storage: bool,
    /// The rates are a sweep for the knee: stop once both pubpresence's
    /// p99 and its floor's are past `KNEE_P99_MS`.
    pub knee: bool,
}

/// The sustained-rate knee: the highest rate whose p99 (and every lower
/// rate's) stays within this.
pub const KNEE_P99_MS: f64 = 100.0;

/// The knees of a sweep, for pubpresence and for its floor.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Knee {
    /// Changes/s actually sent at the highest rate within `KNEE_P99_MS`
    /// (0: not even the lowest).
    pub pubpresence: f64,
    pub floor: f64,
    /// pubpresence / floor.
    pub ratio: f64,
    /// The mirror's knee (`mirror`; 0 without mirror passes).
    pub mirror: f64,
    /// pubpresence / mirror.
    pub mirror_ratio: f64,
    /// The sweep went past pubpresence's knee and its floor's: the
    /// mirror's where it ran, else the latency floor's (else the knee may
    /// lie above it).
    pub found: bool,
}

impl Knee {
    pub fn of(points: &[RatePoint]) -> Knee {
        let upto = |p99: &dyn Fn(&RatePoint) -> f64| -> (f64, bool) {
            let mut best = 0.0;
            for p in points {
                if p99(p) > KNEE_P99_MS {
                    return (best, true);
                }
                best = p.achieved_rate;
            }
            (best, false)
        };
        let (pp, pp_found) = upto(&|p| p.latency.p99_ms);
        let (fl, fl_found) = upto(&|p| p.floor.p99_ms);
        let mirrored = points.iter().any(|p| p.mirror.is_some());
        let (mi, mi_found) = if mirrored {
            upto(&|p| {
                p.mirror
                    .as_ref()
                    .map_or(f64::INFINITY, |m| m.latency.p99_ms)
            })
        } else {
            (0.0, false)
        };
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        Knee {
            pubpresence: pp,
            floor: fl,
            ratio: div(pp, fl),
            mirror: mi,
            mirror_ratio: div(pp, mi),
            found: pp_found && if mirrored { mi_found } else { fl_found },
        }
    }
}

impl BenchOptions {
    /// The full run: 1,000 sessions, 200 and 1,000 changes/s, 5 s each.
    pub fn full() -> BenchOptions {
        BenchOptions {
            quick: false,
            connections: 1000,
            rates: vec![200.0, 1000.0],
            duration: Duration::from_secs(5),
            floor_rate: 20.0,
            component_bin: None,
            tcp_nodelay: false,
            memory_storage: false,
            knee: false,
        }
    }

    /// CI: 100 sessions, 50 and 200 changes/s, 2 s each (about 20 s).
    pub fn quick() -> BenchOptions {
        BenchOptions {
            quick: true,
            connections: 100,
            rates: vec![50.0, 200.0],
            duration: Duration::from_secs(2),
            floor_rate: 20.0,
            component_bin: None,
            tcp_nodelay: false,
            memory_storage: false,
            knee: false,
        }
    }
}

/// One steady-rate phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RatePoint {
    pub target_rate: f64,
    pub load_connections: usize,
    /// Changes sent per second over the window.
    pub achieved_rate: f64,
    pub changes: usize,
    /// Changes whose live event the watcher received.
    pub received: usize,
    pub latency: Latency,
    pub floor_sent: usize,
    pub floor: Latency,
    /// p99 latency / floor p99.
    pub p99_over_floor: f64,
    /// The CPU window: the rate window plus the time for the last events
    /// to arrive (at most 10 s more).
    pub cpu_window_s: f64,
    pub server_cpu_s: f64,
    pub component_cpu_s: f64,
    /// component CPU / server CPU.
    pub cpu_ratio: f64,
    /// The same churn with the component stopped and its writes mirrored
    /// by a plain client (`mirror`): the knee's floor.
    pub mirror: Option<MirrorPoint>,
    /// p99 latency / the mirror's p99.
    pub p99_over_mirror: f64,
}

/// The mirror pass of a rate (`mirror`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MirrorPoint {
    /// Changes sent per second over the window.
    pub achieved_rate: f64,
    pub changes: usize,
    /// From each change sent to its live-like notification.
    pub latency: Latency,
    pub cpu_window_s: f64,
    pub server_cpu_s: f64,
}

impl RatePoint {
    /// Takes the mirror pass's figures (a `RatePoint` measured without the
    /// component) as this rate's knee floor.
    fn with_mirror(mut self, m: RatePoint) -> RatePoint {
        self.p99_over_mirror = if m.latency.p99_ms > 0.0 {
            self.latency.p99_ms / m.latency.p99_ms
        } else {
            0.0
        };
        self.mirror = Some(MirrorPoint {
            achieved_rate: m.achieved_rate,
            changes: m.changes,
            latency: m.latency,
            cpu_window_s: m.cpu_window_s,
            server_cpu_s: m.server_cpu_s,
        });
        self
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Startup {
    /// Sessions connected when the component started.
    pub sessions: usize,
    /// Restart with nothing changed (active already right): from the
    /// component's start (spawn) to `online` on the status node.
    pub seconds: f64,
    /// The component's own account of that restart's steps (its log line
    /// "start-up discovery done": `nodes 12ms, listing 3ms, ...`).
    pub phases: String,
    /// Its floor: listing, probes and one fetch of active (`floors`).
    pub restart_floor: RestartFloor,
    /// seconds / restart floor.
    pub restart_over_floor: f64,
    /// The server's CPU seconds during the restart.
    pub server_cpu_s: f64,
    /// The same restart using the copy of active saved at the clean stop
    /// (`state_dir`): active not fetched.
    pub saved: Restart,
    /// saved.seconds / restart floor.
    pub saved_over_floor: f64,
    /// Start-up with active empty (deleted while the component was
    /// stopped) and the same sessions connected, to `online`.
    pub cold_seconds: f64,
    /// Its floor: the same items published by a plain client (`floors`).
    pub publish_floor: PublishFloor,
    /// cold_seconds / the floor's pairs.
    pub cold_over_floor: f64,
    /// The server's CPU seconds during the start-up with active empty.
    pub cold_server_cpu_s: f64,
    /// Items of `presence/active` once online.
    pub active_items: usize,
    /// Start-up with no session connected, for comparison.
    pub idle_seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Memory {
    /// VmRSS once online, no session tracked.
    pub idle_kib: u64,
    /// VmRSS with `connections` sessions tracked.
    pub loaded_kib: u64,
    pub connections: usize,
    /// (loaded - idle) / connections.
    pub per_connection_bytes: f64,
    /// VmRSS after the restart with `connections` sessions.
    pub restarted_kib: u64,
    /// Base sessions whose login the watcher saw on live (all of them
    /// unless the server was too slow for the component's writes).
    pub seen_on_live: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub machine: Machine,
    pub storage: String,
    /// "child process" or "in-process (includes the load generator)".
    pub component_process: &'static str,
    pub connections: usize,
    pub duration_s: f64,
    pub startup: Startup,
    pub memory: Memory,
    pub rates: Vec<RatePoint>,
    pub knee: Knee,
}

impl Report {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        s.push_str(&format!(
            "pubpresence bench ({} mode) on {} CPUs, {}\nserver: {}; component: {}\n\n",
            self.mode, m.nproc, m.model, self.storage, self.component_process
        ));
        let st = &self.startup;
        let (rf, pf) = (&st.restart_floor, &st.publish_floor);
        s.push_str(&format!(
            "restart, nothing changed, to online: {:.3} s (server CPU {:.2} s) with {} sessions connected ({:.3} s with none); active holds {} items\n  \
             component's steps: {}\n  \
             floor (connect, listing + probes beside one fetch of active): {:.3} s (server CPU {:.2} s; handshake {:.3}, listing {:.3}, probes {:.3}, active {:.3}; {} sessions of {} users, {} items) -> {:.2}x\n",
            st.seconds, st.server_cpu_s, st.sessions, st.idle_seconds, st.active_items, st.phases,
            rf.seconds, rf.server_cpu_s, rf.handshake_s, rf.listing_s, rf.probes_s, rf.active_s, rf.sessions, rf.users, rf.active_items,
            st.restart_over_floor,
        ));
        s.push_str(&format!(
            "restart with the copy of active saved at the clean stop (state_dir), to online: {:.3} s (server CPU {:.2} s) -> {:.2}x the floor above\n  \
             component's steps: {}\n",
            st.saved.seconds, st.saved.server_cpu_s, st.saved_over_floor, st.saved.phases,
        ));
        s.push_str(&format!(
            "start-up, active empty, to online: {:.3} s (server CPU {:.2} s)\n  \
             floor ({} items on an active-like then a live-like node, {} in flight): {:.3} s (server CPU {:.2} s) -> {:.2}x (one node only: {:.3} s)\n",
            st.cold_seconds, st.cold_server_cpu_s, pf.items, pf.in_flight, pf.pairs_s, pf.pairs_server_cpu_s, st.cold_over_floor, pf.single_s,
        ));
        let mem = &self.memory;
        s.push_str(&format!(
            "component RSS: {} KiB idle, {} KiB with {} sessions tracked ({:.0} B per connection), {} KiB after the restart\n\n",
            mem.idle_kib, mem.loaded_kib, mem.connections, mem.per_connection_bytes, mem.restarted_kib
        ));
        s.push_str(
            "rate/s  sent/s  conns  changes  recv   p50 ms   p99 ms  floor p50  floor p99  p99/floor  window s  server CPU s  comp CPU s  comp/server\n",
        );
        for r in &self.rates {
            s.push_str(&format!(
                "{:>6.0}  {:>6.0}  {:>5}  {:>7}  {:>5}  {:>7.2}  {:>7.2}  {:>9.2}  {:>9.2}  {:>9.2}  {:>8.1}  {:>12.2}  {:>10.2}  {:>10.1}%\n",
                r.target_rate,
                r.achieved_rate,
                r.load_connections,
                r.changes,
                r.received,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.floor.p50_ms,
                r.floor.p99_ms,
                r.p99_over_floor,
                r.cpu_window_s,
                r.server_cpu_s,
                r.component_cpu_s,
                r.cpu_ratio * 100.0,
            ));
        }
        s.push_str(
            "\nthe mirror (component stopped, its writes for the same churn by a plain client):\n\
             rate/s  sent/s  changes   p50 ms   p99 ms  pubpresence p99/mirror p99  server CPU s (with pubpresence)\n",
        );
        for r in &self.rates {
            if let Some(m) = &r.mirror {
                s.push_str(&format!(
                    "{:>6.0}  {:>6.0}  {:>7}  {:>7.2}  {:>7.2}  {:>26.2}  {:>8.2} ({:.2})\n",
                    r.target_rate,
                    m.achieved_rate,
                    m.changes,
                    m.latency.p50_ms,
                    m.latency.p99_ms,
                    r.p99_over_mirror,
                    m.server_cpu_s,
                    r.server_cpu_s,
                ));
            }
        }
        let k = &self.knee;
        s.push_str(&format!(
            "knee (highest rate with p99 <= {KNEE_P99_MS} ms): pubpresence {:.0}/s, mirror {:.0}/s -> {:.2}x; latency floor {:.0}/s -> {:.2}x{}\n",
            k.pubpresence,
            k.mirror,
            k.mirror_ratio,
            k.floor,
            k.ratio,
            if k.found { "" } else { " (the sweep did not pass both: the knee may lie higher)" },
        ));
        s.push_str(&format!("(all figures: {})\n", self.storage));
        s
    }
}

/// What the watcher read, with when.
#[derive(Debug, Clone)]
enum Seen {
    Live(Instant, UserItem),
    Floor(Instant, String),
}

type Log<T> = Arc<Mutex<Vec<T>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The component, as a child process or a task.
enum Component {
    Child(Child),
    Task(watch::Sender<bool>, tokio::task::JoinHandle<()>),
}

impl Component {
    fn start(bin: Option<&Path>, config: &Path, dir: &Path) -> Result<Component, BenchError> {
        match bin {
            Some(bin) => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("component.log"))
                    .map_err(setup)?;
                let child = Command::new(bin)
                    .arg("run")
                    .arg("--config")
                    .arg(config)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().map_err(setup)?)
                    .stderr(log)
                    .spawn()
                    .map_err(|e| setup(format!("starting {}: {e}", bin.display())))?;
                Ok(Component::Child(child))
            }
            None => {
                let no_env = |_: &str| None;
                let cfg = Config::load(config).map_err(setup)?;
                let sc = ServiceConfig::from_settings(&cfg.component(&no_env).map_err(setup)?);
                let (tx, rx) = watch::channel(false);
                let task = tokio::spawn(async move {
                    if let Err(e) = service::run(sc, rx).await {
                        tracing::warn!("bench component: {e}");
                    }
                });
                Ok(Component::Task(tx, task))
            }
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Component::Child(c) => c.id(),
            Component::Task(..) => std::process::id(),
        }
    }

    fn exited(&mut self) -> bool {
        match self {
            Component::Child(c) => matches!(c.try_wait(), Ok(Some(_))),
            Component::Task(_, t) => t.is_finished(),
        }
    }

    /// SIGTERM (or the shutdown channel), bounded; SIGKILL after 10 s.
    async fn stop(&mut self) {
        match self {
            Component::Child(c) => {
                crate::process::stop_async(c, Duration::from_secs(10)).await;
            }
            Component::Task(tx, task) => {
                let _ = tx.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(10), &mut *task).await;
                task.abort();
            }
        }
    }
}

async fn login(
    prosody: &Prosody,
    user: &str,
    resource: &str,
) -> Result<(C2s, mpsc::Receiver<Element>), BenchError> {
    let jid = format!("{user}@{}/{resource}", prosody.domain);
    let opts = C2sOptions {
        jid: Jid::new(&jid).map_err(setup)?,
        password: user.to_string(),
        server: Some(prosody.c2s_addr().to_string()),
        bind_ip: Some(crate::loopback(1)),
        allow_plaintext: true,
    };
    let (c, rx) = c2s::connect(&opts).await?;
    c.send(Element::builder("presence", ns::CLIENT).build())?;
    Ok((c, rx))
}

/// Reads the watcher's stanzas into `log`, stamped on arrival.
fn spawn_watcher_reader(mut inbound: mpsc::Receiver<Element>, log: Log<Seen>) {
    tokio::spawn(async move {
        while let Some(el) = inbound.recv().await {
            let now = Instant::now();
            for ev in pubsub::parse_event(&el) {
                if let pubsub::Event::Items { node, items, .. } = ev {
                    let mut l = lock(&log);
                    for (id, payload) in items {
                        if node == LIVE {
                            if let Some(u) = payload.as_ref().and_then(UserItem::from_element) {
                                l.push(Seen::Live(now, u));
                            }
                        } else if node == FLOOR {
                            l.push(Seen::Floor(now, id));
                        }
                    }
                }
            }
        }
    });
}

/// Polls the status node until `want` (every 10 ms), bounded.
async fn wait_status(
    c: &C2s,
    pubsub_jid: &str,
    want: ServiceStatus,
    limit: Duration,
    mut component: Option<&mut Component>,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + limit;
    loop {
        if read_status(c, pubsub_jid).await == Some(want) {
            return Ok(());
        }
        if component.as_mut().is_some_and(|c| c.exited()) {
            return Err(BenchError::Component("exited before online".into()));
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!(
                "status {} within {limit:?}",
                want.as_str()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The number of items on `presence/active` (0 when unreadable).
async fn active_items(c: &C2s, pubsub_jid: &str) -> usize {
    c.iq(
        client_iq("get", pubsub_jid, pubsub::items(ACTIVE)),
        IQ_TIMEOUT,
    )
    .await
    .map(|r| pubsub::parse_items(&r).len())
    .unwrap_or(0)
}

/// Subscribes the watcher to `node`, retrying while the component sets it up.
async fn subscribe(c: &C2s, pubsub_jid: &str, node: &str) -> Result<(), BenchError> {
    let me = c.jid().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c
            .iq(
                client_iq("set", pubsub_jid, pubsub::subscribe(node, &me)),
                IQ_TIMEOUT,
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(BenchError::Setup(format!("subscribing to {node}: {e}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Drains the sim's events into `log`.
fn spawn_sim_reader(mut rx: mpsc::UnboundedReceiver<SimEvent>, log: Log<SimEvent>) {
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            lock(&log).push(ev);
        }
    });
}

async fn wait_for<F: Fn() -> bool>(what: &str, limit: Duration, f: F) -> Result<(), BenchError> {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(what.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

type Change = (String, Status, Instant);

/// Latencies (ms) of the changes and of the floor items that arrived: each
/// change is matched to the next live item of that connection with its
/// status, received after it.
fn matched(
    seen: &[Seen],
    start: Instant,
    changes: &[Change],
    floor_sent: &HashMap<String, Instant>,
) -> (Vec<f64>, Vec<f64>) {
    let mut live: HashMap<&str, Vec<(Instant, Status)>> = HashMap::new();
    let mut floor_recv: HashMap<&str, Instant> = HashMap::new();
    for s in seen {
        match s {
            Seen::Live(t, u) if *t >= start => live
                .entry(u.fulljid.as_str())
                .or_default()
                .push((*t, u.status)),
            Seen::Floor(t, id) => {
                floor_recv.entry(id.as_str()).or_insert(*t);
            }
            _ => {}
        }
    }
    let mut by_conn: HashMap<&str, Vec<(Status, Instant)>> = HashMap::new();
    for (j, s, at) in changes {
        by_conn.entry(j.as_str()).or_default().push((*s, *at));
    }
    let mut lat = Vec::new();
    for (j, list) in &by_conn {
        let got = live.get(j).map(Vec::as_slice).unwrap_or(&[]);
        let mut k = 0;
        for (s, at) in list {
            while k < got.len() && !(got[k].1 == *s && got[k].0 >= *at) {
                k += 1;
            }
            if k < got.len() {
                lat.push((got[k].0 - *at).as_secs_f64() * 1000.0);
                k += 1;
            } else {
                // Usually a change sent at the window's very end.
                tracing::debug!(
                    "change not seen on live: {j} {} sent {:?} into the window",
                    s.as_str(),
                    *at - start
                );
            }
        }
    }
    let floor_lat = floor_sent
        .iter()
        .filter_map(|(id, at)| {
            floor_recv
                .get(id.as_str())
                .map(|t| t.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    (lat, floor_lat)
}

/// Load connections for a rate: each changes about 4 times a second.
fn load_connections(rate: f64) -> usize {
    ((rate / PER_CONNECTION_RATE).ceil() as usize).clamp(LOAD_RESOURCES, 2000)
}

/// Registers accounts (password = name), a few prosodyctl at a time.
fn register_all(prosody: &Prosody, names: &[String]) -> Result<(), LabError> {
    for chunk in names.chunks(16) {
        let results: Vec<Result<(), LabError>> = std::thread::scope(|s| {
            let hs: Vec<_> = chunk
                .iter()
                .map(|n| s.spawn(move || prosody.register(n, n)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(LabError::Startup("prosodyctl thread panicked".into()))
                    })
                })
                .collect()
        });
        for r in results {
            r?;
        }
    }
    Ok(())
}

/// The benchmarks' Prosody: the lab's, logging at info instead of debug
/// (the lab logs every stanza, a cost no deployment pays), optionally with
/// TCP_NODELAY, and `names` registered (password = name).
pub(crate) async fn start_prosody(
    names: Vec<String>,
    nodelay: bool,
    memory_storage: bool,
) -> Result<Prosody, BenchError> {
    tracing::info!("starting Prosody and registering {} accounts", names.len());
    tokio::task::spawn_blocking(move || -> Result<Prosody, LabError> {
        let p = Prosody::start_with(ProsodyOptions {
            quiet_log: true,
            no_nagle: nodelay,
            memory_storage,
            ..ProsodyOptions::default()
        })?;
        register_all(&p, &names)?;
        Ok(p)
    })
    .await
    .map_err(setup)?
    .map_err(Into::into)
}

/// Runs the benchmark.
pub async fn run(opts: BenchOptions) -> Result<Report, BenchError> {
    if opts.connections == 0 || opts.rates.iter().any(|r| !r.is_finite() || *r <= 0.0) {
        return Err(setup("connections and rates must be positive"));
    }
    let base_accounts = opts.connections.div_ceil(PER_ACCOUNT);
    let mut names: Vec<String> = vec![WATCHER.to_string()];
    names.extend((1..=base_accounts).map(|i| format!("base{i}")));
    let load_accounts = opts
        .rates
        .iter()
        .map(|r| load_connections(*r).div_ceil(LOAD_RESOURCES))
        .max()
        .unwrap_or(1);
    names.extend((1..=load_accounts).map(|i| format!("load{i}")));
    let prosody = start_prosody(names, opts.tcp_nodelay, opts.memory_storage).await?;
    let outcome = bench(&prosody, &opts).await;
    if outcome.is_err() && std::env::var_os("PUBPRESENCE_KEEP_PROSODY").is_some() {
        tracing::warn!("bench failed; lab kept in {}", prosody.dir.path().display());
    }
    let _ = tokio::task::spawn_blocking(move || drop(prosody)).await;
    outcome
}

async fn bench(prosody: &Prosody, opts: &BenchOptions) -> Result<Report, BenchError> {
    let server_pid = prosody
        .pid()
        .ok_or_else(|| setup("the lab Prosody has no pid"))?;
    let pubsub_jid = prosody.pubsub_jid.clone();
    let watcher_jid = format!("{WATCHER}@{}", prosody.domain);
    let config = prosody.dir.path().join("bench.toml");
    // With `state_dir`, as the README advises: the first restart uses the
    // copy of active its clean stop saved, the second one (copy removed)
    // fetches active.
    let state = prosody.dir.path().join("state");
    std::fs::create_dir_all(&state).map_err(setup)?;
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n{}",
            state.display().to_string(),
            prosody.config_toml(&[&watcher_jid])
        ),
    )
    .map_err(setup)?;

    // The watcher and the floor publisher (admin, who creates bench/floor).
    let (watcher, w_in) = login(prosody, WATCHER, "bench").await?;
    let seen: Log<Seen> = Arc::default();
    spawn_watcher_reader(w_in, seen.clone());
    let (admin, mut a_in) = login(prosody, "admin", "floor").await?;
    tokio::spawn(async move { while a_in.recv().await.is_some() {} });
    // The latency floor's nodes, configured as live and as active are.
    floors::create(&admin, &pubsub_jid, FLOOR, floors::live_like()).await?;
    floors::create(&admin, &pubsub_jid, FLOOR_ACTIVE, floors::active_like(1000)).await?;
    subscribe(&watcher, &pubsub_jid, FLOOR).await?;

    // The component, no session connected.
    let bin = opts.component_bin.as_deref();
    let t0 = Instant::now();
    let mut comp = Component::start(bin, &config, prosody.dir.path())?;
    let idle_startup = async {
        wait_status(
            &watcher,
            &pubsub_jid,
            ServiceStatus::Online,
            Duration::from_secs(30),
            Some(&mut comp),
        )
        .await
    };
    let r = idle_startup.await;
    let idle_seconds = t0.elapsed().as_secs_f64();
    if let Err(e) = r {
        comp.stop().await;
        return Err(e);
    }
    let outcome = measured(prosody, opts, &watcher, &admin, &seen, comp, server_pid).await;
    watcher.close().await;
    admin.close().await;
    outcome.map(|mut r| {
        r.startup.idle_seconds = idle_seconds;
        r
    })
}

/// Everything after the component's first start; stops what it starts.
async fn measured(
    prosody: &Prosody,
    opts: &BenchOptions,
    watcher: &C2s,
    admin: &C2s,
    seen: &Log<Seen>,
    mut comp: Component,
    server_pid: u32,
) -> Result<Report, BenchError> {
    let pubsub_jid = prosody.pubsub_jid.clone();
    let config = prosody.dir.path().join("bench.toml");
    let bin = opts.component_bin.as_deref();
    if let Err(e) = subscribe(watcher, &pubsub_jid, LIVE).await {
        comp.stop().await;
        return Err(e);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kib = rss_kib(comp.pid()).unwrap_or(0);

    // The base population: N sessions, connected and staying.
    let n = opts.connections;
    let mut base_opts = SimOptions::numbered(
        prosody.c2s_addr().to_string(),
        prosody.domain.clone(),
        prosody.component_jid.clone(),
        "base",
        n.div_ceil(PER_ACCOUNT),
        PER_ACCOUNT.min(n),
    );
    // Exactly n connections: trim the last account.
    let extra = base_opts.connections() - n;
    if let Some(last) = base_opts.users.last_mut() {
        let keep = last.resources.len() - extra;
        last.resources.truncate(keep);
    }
    tracing::info!("connecting {n} base sessions");
    base_opts.rate = 0.0;
    base_opts.disconnect_share = 0.0;
    base_opts.first_ip = Ipv4Addr::new(127, 0, 0, 2);
    base_opts.login_concurrency = 32;
    let (base_ctl, base_rx) = watch::channel(SimControl::Run);
    let base_events: Log<SimEvent> = Arc::default();
    let (btx, brx) = mpsc::unbounded_channel();
    spawn_sim_reader(brx, base_events.clone());
    let base_task = tokio::spawn(sim::run(base_opts, base_rx, Some(btx)));

    let result = async {
        let base_seen = |seen: &Log<Seen>| {
            lock(seen)
                .iter()
                .filter_map(|s| match s {
                    Seen::Live(_, u)
                        if u.name.starts_with("base") && u.status != Status::Offline =>
                    {
                        Some(u.fulljid.clone())
                    }
                    _ => None,
                })
                .collect::<HashSet<String>>()
                .len()
        };
        // Tracked: all N seen on live, or (when some live event never
        // came: see docs/benchmarks.md) all N items on active.
        let limit = Duration::from_secs(60 + n as u64 / 10);
        let deadline = Instant::now() + limit;
        let mut next_active = Instant::now() + Duration::from_secs(2);
        loop {
            if base_seen(seen) >= n {
                break;
            }
            if Instant::now() >= next_active {
                next_active = Instant::now() + Duration::from_secs(2);
                if active_items(watcher, &pubsub_jid).await >= n {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(format!(
                    "{n} base sessions tracked within {limit:?}: {} seen on live",
                    base_seen(seen)
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let live_seen = base_seen(seen);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let loaded_kib = rss_kib(comp.pid()).unwrap_or(0);

        // Restarts with the N sessions connected: first with the copy of
        // active the clean stop saved, then without one (fetching active).
        let rs = Restarts {
            prosody,
            watcher,
            bin,
            config: &config,
            server_pid,
        };
        let saved = rs.restart(&mut comp, true).await?;
        let fetched = rs.restart(&mut comp, false).await?;
        let active_items = active_items(watcher, &pubsub_jid).await;
        // The node may have been recreated: subscribe again.
        subscribe(watcher, &pubsub_jid, LIVE).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let restarted_kib = rss_kib(comp.pid()).unwrap_or(0);
        let (restart_floor, (cold_s, cold_cpu), publish_floor) =
            cold_start(prosody, opts, watcher, admin, &mut comp, server_pid).await?;

        let mut rates: Vec<RatePoint> = Vec::new();
        for (i, &rate) in opts.rates.iter().enumerate() {
            let point = phase(
                prosody,
                opts,
                watcher,
                admin,
                seen,
                Some(&comp),
                server_pid,
                i,
                rate,
            )
            .await?;
            // The same churn again with the component stopped, its writes
            // mirrored by a plain client: the knee's floor.
            tracing::info!("{rate} changes/s: the mirror pass, component stopped");
            comp.stop().await;
            let mirrored = phase(
                prosody, opts, watcher, admin, seen, None, server_pid, i, rate,
            )
            .await;
            // The mirror wrote on active behind the component's back: the
            // copy its stop saved no longer stands (README, "Fast restarts:
            // `state_dir`"), so the start must fetch active.
            let copy = prosody
                .dir
                .path()
                .join("state")
                .join(pubpresence::component::saved::FILE);
            let _ = std::fs::remove_file(copy);
            comp = Component::start(bin, &config, prosody.dir.path())?;
            wait_status(
                watcher,
                &pubsub_jid,
                ServiceStatus::Online,
                Duration::from_secs(120),
                Some(&mut comp),
            )
            .await?;
            let point = point.with_mirror(mirrored?);
            let past_both = point.latency.p99_ms > KNEE_P99_MS
                && point
                    .mirror
                    .as_ref()
                    .is_some_and(|m| m.latency.p99_ms > KNEE_P99_MS);
            rates.push(point);
            if opts.knee && past_both {
                tracing::info!("past the knee of both pubpresence and its floor at {rate}/s");
                break;
            }
        }
        let per = (loaded_kib as f64 - idle_kib as f64) * 1024.0 / n as f64;
        Ok::<_, BenchError>((
            Startup {
                sessions: n,
                seconds: fetched.seconds,
                phases: fetched.phases,
                restart_over_floor: ratio(fetched.seconds, restart_floor.seconds),
                server_cpu_s: fetched.server_cpu_s,
                saved_over_floor: ratio(saved.seconds, restart_floor.seconds),
                saved,
                cold_server_cpu_s: cold_cpu,
                restart_floor,
                cold_seconds: cold_s,
                cold_over_floor: ratio(cold_s, publish_floor.pairs_s),
                publish_floor,
                active_items,
                idle_seconds: 0.0,
            },
            Memory {
                idle_kib,
                loaded_kib,
                connections: n,
                per_connection_bytes: per,
                restarted_kib,
                seen_on_live: live_seen,
            },
            rates,
        ))
    }
    .await;

    let _ = base_ctl.send(SimControl::Stop);
    let _ = tokio::time::timeout(Duration::from_secs(30), base_task).await;
    comp.stop().await;
    let (startup, memory, rates) = result?;
    Ok(Report {
        mode: if opts.quick { "quick" } else { "full" },
        machine: Machine::probe(),
        storage: storage(opts.memory_storage),
        component_process: if opts.component_bin.is_some() {
            "child process (pubpresence run)"
        } else {
            "in-process (CPU and RSS include the load generator and the watcher)"
        },
        connections: n,
        duration_s: opts.duration.as_secs_f64(),
        startup,
        memory,
        knee: Knee::of(&rates),
        rates,
    })
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// The steps of the component's last start-up as it logged them (a child
/// component only; empty otherwise).
fn last_phases(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| l.contains("start-up discovery done"))
        .and_then(|l| {
            let (_, rest) = l.split_once("took=")?;
            // `took=nodes 12ms, listing 3ms, ... "start-up discovery...`
            // or as the last field: up to the message or the line's end.
            Some(
                rest.split(" start-up")
                    .next()
                    .unwrap_or(rest)
                    .trim()
                    .to_string(),
            )
        })
        .unwrap_or_default()
}

/// One restart with nothing changed, as measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restart {
    /// From the component's start (spawn) to `online` on the status node.
    pub seconds: f64,
    /// The server's CPU seconds meanwhile.
    pub server_cpu_s: f64,
    /// The component's own account of its steps (`last_phases`).
    pub phases: String,
}

/// What a restart of the component needs.
struct Restarts<'a> {
    prosody: &'a Prosody,
    watcher: &'a C2s,
    bin: Option<&'a Path>,
    config: &'a Path,
    server_pid: u32,
}

impl Restarts<'_> {
    /// A clean stop and a start; `keep_copy` false removes the copy of
    /// active the stop saved, so the start fetches active.
    async fn restart(&self, comp: &mut Component, keep_copy: bool) -> Result<Restart, BenchError> {
        let pubsub_jid = &self.prosody.pubsub_jid;
        let dir = self.prosody.dir.path();
        tracing::info!(keep_copy, "restarting the component");
        comp.stop().await;
        let _ = wait_status(
            self.watcher,
            pubsub_jid,
            ServiceStatus::Offline,
            Duration::from_secs(15),
            None,
        )
        .await;
        let copy = dir.join("state").join(pubpresence::component::saved::FILE);
        if !copy.exists() {
            return Err(setup(format!(
                "the clean stop saved no copy of active in {}",
                copy.display()
            )));
        }
        if !keep_copy {
            std::fs::remove_file(&copy).map_err(setup)?;
        }
        let t0 = Instant::now();
        let cpu = cpu_seconds(self.server_pid);
        *comp = Component::start(self.bin, self.config, dir)?;
        wait_status(
            self.watcher,
            pubsub_jid,
            ServiceStatus::Online,
            Duration::from_secs(120),
            Some(comp),
        )
        .await?;
        Ok(Restart {
            seconds: t0.elapsed().as_secs_f64(),
            server_cpu_s: floors::cpu_since(self.server_pid, cpu),
            phases: last_phases(&dir.join("component.log")),
        })
    }
}

/// With the component stopped: the restart floor; then active deleted and
/// the component started (the start-up with active empty, timed to
/// `online`); then the start-up floor with the items it published.
async fn cold_start(
    prosody: &Prosody,
    opts: &BenchOptions,
    watcher: &C2s,
    admin: &C2s,
    comp: &mut Component,
    server_pid: u32,
) -> Result<(RestartFloor, (f64, f64), PublishFloor), BenchError> {
    let pubsub_jid = prosody.pubsub_jid.as_str();
    comp.stop().await;
    wait_status(
        watcher,
        pubsub_jid,
        ServiceStatus::Offline,
        Duration::from_secs(15),
        None,
    )
    .await?;
    tracing::info!("the restart floor: listing, probes, one fetch of active");
    let restart_floor = floors::restart_floor(&AsComponent {
        addr: prosody.component_addr(),
        jid: &prosody.component_jid,
        secret: &prosody.secret,
        domain: &prosody.domain,
        pubsub: pubsub_jid,
        active: ACTIVE,
        server_pid,
    })
    .await?;
    // The floor's stream is closed; Prosody takes the component's next
    // connection once it has let go of that one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    admin
        .iq(
            client_iq("set", pubsub_jid, pubsub::delete(ACTIVE)),
            IQ_TIMEOUT,
        )
        .await
        .map_err(|e| setup(format!("deleting active as the admin: {e}")))?;
    tracing::info!("starting the component with active empty");
    let t0 = Instant::now();
    let cpu = cpu_seconds(server_pid);
    *comp = Component::start(
        opts.component_bin.as_deref(),
        &prosody.dir.path().join("bench.toml"),
        prosody.dir.path(),
    )?;
    let limit = Duration::from_secs(120 + opts.connections as u64 / 20);
    wait_status(
        watcher,
        pubsub_jid,
        ServiceStatus::Online,
        limit,
        Some(comp),
    )
    .await?;
    let cold = (
        t0.elapsed().as_secs_f64(),
        floors::cpu_since(server_pid, cpu),
    );
    subscribe(watcher, pubsub_jid, LIVE).await?;
    let items: Vec<UserItem> = watcher
        .iq(
            client_iq("get", pubsub_jid, pubsub::items(ACTIVE)),
            IQ_TIMEOUT,
        )
        .await
        .map(|r| {
            pubsub::parse_items(&r)
                .into_iter()
                .filter_map(|(_, p)| p.as_ref().and_then(UserItem::from_element))
                .collect()
        })
        .map_err(|e| setup(format!("reading active after the cold start-up: {e}")))?;
    tracing::info!("the start-up floor: {} items published", items.len());
    let publish_floor =
        floors::publish_floor(admin, watcher, pubsub_jid, &items, server_pid).await?;
    Ok((restart_floor, cold, publish_floor))
}

/// One steady-rate phase: load users changing status, the floor publisher,
/// CPU of both processes over the window.
#[allow(clippy::too_many_arguments)]
async fn phase(
    prosody: &Prosody,
    opts: &BenchOptions,
    watcher: &C2s,
    admin: &C2s,
    seen: &Log<Seen>,
    comp: Option<&Component>,
    server_pid: u32,
    index: usize,
    rate: f64,
) -> Result<RatePoint, BenchError> {
    let _ = watcher;
    // No component: the mirror pass (`mirror`), the same churn (same seed)
    // with its writes done by a plain client.
    let mirror = comp.is_none();
    let conns = load_connections(rate);
    let mut o = SimOptions::numbered(
        prosody.c2s_addr().to_string(),
        prosody.domain.clone(),
        prosody.component_jid.clone(),
        "load",
        conns.div_ceil(LOAD_RESOURCES),
        LOAD_RESOURCES,
    );
    let conns = o.connections();
    o.rate = rate;
    o.disconnect_share = 0.0;
    o.first_ip = Ipv4Addr::new(127, 1, 0, 1);
    o.seed = 7 + index as u64;
    o.login_concurrency = 32;
    tracing::info!("{rate} changes/s: logging in {conns} load connections");
    let (ctl, rx) = watch::channel(SimControl::Hold);
    let events: Log<SimEvent> = Arc::default();
    let (tx, erx) = mpsc::unbounded_channel();
    if mirror {
        let nodes = mirror::Nodes {
            pubsub: prosody.pubsub_jid.clone(),
            active: ACTIVE,
            live: LIVE,
        };
        mirror::spawn_mirroring_reader(erx, events.clone(), admin.clone(), nodes);
    } else {
        spawn_sim_reader(erx, events.clone());
    }
    let task = tokio::spawn(sim::run(o, rx, Some(tx)));
    let ready = wait_for("load users logged in", Duration::from_secs(60), || {
        lock(&events)
            .iter()
            .any(|e| matches!(e, SimEvent::Ready { .. }))
    })
    .await;
    if let Err(e) = ready {
        let _ = ctl.send(SimControl::Stop);
        let _ = task.await;
        return Err(e);
    }
    // Their logins' live events pass before the window opens.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let comp_cpu = || comp.and_then(|c| cpu_seconds(c.pid()));
    let cpu0 = (cpu_seconds(server_pid), comp_cpu());
    let start = Instant::now();
    let _ = ctl.send(SimControl::Run);
    if mirror {
        // The mirror publishes as the changes come; nothing else to send.
        tokio::time::sleep(opts.duration).await;
    }
    // The floor: admin publishes equivalent items to bench/floor meanwhile.
    let mut floor_sent: HashMap<String, Instant> = HashMap::new();
    let interval = Duration::from_secs_f64(1.0 / opts.floor_rate.max(0.1));
    let mut tick = tokio::time::interval(interval);
    let mut seq = 0u64;
    while !mirror && start.elapsed() < opts.duration {
        tick.tick().await;
        seq += 1;
        let id = format!("f{index}-{seq}");
        let item = UserItem {
            fulljid: format!("floor@{}/bench", prosody.domain),
            name: format!("floor@{}", prosody.domain),
            status: if seq % 2 == 0 {
                Status::Away
            } else {
                Status::Online
            },
            ip: "127.0.0.1".into(),
            since: chrono::Utc::now(),
        };
        // Fire and forget, but with an id: an IQ needs one.
        let el = client_iq_id(
            &format!("bench-{id}"),
            "set",
            &prosody.pubsub_jid,
            pubsub::publish(FLOOR, Some(&id), item.to_element()),
        );
        // As the component does: the item on an active-like node, and once
        // the server confirmed it, on the live-like node the watcher follows.
        let on_active = client_iq(
            "set",
            &prosody.pubsub_jid,
            pubsub::publish(
                FLOOR_ACTIVE,
                Some(&format!("floor{}", seq % 100)),
                item.to_element(),
            ),
        );
        let at = Instant::now();
        let a = admin.clone();
        tokio::spawn(async move {
            if a.iq(on_active, IQ_TIMEOUT).await.is_ok() {
                let _ = a.send(el);
            }
        });
        floor_sent.insert(id, at);
    }
    let _ = ctl.send(SimControl::Hold);
    let window = start.elapsed();
    // Let what was sent arrive (bounded), then the CPU window closes.
    let changes_of = |events: &Log<SimEvent>| {
        lock(events)
            .iter()
            .filter_map(|e| match e {
                SimEvent::Change {
                    fulljid,
                    status,
                    at,
                    ..
                } if *at >= start => Some((fulljid.clone(), *status, *at)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // Until every change and floor item has its notification, or nothing
    // arrives for 5 s, or 30 s.
    let sent_changes = changes_of(&events);
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (usize::MAX, Instant::now());
    loop {
        let (total, done) = {
            let l = lock(seen);
            let (lat, fl) = matched(&l, start, &sent_changes, &floor_sent);
            (
                l.len(),
                lat.len() >= sent_changes.len() && fl.len() >= floor_sent.len(),
            )
        };
        if done || Instant::now() > drain_deadline {
            break;
        }
        if total != last.0 {
            last = (total, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu1 = (cpu_seconds(server_pid), comp_cpu());
    let cpu_window_s = start.elapsed().as_secs_f64();
    let changes = changes_of(&events);
    let _ = ctl.send(SimControl::Stop);
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;

    let (lat, floor_lat) = matched(&lock(seen), start, &changes, &floor_sent);
    let latency = Latency::of(lat);
    let floor = Latency::of(floor_lat);
    let d = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    let server_cpu_s = d(cpu0.0, cpu1.0);
    let component_cpu_s = d(cpu0.1, cpu1.1);
    Ok(RatePoint {
        target_rate: rate,
        load_connections: conns,
        achieved_rate: changes.len() as f64 / window.as_secs_f64(),
        changes: changes.len(),
        received: latency.samples,
        p99_over_floor: if floor.p99_ms > 0.0 {
            latency.p99_ms / floor.p99_ms
        } else {
            0.0
        },
        latency,
        floor_sent: floor_sent.len(),
        floor,
        cpu_window_s,
        server_cpu_s,
        component_cpu_s,
        cpu_ratio: if server_cpu_s > 0.0 {
            component_cpu_s / server_cpu_s
        } else {
            0.0
        },
        mirror: None,
        p99_over_mirror: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(sent: f64, p99: f64, floor_p99: f64) -> RatePoint {
        let lat = |p99_ms| Latency {
            samples: 1,
            p50_ms: 1.0,
            p99_ms,
            max_ms: p99_ms,
        };
        RatePoint {
            target_rate: sent,
            load_connections: 1,
            achieved_rate: sent,
            changes: 1,
            received: 1,
            latency: lat(p99),
            floor_sent: 1,
            floor: lat(floor_p99),
            p99_over_floor: 1.0,
            cpu_window_s: 1.0,
            server_cpu_s: 1.0,
            component_cpu_s: 0.1,
            cpu_ratio: 0.1,
            mirror: None,
            p99_over_mirror: 0.0,
        }
    }

    fn mirrored(sent: f64, p99: f64, mirror_p99: f64) -> RatePoint {
        let m = point(sent, mirror_p99, 0.0);
        point(sent, p99, 1.0).with_mirror(m)
    }

    #[test]
    fn the_knee_floor_is_the_mirror_where_one_ran() {
        let sweep = [
            mirrored(99.0, 20.0, 15.0),
            mirrored(198.0, 120.0, 60.0),
            mirrored(297.0, 150.0, 101.0),
        ];
        let k = Knee::of(&sweep);
        assert_eq!((k.pubpresence, k.mirror), (99.0, 198.0));
        assert!((k.mirror_ratio - 0.5).abs() < 1e-9);
        assert!(k.found);
        assert!((sweep[1].p99_over_mirror - 2.0).abs() < 1e-9);
        // Without mirror passes the floor's knee decides whether it was found.
        let k = Knee::of(&sweep[..2]);
        assert!(!k.found, "the mirror never passed 100 ms");
    }

    #[test]
    fn the_start_up_steps_are_read_from_the_components_last_log_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("component.log");
        std::fs::write(
            &log,
            "2026-12-05T22:00:00Z  INFO start-up discovery done, reconciling users=1 took=nodes 9ms, listing 1ms\n\
             2026-12-05T22:00:01Z  INFO online\n\
             2026-12-05T22:00:02Z  INFO start-up discovery done, reconciling users=3 sessions=3 tracked=3 on_active=3 took=nodes 7ms, listing 17ms, probes 5ms, active (beside them) 23ms\n",
        )
        .unwrap();
        assert_eq!(
            last_phases(&log),
            "nodes 7ms, listing 17ms, probes 5ms, active (beside them) 23ms"
        );
        assert_eq!(last_phases(&dir.path().join("missing.log")), "");
    }

    #[test]
    fn the_knee_is_the_last_rate_before_the_first_p99_past_100_ms() {
        let sweep = [
            point(99.0, 20.0, 15.0),
            point(198.0, 60.0, 30.0),
            // A lucky rate past the first miss does not count: p99 must stay.
            point(297.0, 140.0, 80.0),
            point(396.0, 90.0, 120.0),
        ];
        let k = Knee::of(&sweep);
        assert_eq!((k.pubpresence, k.floor), (198.0, 297.0));
        assert!((k.ratio - 198.0 / 297.0).abs() < 1e-9);
        assert!(k.found);
        let k = Knee::of(&sweep[..2]);
        assert_eq!((k.pubpresence, k.floor, k.found), (198.0, 198.0, false));
        assert_eq!(Knee::of(&[point(99.0, 101.0, 101.0)]).pubpresence, 0.0);
    }
}
