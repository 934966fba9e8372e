//! A server that answers slowly at the component's start-up (a busy Prosody
//! working through a large fetch of active): the start-up waits for the
//! proof that every probe answer is in rather than cutting the wait at
//! `probe_timeout` and taking live sessions off active (docs/protocol.md,
//! "What the component publishes, and when", step 5). Real Prosody on
//! loopback; the component reaches it through a relay that holds every
//! chunk 700 ms each way.

mod common;

use common::pp::*;
use common::{loopback, through_relay, Lab, Server};
use pubpresence::wire::status::ServiceStatus;
use pubpresence_lab::soak::lag::Impair;
use std::time::Duration;

const WATCHER: &str = "watcher";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_keeps_every_session_on_active_across_a_restart() {
    let p = Server::prosody();
    // probe_timeout well below the relay's round trip: every answer comes
    // after it, as on a server busy for longer than probe_timeout.
    let cfg = p
        .config_toml(&[&format!("{WATCHER}@{}", p.domain())])
        .replace("probe_timeout = \"2s\"", "probe_timeout = \"300ms\"");
    assert!(cfg.contains("probe_timeout = \"300ms\""), "{cfg}");
    let (lag, cfg) = through_relay(&p, &cfg).await;
    p.register(WATCHER, WATCHER);
    let mut pp = Pubpresence::start(&cfg);
    let mut w = Watcher::connect(&p, WATCHER).await;
    w.until_online(&pp).await;
    w.subscribe_all().await;
    let mut users = Vec::new();
    for (name, ip) in [("ann", 51), ("bob", 52)] {
        p.register(name, name);
        let u = User::connect(&p, name, "r", loopback(ip)).await;
        u.subscribe_to(p.component_jid());
        let jid = u.jid.clone();
        w.wait_until(&format!("{jid} on live"), T, |s| {
            s.live.iter().any(|i| i.fulljid == jid)
        })
        .await;
        users.push(u);
    }
    let before = w.active().await;
    assert_eq!(before.len(), 2, "{before:#?}");
    assert!(pp.terminate().success());
    w.wait_status(ServiceStatus::Offline).await;

    lag.set(Impair {
        delay: Duration::from_millis(700),
        loss: 0.0,
    });
    w.clear();
    let pp2 = Pubpresence::start(&cfg);
    w.wait_status(ServiceStatus::Online).await;
    let log = pp2.log_text();
    assert!(!log.contains("not tracked"), "sessions dropped:\n{log}");
    // Nothing changed: no live event, active exactly as before.
    assert!(w.seen().live.is_empty(), "{:#?}\n{log}", w.seen().live);
    assert!(w.seen().active_retracts.is_empty(), "{log}");
    assert_eq!(w.active().await, before, "{log}");
    drop((pp2, users, lag));
}
