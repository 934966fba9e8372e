//! `pubpresence-lab bench --ejabberd-cluster` with a handful of sessions (CI):
//! it runs end to end against a real two-node ejabberd and every figure is
//! there. No timing is asserted: the figures are for docs/benchmarks.md.

use pubpresence_lab::bench::cluster::{self as bench_cluster, ClusterOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_bench_reports_every_figure() {
    let n = 50;
    let opts = ClusterOptions {
        connections: n,
        background: Duration::from_secs(5),
        ..ClusterOptions::full(pubpresence_lab::product_binary().expect("the pubpresence binary"))
    };
    let r = bench_cluster::run(opts)
        .await
        .expect("the cluster benchmark runs");

    assert_eq!(r.mode, "ejabberd-cluster");
    assert_eq!(r.connections, n);
    assert_eq!(r.per_node, [25, 25]);
    assert!(r.register_s > 0.0 && r.login_s > 0.0);

    // The three start-ups: online, every session (and the watcher's) on
    // active; only the third from the copy the second's stop saved.
    for st in [&r.cold_startup, &r.warm_startup, &r.saved_startup] {
        assert!(st.seconds > 0.0, "{st:?}");
        assert_eq!(st.tracked, n + 1, "{st:?}");
        assert_eq!(st.active_items, n + 1, "{st:?}");
        assert_eq!(st.active_with_ip, n + 1, "{st:?}");
        assert!(st.rss_kib > 0, "{st:?}");
        assert_eq!(st.cost.node_cpu_s.len(), 2, "{st:?}");
        assert!(
            st.cost.read_bytes > 0.0 && st.cost.written_bytes > 0.0,
            "{st:?}"
        );
    }

    assert!(!r.warm_startup.active_from_copy, "{:?}", r.warm_startup);
    assert!(r.saved_startup.active_from_copy, "{:?}", r.saved_startup);

    // One audit, nothing to fix, its figures and the background's.
    let a = &r.audit;
    assert_eq!(a.checked, n + 1, "{a:?}");
    assert_eq!(a.on_active, n + 1, "{a:?}");
    assert_eq!((a.added, a.probed, a.removed), (0, 0, 0), "{a:?}");
    assert!(a.unplanned_audits.is_empty(), "{a:?}");
    assert!(a.window.window_s > 0.0, "{a:?}");
    // The audit fetched active and the listing: bytes came in.
    assert!(a.window.read_bytes > 0.0, "{a:?}");
    assert_eq!(a.window.node_cpu_s.len(), 2);
    assert_eq!(a.net.node_cpu_s.len(), 2);
    assert!(
        (a.equal_window.window_s - a.window.window_s).abs() < 0.5,
        "{a:?}"
    );
    assert_eq!(a.equal_window.node_cpu_s.len(), 2, "{a:?}");
    assert!((a.background.window_s - 5.0).abs() < 1.0, "{a:?}");
    assert!(a.background.read_bytes > 0.0, "session checks: {a:?}");
    assert!((a.without_component.window_s - 5.0).abs() < 1.0, "{a:?}");
    assert_eq!(a.without_component.read_bytes, 0.0, "no component: {a:?}");
    assert_eq!(a.per_session_check.window_s, 5.0, "{a:?}");
    assert_eq!(a.per_session_check.node_cpu_s.len(), 2, "{a:?}");
    assert!((a.background_same_length.window_s - a.window.window_s).abs() < 1e-9);

    // The floors: every item published again, every session listed, active
    // read whole.
    let (pf, rf) = (&r.publish_floor, &r.restart_floor);
    assert_eq!(pf.items, n + 1, "{pf:?}");
    assert!(pf.pairs_s > 0.0 && pf.single_s > 0.0, "{pf:?}");
    assert_eq!(rf.sessions, n + 1, "{rf:?}");
    assert_eq!(rf.users, n + 1, "{rf:?}");
    assert_eq!(rf.active_items, n + 1, "{rf:?}");
    assert!(rf.seconds >= rf.handshake_s && rf.seconds > 0.0, "{rf:?}");
    assert_eq!(rf.addresses_s, None, "{rf:?}");
    let ra = &r.restart_floor_with_addresses;
    assert_eq!((ra.sessions, ra.users), (n + 1, n + 1), "{ra:?}");
    assert!(ra.addresses_s.is_some_and(|s| s > 0.0), "{ra:?}");
    let j = r.to_json();
    for path in [
        "/publish_floor/pairs_s",
        "/restart_floor/seconds",
        "/restart_floor_with_addresses/addresses_s",
        "/cold_startup/seconds",
        "/warm_startup/seconds",
        "/saved_startup/seconds",
        "/audit/window/component_cpu_s",
        "/audit/window/node_cpu_s/1",
        "/audit/window/read_bytes",
        "/audit/net/written_bytes",
        "/audit/equal_window/read_bytes",
        "/audit/background/component_cpu_s",
        "/audit/per_session_check/read_bytes",
        "/audit/without_component/node_cpu_s/0",
    ] {
        assert!(
            j.pointer(path).and_then(|v| v.as_f64()).is_some(),
            "{path}: {j}"
        );
    }
    let table = r.table();
    assert!(table.contains("audit, net of the equal window"), "{table}");
    assert!(table.contains("cold start-up / its floor: "), "{table}");
    assert!(table.contains("warm start-up / its floor: "), "{table}");
    assert!(table.contains("warm start-up / that floor: "), "{table}");
    assert!(
        table.contains("start-up from the saved copy / the restart floor: "),
        "{table}"
    );
    assert!(
        table.contains("active taken from the copy saved in state_dir"),
        "{table}"
    );
}
