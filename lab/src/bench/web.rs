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
//! watch` runs) feeding a [`Feed`] served on a loopback port, exactly as
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

use super::args::BenchArgs;
use super::error::BenchError;
use super::measure::{cpu_seconds, rss_kib, storage, Latency, Machine};
use super::output;
use crate::lock;
use crate::sim::{self, SimControl, SimEvent, SimOptions};
use crate::Prosody;
use pubpresence::client::follow::WatchEvent;
use pubpresence::client::watch::{self, Target, Update};
use pubpresence::client::web::Feed;
use pubpresence::config::Config;
use pubpresence::wire::status::ServiceStatus;
use pubpresence::wire::user::{Status, UserItem};
use std::collections::HashMap;
use std::hash::Hasher;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch as wch, Semaphore};

/// The account the feed child logs in with.
const WATCHER: &str = "watcher";
/// Connections per load account (as `pubpresence-lab bench`).
const LOAD_RESOURCES: usize = 4;
/// Changes per second of one load connection (as `pubpresence-lab bench`).
const PER_CONNECTION_RATE: f64 = 4.0;
/// Consumers connecting at once.
const CONNECT_CONCURRENCY: usize = 50;
/// A consumer's read buffer.
const READ_BUFFER: usize = 16 * 1024;
/// No new event for this long after the load stopped: everything queued
/// upstream has reached the client.
const QUIET: Duration = Duration::from_secs(3);

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

/// The figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WebReport {
    pub mode: &'static str,
    pub machine: Machine,
    pub storage: String,
    pub feed_process: &'static str,
    /// Where the changes come from.
    pub source: &'static str,
    /// Consumers asked for / connected (had their first snapshot).
    pub consumers: usize,
    pub connected: usize,
    pub target_rate: f64,
    pub load_connections: usize,
    /// How long the simulated users changed status.
    pub send_window_s: f64,
    /// Changes the simulated users sent, and per second over the window.
    pub sent: usize,
    pub sent_rate: f64,
    /// `set`/`remove` events that entered the feed (reached the client)
    /// from the window's start until everything had arrived.
    pub reached: usize,
    /// From the first to the last of them.
    pub reached_span_s: f64,
    /// reached / reached_span_s: the rate the feed actually saw.
    pub reached_rate: f64,
    /// reached × connected consumers.
    pub expected: u64,
    /// Events the consumers received and matched to a change.
    pub delivered: u64,
    /// Events a consumer received that matched no change (should be 0).
    pub unmatched: u64,
    /// Changes that did not reach every connected consumer.
    pub incomplete: usize,
    /// Consumers the feed cut off for falling behind (`Feed::cut_off`).
    pub cut_off: usize,
    /// Consumers whose stream ended before the benchmark closed it.
    pub ended_early: usize,
    /// Per change, from entering the feed to the last consumer having it.
    pub last_consumer: Latency,
    /// Every (change, consumer) delivery.
    pub any_consumer: Latency,
    /// VmRSS of the feed process: synced and serving, no consumer.
    pub rss_idle_kib: u64,
    /// With every consumer connected, before the load.
    pub rss_connected_kib: u64,
    /// The highest sample (every 100 ms) during the load and its drain.
    pub rss_peak_kib: u64,
    /// After the drain, consumers still connected.
    pub rss_after_kib: u64,
    /// (connected − idle) / consumers.
    pub per_consumer_connected_bytes: f64,
    /// (peak − idle) / consumers.
    pub per_consumer_peak_bytes: f64,
    /// CPU (utime + stime) of the feed process from the window's start to
    /// the end of the drain.
    pub feed_cpu_s: f64,
    /// From the window's start to the last delivery.
    pub busy_s: f64,
    /// feed_cpu_s / busy_s (1.0 = one core).
    pub feed_cpu_share: f64,
    /// The same window: this process (consumers and simulated users),
    /// Prosody, the component.
    pub bench_cpu_s: f64,
    pub server_cpu_s: f64,
    pub component_cpu_s: f64,
    /// Times the feed child's XMPP session was (re)established (1: never lost).
    pub watch_logins: usize,
    /// Soft RLIMIT_NOFILE of this process (the children inherit it).
    pub fd_limit: u64,
}

impl WebReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A readable summary.
    pub fn table(&self) -> String {
        let m = &self.machine;
        let l = &self.last_consumer;
        let a = &self.any_consumer;
        let mut s = format!(
            "pubpresence bench --web-consumers ({} mode) on {} CPUs, {}\nserver: {}; component: {}; feed: {}\nchanges: {}\n\n",
            self.mode, m.nproc, m.model, self.storage,
            if self.source == SYNTHETIC_SOURCE { "none" } else { "child process" },
            self.feed_process, self.source
        );
        s.push_str(&format!(
            "consumers: {} connected of {}; load: {} connections, target {:.0} changes/s for {:.1} s: {} sent ({:.0}/s)\n",
            self.connected, self.consumers, self.load_connections, self.target_rate,
            self.send_window_s, self.sent, self.sent_rate
        ));
        s.push_str(&format!(
            "reached the client: {} changes in {:.2} s ({:.0}/s)\n",
            self.reached, self.reached_span_s, self.reached_rate
        ));
        s.push_str(&format!(
            "delivered: {} of {} expected; unmatched {}; changes not at every consumer {}; cut off {} (feed), {} (consumers' view)\n",
            self.delivered, self.expected, self.unmatched, self.incomplete, self.cut_off, self.ended_early
        ));
        s.push_str(&format!(
            "feed -> last consumer: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} changes)\n",
            l.p50_ms, l.p99_ms, l.max_ms, l.samples
        ));
        s.push_str(&format!(
            "feed -> any consumer:  p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} deliveries)\n",
            a.p50_ms, a.p99_ms, a.max_ms, a.samples
        ));
        s.push_str(&format!(
            "feed RSS: {} KiB idle, {} KiB with {} consumers ({:.0} B per consumer), peak {} KiB under load ({:.0} B per consumer), {} KiB after\n",
            self.rss_idle_kib, self.rss_connected_kib, self.connected,
            self.per_consumer_connected_bytes, self.rss_peak_kib,
            self.per_consumer_peak_bytes, self.rss_after_kib
        ));
        s.push_str(&format!(
            "CPU s over the window: feed {:.2} ({:.0} % of a core over {:.2} s busy), consumers+sims {:.2}, Prosody {:.2}, component {:.2}\n",
            self.feed_cpu_s, self.feed_cpu_share * 100.0, self.busy_s,
            self.bench_cpu_s, self.server_cpu_s, self.component_cpu_s
        ));
        s.push_str(&format!(
            "watch logins: {}; open-file limit: {}\n",
            self.watch_logins, self.fd_limit
        ));
        s
    }
}

fn setup(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
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

// ---------------------------------------------------------------------------
// The feed child: `pubpresence-lab bench --web-feed-child CONFIG`

/// How the feed child gets its changes.
#[derive(Debug, Clone)]
pub enum FeedSource {
    /// Follows pubpresence with the `[watch]` table of this config (docs/protocol.md, "Client procedure").
    Watch(PathBuf),
    /// Makes the changes itself (`--web-synthetic`).
    Synthetic(Synthetic),
}

/// The feed side: gets its updates from `source`, serves the web feed on a
/// free loopback port, and writes on stdout one JSON line per update
/// (stamped just before it enters the feed), `{"listening": ADDR}` first
/// and the feed's consumer counts every 200 ms. Ends when stdin closes.
pub async fn feed_child(source: FeedSource) -> anyhow::Result<()> {
    let feed = Feed::new(None);
    let bound = feed
        .serve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await?;

    // Lines go out from a thread of their own: writing never delays the feed.
    let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        while let Ok(line) = line_rx.recv() {
            let _ = writeln!(out, "{line}");
            let mut ok = true;
            while let Ok(line) = line_rx.try_recv() {
                ok &= writeln!(out, "{line}").is_ok();
            }
            if !ok || out.flush().is_err() {
                break;
            }
        }
    });
    let _ = line_tx.send(serde_json::json!({ "listening": bound.to_string() }).to_string());

    // `go` on stdin starts the synthetic changes; stop when the benchmark
    // closes our stdin (or goes away).
    let (stop_tx, stop_rx) = wch::channel(false);
    let (go_tx, go_rx) = wch::channel(false);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() == "go" => {
                    let _ = go_tx.send(true);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = stop_tx.send(true);
    });

    let stats_feed = feed.clone();
    let stats_tx = line_tx.clone();
    let stats = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let line = serde_json::json!({
                "consumers": stats_feed.consumers(),
                "cut_off": stats_feed.cut_off(),
            });
            if stats_tx.send(line.to_string()).is_err() {
                break;
            }
        }
    });

    let outcome = match source {
        FeedSource::Watch(config) => follow(&config, &feed, &line_tx, stop_rx).await,
        FeedSource::Synthetic(gen) => {
            gen.run(&feed, &line_tx, go_rx, stop_rx).await;
            Ok(())
        }
    };
    stats.abort();
    drop(line_tx);
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    outcome
}

/// The real source: the reference client (`client::watch::run`).
async fn follow(
    config: &Path,
    feed: &Feed,
    line_tx: &std::sync::mpsc::Sender<String>,
    stop_rx: wch::Receiver<bool>,
) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    // The benchmark's file is the whole truth.
    let no_env = |_: &str| None;
    let settings = cfg.watch(&no_env)?;
    let (tx, mut rx) = mpsc::channel(256);
    let runner = tokio::spawn(watch::run(
        watch::login_options(&settings),
        Target::from_settings(&settings),
        tx,
        stop_rx,
    ));
    // As `web::tee`: every update into the feed, in order; the stamp first.
    while let Some(u) = rx.recv().await {
        let t = now_us();
        feed.update(&u);
        let _ = line_tx.send(stamp_line(&u, t));
    }
    runner.await??;
    Ok(())
}

/// The synthetic source of `--web-synthetic`: `connections` connections in
/// the first snapshot, then, once the benchmark writes `go` on stdin,
/// status changes at `rate` for `duration`, round-robin over the
/// connections, each entering the feed by the same `feed.update` and
/// stamped the same way. No XMPP: the feed's share of the path alone, on a
/// machine whose CPUs do not also carry the server, the component and the
/// simulated users.
#[derive(Debug, Clone)]
pub struct Synthetic {
    pub connections: usize,
    pub rate: f64,
    pub duration: Duration,
}

impl Synthetic {
    /// The statuses a connection goes through, one step per change.
    const CYCLE: [Status; 5] = [
        Status::Away,
        Status::Dnd,
        Status::Xa,
        Status::Chat,
        Status::Online,
    ];

    /// The connections of the first snapshot.
    fn items(&self) -> Vec<UserItem> {
        let since = pubpresence::wire::time::now();
        (0..self.connections)
            .map(|i| {
                let name = format!("load{}@synthetic.test", i / LOAD_RESOURCES + 1);
                UserItem {
                    fulljid: format!("{name}/r{}", i % LOAD_RESOURCES),
                    name,
                    status: Status::Online,
                    ip: format!("127.1.{}.{}", i / 250, i % 250 + 1),
                    since,
                }
            })
            .collect()
    }

    /// The `k`-th change: connection `k mod n` takes its `k / n`-th status
    /// of the cycle. It is event `k + 3` (after the service and the
    /// snapshot).
    fn change(items: &mut [UserItem], k: usize) -> Update {
        let n = items.len();
        let item = &mut items[k % n];
        item.status = Self::CYCLE[(k / n) % Self::CYCLE.len()];
        item.since = pubpresence::wire::time::now();
        Update::Event {
            seq: k as u64 + 3,
            event: WatchEvent::Set(item.clone()),
        }
    }

    async fn run(
        &self,
        feed: &Feed,
        line_tx: &std::sync::mpsc::Sender<String>,
        mut go: wch::Receiver<bool>,
        mut stop: wch::Receiver<bool>,
    ) {
        let apply = |u: &Update| {
            let t = now_us();
            feed.update(u);
            let _ = line_tx.send(stamp_line(u, t));
        };
        // What a watch runner would have said after logging in.
        let mut items = self.items();
        apply(&Update::Connected("watcher@synthetic.test/feed".into()));
        apply(&Update::Event {
            seq: 1,
            event: WatchEvent::Service(ServiceStatus::Online),
        });
        apply(&Update::Event {
            seq: 2,
            event: WatchEvent::Snapshot(items.clone()),
        });
        if items.is_empty() {
            return;
        }
        tokio::select! {
            _ = go.wait_for(|g| *g) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // Change k is due at k / rate after the start: an exact rate, and
        // catching up (not skipping) when this task was late.
        let t0 = tokio::time::Instant::now();
        let mut k = 0usize;
        loop {
            let due = t0 + Duration::from_secs_f64(k as f64 / self.rate);
            if due.duration_since(t0) >= self.duration || *stop.borrow() {
                break;
            }
            tokio::time::sleep_until(due).await;
            apply(&Self::change(&mut items, k));
            k += 1;
        }
        let _ = line_tx.send(serde_json::json!({ "sent": k }).to_string());
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// The stamp line of an update.
fn stamp_line(u: &Update, t: u64) -> String {
    use serde_json::json;
    let v = match u {
        Update::Event {
            event: WatchEvent::Set(i),
            ..
        } => {
            json!({"t": t, "e": "set", "j": i.fulljid, "s": i.status.as_str()})
        }
        Update::Event {
            event: WatchEvent::Remove { fulljid, .. },
            ..
        } => {
            json!({"t": t, "e": "remove", "j": fulljid, "s": ""})
        }
        Update::Event {
            event: WatchEvent::Snapshot(users),
            ..
        } => {
            json!({"t": t, "e": "snapshot", "n": users.len()})
        }
        Update::Event {
            event: WatchEvent::Service(st),
            ..
        } => json!({"t": t, "e": "service", "s": st.as_str()}),
        Update::Connected(jid) => json!({"t": t, "e": "connected", "j": jid}),
        Update::Lost { reason, .. } => json!({"t": t, "e": "lost", "s": reason}),
    };
    v.to_string()
}

/// What the benchmark read from the feed child.
#[derive(Default)]
struct ChildState {
    listening: Option<SocketAddr>,
    synced: bool,
    logins: usize,
    consumers: usize,
    cut_off: usize,
    /// (stamp µs, key) of every set/remove, in the feed's order.
    stamps: Vec<(u64, u64)>,
    last_stamp: Option<Instant>,
    /// Changes the synthetic source made.
    sent: Option<usize>,
}

fn read_child(stdout: tokio::process::ChildStdout, state: Arc<Mutex<ChildState>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let mut st = lock(&state);
            if let Some(a) = v["listening"].as_str() {
                st.listening = a.parse().ok();
            } else if let Some(n) = v["sent"].as_u64() {
                st.sent = Some(n as usize);
            } else if let Some(n) = v["consumers"].as_u64() {
                st.consumers = n as usize;
                st.cut_off = v["cut_off"].as_u64().unwrap_or(0) as usize;
            } else if let (Some(t), Some(e)) = (v["t"].as_u64(), v["e"].as_str()) {
                match e {
                    "set" | "remove" => {
                        let j = v["j"].as_str().unwrap_or("");
                        let s = v["s"].as_str().unwrap_or("");
                        st.stamps
                            .push((t, key(e.as_bytes(), j.as_bytes(), s.as_bytes())));
                        st.last_stamp = Some(Instant::now());
                    }
                    "snapshot" => st.synced = true,
                    "connected" => st.logins += 1,
                    "lost" => st.synced = false,
                    _ => {}
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------
// The consumers

/// What every consumer shares with the benchmark.
struct Shared {
    /// The window's start (µs, CLOCK_REALTIME); 0: not open, nothing counts.
    window_start: AtomicU64,
    /// Consumers that had their first snapshot.
    ready: AtomicUsize,
    /// Per consumer: window events received so far.
    counts: Vec<AtomicUsize>,
    /// Per consumer: its stream ended before it was told to stop.
    ended: Vec<AtomicBool>,
}

/// One delivery: the event's key and when (µs after the window's start).
/// Which occurrence of the key it is follows from the log's order, and is
/// counted after the window: the consumers' CPU during the window is the
/// feed's to have (the consumers share its machine here).
type Rec = (u64, u32);

/// `/events` by hand: chunked transfer coding, then SSE. Both parse where
/// the bytes lie and copy only what a read cut in two: the consumers share
/// the feed's machine, and their CPU is the feed's latency.
#[derive(Default)]
struct Chunked {
    /// A chunk-size line (or the CRLF after a chunk) cut by a read.
    carry: Vec<u8>,
    /// Data bytes left in the current chunk.
    remaining: usize,
    /// A CRLF ends the chunk's data.
    crlf: bool,
    done: bool,
}

impl Chunked {
    /// Hands the payload in `input` to `on_data`, piece by piece.
    fn feed(&mut self, input: &[u8], mut on_data: impl FnMut(&[u8])) -> Result<(), String> {
        let joined;
        let buf: &[u8] = if self.carry.is_empty() {
            input
        } else {
            self.carry.extend_from_slice(input);
            joined = std::mem::take(&mut self.carry);
            &joined
        };
        let mut pos = 0;
        while !self.done {
            let avail = buf.len() - pos;
            if self.remaining > 0 {
                let take = self.remaining.min(avail);
                if take == 0 {
                    break;
                }
                on_data(&buf[pos..pos + take]);
                pos += take;
                self.remaining -= take;
                self.crlf = self.remaining == 0;
            } else if self.crlf {
                if avail < 2 {
                    break;
                }
                if &buf[pos..pos + 2] != b"\r\n" {
                    return Err("chunk not followed by CRLF".into());
                }
                pos += 2;
                self.crlf = false;
            } else {
                let Some(end) = memchr::memmem::find(&buf[pos..], b"\r\n") else {
                    if avail > 1024 {
                        return Err("chunk size line too long".into());
                    }
                    break;
                };
                let line = std::str::from_utf8(&buf[pos..pos + end])
                    .map_err(|_| "chunk size not ASCII".to_string())?;
                let hex = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(hex, 16)
                    .map_err(|_| format!("bad chunk size {line:?}"))?;
                pos += end + 2;
                if size == 0 {
                    self.done = true;
                } else {
                    self.remaining = size;
                }
            }
        }
        if !self.done {
            self.carry.extend_from_slice(&buf[pos..]);
        }
        Ok(())
    }
}

static FULLJID: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"fulljid\":\""));
static STATUS: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"status\":\""));

/// The string value after `pat` (`"field":"`) in a JSON object (no escapes: JIDs
/// and statuses of the simulated users have none).
fn json_str<'a>(data: &'a [u8], pat: &memchr::memmem::Finder<'static>) -> &'a [u8] {
    let Some(at) = pat.find(data) else {
        return b"";
    };
    let rest = &data[at + pat.needle().len()..];
    let end = memchr::memchr(b'"', rest).unwrap_or(rest.len());
    &rest[..end]
}

/// How a consumer's stream ended.
enum Ending {
    Stopped,
    Eof,
}

/// One consumer of `/events`: connects, reads until told to stop, and
/// returns its window deliveries.
async fn consumer(
    addr: SocketAddr,
    index: usize,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
    mut stop: wch::Receiver<bool>,
) -> Vec<Rec> {
    let mut log: Vec<Rec> = Vec::new();
    let r = consume(addr, index, &shared, &gate, &mut stop, &mut log).await;
    match r {
        Ok(Ending::Stopped) => {}
        Ok(Ending::Eof) => {
            shared.ended[index].store(true, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::debug!("consumer {index}: {e}");
            shared.ended[index].store(true, Ordering::Relaxed);
        }
    }
    log
}

async fn consume(
    addr: SocketAddr,
    index: usize,
    shared: &Shared,
    gate: &Semaphore,
    stop: &mut wch::Receiver<bool>,
    log: &mut Vec<Rec>,
) -> Result<Ending, String> {
    let permit = gate.acquire().await.map_err(|e| e.to_string())?;
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    let req = format!(
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("request: {e}"))?;
    // The response head.
    let mut head = Vec::with_capacity(1024);
    let mut rbuf = vec![0u8; READ_BUFFER];
    let body_start = loop {
        let n = s.read(&mut rbuf).await.map_err(|e| format!("head: {e}"))?;
        if n == 0 {
            return Err("closed before the response head".into());
        }
        head.extend_from_slice(&rbuf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if head.len() > 16 * 1024 {
            return Err("response head too long".into());
        }
    };
    drop(permit);
    let text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
    if !text.starts_with("http/1.1 200") {
        return Err(format!(
            "status: {}",
            text.lines().next().unwrap_or_default()
        ));
    }
    let chunked = text.contains("transfer-encoding: chunked");
    let mut dechunk = Chunked::default();
    let mut sse = crate::sse::SseParser::default();
    let mut ready = false;
    // What came with the head, then each read where it lies.
    let first = head[body_start..].to_vec();
    let mut input: &[u8] = &first;
    loop {
        if !input.is_empty() {
            let now = now_us();
            let start = shared.window_start.load(Ordering::Relaxed);
            let mut got = 0usize;
            let mut on_event = |event: &[u8], data: &[u8]| match event {
                b"snapshot" if !ready => {
                    ready = true;
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                }
                b"set" | b"remove" if start > 0 && now >= start => {
                    let status: &[u8] = if event == b"set" {
                        json_str(data, &STATUS)
                    } else {
                        b""
                    };
                    let k = key(event, json_str(data, &FULLJID), status);
                    log.push((k, (now - start).min(u32::MAX as u64) as u32));
                    got += 1;
                }
                _ => {}
            };
            if chunked {
                dechunk.feed(input, |piece| sse.feed(piece, &mut on_event))?;
            } else {
                sse.feed(input, &mut on_event);
            }
            if got > 0 {
                shared.counts[index].fetch_add(got, Ordering::Relaxed);
            }
            if dechunk.done {
                return Ok(Ending::Eof);
            }
        }
        let n = tokio::select! {
            biased;
            _ = stop.changed() => return Ok(Ending::Stopped),
            r = s.read(&mut rbuf) => r.map_err(|e| format!("read: {e}"))?,
        };
        if n == 0 {
            return Ok(Ending::Eof);
        }
        input = &rbuf[..n];
    }
}

// ---------------------------------------------------------------------------
// The run

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
    let prosody =
        super::server::start_prosody(names, opts.tcp_nodelay, opts.memory_storage).await?;
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

const SYNTHETIC_SOURCE: &str =
    "synthetic: made by the feed child at an exact rate (no XMPP, no Prosody, no simulated users)";

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

/// `pubpresence-lab bench --web-feed-child …` running, its stdout read into
/// `state`.
struct FeedChild {
    child: tokio::process::Child,
    pid: u32,
    state: Arc<Mutex<ChildState>>,
    stdin: Option<tokio::process::ChildStdin>,
}

impl FeedChild {
    fn spawn(
        exe: &Path,
        args: &[std::ffi::OsString],
        stderr: Stdio,
    ) -> Result<FeedChild, BenchError> {
        let mut child = tokio::process::Command::new(exe)
            .arg("bench")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| setup(format!("starting the feed child: {e}")))?;
        let pid = child
            .id()
            .ok_or_else(|| setup("the feed child has no pid"))?;
        let state: Arc<Mutex<ChildState>> = Arc::default();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| setup("no stdout of the feed child"))?;
        read_child(stdout, state.clone());
        let stdin = child.stdin.take();
        Ok(FeedChild {
            child,
            pid,
            state,
            stdin,
        })
    }

    /// The child ends when its stdin closes (it unsubscribes first); killed
    /// if it has not after 10 s.
    async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

async fn wait_until(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> bool,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(what.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
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
    let mut o = SimOptions::numbered(
        prosody.c2s_addr().to_string(),
        prosody.domain.clone(),
        prosody.component_jid.clone(),
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

/// Waits for the feed child to listen and to have its first snapshot.
async fn child_ready(
    state: &Arc<Mutex<ChildState>>,
    feed_pid: u32,
) -> Result<SocketAddr, BenchError> {
    wait_until("the feed child listening", Duration::from_secs(20), || {
        lock(state).listening.is_some()
    })
    .await?;
    let addr = lock(state)
        .listening
        .ok_or_else(|| setup("the feed child has no address"))?;
    tracing::info!("feed child (pid {feed_pid}) on http://{addr}/; waiting for it to sync");
    wait_until(
        "the feed child synced (component online)",
        Duration::from_secs(60),
        || lock(state).synced,
    )
    .await?;
    Ok(addr)
}

/// No event entered the feed for `d`.
fn quiet(state: &Mutex<ChildState>, d: Duration) -> bool {
    lock(state).last_stamp.map_or(true, |t| t.elapsed() >= d)
}

/// What makes the changes during the window.
enum Load<'a> {
    /// Simulated users on the lab Prosody.
    Sims {
        ctl: &'a wch::Sender<SimControl>,
        events: &'a Mutex<Vec<SimEvent>>,
    },
    /// The feed child itself (`--web-synthetic`), started by `go` on its stdin.
    Synthetic {
        stdin: &'a mut tokio::process::ChildStdin,
    },
}

impl Load<'_> {
    async fn go(&mut self) -> Result<(), BenchError> {
        match self {
            Load::Sims { ctl, .. } => {
                let _ = ctl.send(SimControl::Run);
                Ok(())
            }
            Load::Synthetic { stdin } => {
                stdin.write_all(b"go\n").await.map_err(setup)?;
                stdin.flush().await.map_err(setup)
            }
        }
    }

    /// The end of the window (the synthetic source ends by itself).
    fn hold(&self) {
        if let Load::Sims { ctl, .. } = self {
            let _ = ctl.send(SimControl::Hold);
        }
    }

    /// Changes made since `start`.
    fn sent(&self, start: Instant, state: &Mutex<ChildState>) -> usize {
        match self {
            Load::Sims { events, .. } => lock(events)
                .iter()
                .filter(|e| matches!(e, SimEvent::Change { at, .. } if *at >= start))
                .count(),
            Load::Synthetic { .. } => lock(state).sent.unwrap_or(0),
        }
    }
}

/// The consumers, the window and its drain, once the feed child is synced
/// and quiet at `addr`, with `conns` connections making changes; stops the
/// consumers it starts. `pids`: the feed
/// child, then Prosody and the component (0: none).
async fn window(
    opts: &WebBenchOptions,
    conns: usize,
    state: &Arc<Mutex<ChildState>>,
    addr: SocketAddr,
    mut load: Load<'_>,
    [feed_pid, server_pid, component_pid]: [u32; 3],
) -> Result<WebReport, BenchError> {
    let n = opts.consumers;
    let (stop_tx, stop_rx) = wch::channel(false);
    let shared = Arc::new(Shared {
        window_start: AtomicU64::new(0),
        ready: AtomicUsize::new(0),
        counts: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        ended: (0..n).map(|_| AtomicBool::new(false)).collect(),
    });
    let mut tasks = Vec::new();

    let result = async {
        let rss_idle_kib = rss_kib(feed_pid).unwrap_or(0);
        // The consumers.
        tracing::info!("connecting {n} consumers to http://{addr}/events");
        let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
        for i in 0..n {
            tasks.push(tokio::spawn(consumer(
                addr,
                i,
                shared.clone(),
                gate.clone(),
                stop_rx.clone(),
            )));
        }
        let limit = Duration::from_secs(30 + n as u64 / 20);
        wait_until("every consumer connected", limit, || {
            shared.ready.load(Ordering::Relaxed)
                + shared
                    .ended
                    .iter()
                    .filter(|e| e.load(Ordering::Relaxed))
                    .count()
                >= n
                && lock(state).consumers >= shared.ready.load(Ordering::Relaxed)
        })
        .await?;
        let connected = shared.ready.load(Ordering::Relaxed);
        if connected < n {
            tracing::warn!("only {connected} of {n} consumers connected");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_connected_kib = rss_kib(feed_pid).unwrap_or(0);
        if !quiet(state, Duration::from_millis(500)) {
            tracing::warn!("events reached the feed before the window opened");
        }

        // The window.
        let pids = [feed_pid, std::process::id(), server_pid, component_pid];
        let cpu0 = pids.map(cpu_seconds);
        let t0 = now_us();
        shared.window_start.store(t0, Ordering::Relaxed);
        let start = Instant::now();
        let peak = Arc::new(AtomicU64::new(rss_connected_kib));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (peak, sampling) = (peak.clone(), sampling.clone());
            tokio::spawn(async move {
                while sampling.load(Ordering::Relaxed) {
                    if let Some(r) = rss_kib(feed_pid) {
                        peak.fetch_max(r, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        tracing::info!("{} changes/s for {:?}", opts.rate, opts.duration);
        load.go().await?;
        tokio::time::sleep(opts.duration).await;
        load.hold();
        let send_window = start.elapsed();
        tracing::info!("load held; waiting for the last events to reach every consumer");

        // The drain: until the feed is quiet and every live consumer has
        // all of it, or no progress for 15 s, or 180 s.
        let window_count =
            |st: &ChildState| st.stamps.len() - st.stamps.partition_point(|(t, _)| *t < t0);
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut last = (usize::MAX, usize::MAX, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (c, is_quiet) = {
                let st = lock(state);
                (
                    window_count(&st),
                    st.last_stamp.map_or(true, |t| t.elapsed() >= QUIET),
                )
            };
            let live = || {
                shared
                    .counts
                    .iter()
                    .zip(&shared.ended)
                    .filter(|(_, e)| !e.load(Ordering::Relaxed))
                    .map(|(c, _)| c.load(Ordering::Relaxed))
            };
            let min = live().min().unwrap_or(c);
            let sum: usize = live().sum();
            if is_quiet && min >= c {
                break;
            }
            if (c, sum) != (last.0, last.1) {
                last = (c, sum, Instant::now());
            } else if last.2.elapsed() > Duration::from_secs(15) {
                tracing::warn!("no progress for 15 s: {c} events, slowest consumer at {min}");
                break;
            }
            if Instant::now() > deadline {
                tracing::warn!("drain cut at 180 s: {c} events, slowest consumer at {min}");
                break;
            }
        }
        let cpu1 = pids.map(cpu_seconds);
        sampling.store(false, Ordering::Relaxed);
        let _ = sampler.await;
        let rss_after_kib = rss_kib(feed_pid).unwrap_or(0);
        let (cut_off, logins, stamps) = {
            let st = lock(state);
            let from = st.stamps.partition_point(|(t, _)| *t < t0);
            (st.cut_off, st.logins, st.stamps[from..].to_vec())
        };
        let sent = load.sent(start, state);
        let cpu = |i: usize| match (cpu0[i], cpu1[i]) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        };
        Ok::<_, BenchError>(Partial {
            connected,
            rss_idle_kib,
            rss_connected_kib,
            rss_peak_kib: peak.load(Ordering::Relaxed),
            rss_after_kib,
            t0,
            send_window,
            sent,
            stamps,
            cut_off,
            logins,
            cpu: [cpu(0), cpu(1), cpu(2), cpu(3)],
        })
    }
    .await;

    // Stop the consumers, collect what they saw, stop the load.
    let _ = stop_tx.send(true);
    let mut logs = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(l) = t.await {
            logs.push(l);
        }
    }
    let p = result?;
    let ended_early = shared
        .ended
        .iter()
        .filter(|e| e.load(Ordering::Relaxed))
        .count();
    Ok(report(opts, conns, p, &logs, ended_early))
}

/// The measured window, before the consumers' logs are matched.
struct Partial {
    connected: usize,
    rss_idle_kib: u64,
    rss_connected_kib: u64,
    rss_peak_kib: u64,
    rss_after_kib: u64,
    t0: u64,
    send_window: Duration,
    sent: usize,
    stamps: Vec<(u64, u64)>,
    cut_off: usize,
    logins: usize,
    /// Feed, this process, Prosody, the component.
    cpu: [f64; 4],
}

fn report(
    opts: &WebBenchOptions,
    conns: usize,
    p: Partial,
    logs: &[Vec<Rec>],
    ended_early: usize,
) -> WebReport {
    // The changes by (key, occurrence), fed at µs after t0.
    let mut occ: HashMap<u64, u32> = HashMap::new();
    let mut index: HashMap<(u64, u32), usize> = HashMap::with_capacity(p.stamps.len());
    let fed: Vec<u64> = p.stamps.iter().map(|(t, _)| t - p.t0).collect();
    for (i, (_, k)) in p.stamps.iter().enumerate() {
        let o = occ.entry(*k).or_insert(0);
        index.insert((*k, *o), i);
        *o += 1;
    }
    let c = p.stamps.len();
    let mut last = vec![0u64; c];
    let mut count = vec![0usize; c];
    let mut any = Vec::with_capacity(logs.iter().map(Vec::len).sum());
    let (mut delivered, mut unmatched) = (0u64, 0u64);
    for log in logs {
        occ.clear();
        for (k, t) in log {
            let o = occ.entry(*k).or_insert(0);
            let at = index.get(&(*k, *o));
            *o += 1;
            match at {
                Some(&i) => {
                    let t = *t as u64;
                    count[i] += 1;
                    last[i] = last[i].max(t);
                    delivered += 1;
                    any.push(t.saturating_sub(fed[i]) as f64 / 1000.0);
                }
                None => unmatched += 1,
            }
        }
    }
    let everyone = p.connected.saturating_sub(ended_early);
    let mut per_change = Vec::with_capacity(c);
    let mut incomplete = 0;
    for i in 0..c {
        if count[i] >= p.connected.max(1) {
            per_change.push(last[i].saturating_sub(fed[i]) as f64 / 1000.0);
        } else {
            incomplete += 1;
            // Still the last of those who got it, when all who stayed did.
            if count[i] >= everyone.max(1) {
                per_change.push(last[i].saturating_sub(fed[i]) as f64 / 1000.0);
            }
        }
    }
    let span = match (fed.first(), fed.last()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e6,
        _ => 0.0,
    };
    let busy_s = last.iter().copied().max().unwrap_or(0) as f64 / 1e6;
    let per = |kib: u64| (kib as f64 - p.rss_idle_kib as f64) * 1024.0 / p.connected.max(1) as f64;
    let send_s = p.send_window.as_secs_f64();
    WebReport {
        mode: if opts.quick { "quick" } else { "full" },
        machine: Machine::probe(),
        storage: if opts.synthetic {
            "none (synthetic source)".to_string()
        } else {
            storage(opts.memory_storage)
        },
        source: if opts.synthetic {
            SYNTHETIC_SOURCE
        } else {
            "simulated users on a lab Prosody, through the component and the watch runner"
        },
        feed_process: "child process (the watch runner + web::Feed, as `pubpresence watch --http`)",
        consumers: opts.consumers,
        connected: p.connected,
        target_rate: opts.rate,
        load_connections: conns,
        send_window_s: send_s,
        sent: p.sent,
        sent_rate: p.sent as f64 / send_s.max(1e-9),
        reached: c,
        reached_span_s: span,
        reached_rate: if span > 0.0 { c as f64 / span } else { 0.0 },
        expected: c as u64 * p.connected as u64,
        delivered,
        unmatched,
        incomplete,
        cut_off: p.cut_off,
        ended_early,
        last_consumer: Latency::of(per_change),
        any_consumer: Latency::of(any),
        rss_idle_kib: p.rss_idle_kib,
        rss_connected_kib: p.rss_connected_kib,
        rss_peak_kib: p.rss_peak_kib,
        rss_after_kib: p.rss_after_kib,
        per_consumer_connected_bytes: per(p.rss_connected_kib),
        per_consumer_peak_bytes: per(p.rss_peak_kib),
        feed_cpu_s: p.cpu[0],
        busy_s,
        feed_cpu_share: if busy_s > 0.0 { p.cpu[0] / busy_s } else { 0.0 },
        bench_cpu_s: p.cpu[1],
        server_cpu_s: p.cpu[2],
        component_cpu_s: p.cpu[3],
        watch_logins: p.logins,
        fd_limit: 0,
    }
}

/// `pubpresence-lab bench --web-consumers N` (or the hidden feed child).
pub async fn main(args: BenchArgs) -> anyhow::Result<()> {
    let child = args.web_feed_child.clone();
    let default = if child.is_some() {
        "warn"
    } else {
        "pubpresence_lab::bench_web=info"
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
    let report = run(o).await?;
    output::print_report(args.json, &report.table(), &report.to_json());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_sse_split_anywhere() {
        let body = b"event: set\ndata: {\"fulljid\":\"a@x/desk\",\"status\":\"away\"}\n\n:\n\nevent: snapshot\ndata: {}\n\n";
        // Two chunks, then the end.
        let mut wire = Vec::new();
        for part in [&body[..30], &body[30..]] {
            wire.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            wire.extend_from_slice(part);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        for cut in [1, 3, 7, 31, 45] {
            let mut ch = Chunked::default();
            let mut sse = crate::sse::SseParser::default();
            let mut seen = Vec::new();
            for piece in wire.chunks(cut) {
                ch.feed(piece, |out| {
                    sse.feed(out, |e, d| {
                        seen.push((
                            String::from_utf8_lossy(e).into_owned(),
                            String::from_utf8_lossy(json_str(d, &STATUS)).into_owned(),
                        ))
                    })
                })
                .unwrap();
            }
            assert!(ch.done, "cut {cut}");
            assert_eq!(
                seen,
                vec![
                    ("set".to_string(), "away".to_string()),
                    ("snapshot".to_string(), String::new())
                ],
                "cut {cut}"
            );
        }
    }

    #[test]
    fn keys_match_across_sides() {
        let data = br#"{"at":"2026-11-24T10:00:05Z","event":"set","fulljid":"load1@localhost/desk","ip":"127.1.0.1","name":"load1@localhost","since":"2026-11-24T10:00:00Z","status":"dnd"}"#;
        assert_eq!(
            key(b"set", json_str(data, &FULLJID), json_str(data, &STATUS)),
            key(b"set", b"load1@localhost/desk", b"dnd")
        );
        let nope = memchr::memmem::Finder::new(b"\"nope\":\"").into_owned();
        assert_eq!(json_str(data, &nope), b"");
        let l = Latency::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((l.samples, l.p50_ms, l.max_ms), (3, 2.0, 3.0));
    }
}
