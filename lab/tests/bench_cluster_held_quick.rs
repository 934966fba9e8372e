//! `pubpresence-lab bench --ejabberd-cluster --held-sessions` with a handful
//! of sessions (CI): the sessions held inside the two nodes without sockets
//! (lab/ejabberd-modules/mod_lab_held_sessions.erl) are listed, answer the
//! probes, with the time of their presence, and are on active with their
//! addresses, as logins in roster mode are; the figures past the open-file
//! limit in docs/benchmarks.md stand on this. No timing is asserted.

mod cluster_quick;

use pubpresence_lab::bench::cluster::ClusterOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_held_in_both_nodes_are_tracked_as_logins_are() {
    let n = 40;
    let r = cluster_quick::run(ClusterOptions {
        held_sessions: true,
        ..cluster_quick::quick(n)
    })
    .await;
    assert_eq!(r.mode, "ejabberd-cluster-held");
    assert!(r.server.contains("mod_pubsub in Mnesia"), "{}", r.server);
    assert_eq!(r.per_node, [20, 20]);
    assert_eq!(r.sql_items, None);
    // The held sessions and the watcher (a login, subscribed).
    cluster_quick::every_session_answered(&r, n);
}
