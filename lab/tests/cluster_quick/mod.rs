//! What the quick cluster benches share (lab/tests/bench_cluster_*_quick.rs):
//! a run with a handful of sessions, and the figures of a run in which every
//! session answers the component's probes.

use pubpresence_lab::bench::cluster::{self as bench_cluster, ClusterOptions, ClusterReport};
use std::time::Duration;

/// The cluster bench with `n` sessions and a 2-s background window, in
/// roster mode; the caller sets what else differs (`..quick(n)`).
pub fn quick(n: usize) -> ClusterOptions {
    ClusterOptions {
        connections: n,
        background: Duration::from_secs(2),
        roster: true,
        ..ClusterOptions::full(pubpresence_lab::product_binary().expect("the pubpresence binary"))
    }
}

/// Runs the cluster bench with `opts`.
pub async fn run(opts: ClusterOptions) -> ClusterReport {
    bench_cluster::run(opts)
        .await
        .expect("the cluster benchmark runs")
}

/// Every session (`n` and the watcher's) answered: tracked, on active with
/// its address, none `unknown`; nothing changed between the start-ups, so
/// the warm one and the one from the saved copy kept every address from
/// active and asked user-stats for none; only the third took active from
/// the copy; and the restart floor had every listed session's answer.
pub fn every_session_answered(r: &ClusterReport, n: usize) {
    for st in [&r.cold_startup, &r.warm_startup, &r.saved_startup] {
        assert_eq!(st.tracked, n + 1, "{st:?}");
        assert_eq!(st.active_items, n + 1, "{st:?}");
        assert_eq!(st.active_with_ip, n + 1, "{st:?}");
        assert_eq!(st.active_unknown, 0, "every probe answered: {st:?}");
    }
    assert_eq!(r.cold_startup.addresses_kept, 0, "active was empty");
    for st in [&r.warm_startup, &r.saved_startup] {
        assert_eq!(
            st.addresses_kept,
            n + 1,
            "nothing changed while the component was stopped: {st:?}"
        );
    }
    assert!(!r.cold_startup.active_from_copy, "{:?}", r.cold_startup);
    assert!(!r.warm_startup.active_from_copy, "nothing saved yet");
    assert!(r.saved_startup.active_from_copy, "{:?}", r.saved_startup);
    // The restart floor waits for every listed session's answer too (the
    // watcher's and the users'), as the component does on ejabberd.
    assert_eq!(r.restart_floor.sessions, n + 1, "{:?}", r.restart_floor);
    assert_eq!(r.restart_floor.unanswered, Some(0), "{:?}", r.restart_floor);
}
