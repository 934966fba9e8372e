//! `pubpresence-lab bench --ejabberd-cluster --held-sessions` with a handful
//! of sessions (CI): the sessions held inside the two nodes without sockets
//! (lab/ejabberd-modules/mod_lab_held_sessions.erl) are listed, answer the
//! probes and are on active with their addresses, as logins in roster mode
//! are; the figures at 100,000 in docs/benchmarks.md stand on this. No
//! timing is asserted.

use pubpresence_lab::bench::cluster::{self as bench_cluster, ClusterOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_held_in_both_nodes_are_tracked_as_logins_are() {
    let n = 40;
    let opts = ClusterOptions {
        connections: n,
        background: Duration::from_secs(2),
        roster: true,
        held_sessions: true,
        ..ClusterOptions::full(pubpresence_lab::product_binary().expect("the pubpresence binary"))
    };
    let r = bench_cluster::run(opts)
        .await
        .expect("the cluster benchmark runs with held sessions");
    assert_eq!(r.mode, "ejabberd-cluster-held");
    assert_eq!(r.per_node, [20, 20]);
    // The held sessions and the watcher (a login, subscribed).
    for st in [&r.cold_startup, &r.warm_startup] {
        assert_eq!(st.tracked, n + 1, "{st:?}");
        assert_eq!(st.active_items, n + 1, "{st:?}");
        assert_eq!(st.active_with_ip, n + 1, "{st:?}");
        assert_eq!(st.active_unknown, 0, "every probe answered: {st:?}");
    }
    assert_eq!(
        r.warm_startup.addresses_kept,
        n + 1,
        "nothing changed while the component was stopped"
    );
    assert_eq!(r.restart_floor.sessions, n + 1, "{:?}", r.restart_floor);
    assert_eq!(r.restart_floor.unanswered, Some(0), "{:?}", r.restart_floor);
}
