//! The lab's sessions held inside the server without sockets (lab/src/held.rs:
//! how the benchmark goes past the open-file limit) are to the component
//! what real logins are: each is on active with the address it was given,
//! and a restart, which finds them in the server's listing and probes them,
//! keeps them so. On Prosody (mod_lab_held_sessions.lua) and on ejabberd
//! (mod_lab_held_sessions.erl), real servers on loopback; the benchmark's
//! figures stand on this.

mod common;

use common::pp::*;
use common::{admin_login, Lab, Prosody, Server};
use pubpresence_lab::ejabberd::{Ejabberd, EjabberdOptions};
use pubpresence_lab::held::{self, HeldSessions};
use pubpresence_lab::ProsodyOptions;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

const WATCHER: &str = "watcher";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_sessions_are_on_active_as_real_logins_are_on_prosody() {
    let p = Prosody::start_with(ProsodyOptions {
        held_sessions: true,
        ..Default::default()
    });
    p.register("admin", "admin");
    held_sessions_are_on_active_as_real_logins_are(Server::Prosody(p)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_sessions_are_on_active_as_real_logins_are_on_ejabberd() {
    let e = tokio::task::spawn_blocking(|| {
        Ejabberd::start_with(EjabberdOptions {
            held_sessions: true,
            ..Default::default()
        })
    })
    .await
    .expect("start ejabberd")
    .unwrap_or_else(|e| panic!("{e}"));
    held_sessions_are_on_active_as_real_logins_are(Server::Ejabberd(e)).await;
}

async fn held_sessions_are_on_active_as_real_logins_are(p: Server) {
    p.register(WATCHER, WATCHER);
    let cfg = p.config_toml(&[&format!("{WATCHER}@{}", p.domain())]);
    let mut pp = Pubpresence::start(&cfg);
    let mut w = Watcher::connect(&p, WATCHER).await;
    w.until_online(&pp).await;
    w.subscribe_all().await;

    // Five sessions of three users, two each but the last.
    let what = HeldSessions {
        prefix: "held".into(),
        sessions: 5,
        resources: 2,
        first: Ipv4Addr::new(127, 0, 0, 60),
        contact: Some(p.component_jid().to_string()),
        rate: None,
    };
    let (admin, _admin_in) = admin_login(&p, "held").await;
    held::hold(&admin, p.domain(), &what, T)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let want: BTreeMap<String, (&'static str, String)> = (0..5)
        .map(|k| {
            let (jid, ip) = what.session(p.domain(), k);
            let ip = ip.map(|a| a.to_string()).unwrap_or_default();
            (jid, ("online", ip))
        })
        .collect();
    assert_eq!(
        want.keys().cloned().collect::<Vec<_>>(),
        [
            "held1@localhost/r1",
            "held1@localhost/r2",
            "held2@localhost/r1",
            "held2@localhost/r2",
            "held3@localhost/r1"
        ]
    );
    w.wait_until("the five held sessions on live", T, |s| {
        want.keys().all(|j| s.live.iter().any(|i| &i.fulljid == j))
    })
    .await;
    assert_eq!(held_on_active(&w).await, want, "active after the logins");

    // A restart: the listing names them with their addresses, and the
    // probes' answers confirm them.
    assert!(pp.terminate().success());
    w.clear();
    let pp2 = Pubpresence::start(&cfg);
    w.until_online(&pp2).await;
    assert_eq!(
        held_on_active(&w).await,
        want,
        "active after a restart; log:\n{}",
        pp2.log_text()
    );
    if p.is_prosody() {
        assert!(
            pp2.log_text()
                .contains("5 listed sessions of 3 users are as active has them"),
            "the start-up found the five sessions in the listing as they were:\n{}",
            pp2.log_text()
        );
        // Unchanged, they were probed after `online`, and the server
        // answered for each; so nothing was published again.
        pp2.wait_log(
            "every listed session on active answered",
            T,
            "the server's answers to the probes of the held sessions",
        )
        .await;
    } else {
        // ejabberd's listing states no presence: every listed user is
        // probed, and the five held sessions answered before `online` (the
        // watcher's and the admin's, with no subscription, did not).
        assert!(
            pp2.log_text()
                .contains("reconciling users=5 sessions=7 tracked=5 on_active=5"),
            "the five held sessions answered the start-up's probes:\n{}",
            pp2.log_text()
        );
    }
    assert!(
        w.seen().live.iter().all(|i| !i.fulljid.starts_with("held")),
        "{:#?}",
        w.seen().live
    );
}

/// The held sessions on active, as full JID -> (status, address).
async fn held_on_active(w: &Watcher) -> BTreeMap<String, (&'static str, String)> {
    w.active()
        .await
        .into_values()
        .filter(|i| i.fulljid.starts_with("held"))
        .map(|i| (i.fulljid.clone(), (st(&i), i.ip.clone())))
        .collect()
}
