//! `pubpresence-lab bench --ejabberd-cluster --held-sessions --pubsub-sql`
//! with a handful of sessions (CI): with mod_pubsub's nodes and items in SQL
//! (one SQLite file for both nodes) the held sessions are tracked as with
//! Mnesia, and active's items really are in SQL. No timing is asserted.

mod cluster_quick;

use pubpresence_lab::bench::cluster::ClusterOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pubsub_in_sql_the_held_sessions_are_tracked_alike() {
    let n = 40;
    let r = cluster_quick::run(ClusterOptions {
        held_sessions: true,
        pubsub_sql: true,
        ..cluster_quick::quick(n)
    })
    .await;
    assert!(r.server.contains("mod_pubsub in SQL"), "{}", r.server);
    assert_eq!(r.per_node, [20, 20]);
    // Active's items (the sessions' and the watcher's) and status's one.
    assert_eq!(r.sql_items, Some(n + 2), "the items are in SQL");
    cluster_quick::every_session_answered(&r, n);
}
