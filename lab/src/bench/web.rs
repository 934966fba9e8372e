//! `pubpresence-lab bench --web-consumers N`: N consumers of the web
//! feed's `/events` (docs/protocol.md, "/events") while simulated users change status at a
//! steady rate; how long the last consumer waits for a change once it has
//! reached the client, and the feed's memory per consumer.
//!
//! The measured path is the real one: a lab Prosody, the component as a
//! child `pubpresence run`, simulated users (`crate::sim`) changing
//! status at `--rates` (default 1,000/s), and the feed side in a child
//! process of its own, `pubpresence-lab bench --web-feed-child CONFIG` (hidden):
//! the reference client (docs/protocol.md, "Client procedure") (`client::watch::run`, what `pubpresence
//! watch` runs) feeding a [`Feed`](pubpresence::client::web::Feed) served on a loopback port, exactly as
//! `pubpresence watch --http` wires them (`web::tee`: `feed.update` for every
//! update, in order), with one difference: just before each update enters
//! the feed, the child takes the time (CLOCK_REALTIME, microseconds) and
//! writes it with the event's content (kind, fulljid, status) as one JSON
//! line on its stdout, from a thread of its own. That is "the change reached
//! the client". Nothing in `client::web` is changed or hooked.
//!
//! Why a child of our own rather than `pubpresence watch --http --json`:
//! `watch --json` prints its line after `feed.update`, through one more
//! channel and task, and its `at` is to the second; the benchmark would have
//! to stamp the line when it reads it, in the process that also runs the N
//! consumers, i.e. late by that process's backlog: the figure would come out
//! too good, even negative. Stamping in the feed process before the update
//! enters the feed has no such bias; both processes read the same clock.
//! The child holds what `watch --http` holds (the runner, the board, the
//! feed, its consumers) and no consumer: its RSS and CPU are the feed's.
//!
//! The N consumers live in the benchmark's process: plain HTTP/1.1 over
//! loopback TCP (`GET /events`, chunked transfer, SSE parsed by hand: no
//! HTTP client dependency, a 16 KiB read buffer each). A consumer stamps the
//! events of each read when the read returns (the consumer "has" them then)
//! and keys them by content: (kind, fulljid, status, n-th occurrence since
//! the window opened), matched to the child's stamps the same way. Per
//! change: the latency to the last consumer = max over consumers − the
//! child's stamp.
//!
//! Here: the options, the run's flow with a Prosody (`run`, `with_prosody`,
//! `measure`: the component, the feed child, the load users) or without one
//! (`synthetic`), and the command line. The feed child, what runs in it and
//! the benchmark's handle on it, is in `feed`; the consumers of `/events`
//! in `consumer`; the load, the window and its drain in `window`; the
//! figures, matched from the consumers' logs, and their table in `report`.

mod consumer;
mod feed;
mod report;
mod window;

pub use feed::{feed_child, FeedSource, Synthetic};
pub use report::WebReport;

use super::args::BenchArgs;
use super::error::{setup, wait_until, BenchError};
use super::measure::storage;
use super::output;
use crate::lock;
use crate::sim::{self, SimControl, SimEvent, SimOptions};
use crate::Prosody;
use feed::{child_ready, quiet, ChildState, FeedChild};
use report::SYNTHETIC_SOURCE;
use std::hash::Hasher;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch as wch};
use window::{window, Load};

/// The account the feed child logs in with.
const WATCHER: &str = "watcher";
/// Connections per load account (as `pubpresence-lab bench`).
const LOAD_RESOURCES: usize = 4;
/// Changes per second of one load connection (as `pubpresence-lab bench`).
const PER_CONNECTION_RATE: f64 = 4.0;

/// What to run.
#[derive(Debug, Clone)]
pub struct WebBenchOptions {
    /// SSE consumers of `/events`.
    pub consumers: usize,
    /// Changes per second, all simulated connections together.
    pub rate: f64,
    /// How long the simulated users change status.
    pub duration: Duration,
    /// The `pubpresence` binary: the component.
    pub exe: PathBuf,
    /// The `pubpresence-lab` binary: the feed child (`bench --web-feed-child`).
    pub lab_exe: PathBuf,
    /// Prosody with `network_settings = { nagle = false }` (TCP_NODELAY).
    pub tcp_nodelay: bool,
    /// Prosody's pubsub with `storage = "memory"`.
    pub memory_storage: bool,
    /// "full" or "quick", named in the report.
    pub quick: bool,
    /// The feed child makes the changes itself: no Prosody, no component,
    /// no simulated users (`--web-synthetic`).
    pub synthetic: bool,
}

impl WebBenchOptions {
    /// 1,000 consumers, 1,000 changes/s for 5 s.
    pub fn full(exe: PathBuf, lab_exe: PathBuf) -> WebBenchOptions {
        WebBenchOptions {
            consumers: 1000,
            rate: 1000.0,
            duration: Duration::from_secs(5),
            exe,
            lab_exe,
            tcp_nodelay: false,
            memory_storage: false,
            quick: false,
            synthetic: false,
        }
    }

    /// CI: 20 consumers, 50 changes/s for 2 s.
    pub fn quick(exe: PathBuf, lab_exe: PathBuf) -> WebBenchOptions {
        WebBenchOptions {
            consumers: 20,
            rate: 50.0,
            duration: Duration::from_secs(2),
            exe,
            lab_exe,
            tcp_nodelay: false,
            memory_storage: false,
            quick: true,
            synthetic: false,
        }
    }
}

/// CLOCK_REALTIME in microseconds: the one clock both processes read.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// An event's identity by content; the same on both sides.
fn key(kind: &[u8], fulljid: &[u8], status: &[u8]) -> u64 {
    // SipHash with fixed keys: the same in every process.
    let mut h = std::hash::DefaultHasher::new();
    h.write(kind);
    h.write_u8(0xff);
    h.write(fulljid);
    h.write_u8(0xff);
    h.write(status);
    h.finish()
}

/// The soft limit on open files (from /proc/self/limits).
fn fd_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// The component as a child; stopped (SIGTERM) when dropped.
struct ComponentChild(std::process::Child);

impl Drop for ComponentChild {
    fn drop(&mut self) {
        crate::process::stop(&mut self.0, Duration::from_secs(10));
    }
}

fn load_connections(rate: f64) -> usize {
    ((rate / PER_CONNECTION_RATE).ceil() as usize).clamp(LOAD_RESOURCES, 2000)
}

/// Runs the benchmark.
pub async fn run(opts: WebBenchOptions) -> Result<WebReport, BenchError> {
    if opts.consumers == 0 || !opts.rate.is_finite() || opts.rate <= 0.0 {
        return Err(setup("consumers and the rate must be positive"));
    }
    if opts.synthetic {
        return synthetic(&opts).await;
    }
    let conns = load_connections(opts.rate);
    // Sockets: the consumers here and in the feed child, the load here.
    let limit = check_fd_limit(opts.consumers + conns)?;
    let accounts = conns.div_ceil(LOAD_RESOURCES);
    let mut names = vec![WATCHER.to_string()];
    names.extend((1..=accounts).map(|i| format!("load{i}")));
    let prosody = super::server::start_prosody(
        names,
        crate::ProsodyOptions {
            no_nagle: opts.tcp_nodelay,
            memory_storage: opts.memory_storage,
            ..Default::default()
        },
    )
    .await?;
    let outcome = with_prosody(&prosody, &opts, conns, limit).await;
    if outcome.is_err() && std::env::var_os("PUBPRESENCE_KEEP_PROSODY").is_some() {
        tracing::warn!("bench failed; lab kept in {}", prosody.dir.path().display());
    }
    let _ = tokio::task::spawn_blocking(move || drop(prosody)).await;
    outcome
}

async fn with_prosody(
    prosody: &Prosody,
    opts: &WebBenchOptions,
    conns: usize,
    fd_limit: u64,
) -> Result<WebReport, BenchError> {
    let server_pid = prosody
        .pid()
        .ok_or_else(|| setup("the lab Prosody has no pid"))?;
    let dir = prosody.dir.path();
    let watcher_jid = format!("{WATCHER}@{}", prosody.domain);
    let config = dir.join("bench-web.toml");
    let text = format!(
        "{}\n[watch]\njid = \"{watcher_jid}\"\npassword = \"{WATCHER}\"\nserver = \"{}\"\nallow_plaintext = true\n",
        prosody.config_toml(&[&watcher_jid]),
        prosody.c2s_addr(),
    );
    std::fs::write(&config, text).map_err(setup)?;
    let log = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .map_err(setup)
    };

    // The component.
    let clog = log("component.log")?;
    let component = ComponentChild(
        std::process::Command::new(&opts.exe)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(clog.try_clone().map_err(setup)?)
            .stderr(clog)
            .spawn()
            .map_err(|e| setup(format!("starting {}: {e}", opts.exe.display())))?,
    );
    let component_pid = component.0.id();

    // The feed child.
    let args = ["--web-feed-child".into(), config.clone().into_os_string()];
    let feed = FeedChild::spawn(&opts.lab_exe, &args, log("feed.log")?.into())?;
    let outcome = measure(
        prosody,
        opts,
        conns,
        &feed.state,
        [server_pid, component_pid, feed.pid],
    )
    .await;
    feed.stop().await;
    let _ = tokio::task::spawn_blocking(move || drop(component)).await;
    outcome.map(|mut r| {
        r.fd_limit = fd_limit;
        r
    })
}

/// `--web-synthetic`: the feed child makes the changes; only it and the
/// consumers use the machine.
async fn synthetic(opts: &WebBenchOptions) -> Result<WebReport, BenchError> {
    let conns = load_connections(opts.rate);
    let limit = check_fd_limit(opts.consumers)?;
    let args: Vec<std::ffi::OsString> = [
        "--web-feed-child".to_string(),
        "-".into(),
        "--web-synthetic".into(),
        "--connections".into(),
        conns.to_string(),
        "--rates".into(),
        opts.rate.to_string(),
        "--duration".into(),
        opts.duration.as_secs_f64().to_string(),
    ]
    .into_iter()
    .map(Into::into)
    .collect();
    let mut feed = FeedChild::spawn(&opts.lab_exe, &args, Stdio::inherit())?;
    let outcome = async {
        let addr = child_ready(&feed.state, feed.pid).await?;
        let stdin = feed
            .stdin
            .as_mut()
            .ok_or_else(|| setup("no stdin of the feed child"))?;
        let load = Load::Synthetic { stdin };
        window(opts, conns, &feed.state, addr, load, [feed.pid, 0, 0]).await
    }
    .await;
    feed.stop().await;
    outcome.map(|mut r| {
        r.fd_limit = limit;
        r
    })
}

/// The open-file limit, if it holds `sockets` and some to spare.
fn check_fd_limit(sockets: usize) -> Result<u64, BenchError> {
    let need = (sockets + 256) as u64;
    let limit = fd_limit().unwrap_or(1024);
    if limit < need {
        return Err(setup(format!(
            "the open-file limit is {limit}, {need} are needed: raise it (ulimit -n {need})"
        )));
    }
    Ok(limit)
}

/// Everything once the children run; stops the simulated users and the
/// consumers it starts.
async fn measure(
    prosody: &Prosody,
    opts: &WebBenchOptions,
    conns: usize,
    state: &Arc<Mutex<ChildState>>,
    [server_pid, component_pid, feed_pid]: [u32; 3],
) -> Result<WebReport, BenchError> {
    let addr = child_ready(state, feed_pid).await?;

    // The load users, logged in and held.
    let mut o = SimOptions::for_prosody(
        prosody,
        "load",
        conns.div_ceil(LOAD_RESOURCES),
        LOAD_RESOURCES,
    );
    let conns = o.connections();
    o.rate = opts.rate;
    o.disconnect_share = 0.0;
    o.first_ip = Ipv4Addr::new(127, 1, 0, 1);
    o.seed = 9;
    o.login_concurrency = 32;
    tracing::info!("logging in {conns} load connections");
    let (ctl, ctl_rx) = wch::channel(SimControl::Hold);
    let events: Arc<Mutex<Vec<SimEvent>>> = Arc::default();
    let (etx, mut erx) = mpsc::unbounded_channel();
    let ev_log = events.clone();
    tokio::spawn(async move {
        while let Some(e) = erx.recv().await {
            // Only what is counted.
            if matches!(e, SimEvent::Change { .. } | SimEvent::Ready { .. }) {
                lock(&ev_log).push(e);
            }
        }
    });
    let sim_task = tokio::spawn(sim::run(o, ctl_rx, Some(etx)));
    let result = async {
        wait_until("load users logged in", Duration::from_secs(90), || {
            lock(&events)
                .iter()
                .any(|e| matches!(e, SimEvent::Ready { .. }))
        })
        .await?;
        // Their logins reach the client; then a quiet feed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        wait_until("the logins' events passed", Duration::from_secs(60), || {
            quiet(state, Duration::from_millis(1500))
        })
        .await?;
        let load = Load::Sims {
            ctl: &ctl,
            events: &events,
        };
        window(
            opts,
            conns,
            state,
            addr,
            load,
            [feed_pid, server_pid, component_pid],
        )
        .await
    }
    .await;
    let _ = ctl.send(SimControl::Stop);
    let _ = tokio::time::timeout(Duration::from_secs(30), sim_task).await;
    result
}

/// `pubpresence-lab bench --web-consumers N` (or the hidden feed child).
pub async fn main(args: BenchArgs) -> anyhow::Result<()> {
    let child = args.web_feed_child.clone();
    let default = if child.is_some() {
        "warn"
    } else {
        "pubpresence_lab::bench=info"
    };
    output::init_logging(default);
    if let Some(config) = child {
        let source = if args.web_synthetic {
            let rate = match args.rates.as_deref() {
                Some([one]) if one.is_finite() && *one > 0.0 => *one,
                _ => anyhow::bail!("--web-synthetic takes one positive rate"),
            };
            FeedSource::Synthetic(Synthetic {
                connections: args.connections.unwrap_or(250).max(1),
                rate,
                duration: args.duration.unwrap_or(Duration::from_secs(5)),
            })
        } else {
            FeedSource::Watch(config)
        };
        return feed_child(source).await;
    }
    let (exe, lab_exe) = (crate::product_binary()?, std::env::current_exe()?);
    let mut o = if args.quick {
        WebBenchOptions::quick(exe, lab_exe)
    } else {
        WebBenchOptions::full(exe, lab_exe)
    };
    if let Some(n) = args.web_consumers {
        o.consumers = n;
    }
    if let Some(r) = &args.rates {
        match r.as_slice() {
            [one] => o.rate = *one,
            _ => anyhow::bail!("--web-consumers takes one rate (--rates 1000)"),
        }
    }
    if let Some(d) = args.duration {
        o.duration = d;
    }
    o.tcp_nodelay = args.tcp_nodelay;
    o.memory_storage = args.memory_storage;
    o.synthetic = args.web_synthetic;
    eprintln!(
        "pubpresence bench: {} web consumers, {}/s for {:?}; {}",
        o.consumers,
        o.rate,
        o.duration,
        if o.synthetic {
            SYNTHETIC_SOURCE.to_string()
        } else {
            storage(o.memory_storage)
        }
    );
    let report = output::unless_stopped(run(o)).await?;
    output::print_report(args.json, &report.table(), &report.to_json());
    Ok(())
}
