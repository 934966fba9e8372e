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
//!
//! Here: the options, that flow (`run`, `bench`, `measured`), the restarts
//! and the start-up with active empty, and the component it starts and
//! stops. One rate's load and its figures are in `rate`, the report's types
//! and table in `report`, the server and its plain clients in `server`.

use super::client::{client_iq, read_status, ACTIVE, IQ_TIMEOUT, LIVE};
use super::error::{setup, BenchError};
use super::floors::{self, AsComponent, PublishFloor, RestartFloor};
use super::measure::{cpu_seconds, rss_kib, storage, Machine};
use super::rate::{
    self, mirror_phase, phase, spawn_sim_reader, spawn_watcher_reader, Log, Rig, Seen, SimLog,
    FLOOR, FLOOR_ACTIVE,
};
use super::server::{active_items, login, start_prosody, subscribe};
use super::state::{saved_copy, with_state_dir};
use crate::held::HeldSessions;
use crate::lock;
use crate::sim::{self, SimControl, SimOptions};
use crate::Prosody;
use pubpresence::component::publisher::Listing;
use pubpresence::component::service::{self, ServiceConfig};
use pubpresence::config::Config;
use pubpresence::wire::pubsub;
use pubpresence::wire::status::ServiceStatus;
use pubpresence::wire::user::Status;
use pubpresence::xmpp::c2s::C2s;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

pub use super::report::{
    Knee, Memory, MirrorPoint, RatePoint, Report, Restart, Startup, KNEE_P99_MS,
};

const WATCHER: &str = "watcher";
/// Prosody's `max_send_buffer_size` in the bench, in MiB (named in the
/// report beside the storage).
const BENCH_SEND_BUFFER_MIB: u32 = 128;
/// Connections per base account (fewer accounts: fewer prosodyctl calls).
const PER_ACCOUNT: usize = 10;
/// No new base session on live for this long: read active instead.
const LIVE_STALLED: Duration = Duration::from_secs(5);

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
    /// Prosody grants the component XEP-0356 presence permission
    /// (mod_privilege) and no user has it in the roster: the server sends
    /// it every presence, and nobody is probed.
    pub privileged: bool,
    /// The base population is held inside Prosody without sockets
    /// (`crate::held`), which goes past the open-file limit; the rate
    /// phases' load still connects for real.
    pub held_sessions: bool,
    /// Prosody's Lua collector in generational mode
    /// (`ProsodyOptions::generational_gc`).
    pub generational_gc: bool,
    /// Only the tracking, the two restarts and the restart floor: no
    /// start-up with active empty, no start-up floor, no rate phases
    /// (at 100,000 items on Prosody's SQLite store each of the first two
    /// costs about what the tracking does, some 15 minutes here:
    /// docs/benchmarks.md).
    pub restarts_only: bool,
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
            privileged: false,
            held_sessions: false,
            generational_gc: false,
            restarts_only: false,
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
            privileged: false,
            held_sessions: false,
            generational_gc: false,
            restarts_only: false,
        }
    }
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

/// A run stopped by a signal drops its component without `stop`: end the
/// child then, never leave it behind (the task ends with the runtime).
impl Drop for Component {
    fn drop(&mut self) {
        if let Component::Child(c) = self {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
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

/// Runs the benchmark.
pub async fn run(opts: BenchOptions) -> Result<Report, BenchError> {
    if opts.connections == 0 || opts.rates.iter().any(|r| !r.is_finite() || *r <= 0.0) {
        return Err(setup("connections and rates must be positive"));
    }
    let base_accounts = opts.connections.div_ceil(PER_ACCOUNT);
    let mut names: Vec<String> = vec![WATCHER.to_string()];
    // Held sessions' accounts are made by the module that holds them.
    if !opts.held_sessions {
        names.extend((1..=base_accounts).map(|i| format!("base{i}")));
    }
    let load_accounts = opts
        .rates
        .iter()
        .map(|r| rate::load_accounts(*r))
        .max()
        .unwrap_or(1);
    names.extend((1..=load_accounts).map(|i| format!("load{i}")));
    let prosody = start_prosody(
        names,
        crate::ProsodyOptions {
            no_nagle: opts.tcp_nodelay,
            memory_storage: opts.memory_storage,
            privileged: opts.privileged,
            held_sessions: opts.held_sessions,
            generational_gc: opts.generational_gc,
            // A whole answer of active passes Prosody 13's default 32 MiB
            // near 80,000 sessions; the cap costs nothing below it
            // (docs/benchmarks.md, "Past the open-file limit").
            send_buffer_mib: Some(BENCH_SEND_BUFFER_MIB),
            ..Default::default()
        },
    )
    .await?;
    let outcome = bench(&prosody, &opts).await;
    if outcome.is_err() && std::env::var_os("PUBPRESENCE_KEEP_PROSODY").is_some() {
        tracing::warn!("bench failed; lab kept in {}", prosody.dir.path().display());
    }
    let _ = tokio::task::spawn_blocking(move || drop(prosody)).await;
    outcome
}

/// From this many sessions on, an audit (a read of active whole) costs
/// the server about a minute; the README advises an hour between audits at
/// that size, and the bench runs as advised, so that an audit does not
/// fall between its own measures.
const LARGE: usize = 50_000;

fn audit_setting(connections: usize) -> &'static str {
    if connections >= LARGE {
        "audit_interval = \"1h\"\n"
    } else {
        ""
    }
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
    let text = with_state_dir(
        prosody.dir.path(),
        &format!(
            "{}{}",
            audit_setting(opts.connections),
            prosody.config_toml(&[&watcher_jid])
        ),
    )
    .map_err(setup)?;
    std::fs::write(&config, text).map_err(setup)?;

    // The watcher and the floor publisher (admin, who creates bench/floor).
    let (watcher, w_in) = login(prosody, WATCHER, "bench").await?;
    let seen: Log<Seen> = Arc::default();
    spawn_watcher_reader(w_in, seen.clone());
    let (admin, mut a_in) = login(prosody, "admin", "floor").await?;
    tokio::spawn(async move { while a_in.recv().await.is_some() {} });
    // The latency floor's nodes, configured as live and as active are.
    floors::create(&admin, &pubsub_jid, FLOOR, floors::live_like()).await?;
    floors::create(&admin, &pubsub_jid, FLOOR_ACTIVE, floors::active_like()).await?;
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
    let base = if opts.held_sessions {
        None
    } else {
        Some(simulated_base(prosody, n))
    };

    let result = async {
        if opts.held_sessions {
            tracing::info!("holding {n} base sessions inside Prosody");
            let held = HeldSessions {
                prefix: "base".into(),
                sessions: n,
                resources: PER_ACCOUNT,
                first: BASE_FIRST_IP,
                contact: (!prosody.options().privileged).then(|| prosody.component_jid.clone()),
                rate: Some(HELD_RATE),
            };
            let limit = Duration::from_secs(60 + n as u64 / 100);
            crate::held::hold(admin, &prosody.domain, &held, limit)
                .await
                .map_err(setup)?;
        }
        // Base sessions seen on live, the log read on from where the last
        // call stopped: it grows to tens of thousands of events, and the
        // watcher's reader waits for its lock meanwhile.
        let mut on_live: HashSet<String> = HashSet::new();
        let mut read = 0;
        let mut base_seen = |seen: &Log<Seen>| {
            let log = lock(seen);
            for s in log.iter().skip(read) {
                match s {
                    Seen::Live(_, u)
                        if u.name.starts_with("base") && u.status != Status::Offline =>
                    {
                        on_live.insert(u.fulljid.clone());
                    }
                    _ => {}
                }
            }
            read = log.len();
            on_live.len()
        };
        // Tracked: all N seen on live, or (when some live event never
        // came: see docs/benchmarks.md) all N items on active. Active is
        // read only once live has stalled: a fetch of thousands of items
        // costs the server seconds, and fetching every 2 s during the
        // logins kept Prosody 13 busy with it and the logins crawled.
        // And a read of active is not asked again before ten times what
        // the last one took has passed: at 30,000 items one costs Prosody
        // some 10 s, and reads back to back took most of its time.
        let limit = Duration::from_secs(60 + n as u64 / 10);
        let deadline = Instant::now() + limit;
        let mut progress = (0, Instant::now());
        let mut read_again = Instant::now();
        loop {
            let live = base_seen(seen);
            if live >= n {
                break;
            }
            if live != progress.0 {
                progress = (live, Instant::now());
            } else if progress.1.elapsed() >= LIVE_STALLED && Instant::now() >= read_again {
                progress.1 = Instant::now();
                let on_active = active_items(watcher, &pubsub_jid).await;
                let took = progress.1.elapsed();
                tracing::info!(
                    "live stalled at {live} of {n}: active holds {on_active} items (read in {:.1} s)",
                    took.as_secs_f64()
                );
                if on_active >= n {
                    break;
                }
                read_again = Instant::now() + took * 10;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(format!(
                    "{n} base sessions tracked within {limit:?}: {} seen on live",
                    base_seen(seen)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
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
        let (restart_floor, (cold_s, cold_cpu), publish_floor) = if opts.restarts_only {
            let floor = restart_floor(prosody, watcher, &mut comp, server_pid).await?;
            (floor, (0.0, 0.0), PublishFloor::default())
        } else {
            cold_start(prosody, opts, watcher, admin, &mut comp, server_pid).await?
        };
        let rates_asked: &[f64] = if opts.restarts_only { &[] } else { &opts.rates };

        let rig = Rig {
            prosody,
            admin,
            seen,
            server_pid,
            duration: opts.duration,
            floor_rate: opts.floor_rate,
        };
        let mut rates: Vec<RatePoint> = Vec::new();
        for (i, &rate) in rates_asked.iter().enumerate() {
            let point = phase(&rig, comp.pid(), i, rate).await?;
            // The same churn again with the component stopped, its writes
            // mirrored by a plain client: the knee's floor.
            tracing::info!("{rate} changes/s: the mirror pass, component stopped");
            comp.stop().await;
            let mirrored = mirror_phase(&rig, i, rate).await;
            // The mirror wrote on active behind the component's back: the
            // copy its stop saved no longer stands (README, "Fast restarts:
            // `state_dir`"), so the start must fetch active.
            let _ = std::fs::remove_file(saved_copy(prosody.dir.path()));
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

    if let Some((ctl, task)) = base {
        let _ = ctl.send(SimControl::Stop);
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    comp.stop().await;
    let (startup, memory, rates) = result?;
    Ok(Report {
        mode: if opts.quick { "quick" } else { "full" },
        machine: Machine::probe(),
        storage: format!(
            "{}, max_send_buffer_size = {BENCH_SEND_BUFFER_MIB} MiB",
            storage(opts.memory_storage)
        ),
        presence: if opts.privileged {
            "XEP-0356 presence permission (mod_privilege), no roster subscriptions"
        } else {
            "roster subscriptions"
        },
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

/// How many held sessions the server makes a second: some ten times the
/// real logins' rate (docs/benchmarks.md), so that the component's
/// requests still get their share of the server.
const HELD_RATE: u32 = 1000;

/// The first base session's address (the watcher and admin are on .1).
const BASE_FIRST_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// `n` simulated sessions logging in over real connections and staying:
/// the control that stops them and their task.
fn simulated_base(
    prosody: &Prosody,
    n: usize,
) -> (
    watch::Sender<SimControl>,
    tokio::task::JoinHandle<Result<sim::SimReport, sim::SimError>>,
) {
    let mut base_opts = SimOptions::sessions(prosody, "base", n, PER_ACCOUNT);
    base_opts.subscribe = !prosody.options().privileged;
    tracing::info!("connecting {n} base sessions");
    base_opts.rate = 0.0;
    base_opts.disconnect_share = 0.0;
    base_opts.first_ip = BASE_FIRST_IP;
    base_opts.login_concurrency = 32;
    let (ctl, rx) = watch::channel(SimControl::Run);
    let (btx, brx) = mpsc::unbounded_channel();
    spawn_sim_reader(brx, SimLog::default());
    (ctl, tokio::spawn(sim::run(base_opts, rx, Some(btx))))
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
        // A start-up leaves the server work that follows `online` (the
        // confirming probes' answers: a minute at 100,000 sessions on
        // Prosody 13); a stop in the middle of it measures that instead.
        server_settled(self.server_pid).await;
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
        // And not while the server is still working through the stop (at
        // 100,000 sessions it took Prosody some 10 s to let go of the
        // stopped connection: the start met `conflict` until then).
        server_settled(self.server_pid).await;
        let copy = saved_copy(dir);
        if keep_copy && !copy.exists() {
            return Err(setup(format!(
                "the clean stop saved no copy of active in {}",
                copy.display()
            )));
        }
        // A stop may leave no copy: at 100,000 sessions the server was
        // still answering the restart's confirming probes, and `offline`
        // (which names the copy) did not go out in time.
        if !keep_copy && copy.exists() {
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

/// The component stopped, then the restart floor: what a restart with
/// nothing changed asks of the server, asked as the component.
async fn restart_floor(
    prosody: &Prosody,
    watcher: &C2s,
    comp: &mut Component,
    server_pid: u32,
) -> Result<RestartFloor, BenchError> {
    let pubsub_jid = prosody.pubsub_jid.as_str();
    // As before a restart: not in the middle of the server's work that
    // follows `online` (and, at 100,000 sessions, the bench's own read of
    // active, a minute of Prosody's time).
    server_settled(server_pid).await;
    comp.stop().await;
    // A busy server may take the stop's `offline` too late to be seen
    // (the stop gives up after 3 s); the component has exited all the same.
    if let Err(e) = wait_status(
        watcher,
        pubsub_jid,
        ServiceStatus::Offline,
        Duration::from_secs(15),
        None,
    )
    .await
    {
        tracing::warn!("{e}: measuring the floor all the same");
    }
    // The floor connects with the component's JID: once the server has let
    // go of the stopped connection.
    server_settled(server_pid).await;
    tracing::info!("the restart floor: listing, probes, one fetch of active");
    floors::restart_floor(&AsComponent {
        addr: prosody.component_addr(),
        jid: &prosody.component_jid,
        secret: &prosody.secret,
        domain: &prosody.domain,
        pubsub: pubsub_jid,
        active: ACTIVE,
        server_pid,
        listing: Listing::default(),
        addresses: false,
        // Prosody answers the round trip behind the probes after them.
        answers: false,
        probes: !prosody.options().privileged,
        privileged_as: None,
    })
    .await
}

/// Waits until the server has used less than a tenth of a CPU over a
/// second, for at most two minutes.
async fn server_settled(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let t0 = Instant::now();
    loop {
        let from = cpu_seconds(pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        if floors::cpu_since(pid, from) < 0.1 || Instant::now() > deadline {
            break;
        }
    }
    if t0.elapsed() > Duration::from_secs(2) {
        tracing::info!(
            "the server settled after {:.0} s",
            t0.elapsed().as_secs_f64()
        );
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
    let restart_floor = restart_floor(prosody, watcher, comp, server_pid).await?;
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
    let items = floors::items_of(watcher, pubsub_jid, ACTIVE).await?;
    tracing::info!("the start-up floor: {} items published", items.len());
    let publish_floor =
        floors::publish_floor(admin, watcher, pubsub_jid, &items, server_pid).await?;
    Ok((restart_floor, cold, publish_floor))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
