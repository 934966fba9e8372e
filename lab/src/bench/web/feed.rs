//! The feed child, `pubpresence-lab bench --web-feed-child CONFIG` (hidden),
//! from both ends: what runs in it (`feed_child`: the watch runner or the
//! synthetic source feeding a `Feed`, each update stamped on stdout just
//! before it enters the feed) and the benchmark's handle on it (`FeedChild`:
//! its lines read into `ChildState`). The lines are written and read here.

use super::{key, now_us, wait_until, LOAD_RESOURCES};
use crate::bench::error::{setup, BenchError};
use crate::lock;
use pubpresence::client::follow::WatchEvent;
use pubpresence::client::watch::{self, Target, Update};
use pubpresence::client::web::Feed;
use pubpresence::config::Config;
use pubpresence::wire::status::ServiceStatus;
use pubpresence::wire::user::{Status, UserItem};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch as wch};

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
pub(super) struct ChildState {
    listening: Option<SocketAddr>,
    synced: bool,
    pub(super) logins: usize,
    pub(super) consumers: usize,
    pub(super) cut_off: usize,
    /// (stamp µs, key) of every set/remove, in the feed's order.
    pub(super) stamps: Vec<(u64, u64)>,
    pub(super) last_stamp: Option<Instant>,
    /// Changes the synthetic source made.
    pub(super) sent: Option<usize>,
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

/// `pubpresence-lab bench --web-feed-child …` running, its stdout read into
/// `state`.
pub(super) struct FeedChild {
    child: tokio::process::Child,
    pub(super) pid: u32,
    pub(super) state: Arc<Mutex<ChildState>>,
    pub(super) stdin: Option<tokio::process::ChildStdin>,
}

impl FeedChild {
    pub(super) fn spawn(
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
    pub(super) async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Waits for the feed child to listen and to have its first snapshot.
pub(super) async fn child_ready(
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
pub(super) fn quiet(state: &Mutex<ChildState>, d: Duration) -> bool {
    lock(state).last_stamp.map_or(true, |t| t.elapsed() >= d)
}
