//! `pubpresence-lab bench --ejabberd-cluster --roster` with a handful of
//! sessions (CI): every user has the component in its roster, so start-up's
//! probes are answered and no session is `unknown`; after the clean stop
//! between the two start-ups no presence changed, so the warm start-up keeps
//! every address from active and asks user-stats for none (README,
//! "Configuring ejabberd"; docs/protocol.md, "What the component publishes,
//! and when", step 6). No timing is asserted.

mod cluster_quick;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_start_up_in_roster_mode_keeps_every_address() {
    let n = 20;
    let r = cluster_quick::run(cluster_quick::quick(n)).await;
    assert_eq!(r.mode, "ejabberd-cluster-roster");
    assert_eq!(r.per_node, [10, 10]);
    cluster_quick::every_session_answered(&r, n);
}
