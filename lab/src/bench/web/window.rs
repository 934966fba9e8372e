//! The measured window: what makes the changes (`Load`), the consumers
//! connected to the feed child, the changes for the window's length, then
//! the drain until every live consumer has them all; the feed's RSS and each
//! process's CPU over it.

use super::consumer::{consumer, Shared};
use super::feed::{quiet, ChildState};
use super::report::{report, Partial, WebReport};
use super::{now_us, wait_until, WebBenchOptions};
use crate::bench::error::{setup, BenchError};
use crate::bench::measure::{cpu_seconds, rss_kib};
use crate::lock;
use crate::sim::{SimControl, SimEvent};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch as wch, Semaphore};

/// Consumers connecting at once.
const CONNECT_CONCURRENCY: usize = 50;
/// No new event for this long after the load stopped: everything queued
/// upstream has reached the client.
const QUIET: Duration = Duration::from_secs(3);

/// What makes the changes during the window.
pub(super) enum Load<'a> {
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
pub(super) async fn window(
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
