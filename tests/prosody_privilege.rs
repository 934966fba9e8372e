//! XEP-0356 on Prosody (0.12 and 13) with `mod_privilege` from
//! prosody-modules: no roster entries anywhere; users already online when the
//! component starts are on active with their real status when it says
//! `online`, sent by the server with the permission (the component probes
//! no one); changes followed; a closed session leaves at once.

mod common;

use common::pp::*;
use common::{loopback, Prosody};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_presence_on_prosody() {
    let p = Prosody::start_privileged();
    for u in ["watcher", "gina", "hal"] {
        p.register(u, u);
    }
    // Online before the component ever ran, never subscribed.
    let gina = User::connect(&p, "gina", "desk", loopback(180)).await;
    gina.show(Some("dnd"));
    let pp = Pubpresence::start(&p.config_toml(&["watcher@localhost"]));
    let mut w = Watcher::connect(&p, "watcher").await;
    w.until_online(&pp).await;
    let active = w.active().await;
    let item = active
        .get(&gina.jid)
        .unwrap_or_else(|| panic!("gina on active at online: {active:#?}\n{}", pp.log_text()));
    assert_eq!(
        (st(item), item.ip.as_str()),
        ("dnd", "127.0.0.180"),
        "her real status"
    );
    assert!(pp.log_text().contains("XEP-0356 presence permission"));
    // The server sent her presence with the permission: the component
    // probed no one (Prosody logs each probe it gets at debug level).
    let server_log = std::fs::read_to_string(p.log_path()).expect("read prosody's log");
    let probe = format!("inbound presence probe from {}", p.component_jid);
    assert_eq!(server_log.matches(&probe).count(), 0, "{server_log}");
    assert!(pp.log_text().contains("not probing"), "{}", pp.log_text());
    w.subscribe_all().await;
    // A newcomer, a change, a departure without any roster.
    let hal = User::connect(&p, "hal", "pc", loopback(181)).await;
    w.wait_until("hal on live", T, |s| {
        s.live.iter().any(|i| i.fulljid == hal.jid)
    })
    .await;
    hal.show(Some("away"));
    w.wait_until("hal away", T, |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == hal.jid && st(i) == "away")
    })
    .await;
    let gjid = gina.jid.clone();
    gina.close().await;
    w.wait_until("gina offline", Duration::from_secs(5), |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == gjid && st(i) == "offline")
    })
    .await;
    let active = w.active().await;
    assert_eq!(active.keys().collect::<Vec<_>>(), [&hal.jid]);
    // An explicit unavailable: gone at once too.
    hal.c2s
        .send(presence(None, Some("unavailable"), None))
        .expect("unavailable");
    let hjid = hal.jid.clone();
    w.wait_until("hal offline", Duration::from_secs(5), |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == hjid && st(i) == "offline")
    })
    .await;
    assert!(w.active().await.is_empty());
}
