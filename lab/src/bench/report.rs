//! What the Prosody bench (`prosody`) reports: the start-ups, the memory and
//! the sweep of rates with its knee, as a table and as JSON.

use super::floors::{PublishFloor, RestartFloor};
use super::measure::{Latency, Machine};

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
    /// Takes the mirror pass's figures as this rate's knee floor.
    pub(super) fn with_mirror(mut self, m: MirrorPoint) -> RatePoint {
        self.p99_over_mirror = if m.latency.p99_ms > 0.0 {
            self.latency.p99_ms / m.latency.p99_ms
        } else {
            0.0
        };
        self.mirror = Some(m);
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
    /// How the component gets presence: "roster subscriptions" or XEP-0356.
    pub presence: &'static str,
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
            "pubpresence bench ({} mode) on {} CPUs, {}\nserver: {}; presence: {}; component: {}\n\n",
            self.mode, m.nproc, m.model, self.storage, self.presence, self.component_process
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
        if st.cold_seconds == 0.0 {
            s.push_str("start-up, active empty: not measured (--restarts-only)\n");
        } else {
            s.push_str(&format!(
            "start-up, active empty, to online: {:.3} s (server CPU {:.2} s)\n  \
             floor ({} items on an active-like then a live-like node, {} in flight): {:.3} s (server CPU {:.2} s) -> {:.2}x (one node only: {:.3} s)\n",
            st.cold_seconds, st.cold_server_cpu_s, pf.items, pf.in_flight, pf.pairs_s, pf.pairs_server_cpu_s, st.cold_over_floor, pf.single_s,
        ));
        }
        let mem = &self.memory;
        s.push_str(&format!(
            "component RSS: {} KiB idle, {} KiB with {} sessions tracked ({:.0} B per connection), {} KiB after the restart\n\n",
            mem.idle_kib, mem.loaded_kib, mem.connections, mem.per_connection_bytes, mem.restarted_kib
        ));
        if self.rates.is_empty() {
            s.push_str("no rate phases (--restarts-only)\n");
        } else {
            self.rates_table(&mut s);
        }
        s.push_str(&format!("(all figures: {})\n", self.storage));
        s
    }

    /// The rate phases, their mirror and the knee.
    fn rates_table(&self, s: &mut String) {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lat(p99_ms: f64) -> Latency {
        Latency {
            samples: 1,
            p50_ms: 1.0,
            p99_ms,
            max_ms: p99_ms,
        }
    }

    fn point(sent: f64, p99: f64, floor_p99: f64) -> RatePoint {
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
        let m = MirrorPoint {
            achieved_rate: sent,
            changes: 1,
            latency: lat(mirror_p99),
            cpu_window_s: 1.0,
            server_cpu_s: 1.0,
        };
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
