//! docs/protocol.md, "Privacy", against a real Prosody: masked and withheld addresses, hidden
//! users, and items of an earlier run corrected at reconciliation.

mod common;

use common::pp::*;
use common::{loopback, Prosody};

fn config(p: &Prosody, privacy: &str) -> String {
    format!(
        "{}\n[privacy]\n{privacy}\n",
        p.config_toml(&["watcher@localhost"])
    )
}

async fn online(p: &Prosody, privacy: &str) -> (Pubpresence, Watcher) {
    let pp = Pubpresence::start(&config(p, privacy));
    let mut w = Watcher::connect(p, "watcher").await;
    w.until_online(&pp).await;
    w.subscribe_all().await;
    w.wait_until("status", T, |s| !s.statuses.is_empty()).await;
    (pp, w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_withheld_and_hidden() {
    let p = Prosody::start();
    p.register("watcher", "watcher");
    // An earlier run without privacy settings publishes everyone in full.
    let (mut pp, mut w) = online(&p, "").await;
    let mut users = Vec::new();
    for (name, ip) in [("ceo", 70), ("alice", 71)] {
        p.register(name, name);
        let u = User::connect(&p, name, "r", loopback(ip)).await;
        u.subscribe_to(&p.component_jid);
        let jid = u.jid.clone();
        w.wait_until(&jid, T, |s| s.live.iter().any(|i| i.fulljid == jid))
            .await;
        users.push(u);
    }
    assert_eq!(w.active().await["ceo@localhost/r"].ip, "127.0.0.70");
    assert!(pp.terminate().success());

    // Now: masked addresses, and the CEO hidden.
    let (mut pp, mut w) = online(&p, "ip = \"masked\"\nhide = [\"ceo@localhost\"]").await;
    let active = w.active().await;
    assert_eq!(
        active.keys().collect::<Vec<_>>(),
        ["alice@localhost/r"],
        "hidden user retracted"
    );
    assert_eq!(active["alice@localhost/r"].ip, "127.0.0.0");
    users[0].show(Some("dnd"));
    users[1].show(Some("away"));
    w.wait_until("alice away", T, |s| s.live.iter().any(|i| st(i) == "away"))
        .await;
    let seen = w.seen();
    assert!(
        seen.live
            .iter()
            .chain(&seen.active_publishes)
            .all(|i| i.name != "ceo@localhost"),
        "the hidden user never appears: {seen:#?}"
    );
    assert!(seen.live.iter().all(|i| i.ip == "127.0.0.0"));
    // IPv6 from ::1, masked to its /48: "::".
    p.register("v6", "v6");
    let v6 = User::connect_to(
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, p.c2s_port)),
        &p.domain,
        &p.component_jid,
        "v6",
        "r",
        std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    )
    .await;
    v6.subscribe_to(&p.component_jid);
    let v6jid = v6.jid.clone();
    w.wait_until("v6 on live", T, |s| {
        s.live.iter().any(|i| i.fulljid == v6jid)
    })
    .await;
    assert_eq!(w.active().await[&v6.jid].ip, "::", "::1 masked to its /48");
    assert!(pp.terminate().success());

    // Withheld: the item of the earlier run is corrected at reconciliation.
    let (_pp, w) = online(&p, "ip = \"none\"\nhide = [\"ceo@localhost\"]").await;
    let active = w.active().await;
    assert_eq!(active.len(), 2);
    assert_eq!(active["alice@localhost/r"].ip, "");
    assert_eq!(active["v6@localhost/r"].ip, "", "withheld for IPv6 too");
    assert_eq!(st(&active["alice@localhost/r"]), "away");
    drop((users, v6));
}
