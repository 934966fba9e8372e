//! A clean stop saves active's content in `state_dir`, and the next start
//! uses it instead of fetching active, only while the status node shows
//! that nothing wrote since (README, "Fast restarts: `state_dir`"). A clean
//! stop also says when it stopped reading presence, and the next start
//! keeps the addresses of sessions unchanged since before then instead of
//! asking the server. On Prosody and on ejabberd, real servers on loopback.

mod common;

use common::pp::*;
use common::{loopback, through_relay, Lab, Server};
use pubpresence::wire::status::ServiceStatus;
use pubpresence_lab::process::Sig;
use pubpresence_lab::soak::lag::Impair;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const WATCHER: &str = "watcher";

/// The config, with `state_dir` when given (a top-level key: before the
/// tables).
fn config(p: &Server, state_dir: Option<&Path>) -> String {
    let base = p.config_toml(&[&format!("{WATCHER}@{}", p.domain())]);
    match state_dir {
        Some(d) => format!("state_dir = {:?}\n{base}", d.display().to_string()),
        None => base,
    }
}

/// Connects `user/r` from 127.0.0.`ip`, subscribed, and waits for its live
/// event.
async fn user(p: &Server, w: &mut Watcher, name: &str, ip: u8) -> User {
    p.register(name, name);
    let u = User::connect(p, name, "r", loopback(ip)).await;
    u.subscribe_to(p.component_jid());
    let jid = u.jid.clone();
    w.wait_until(&format!("{jid} on live"), T, |s| {
        s.live.iter().any(|i| i.fulljid == jid)
    })
    .await;
    u
}

/// Active as (full JID → (status, ip)).
async fn table(w: &Watcher) -> BTreeMap<String, (&'static str, String)> {
    w.active()
        .await
        .into_values()
        .map(|i| (i.fulljid.clone(), (st(&i), i.ip.clone())))
        .collect()
}

fn want(rows: &[(&str, &'static str, &str)]) -> BTreeMap<String, (&'static str, String)> {
    rows.iter()
        .map(|(j, s, ip)| (j.to_string(), (*s, ip.to_string())))
        .collect()
}

fn live_of(w: &Watcher, jid: &str) -> Vec<&'static str> {
    w.seen()
        .live
        .iter()
        .filter(|i| i.fulljid == jid)
        .map(st)
        .collect()
}

async fn restart_uses_the_saved_copy_only_while_nothing_wrote(p: Server) {
    let d = p.domain().to_string();
    let jid = |u: &str| format!("{u}@{d}/r");
    let state = tempfile::tempdir().expect("state dir");
    let copy = state.path().join("active.json");
    p.register(WATCHER, WATCHER);
    let mut pp = Pubpresence::start(&config(&p, Some(state.path())));
    let mut w = Watcher::connect(&p, WATCHER).await;
    w.until_online(&pp).await;
    w.subscribe_all().await;
    let kept = user(&p, &mut w, "kept", 41).await;
    let changed = user(&p, &mut w, "changed", 42).await;
    let gone = user(&p, &mut w, "gone", 43).await;
    let before = w.active().await;
    // What active must hold after every start below: `gone` leaves and
    // `changed` turns xa while the component is down.
    let remaining = want(&[
        (&jid("changed"), "xa", "127.0.0.42"),
        (&jid("kept"), "online", "127.0.0.41"),
    ]);

    // A clean stop writes the copy, then `offline` naming it.
    assert!(pp.terminate().success());
    w.wait_status(ServiceStatus::Offline).await;
    assert!(copy.exists(), "no copy saved; log:\n{}", pp.log_text());
    assert!(
        pp.log_text().contains("saved active's content (3 items)"),
        "{}",
        pp.log_text()
    );
    // While it is down: one session ends, one changes.
    gone.close().await;
    changed.show(Some("xa"));
    w.clear();

    let pp2 = Pubpresence::start(&config(&p, Some(state.path())));
    w.wait_status(ServiceStatus::Online).await;
    let log = pp2.log_text();
    assert!(
        log.contains("active is as the last clean stop left it (3 items"),
        "the copy was not used:\n{log}"
    );
    assert!(log.contains("active (saved copy)"), "{log}");
    assert!(!copy.exists(), "a copy serves one start-up");
    assert_eq!(
        table(&w).await,
        remaining.clone(),
        "active when status says online"
    );
    let seen = w.seen();
    assert_eq!(seen.active_retracts, vec![jid("gone")]);
    assert_eq!(live_of(&w, &jid("gone")), vec!["offline"]);
    assert_eq!(live_of(&w, &jid("changed")), vec!["xa"]);
    assert!(live_of(&w, &jid("kept")).is_empty(), "kept is unchanged");
    assert_eq!(w.active().await[&jid("kept")], before[&jid("kept")]);

    // The copy pp2 saves goes stale: another start (without state_dir)
    // publishes a newcomer and stops cleanly, and the newcomer leaves while
    // nothing runs. The stale copy does not know that item: used, it would
    // leave it on active for good.
    let mut pp2 = pp2;
    assert!(pp2.terminate().success());
    w.wait_status(ServiceStatus::Offline).await;
    assert!(copy.exists());
    w.clear();
    let mut other = Pubpresence::start(&config(&p, None));
    w.wait_status(ServiceStatus::Online).await;
    let newcomer = user(&p, &mut w, "newcomer", 44).await;
    assert!(other.terminate().success());
    w.wait_status(ServiceStatus::Offline).await;
    newcomer.close().await;
    w.clear();

    let pp3 = Pubpresence::start(&config(&p, Some(state.path())));
    w.wait_status(ServiceStatus::Online).await;
    assert_eq!(table(&w).await, remaining.clone());
    assert_eq!(w.seen().active_retracts, vec![jid("newcomer")]);
    assert_eq!(live_of(&w, &jid("newcomer")), vec!["offline"]);
    let log = pp3.log_text();
    assert!(
        log.contains(
            "not using the copy of active saved at the last stop (the status node's `offline` is \
             not the one published with it): fetching active"
        ),
        "{log}"
    );
    assert!(log.contains("active (beside them)"), "{log}");

    // A copy saved, then active deleted while nothing runs (by its owner,
    // as the component): the start creates it empty and must not take the
    // copy's word that the two items are there.
    let mut pp3 = pp3;
    assert!(pp3.terminate().success());
    w.wait_status(ServiceStatus::Offline).await;
    assert!(copy.exists());
    delete_active(&p).await;
    w.clear();
    let pp4 = Pubpresence::start(&config(&p, Some(state.path())));
    w.wait_status(ServiceStatus::Online).await;
    assert_eq!(table(&w).await, remaining.clone(), "active rebuilt");
    let log = pp4.log_text();
    assert!(
        log.contains("active was missing and is created empty: its saved copy is not used"),
        "{log}"
    );
    drop((pp4, changed, kept));
}

/// Deletes active as its owner (a stream as the component), while
/// pubpresence is down.
async fn delete_active(p: &Server) {
    let (conn, _rx, _task) =
        pubpresence::xmpp::connect_component(&p.component_addr(), p.component_jid(), p.secret(), T)
            .await
            .expect("component login");
    conn.iq(
        "set",
        p.pubsub_jid(),
        pubpresence::wire::pubsub::delete(ACTIVE),
    )
    .await
    .expect("the owner may delete active");
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_uses_the_saved_copy_only_while_nothing_wrote_on_prosody() {
    restart_uses_the_saved_copy_only_while_nothing_wrote(Server::prosody()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_uses_the_saved_copy_only_while_nothing_wrote_on_ejabberd() {
    restart_uses_the_saved_copy_only_while_nothing_wrote(Server::ejabberd()).await;
}

/// A clean stop while a change is being written: the stop lets the writes
/// under way finish (a bounded wait, no new presence taken) and still saves
/// the copy, which the next start uses.
async fn a_stop_during_writes_finishes_them_and_saves(p: Server) {
    let d = p.domain().to_string();
    let busy = format!("busy@{d}/r");
    let state = tempfile::tempdir().expect("state dir");
    // The component reaches the server through a relay, which is made to
    // hold everything 400 ms each way: a write then stays under way for
    // 0.8 s at least, long enough to stop the component in the middle.
    let (lag, cfg) = through_relay(&p, &config(&p, Some(state.path()))).await;
    p.register(WATCHER, WATCHER);
    let mut pp = Pubpresence::start(&cfg);
    let mut w = Watcher::connect(&p, WATCHER).await;
    w.until_online(&pp).await;
    w.subscribe_all().await;
    let u = user(&p, &mut w, "busy", 45).await;
    w.clear();

    lag.set(Impair {
        delay: Duration::from_millis(400),
        loss: 0.0,
    });
    let mentions = pp.log_text().matches(&busy).count();
    u.show(Some("dnd"));
    // The component logs the presence as it takes it: its write to active
    // is then on its way through the relay.
    pp.wait_log_count(&busy, mentions + 1, T, "the presence reached the component")
        .await;
    pp.signal(Sig::Term);
    let exit = pp.wait(Duration::from_secs(15)).expect("stopped");
    assert!(exit.success(), "{}", pp.log_text());
    let log = pp.log_text();
    assert!(
        log.contains("stopping: letting 1 writes under way finish first"),
        "the stop did not find the write under way:\n{log}"
    );
    assert!(
        log.contains("saved active's content (1 items)"),
        "no copy saved:\n{log}"
    );
    lag.set(Impair::default());
    w.wait_status(ServiceStatus::Offline).await;
    // Finished means on active and on live, as any change.
    assert_eq!(live_of(&w, &busy), vec!["dnd"]);
    let remaining = want(&[(&busy, "dnd", "127.0.0.45")]);
    assert_eq!(table(&w).await, remaining);

    let pp2 = Pubpresence::start(&config(&p, Some(state.path())));
    w.wait_status(ServiceStatus::Online).await;
    let log = pp2.log_text();
    assert!(
        log.contains("active is as the last clean stop left it (1 items"),
        "the copy was not used:\n{log}"
    );
    assert_eq!(table(&w).await, remaining);
    drop((pp2, u));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_writes_finishes_them_and_saves_on_prosody() {
    a_stop_during_writes_finishes_them_and_saves(Server::prosody()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_writes_finishes_them_and_saves_on_ejabberd() {
    a_stop_during_writes_finishes_them_and_saves(Server::ejabberd()).await;
}

/// On Prosody, whose listing states each session's show and address, a
/// restart does not wait for the probe answers of sessions listed exactly
/// as active has them (saved copy or fetched): it goes online when the others'
/// answers are in, and probes them then. A user who removed the component
/// from the roster while it was down never answers: taken off active when
/// a round trip behind those probes returns, long before `iq_timeout`
/// (docs/protocol.md, "What the component publishes, and when", step 5).
async fn unchanged_sessions_are_confirmed_after_online(p: Server, with_copy: bool) {
    let d = p.domain().to_string();
    let jid = |u: &str| format!("{u}@{d}/r");
    let state = tempfile::tempdir().expect("state dir");
    // Long, so that only the barrier can end the wait in time.
    let dir = with_copy.then_some(state.path());
    let config = || format!("iq_timeout = \"30s\"\n{}", config(&p, dir));
    p.register(WATCHER, WATCHER);
    let mut pp = Pubpresence::start(&config());
    let mut w = Watcher::connect(&p, WATCHER).await;
    w.until_online(&pp).await;
    w.subscribe_all().await;
    let kept = user(&p, &mut w, "kept", 61).await;
    let changed = user(&p, &mut w, "changed", 62).await;
    let revoked = user(&p, &mut w, "revoked", 63).await;
    let before = w.active().await;
    assert!(pp.terminate().success());
    w.wait_status(ServiceStatus::Offline).await;
    // While it is down: one changes, one removes the component.
    changed.show(Some("dnd"));
    revoked.remove_from_roster(p.component_jid()).await;
    w.clear();

    let pp2 = Pubpresence::start(&config());
    w.wait_status(ServiceStatus::Online).await;
    let online_at = std::time::Instant::now();
    let log = pp2.log_text();
    assert!(
        log.contains(
            "2 listed sessions of 2 users are as active has them: not waiting for them, \
             probing them once online"
        ),
        "{log}"
    );
    let step = if with_copy {
        "active (saved copy)"
    } else {
        "active (beside them)"
    };
    assert!(log.contains(step), "{log}");
    // The changed session was waited for: on active, as it is now, when
    // the status says online.
    let at_online = table(&w).await;
    assert_eq!(
        at_online.get(&jid("changed")),
        Some(&("dnd", "127.0.0.62".to_string()))
    );
    assert_eq!(
        at_online.get(&jid("kept")),
        Some(&("online", "127.0.0.61".to_string()))
    );
    // Retracted from active, then `offline` on live.
    w.wait_until(
        "revoked off active, offline on live",
        Duration::from_secs(5),
        |s| {
            s.active_retracts.contains(&jid("revoked"))
                && s.live.iter().any(|i| i.fulljid == jid("revoked"))
        },
    )
    .await;
    assert!(
        online_at.elapsed() < Duration::from_secs(5),
        "taken off by the time limit, not by the barrier"
    );
    assert_eq!(
        table(&w).await,
        want(&[
            (&jid("changed"), "dnd", "127.0.0.62"),
            (&jid("kept"), "online", "127.0.0.61"),
        ])
    );
    assert_eq!(w.seen().active_retracts, vec![jid("revoked")]);
    assert_eq!(live_of(&w, &jid("revoked")), vec!["offline"]);
    assert_eq!(live_of(&w, &jid("changed")), vec!["dnd"]);
    assert!(live_of(&w, &jid("kept")).is_empty(), "kept is unchanged");
    assert_eq!(w.active().await[&jid("kept")], before[&jid("kept")]);
    // Only the revoked session was silent: kept's answer confirmed it.
    pp2.wait_log(
        "1 listed sessions on active sent no presence within",
        T,
        "the silent session taken off",
    )
    .await;
    drop((pp2, kept, changed, revoked));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_on_prosody_confirms_unchanged_sessions_after_online() {
    unchanged_sessions_are_confirmed_after_online(Server::prosody(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_prosody_fetching_active_confirms_unchanged_sessions_after_online() {
    unchanged_sessions_are_confirmed_after_online(Server::prosody(), false).await;
}

/// The same restart when the round trip behind the start-up's probes is
/// never answered (a server too busy to answer within `iq_timeout`): nothing
/// then proves that the other answers are in, so the sessions listed as
/// active has them are probed at once and waited for as everyone's. Left
/// unprobed, they would not answer and go as late: `kept` would be taken off
/// active and come back as a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_barrier_the_unchanged_sessions_are_probed_and_waited_for_on_prosody() {
    let p = Server::Prosody(common::Prosody::start_with(
        pubpresence_lab::ProsodyOptions {
            lost_barrier: true,
            ..Default::default()
        },
    ));
    let d = p.domain().to_string();
    let jid = |u: &str| format!("{u}@{d}/r");
    let state = tempfile::tempdir().expect("state dir");
    let config = || format!("iq_timeout = \"2s\"\n{}", config(&p, Some(state.path())));
    p.register(WATCHER, WATCHER);
    let mut pp = Pubpresence::start(&config());
    let mut w = Watcher::connect(&p, WATCHER).await;
    w.until_online(&pp).await;
    w.subscribe_all().await;
    let kept = user(&p, &mut w, "kept", 71).await;
    let revoked = user(&p, &mut w, "revoked", 72).await;
    let before = w.active().await;
    assert!(pp.terminate().success());
    w.wait_status(ServiceStatus::Offline).await;
    revoked.remove_from_roster(p.component_jid()).await;
    w.clear();

    let pp2 = Pubpresence::start(&config());
    w.wait_status(ServiceStatus::Online).await;
    // The revoked session goes when its time as late is up.
    w.wait_until("revoked off active, offline on live", T, |s| {
        s.active_retracts.contains(&jid("revoked"))
            && s.live.iter().any(|i| i.fulljid == jid("revoked"))
    })
    .await;
    let log = pp2.log_text();
    assert!(
        log.contains(
            "no proof that the probe answers are in: probing now the 2 users whose 2 listed \
             sessions are as active has them"
        ),
        "the barrier was answered after all: {log}"
    );
    // The watcher, kept and revoked.
    assert!(
        log.contains("waiting up to 2s for the presence of 3 listed sessions"),
        "{log}"
    );
    assert_eq!(
        table(&w).await,
        want(&[(&jid("kept"), "online", "127.0.0.71")])
    );
    assert_eq!(w.seen().active_retracts, vec![jid("revoked")]);
    assert!(live_of(&w, &jid("kept")).is_empty(), "kept is unchanged");
    assert_eq!(w.active().await[&jid("kept")], before[&jid("kept")]);
    let Server::Prosody(server) = &p else {
        unreachable!("started as Prosody")
    };
    let server_log = std::fs::read_to_string(server.log_path()).expect("read prosody's log");
    assert_eq!(
        server_log
            .matches("lab_lost_barrier: leaving the component's first ping unanswered")
            .count(),
        2,
        "one lost barrier per start: {server_log}"
    );
    drop((pp2, kept, revoked));
}

/// After a clean stop, a session whose presence is unchanged since before
/// the stop keeps its item's address: ejabberd, which lists no addresses,
/// is not asked for it (docs/protocol.md, "What the component publishes,
/// and when", step 6). A session that connected again with the same
/// resource from another address while the component was down is asked
/// for its new one.
async fn a_clean_restart_asks_only_for_addresses_that_may_have_changed(p: Server) {
    let d = p.domain().to_string();
    let (kept_jid, moved_jid) = (format!("kept@{d}/r"), format!("moved@{d}/r"));
    p.register(WATCHER, WATCHER);
    let mut pp = Pubpresence::start(&config(&p, None));
    let mut w = Watcher::connect(&p, WATCHER).await;
    w.until_online(&pp).await;
    w.subscribe_all().await;
    let kept = user(&p, &mut w, "kept", 51).await;
    let moved = user(&p, &mut w, "moved", 52).await;
    let before = w.active().await;
    // A presence set in the stop's own second counts as maybe unread
    // (timestamps are to the second): let the clock pass the last item's.
    let last = before.values().map(|i| i.since).max().expect("two items");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while pubpresence::wire::time::now() <= last {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock stands still"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pp.terminate().success());
    w.wait_status(ServiceStatus::Offline).await;
    // While it is down: `moved` connects again, same resource, same
    // status, another address.
    moved.close().await;
    let moved = User::connect(&p, "moved", "r", loopback(53)).await;
    w.clear();

    let pp2 = Pubpresence::start(&config(&p, None));
    w.wait_status(ServiceStatus::Online).await;
    assert_eq!(
        table(&w).await,
        want(&[
            (&kept_jid, "online", "127.0.0.51"),
            (&moved_jid, "online", "127.0.0.53"),
        ])
    );
    assert_eq!(w.active().await[&kept_jid], before[&kept_jid]);
    assert!(live_of(&w, &kept_jid).is_empty(), "kept is unchanged");
    assert_eq!(live_of(&w, &moved_jid), vec!["online"]);
    let log = pp2.log_text();
    let line = "addresses kept from active for 1 sessions";
    if p.is_prosody() {
        // Prosody's listing states every session's address.
        assert!(!log.contains("addresses kept from active"), "{log}");
    } else {
        assert!(log.contains(line), "{log}");
    }
    drop((pp2, kept, moved));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_asks_only_for_addresses_that_may_have_changed_on_prosody() {
    a_clean_restart_asks_only_for_addresses_that_may_have_changed(Server::prosody()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_asks_only_for_addresses_that_may_have_changed_on_ejabberd() {
    a_clean_restart_asks_only_for_addresses_that_may_have_changed(Server::ejabberd()).await;
}
