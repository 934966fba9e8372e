//! README, "Audit: active heals itself": against real
//! Prosody and ejabberd. An item is made stale by planting it (a leftover of
//! "a second instance that briefly received part of the traffic"), an
//! item is lost by retracting it behind the component's back, and an item is
//! edited (another status and address); the next audit repairs all three, and
//! an audit with nothing to fix publishes nothing.
//!
//! How the damage is done differs: on Prosody the server's admin may publish
//! and retract on any node; ejabberd gives its admins no such right, but
//! accepts a second connection for the component (README, "Running two instances"), which is
//! exactly the "second instance" of the README's "Running two instances", so the test does it that way.

mod common;

use common::pp::*;
use common::{loopback, Lab, Server};
use pubpresence::minidom::Element;
use pubpresence::wire::pubsub;
use pubpresence::wire::user::{Status, UserItem};
use pubpresence::xmpp::c2s::C2s;

async fn admin(p: &Server) -> C2s {
    common::admin_login(p, "audit").await.0
}

/// Two more audits run, and they publish and retract nothing.
async fn two_quiet_audits(pp: &Pubpresence, w: &Watcher) {
    let n = audit_count(pp);
    w.clear();
    pp.wait_log_count(" audit ", n + 2, T, "no audit").await;
    let seen = w.seen();
    assert!(
        seen.live.is_empty() && seen.active_publishes.is_empty() && seen.active_retracts.is_empty(),
        "{seen:#?}"
    );
}

/// The sum of `field` over every audit's log line.
fn audit_sum(pp: &Pubpresence, field: &str) -> usize {
    pp.log_text()
        .lines()
        .filter(|l| l.contains(" audit checked="))
        .filter_map(|l| pubpresence_lab::log_fields::field_usize(l, field))
        .sum()
}

fn audit_count(pp: &Pubpresence) -> usize {
    pp.log_text().matches(" audit ").count()
}

/// Sends the pubsub `set`s to the server behind the running component's
/// back (see the module's comment for how, on each server).
async fn behind_its_back(p: &Server, sets: Vec<Element>) {
    if p.is_prosody() {
        let admin = admin(p).await;
        for set in sets {
            admin
                .iq(iq_set(p.pubsub_jid(), set), T)
                .await
                .expect("the admin may change any node");
        }
        return;
    }
    // ejabberd: a second component connection. While it is up ejabberd
    // spreads stanzas for the component over both connections, answers to
    // these IQs included, so they are sent without waiting for answers;
    // what the server sends back shows in the watcher's view.
    let (conn, _rx, _task) =
        pubpresence::xmpp::connect_component(&p.component_addr(), p.component_jid(), p.secret(), T)
            .await
            .expect("second component connection");
    for (n, set) in sets.into_iter().enumerate() {
        let iq = pubpresence::wire::iq(
            "set",
            p.component_jid(),
            p.pubsub_jid(),
            &format!("behind{n}"),
            Some(set),
        );
        conn.send(iq).expect("send");
    }
    conn.close().await;
}

async fn audit_retracts_stale_and_restores_lost_items_and_else_does_nothing(p: Server) {
    p.register("watcher", "watcher");
    p.register("alice", "alice");
    p.register("bob", "bob");
    let cfg = format!(
        "audit_interval = \"1s\"\n{}",
        p.config_toml(&["watcher@localhost"])
    );
    let pp = Pubpresence::start(&cfg);
    let mut w = Watcher::connect(&p, "watcher").await;
    w.until_online(&pp).await;
    w.subscribe_all().await;
    let alice = User::connect(&p, "alice", "desk", loopback(80)).await;
    alice.subscribe_to(p.component_jid());
    let bob = User::connect(&p, "bob", "desk", loopback(81)).await;
    bob.subscribe_to(p.component_jid());
    w.wait_until("alice and bob on live", T, |s| {
        [&alice.jid, &bob.jid]
            .iter()
            .all(|j| s.live.iter().any(|i| &i.fulljid == *j))
    })
    .await;
    let bob_item = w.active().await.remove(&bob.jid).expect("bob on active");

    // Nothing to fix: an audit publishes and retracts nothing.
    two_quiet_audits(&pp, &w).await;

    // Behind the component's back: a ghost planted, alice's item retracted,
    // bob's item edited.
    let ghost = UserItem {
        fulljid: "ghost@localhost/gone".into(),
        name: "ghost@localhost".into(),
        status: Status::Away,
        ip: "192.0.2.9".into(),
        since: pubpresence::wire::time::now(),
    };
    w.clear();
    behind_its_back(
        &p,
        vec![
            pubsub::publish(ACTIVE, Some(&ghost.fulljid), ghost.to_element()),
            pubsub::retract(ACTIVE, &alice.jid),
            pubsub::publish(
                ACTIVE,
                Some(&bob.jid),
                UserItem {
                    status: Status::Dnd,
                    ip: "192.0.2.7".into(),
                    ..bob_item.clone()
                }
                .to_element(),
            ),
        ],
    )
    .await;

    w.wait_until("ghost offline and alice back", T, |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == ghost.fulljid && st(i) == "offline")
            && s.active_publishes.iter().any(|i| i.fulljid == alice.jid)
            // The restored session goes the normal way: active, then live.
            && s.live.iter().any(|i| i.fulljid == alice.jid)
            // The edited item is written back as it was, then on live.
            && s.live.iter().any(|i| i.fulljid == bob.jid && i.ip == "127.0.0.81")
    })
    .await;
    let mut active = w.active().await;
    let mut keys: Vec<_> = active.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, [alice.jid.clone(), bob.jid.clone()]);
    assert_eq!(active[&alice.jid].ip, "127.0.0.80");
    assert_eq!(st(&active[&alice.jid]), "online");
    // Bob's item exactly as the component had written it, `since` kept.
    assert_eq!(active.remove(&bob.jid), Some(bob_item));
    // The log says what was fixed (in one audit line, or two when an audit
    // ran between the three changes).
    assert_eq!(
        ["added", "replaced", "removed"].map(|f| audit_sum(&pp, f)),
        [1, 1, 1],
        "{}",
        pp.log_text()
    );
    // And quiet again afterwards.
    two_quiet_audits(&pp, &w).await;
    drop((alice, bob));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_retracts_stale_and_restores_lost_items_and_else_does_nothing_on_prosody() {
    audit_retracts_stale_and_restores_lost_items_and_else_does_nothing(Server::prosody()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_retracts_stale_and_restores_lost_items_and_else_does_nothing_on_ejabberd() {
    audit_retracts_stale_and_restores_lost_items_and_else_does_nothing(Server::ejabberd()).await;
}
