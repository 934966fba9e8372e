//! The web feed benchmark end to end in small numbers (CI): 20
//! SSE consumers, 50 changes/s for 2 s, against a real Prosody, the
//! component and the feed as child processes. Every figure is present and
//! every change reached every consumer; no timing is asserted (the figures
//! are for docs/benchmarks.md, not for a pass/fail on a noisy CI).

use pubpresence_lab::bench::web::{self as bench_web, WebBenchOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_web_bench_delivers_everything() {
    let opts = WebBenchOptions::quick(
        pubpresence_lab::product_binary().expect("the pubpresence binary"),
        env!("CARGO_BIN_EXE_pubpresence-lab").into(),
    );
    let n = opts.consumers;
    let r = bench_web::run(opts)
        .await
        .expect("the quick web benchmark runs");

    assert_eq!(r.mode, "quick");
    assert_eq!(r.consumers, n);
    assert_eq!(r.connected, n, "every consumer connected: {r:?}");
    assert!(r.sent > 0, "no change sent: {r:?}");
    assert!(r.reached > 0, "no change reached the client: {r:?}");
    assert!(r.reached_rate > 0.0 && r.sent_rate > 0.0, "{r:?}");
    assert_eq!(r.watch_logins, 1, "the feed's session never dropped: {r:?}");

    // Every change reached every consumer, and nothing else did.
    assert_eq!(r.expected, r.reached as u64 * n as u64, "{r:?}");
    assert_eq!(r.delivered, r.expected, "deliveries lost: {r:?}");
    assert_eq!(r.unmatched, 0, "{r:?}");
    assert_eq!(r.incomplete, 0, "{r:?}");
    assert_eq!(r.cut_off, 0, "{r:?}");
    assert_eq!(r.ended_early, 0, "{r:?}");

    // The figures are there.
    assert_eq!(r.last_consumer.samples, r.reached, "{r:?}");
    assert_eq!(r.any_consumer.samples as u64, r.delivered, "{r:?}");
    assert!(r.last_consumer.p99_ms >= r.last_consumer.p50_ms, "{r:?}");
    assert!(r.rss_idle_kib > 0 && r.rss_connected_kib > 0, "{r:?}");
    assert!(r.rss_peak_kib >= r.rss_connected_kib, "{r:?}");
    assert!(r.rss_after_kib > 0, "{r:?}");
    assert!(r.per_consumer_connected_bytes.is_finite(), "{r:?}");
    assert!(r.feed_cpu_s >= 0.0 && r.busy_s > 0.0, "{r:?}");
    assert!(r.server_cpu_s > 0.0, "{r:?}");
    assert!(r.fd_limit > 0, "{r:?}");

    let j = r.to_json();
    assert!(j["last_consumer"]["p99_ms"].as_f64().is_some(), "{j}");
    assert!(j["per_consumer_peak_bytes"].as_f64().is_some(), "{j}");
    assert!(j["reached_rate"].as_f64().is_some(), "{j}");
    println!("{}", r.table());
}

/// `--web-synthetic`: the feed child makes exactly rate × duration changes
/// itself (no Prosody, no component), and every one reaches every consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_synthetic_web_bench_delivers_every_change() {
    let mut opts = WebBenchOptions::quick(
        pubpresence_lab::product_binary().expect("the pubpresence binary"),
        env!("CARGO_BIN_EXE_pubpresence-lab").into(),
    );
    opts.synthetic = true;
    let n = opts.consumers;
    // 50 changes/s for 2 s: changes due at 0, 20, ..., 1,980 ms.
    let changes = 100;
    let r = bench_web::run(opts)
        .await
        .expect("the quick synthetic web benchmark runs");

    assert!(r.source.starts_with("synthetic"), "{r:?}");
    assert_eq!(r.connected, n, "every consumer connected: {r:?}");
    assert_eq!(r.sent, changes, "{r:?}");
    assert_eq!(r.reached, changes, "{r:?}");
    assert_eq!(r.watch_logins, 1, "{r:?}");
    assert_eq!(
        r.delivered,
        changes as u64 * n as u64,
        "deliveries lost: {r:?}"
    );
    assert_eq!(r.expected, r.delivered, "{r:?}");
    assert_eq!(
        (r.unmatched, r.incomplete, r.cut_off, r.ended_early),
        (0, 0, 0, 0),
        "{r:?}"
    );
    assert_eq!(r.last_consumer.samples, changes, "{r:?}");
    // Nothing but the feed child and the consumers ran.
    assert_eq!((r.server_cpu_s, r.component_cpu_s), (0.0, 0.0), "{r:?}");
    assert!(r.rss_connected_kib > 0 && r.feed_cpu_s >= 0.0, "{r:?}");
    println!("{}", r.table());
}
