//! What the cluster bench reports: what a window cost (`Cost`), the two
//! start-ups and the audit with the windows around it, as a table and as
//! JSON.

use super::probe::Sample;
use crate::bench::floors::{PublishFloor, RestartFloor, ANSWERS_WAIT};
use crate::bench::measure::Machine;

/// What one window cost. Bytes are `f64` because the background is scaled.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Cost {
    pub window_s: f64,
    pub component_cpu_s: f64,
    /// One per ejabberd node, node 0 first: its Erlang VM (beam.smp), all
    /// threads.
    pub node_cpu_s: Vec<f64>,
    /// Payload bytes the component received from the nodes (TCP_INFO).
    pub read_bytes: f64,
    /// Payload bytes the component sent to the nodes (TCP_INFO).
    pub written_bytes: f64,
    /// The benchmark process itself (the client sessions, the watcher).
    pub clients_cpu_s: f64,
}

impl Cost {
    pub(super) fn between(a: &Sample, b: &Sample) -> Cost {
        let d = |x: f64, y: f64| (y - x).max(0.0);
        Cost {
            window_s: b.at.saturating_duration_since(a.at).as_secs_f64(),
            component_cpu_s: d(a.component_cpu, b.component_cpu),
            node_cpu_s: a
                .nodes_cpu
                .iter()
                .zip(&b.nodes_cpu)
                .map(|(x, y)| d(*x, *y))
                .collect(),
            read_bytes: d(a.received as f64, b.received as f64),
            written_bytes: d(a.sent as f64, b.sent as f64),
            clients_cpu_s: d(a.clients_cpu, b.clients_cpu),
        }
    }

    /// The same rates over `window_s`.
    pub(super) fn scaled_to(&self, window_s: f64) -> Cost {
        let f = if self.window_s > 0.0 {
            window_s / self.window_s
        } else {
            0.0
        };
        Cost {
            window_s,
            component_cpu_s: self.component_cpu_s * f,
            node_cpu_s: self.node_cpu_s.iter().map(|c| c * f).collect(),
            read_bytes: self.read_bytes * f,
            written_bytes: self.written_bytes * f,
            clients_cpu_s: self.clients_cpu_s * f,
        }
    }

    /// `self - other`, figure by figure (may be negative: noise).
    pub(super) fn minus(&self, other: &Cost) -> Cost {
        Cost {
            window_s: self.window_s,
            component_cpu_s: self.component_cpu_s - other.component_cpu_s,
            node_cpu_s: self
                .node_cpu_s
                .iter()
                .zip(&other.node_cpu_s)
                .map(|(a, b)| a - b)
                .collect(),
            read_bytes: self.read_bytes - other.read_bytes,
            written_bytes: self.written_bytes - other.written_bytes,
            clients_cpu_s: self.clients_cpu_s - other.clients_cpu_s,
        }
    }

    pub fn nodes_cpu_s(&self) -> f64 {
        self.node_cpu_s.iter().sum()
    }
}

/// One start-up of the component.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Startup {
    /// From the spawn to `online` (its log line).
    pub seconds: f64,
    /// Over the same time.
    pub cost: Cost,
    /// `connections` of the online log line.
    pub tracked: usize,
    /// Items of `presence/active` once online.
    pub active_items: usize,
    /// Of those, items with an IP address.
    pub active_with_ip: usize,
    /// Of those, items with status `unknown` (sessions that sent no
    /// presence since the component started: ejabberd replays none).
    pub active_unknown: usize,
    /// The component's VmRSS once online.
    pub rss_kib: u64,
    /// Warnings the component logged before `online` (with 10,000
    /// sessions: publishes the server did not answer within `iq_timeout`).
    pub warnings: usize,
    /// Of those, publishes unanswered within `iq_timeout` ("no answer
    /// within"), which the component takes as done.
    pub unanswered_publishes: usize,
    /// Sessions whose address was kept from active, not asked with
    /// user-stats (after a clean stop, presence unchanged since before it).
    pub addresses_kept: usize,
    /// Active came from the copy the last clean stop saved in `state_dir`
    /// (its log line), not fetched.
    pub active_from_copy: bool,
}

/// One audit and the background next to it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Audit {
    pub audit_interval_s: u64,
    /// The audit's log line.
    pub line: String,
    pub checked: usize,
    pub on_active: usize,
    pub added: usize,
    pub probed: usize,
    pub removed: usize,
    /// From when it was due (T after the spawn) to its log line.
    pub seconds_after_due: f64,
    /// From `PRE_AUDIT` before it was due to its log line.
    pub window: Cost,
    /// A window as long as `window`, a whole number of session-check
    /// periods (5 s) later, without an audit: the same phase of the 5-s
    /// session checks, so it holds one of them exactly when `window` does.
    pub equal_window: Cost,
    /// `window - equal_window`: the audit's own cost.
    pub net: Cost,
    /// Whether a session check (its listing) fell inside both windows: more
    /// than half a check's bytes read in `equal_window`.
    pub check_in_window: bool,
    /// A window of `background` without an audit (2 s after the equal one).
    pub background: Cost,
    /// `background` scaled to the audit window's length (a cross-check of
    /// `equal_window`, smoothing the 5-s checks).
    pub background_same_length: Cost,
    /// The same sessions with the component stopped, a window as long as
    /// `background` (the nodes' own background: the clients' keepalive
    /// pings, Mnesia).
    pub without_component: Cost,
    /// `background - without_component`, per 5-s session check: what the
    /// component's checks cost (all of the component's background is them).
    pub per_session_check: Cost,
    /// Audits logged outside the measured window (none expected).
    pub unplanned_audits: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterReport {
    pub mode: &'static str,
    pub machine: Machine,
    pub server: String,
    pub connections: usize,
    /// Sessions on node 0 and node 1.
    pub per_node: Vec<usize>,
    /// In-band registration of the accounts.
    pub register_s: f64,
    /// Logging in every session (both nodes at once).
    pub login_s: f64,
    /// Active empty, audits off.
    pub cold_startup: Startup,
    /// With mod_pubsub in SQL: the items in its store after the cold
    /// start-up (active's, and status's one).
    pub sql_items: Option<usize>,
    /// Restart with active full (fetched).
    pub warm_startup: Startup,
    /// The next restart, with the copy of active the warm one's clean stop
    /// saved in `state_dir` (README, "Fast restarts: `state_dir`").
    pub saved_startup: Startup,
    /// The cold start-up's floor: the same items published by a plain
    /// client, as many in flight.
    pub publish_floor: PublishFloor,
    /// The warm start-up's floor: connect as the component, list, probe,
    /// fetch active.
    pub restart_floor: RestartFloor,
    /// The same, also asking every user's addresses (user-stats), which
    /// ejabberd's listing does not state.
    pub restart_floor_with_addresses: RestartFloor,
    pub audit: Audit,
}

/// What the restart floor's probe step waited for besides the round trip.
fn answers_of(rf: &RestartFloor) -> String {
    match rf.unanswered {
        None => String::new(),
        Some(0) => " and every listed session's answer".into(),
        Some(n) => format!(
            " and the listed sessions' answers ({n} missing after {} s)",
            ANSWERS_WAIT.as_secs()
        ),
    }
}

/// `a / b`, 0 when `b` is 0.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

impl ClusterReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    pub fn table(&self) -> String {
        let m = &self.machine;
        let a = &self.audit;
        let mut s = format!(
            "pubpresence bench --ejabberd-cluster on {} CPUs, {}\nserver: {}\n\
             {} sessions ({} on node 0, {} on node 1), each from its own loopback address\n\
             setup: {:.1} s to register the accounts, {:.1} s to log the sessions in\n\n",
            m.nproc,
            m.model,
            self.server,
            self.connections,
            self.per_node.first().copied().unwrap_or(0),
            self.per_node.get(1).copied().unwrap_or(0),
            self.register_s,
            self.login_s,
        );
        s.push_str(
            "                                   window s  comp CPU s  node0 CPU s  node1 CPU s  comp read kB  comp written kB\n",
        );
        let row = |s: &mut String, name: &str, c: &Cost| {
            s.push_str(&format!(
                "{name:<34} {:>8.2}  {:>10.3}  {:>11.3}  {:>11.3}  {:>12.1}  {:>15.1}\n",
                c.window_s,
                c.component_cpu_s,
                c.node_cpu_s.first().copied().unwrap_or(0.0),
                c.node_cpu_s.get(1).copied().unwrap_or(0.0),
                c.read_bytes / 1000.0,
                c.written_bytes / 1000.0,
            ));
        };
        row(
            &mut s,
            "cold start-up (active empty)",
            &self.cold_startup.cost,
        );
        row(
            &mut s,
            "warm start-up (active full)",
            &self.warm_startup.cost,
        );
        row(
            &mut s,
            "start-up from the saved copy",
            &self.saved_startup.cost,
        );
        row(&mut s, "audit window", &a.window);
        row(&mut s, "equal window, no audit", &a.equal_window);
        row(&mut s, "audit, net of the equal window", &a.net);
        row(&mut s, "background window (no audit)", &a.background);
        row(
            &mut s,
            "  scaled to the audit window",
            &a.background_same_length,
        );
        row(
            &mut s,
            "same sessions, component stopped",
            &a.without_component,
        );
        row(
            &mut s,
            "per 5-s session check (difference)",
            &a.per_session_check,
        );
        for (name, st) in [
            ("cold", &self.cold_startup),
            ("warm", &self.warm_startup),
            ("saved-copy", &self.saved_startup),
        ] {
            let active = if st.active_from_copy {
                "taken from the copy saved in state_dir"
            } else {
                "fetched"
            };
            s.push_str(&format!(
                "\n{name} start-up to online: {:.2} s; tracked {}; active {active}, holds {} items ({} with an IP, {} `unknown`); {} addresses kept from active (not asked); component RSS {} KiB; {} warnings logged ({} publishes unanswered within iq_timeout)",
                st.seconds, st.tracked, st.active_items, st.active_with_ip, st.active_unknown, st.addresses_kept, st.rss_kib, st.warnings, st.unanswered_publishes
            ));
        }
        if let Some(rows) = self.sql_items {
            s.push_str(&format!(
                "\nmod_pubsub's SQL store after the cold start-up: {rows} items"
            ));
        }
        let (pf, rf, ra) = (
            &self.publish_floor,
            &self.restart_floor,
            &self.restart_floor_with_addresses,
        );
        s.push_str(&format!(
            "\n\nstart-up floor: a plain client on node 0 publishes the {} items to an active-like node, then (confirmed) to a live-like one, {} in flight: {:.2} s (node 0 CPU {:.2} s); once each to one node: {:.2} s\n\
             cold start-up / its floor: {:.2}x\n\
             restart floor: connect as the component (handshake {:.2} s), list ({:.2} s, {} sessions), probe {} users with a round trip behind{} ({:.2} s), fetch active beside them ({:.2} s, {} items): {:.2} s (node 0 CPU {:.2} s)\n\
             warm start-up / its floor: {:.2}x\n\
             restart floor with every user's addresses (user-stats, {} in flight, beside the probes: {:.2} s): {:.2} s (node 0 CPU {:.2} s)\n\
             warm start-up / that floor: {:.2}x\n\
             start-up from the saved copy / the restart floor: {:.2}x",
            pf.items,
            pf.in_flight,
            pf.pairs_s,
            pf.pairs_server_cpu_s,
            pf.single_s,
            ratio(self.cold_startup.seconds, pf.pairs_s),
            rf.handshake_s,
            rf.listing_s,
            rf.sessions,
            rf.users,
            answers_of(rf),
            rf.probes_s,
            rf.active_s,
            rf.active_items,
            rf.seconds,
            rf.server_cpu_s,
            ratio(self.warm_startup.seconds, rf.seconds),
            pf.in_flight,
            ra.addresses_s.unwrap_or(0.0),
            ra.seconds,
            ra.server_cpu_s,
            ratio(self.warm_startup.seconds, ra.seconds),
            ratio(self.saved_startup.seconds, rf.seconds),
        ));
        s.push_str(&format!(
            "\naudit (audit_interval = {} s): {:.2} s from due to its log line: {}\n",
            a.audit_interval_s, a.seconds_after_due, a.line
        ));
        if a.check_in_window {
            s.push_str(
                "a 5-s session check fell inside the audit window (and so inside the equal one)\n",
            );
        }
        if !a.unplanned_audits.is_empty() {
            s.push_str(&format!(
                "WARNING: audits outside the window: {:?}\n",
                a.unplanned_audits
            ));
        }
        s.push_str(
            "(bytes: TCP payload of the component's connections to both nodes, from TCP_INFO (ss -tin); CPU: utime+stime from /proc/PID/stat)\n",
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restart_floor_says_what_its_probes_waited_for() {
        let mut rf = RestartFloor::default();
        assert_eq!(answers_of(&rf), "", "the round trip only");
        rf.unanswered = Some(0);
        assert_eq!(answers_of(&rf), " and every listed session's answer");
        rf.unanswered = Some(3);
        assert_eq!(
            answers_of(&rf),
            " and the listed sessions' answers (3 missing after 10 s)"
        );
    }

    #[test]
    fn background_is_scaled_and_subtracted() {
        let bg = Cost {
            window_s: 30.0,
            component_cpu_s: 0.6,
            node_cpu_s: vec![3.0, 1.5],
            read_bytes: 6000.0,
            written_bytes: 600.0,
            clients_cpu_s: 0.3,
        };
        let same = bg.scaled_to(2.0);
        assert!((same.component_cpu_s - 0.04).abs() < 1e-9);
        assert!((same.node_cpu_s[0] - 0.2).abs() < 1e-9);
        assert!((same.read_bytes - 400.0).abs() < 1e-9);
        let window = Cost {
            window_s: 2.0,
            component_cpu_s: 0.5,
            node_cpu_s: vec![1.0, 0.3],
            read_bytes: 3400.0,
            written_bytes: 140.0,
            clients_cpu_s: 0.02,
        };
        let net = window.minus(&same);
        assert!((net.component_cpu_s - 0.46).abs() < 1e-9);
        assert!((net.node_cpu_s[1] - 0.2).abs() < 1e-9);
        assert!((net.read_bytes - 3000.0).abs() < 1e-9);
        assert!((net.written_bytes - 100.0).abs() < 1e-9);
        assert!((net.nodes_cpu_s() - 1.0).abs() < 1e-9);
    }
}
