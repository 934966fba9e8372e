//! The benchmark's quick mode (CI): it runs end to end against a real
//! Prosody and its report is sane. No timing threshold is asserted: the
//! figures are for docs/benchmarks.md, not for a pass/fail on a noisy CI.

use pubpresence_lab::bench::{self, BenchOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quick_bench_reports_sane_figures() {
    let opts = BenchOptions {
        component_bin: Some(pubpresence_lab::product_binary().expect("the pubpresence binary")),
        ..BenchOptions::quick()
    };
    let rates = opts.rates.clone();
    let n = opts.connections;
    let report = bench::run(opts).await.expect("the quick benchmark runs");

    assert_eq!(report.mode, "quick");
    assert!(report.machine.nproc >= 1);
    assert!(report.storage.contains("sql"), "{}", report.storage);
    assert_eq!(report.connections, n);

    // Start-up with the sessions connected: online, and active holds them.
    assert!(report.startup.seconds > 0.0);
    assert!(report.startup.idle_seconds > 0.0);
    assert_eq!(report.startup.sessions, n);
    assert!(
        report.startup.active_items >= n,
        "active after the restart: {} items, {n} sessions connected",
        report.startup.active_items
    );

    // The restart floor asked the same questions of the same server: every
    // session listed, every user probed, every item of active read.
    let st = &report.startup;
    let rf = &st.restart_floor;
    assert_eq!(
        rf.sessions,
        n + 2,
        "the n sessions, the watcher and admin: {rf:?}"
    );
    assert_eq!(rf.active_items, st.active_items, "{rf:?}");
    assert!(rf.users >= n / 10 && rf.seconds > 0.0, "{rf:?}");
    assert!(st.restart_over_floor > 0.0);
    assert!(
        st.phases.contains("listing")
            && st.phases.contains("probes")
            && st.phases.contains("active (beside them)"),
        "the component's steps, copy removed: {:?}",
        st.phases
    );
    // The restart before it used the copy of active its clean stop saved.
    assert!(
        st.saved.phases.contains("active (saved copy)"),
        "the component's steps, copy kept: {:?}",
        st.saved.phases
    );
    assert!(st.saved.seconds > 0.0 && st.saved_over_floor > 0.0);
    // The start-up with active empty, and its floor publishing the same items.
    assert!(st.cold_seconds > 0.0);
    let pf = &st.publish_floor;
    assert_eq!(pf.items, st.active_items, "{pf:?}");
    assert!(pf.pairs_s > 0.0 && pf.single_s > 0.0, "{pf:?}");
    assert!(st.cold_over_floor > 0.0);

    // Memory figures present.
    assert!(report.memory.idle_kib > 0);
    assert!(report.memory.loaded_kib > 0);
    assert!(report.memory.restarted_kib > 0);
    assert_eq!(report.memory.connections, n);
    assert_eq!(report.memory.seen_on_live, n, "every login reached live");

    assert_eq!(report.rates.len(), rates.len());
    for (r, want) in report.rates.iter().zip(&rates) {
        assert_eq!(r.target_rate, *want);
        assert!(r.changes > 0, "no change sent at {want}/s");
        // Every change reached the watcher on live.
        assert_eq!(r.received, r.changes, "changes lost at {want}/s: {r:?}");
        assert!(
            r.latency.p50_ms > 0.0 && r.latency.p99_ms >= r.latency.p50_ms,
            "{r:?}"
        );
        // The floor: every publish reached the watcher too.
        assert!(r.floor_sent > 0);
        assert_eq!(r.floor.samples, r.floor_sent, "floor items lost: {r:?}");
        assert!(r.floor.p99_ms > 0.0 && r.p99_over_floor > 0.0, "{r:?}");
        assert!(r.server_cpu_s > 0.0, "{r:?}");
        assert!(r.component_cpu_s >= 0.0, "{r:?}");
        // The mirror replayed the churn (same seed, users and rate; the
        // windows' ends may cut one tick apart) and every mirrored change
        // reached the watcher on the live-like node.
        let m = r.mirror.as_ref().expect("a mirror pass at every rate");
        assert!(m.changes.abs_diff(r.changes) <= 2 + r.changes / 20, "{r:?}");
        assert_eq!(m.latency.samples, m.changes, "mirrored changes lost: {r:?}");
        assert!(m.server_cpu_s > 0.0 && r.p99_over_mirror > 0.0, "{r:?}");
    }
    assert!(report.knee.mirror > 0.0, "{:?}", report.knee);

    // The JSON object carries the same figures.
    let j = report.to_json();
    assert!(j["rates"][0]["latency"]["p99_ms"].as_f64().is_some(), "{j}");
    assert!(j["startup"]["seconds"].as_f64().is_some(), "{j}");
    assert!(
        j["memory"]["per_connection_bytes"].as_f64().is_some(),
        "{j}"
    );
    assert!(j["machine"]["model"].as_str().is_some(), "{j}");
    println!("{}", report.table());
}
