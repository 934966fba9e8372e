//! An ejabberd cluster of two nodes: one component connection
//! per node, privileged presence, no roster subscriptions. Every session is
//! seen whatever its node; a node killed takes its sessions off active
//! within 15 s while the component stays online; the node coming back is
//! reconnected by itself; a stop closes each node's stream, and a start
//! right after it sees both nodes' sessions.

mod common;

use common::loopback;
use common::pp::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_per_node_and_a_dead_node_is_noticed() {
    let mut e = common::privileged_cluster();
    e.register_many(&[
        ("watcher", "watcher"),
        ("n0a", "n0a"),
        ("n0b", "n0b"),
        ("n1a", "n1a"),
        ("n1b", "n1b"),
        ("n1c", "n1c"),
    ])
    .expect("register");
    let mut pp = Pubpresence::start(&e.config_toml_cluster(&["watcher@localhost"]));
    let mut w = Watcher::connect_to(
        e.c2s_addr_of(0).unwrap(),
        &e.domain,
        &e.pubsub_jid,
        "watcher",
    )
    .await;
    w.until_online(&pp).await;
    w.subscribe_all().await;
    w.wait_until("status", T, |s| !s.statuses.is_empty()).await;
    pp.wait_log("connected to cluster node", T, "no second connection")
        .await;

    // Users on both nodes, never subscribed: all on active with their IPs.
    let (c0, c1) = (e.c2s_addr_of(0).unwrap(), e.c2s_addr_of(1).unwrap());
    let comp = e.component_jid.clone();
    let mut on0 = Vec::new();
    for (i, name) in ["n0a", "n0b"].iter().enumerate() {
        on0.push(User::connect_to(c0, &e.domain, &comp, name, "r", loopback(160 + i as u8)).await);
    }
    let mut on1 = Vec::new();
    for (i, name) in ["n1a", "n1b"].iter().enumerate() {
        on1.push(User::connect_to(c1, &e.domain, &comp, name, "r", loopback(170 + i as u8)).await);
    }
    w.wait_until("four on live", T, |s| {
        s.live.iter().filter(|i| st(i) == "online").count() >= 4
    })
    .await;
    let active = w.active().await;
    for (jid, ip) in [
        ("n0a@localhost/r", "127.0.0.160"),
        ("n0b@localhost/r", "127.0.0.161"),
        ("n1a@localhost/r", "127.0.0.170"),
        ("n1b@localhost/r", "127.0.0.171"),
    ] {
        assert_eq!(
            active.get(jid).map(|i| i.ip.as_str()),
            Some(ip),
            "{jid}: {active:#?}"
        );
    }
    // Quick changes of a node-1 user reach live in order.
    for show in ["away", "xa", "dnd"] {
        on1[0].show(Some(show));
    }
    w.wait_until("n1a dnd", T, |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == "n1a@localhost/r" && st(i) == "dnd")
    })
    .await;
    let seq: Vec<&str> = w
        .seen()
        .live
        .iter()
        .filter(|i| i.fulljid == "n1a@localhost/r")
        .map(st)
        .collect();
    assert_eq!(seq, ["online", "away", "xa", "dnd"]);

    // kill -9 of node 1: its two users leave within 15 s, node 0's stay.
    w.clear();
    let killed = Instant::now();
    e.kill_node(1).expect("kill node 1");
    w.wait_until("node 1's users offline", Duration::from_secs(15), |s| {
        ["n1a@localhost/r", "n1b@localhost/r"]
            .iter()
            .all(|j| s.live.iter().any(|i| i.fulljid == *j && st(i) == "offline"))
    })
    .await;
    println!(
        "node killed: its sessions off active after {} ms",
        killed.elapsed().as_millis()
    );
    assert_eq!(
        w.active_users().await,
        ["n0a@localhost/r", "n0b@localhost/r"]
    );
    assert!(w.seen().statuses.is_empty(), "never back to init");

    // A node-0 session whose client closes without unavailable: ejabberd
    // forwards nothing under XEP-0356; it leaves within 15 s all the same.
    w.clear();
    let closed = Instant::now();
    on0.remove(1).close().await;
    w.wait_until("n0b offline", Duration::from_secs(15), |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == "n0b@localhost/r" && st(i) == "offline")
    })
    .await;
    println!(
        "closed without unavailable: off active after {} ms",
        closed.elapsed().as_millis()
    );

    // Node 1 back: reconnected by itself, its users seen again.
    e.start_node(1).expect("start node 1");
    pp.wait_log_count(
        "connected to cluster node",
        2,
        Duration::from_secs(30),
        "node 1 not reconnected",
    )
    .await;
    let c1 = e.c2s_addr_of(1).unwrap();
    let back = User::connect_to(c1, &e.domain, &comp, "n1c", "r", loopback(172)).await;
    w.wait_until("n1c on live", T, |s| {
        s.live.iter().any(|i| i.fulljid == "n1c@localhost/r")
    })
    .await;
    assert_eq!(w.active().await["n1c@localhost/r"].ip, "127.0.0.172");

    // Stopped, it ends each node's stream as a stream ends, so that no node
    // still routes to it; started again at once, it lists both nodes'
    // sessions (older than it, without a subscription: `unknown`), and a
    // node-1 user's change reaches it.
    let node1 = e.component_addr_of(1).unwrap();
    assert!(pp.terminate().success());
    let closed = format!("closed the connection to cluster node node={node1}");
    assert!(pp.log_text().contains(&closed), "{}", pp.log_text());
    let again = Pubpresence::start(&e.config_toml_cluster(&["watcher@localhost"]));
    w.until_online(&again).await;
    let active = w.active().await;
    let seen: Vec<(&str, &str, &str)> = active
        .iter()
        .map(|(jid, i)| (jid.as_str(), st(i), i.ip.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("n0a@localhost/r", "unknown", "127.0.0.160"),
            ("n1c@localhost/r", "unknown", "127.0.0.172"),
            ("watcher@localhost/watch", "unknown", "127.0.0.1"),
        ],
        "{}",
        again.log_text()
    );
    w.clear();
    back.show(Some("dnd"));
    w.wait_until("n1c dnd after the restart", T, |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == "n1c@localhost/r" && st(i) == "dnd")
    })
    .await;
    drop((on0, on1, back));
}
