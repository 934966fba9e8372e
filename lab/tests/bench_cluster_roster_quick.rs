//! `pubpresence-lab bench --ejabberd-cluster --roster` with a handful of
//! sessions (CI): every user has the component in its roster, so start-up's
//! probes are answered and no session is `unknown`; after the clean stop
//! between the two start-ups no presence changed, so the warm start-up keeps
//! every address from active and asks user-stats for none (README,
//! "Configuring ejabberd"; docs/protocol.md, "What the component publishes,
//! and when", step 6). No timing is asserted.

use pubpresence_lab::bench::cluster::{self as bench_cluster, ClusterOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_start_up_in_roster_mode_keeps_every_address() {
    let n = 20;
    let opts = ClusterOptions {
        connections: n,
        background: Duration::from_secs(2),
        roster: true,
        ..ClusterOptions::full(pubpresence_lab::product_binary().expect("the pubpresence binary"))
    };
    let r = bench_cluster::run(opts)
        .await
        .expect("the cluster benchmark runs in roster mode");
    assert_eq!(r.mode, "ejabberd-cluster-roster");
    assert_eq!(r.per_node, [10, 10]);
    for st in [&r.cold_startup, &r.warm_startup] {
        assert_eq!(st.tracked, n + 1, "{st:?}");
        assert_eq!(st.active_items, n + 1, "{st:?}");
        assert_eq!(st.active_with_ip, n + 1, "{st:?}");
        assert_eq!(st.active_unknown, 0, "every probe answered: {st:?}");
    }
    assert_eq!(r.cold_startup.addresses_kept, 0, "active was empty");
    assert_eq!(
        r.warm_startup.addresses_kept,
        n + 1,
        "nothing changed while the component was stopped"
    );
    // The restart floor waits for every listed session's answer too (the
    // watcher's and the users'), as the component does on ejabberd.
    assert_eq!(r.restart_floor.sessions, n + 1, "{:?}", r.restart_floor);
    assert_eq!(r.restart_floor.unanswered, Some(0), "{:?}", r.restart_floor);
}
