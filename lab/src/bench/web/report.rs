//! What the web feed benchmark reports (`WebReport`), as a table and as
//! JSON, and how a window's figures come out: each consumer's deliveries
//! matched to the feed child's stamps (`report`).

use super::consumer::Rec;
use super::WebBenchOptions;
use crate::bench::measure::{storage, Latency, Machine};
use std::collections::HashMap;
use std::time::Duration;

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

pub(super) const SYNTHETIC_SOURCE: &str =
    "synthetic: made by the feed child at an exact rate (no XMPP, no Prosody, no simulated users)";

/// The measured window, before the consumers' logs are matched.
pub(super) struct Partial {
    pub(super) connected: usize,
    pub(super) rss_idle_kib: u64,
    pub(super) rss_connected_kib: u64,
    pub(super) rss_peak_kib: u64,
    pub(super) rss_after_kib: u64,
    pub(super) t0: u64,
    pub(super) send_window: Duration,
    pub(super) sent: usize,
    pub(super) stamps: Vec<(u64, u64)>,
    pub(super) cut_off: usize,
    pub(super) logins: usize,
    /// Feed, this process, Prosody, the component.
    pub(super) cpu: [f64; 4],
}

pub(super) fn report(
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
