//! `pubpresence-lab bench --web-resume N`: what N consumers of `/events`
//! reconnecting at once cost the web feed, resuming with their last id
//! (docs/protocol.md, "Resuming a stream") against starting over with the
//! state, as before ids existed.
//!
//! The feed is the library's [`Feed`], served from a runtime on a thread of
//! its own, so that the CPU time of that thread is the feed's whole cost
//! (accepting, HTTP, the replay or the snapshot, the writes); the consumers
//! run on the benchmark's runtime. The state is synthetic (`--connections`
//! users, default 10,000, no server), since what is measured is the feed:
//! the N consumers were at event 2 (the snapshot), `--missed` events came
//! while they were away, and then all N connect at the same moment, first
//! with `Last-Event-ID` (each gets the events it missed), then without
//! (each gets the service and the snapshot). A consumer is done when it
//! holds the last event: the frame whose id is the feed's last, complete.

use super::args::BenchArgs;
use super::measure::Machine;
use super::output;
use pubpresence::client::follow::WatchEvent;
use pubpresence::client::watch::Update;
use pubpresence::client::web::Feed;
use pubpresence::wire::status::ServiceStatus;
use pubpresence::wire::time;
use pubpresence::wire::user::{Status, UserItem};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A consumer's read buffer.
const READ_BUFFER: usize = 16 * 1024;
/// The longest a phase may take before the benchmark gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

/// One way of reconnecting, measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Phase {
    pub mode: &'static str,
    /// Consumers that got to the last event.
    pub done: usize,
    /// From the first connect to the last consumer done.
    pub wall_s: f64,
    /// Bytes the consumers read, all together.
    pub bytes: u64,
    /// CPU seconds of the feed's thread over the phase.
    pub feed_cpu_s: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ResumeReport {
    pub machine: Machine,
    pub consumers: usize,
    pub users: usize,
    pub missed: usize,
    pub resume: Phase,
    pub snapshot: Phase,
}

impl ResumeReport {
    pub fn table(&self) -> String {
        let m = &self.machine;
        let mut s = format!(
            "pubpresence bench --web-resume on {} CPUs, {}\n{} consumers reconnecting at once; \
             state of {} users (synthetic, no server); {} events missed\n\n",
            m.nproc, m.model, self.consumers, self.users, self.missed
        );
        s.push_str(&format!(
            "{:<34} {:>8} {:>10} {:>14} {:>12}\n",
            "", "done", "wall s", "bytes read", "feed CPU s"
        ));
        for p in [&self.resume, &self.snapshot] {
            s.push_str(&format!(
                "{:<34} {:>8} {:>10.3} {:>14} {:>12.3}\n",
                p.mode, p.done, p.wall_s, p.bytes, p.feed_cpu_s
            ));
        }
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        s.push_str(&format!(
            "\nresume / snapshot: bytes {:.4}, wall {:.3}, feed CPU {:.3}\n",
            ratio(self.resume.bytes as f64, self.snapshot.bytes as f64),
            ratio(self.resume.wall_s, self.snapshot.wall_s),
            ratio(self.resume.feed_cpu_s, self.snapshot.feed_cpu_s),
        ));
        s
    }
}

fn user(i: usize, k: usize) -> UserItem {
    UserItem {
        fulljid: format!("user{i}@bench.test/r{}", i % 3),
        name: format!("user{i}@bench.test"),
        status: [Status::Online, Status::Away, Status::Dnd][k % 3],
        ip: format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256),
        since: time::now(),
    }
}

/// CPU seconds of thread `tid` of this process.
fn thread_cpu_s(tid: &str) -> f64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Serves `feed` from a runtime on a thread of its own; returns its address
/// and the thread's id (for its CPU time).
fn serve_on_own_thread(feed: Feed) -> anyhow::Result<(SocketAddr, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("feed".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::anyhow!("feed runtime: {e}")));
                    return;
                }
            };
            let tid = std::fs::read_link("/proc/thread-self")
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            rt.block_on(async move {
                match feed.serve("127.0.0.1:0".parse().expect("loopback")).await {
                    Ok(addr) => {
                        let _ = tx.send(Ok((addr, tid)));
                        std::future::pending::<()>().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::anyhow!("web feed: cannot listen: {e}")));
                    }
                }
            });
        })?;
    rx.recv()?
}

/// Reads `/events` until the frame with id `last` is complete (`count`
/// of them: 1 when resuming, 2 for the service and the snapshot); returns
/// the bytes read.
async fn consume(
    addr: SocketAddr,
    last_event_id: Option<String>,
    last: String,
    count: usize,
) -> anyhow::Result<u64> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let header = last_event_id
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .unwrap_or_default();
    s.write_all(format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n{header}\r\n").as_bytes())
        .await?;
    let marker = format!("id: {last}\n").into_bytes();
    let mut buf = vec![0u8; READ_BUFFER];
    // The last bytes of the previous read, so that a marker split across
    // two reads is still seen.
    let mut carry: Vec<u8> = Vec::new();
    let (mut seen, mut bytes) = (0usize, 0u64);
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            anyhow::bail!("the feed closed the stream after {bytes} bytes");
        }
        bytes += n as u64;
        let mut scan = std::mem::take(&mut carry);
        let old = scan.len();
        scan.extend_from_slice(&buf[..n]);
        let mut from = 0;
        while seen < count {
            match find(&scan[from..], &marker) {
                // Counted only if it ends in the new bytes (not seen before).
                Some(p) if from + p + marker.len() > old => {
                    seen += 1;
                    from += p + marker.len();
                }
                Some(p) => from += p + 1,
                None => break,
            }
        }
        if seen == count && find(&scan[from..], b"\n\n").is_some() {
            return Ok(bytes);
        }
        let keep = if seen == count { 1 } else { marker.len() };
        carry = scan[scan.len().saturating_sub(keep).max(from.min(scan.len()))..].to_vec();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

async fn phase(
    mode: &'static str,
    addr: SocketAddr,
    tid: &str,
    consumers: usize,
    ask: Option<String>,
    last: &str,
    count: usize,
) -> Phase {
    let cpu0 = thread_cpu_s(tid);
    let t = Instant::now();
    let tasks: Vec<_> = (0..consumers)
        .map(|_| tokio::spawn(consume(addr, ask.clone(), last.to_string(), count)))
        .collect();
    let (mut done, mut bytes) = (0, 0);
    for task in tasks {
        match tokio::time::timeout(PHASE_LIMIT, task).await {
            Ok(Ok(Ok(b))) => {
                done += 1;
                bytes += b;
            }
            Ok(Ok(Err(e))) => tracing::warn!("a consumer failed: {e}"),
            Ok(Err(e)) => tracing::warn!("a consumer task failed: {e}"),
            Err(_) => tracing::warn!("a consumer was not done within {PHASE_LIMIT:?}"),
        }
    }
    Phase {
        mode,
        done,
        wall_s: t.elapsed().as_secs_f64(),
        bytes,
        feed_cpu_s: thread_cpu_s(tid) - cpu0,
    }
}

/// Runs both phases.
pub async fn run(consumers: usize, users: usize, missed: usize) -> anyhow::Result<ResumeReport> {
    let feed = Feed::new(None);
    let (addr, tid) = serve_on_own_thread(feed.clone())?;
    feed.update(&Update::Event {
        seq: 1,
        event: WatchEvent::Service(ServiceStatus::Online),
    });
    feed.update(&Update::Event {
        seq: 2,
        event: WatchEvent::Snapshot((0..users).map(|i| user(i, 0)).collect()),
    });
    let epoch = feed.epoch();
    for k in 0..missed {
        feed.update(&Update::Event {
            seq: k as u64 + 3,
            event: WatchEvent::Set(user(k % users.max(1), k / users.max(1) + 1)),
        });
    }
    let last = format!("{epoch}-{}", missed as u64 + 2);
    eprintln!(
        "pubpresence bench --web-resume: {consumers} consumers, {users} users, {missed} missed"
    );
    let resume = phase(
        "resume (Last-Event-ID)",
        addr,
        &tid,
        consumers,
        Some(format!("{epoch}-2")),
        &last,
        1,
    )
    .await;
    let snapshot = phase(
        "start over (service + snapshot)",
        addr,
        &tid,
        consumers,
        None,
        &last,
        2,
    )
    .await;
    Ok(ResumeReport {
        machine: Machine::probe(),
        consumers,
        users,
        missed,
        resume,
        snapshot,
    })
}

pub async fn main(args: BenchArgs) -> anyhow::Result<()> {
    output::init_logging("pubpresence_lab::bench=info");
    let consumers = args.web_resume.unwrap_or(1000);
    let users = args
        .connections
        .unwrap_or(if args.quick { 100 } else { 10_000 });
    let missed = args.missed.unwrap_or(100);
    let report = output::unless_stopped(run(consumers, users, missed)).await?;
    let json = serde_json::to_value(&report).unwrap_or(serde_json::Value::Null);
    output::print_report(args.json, &report.table(), &json);
    Ok(())
}
