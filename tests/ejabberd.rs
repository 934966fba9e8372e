//! pubpresence on ejabberd (23.01 and 24.12: the lab runs the one the
//! environment names, `lab::install`): roster subscriptions, and presence
//! without rosters (XEP-0356 `mod_privilege`), where ejabberd sends nothing
//! when a session ends without an unavailable presence: the component's
//! session check must take it off active within 15 s. On 24.12 the
//! component's requests go as privileged IQs (README, "XEP-0356 on
//! ejabberd 24.10 and later"), and without `privileged_as` it stops at
//! start-up with the line that says what to set.

mod common;

use common::loopback;
use common::pp::*;
use pubpresence_lab::ejabberd::{Ejabberd, EjabberdOptions};
use std::time::{Duration, Instant};

fn start(privileged: bool) -> Ejabberd {
    Ejabberd::start_with(EjabberdOptions {
        privileged_presence: privileged,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn online(e: &Ejabberd) -> (Pubpresence, Watcher) {
    e.register("watcher", "watcher").expect("register watcher");
    let pp = Pubpresence::start(&e.config_toml(&["watcher@localhost"]));
    let mut w = Watcher::connect_to(e.c2s_addr(), &e.domain, &e.pubsub_jid, "watcher").await;
    w.until_online(&pp).await;
    w.subscribe_all().await;
    w.wait_until("status", T, |s| !s.statuses.is_empty()).await;
    (pp, w)
}

async fn user(e: &Ejabberd, name: &str, res: &str, ip: u8) -> User {
    User::connect_to(
        e.c2s_addr(),
        &e.domain,
        &e.component_jid,
        name,
        res,
        loopback(ip),
    )
    .await
}

/// alice@localhost/desk from 127.0.0.`ip`, subscribed to the component
/// (roster mode), once she is on live.
async fn subscribed_alice(e: &Ejabberd, w: &mut Watcher, ip: u8) -> User {
    e.register("alice", "alice").expect("register");
    let desk = user(e, "alice", "desk", ip).await;
    desk.subscribe_to(&e.component_jid);
    w.wait_until("alice on live", T, |s| {
        s.live.iter().any(|i| i.fulljid == desk.jid)
    })
    .await;
    desk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_subscriptions_on_ejabberd() {
    let e = start(false);
    let (pp, mut w) = online(&e).await;
    let desk = subscribed_alice(&e, &mut w, 150).await;
    let active = w.active().await;
    assert_eq!(
        active[&desk.jid].ip, "127.0.0.150",
        "ip:port from user-stats, port stripped"
    );
    desk.show(Some("dnd"));
    w.wait_until("dnd", T, |s| s.live.iter().any(|i| st(i) == "dnd"))
        .await;
    let jid = desk.jid.clone();
    desk.close().await;
    w.wait_until("offline", T, |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == jid && st(i) == "offline")
    })
    .await;
    assert!(w.active().await.is_empty());
    assert!(pp.log_text().contains("start-up discovery done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_presence_without_rosters_on_ejabberd() {
    let e = start(true);
    // Online before the component starts: ejabberd replays nothing and
    // answers no probe, so its show is unknown until it changes.
    e.register("old", "old").expect("register");
    let old = user(&e, "old", "r", 153).await;
    old.show(Some("xa"));
    let (pp, mut w) = online(&e).await;
    let active = w.active().await;
    let item = active
        .get(&old.jid)
        .unwrap_or_else(|| panic!("older session on active: {active:#?}"));
    assert_eq!((st(item), item.ip.as_str()), ("unknown", "127.0.0.153"));
    old.show(Some("dnd"));
    w.wait_until("old known", T, |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == old.jid && st(i) == "dnd")
    })
    .await;
    let ojid = old.jid.clone();
    old.close().await;
    w.wait_until("old gone", Duration::from_secs(15), |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == ojid && st(i) == "offline")
    })
    .await;
    w.clear();
    let log = pp.log_text();
    assert!(log.contains("XEP-0356 presence permission"), "{log}");
    assert!(
        log.contains(&format!("server software: ejabberd {}", e.install.version)),
        "the start-up log names {}: {log}",
        e.label()
    );
    let wrapping = format!(
        "sending requests as privileged IQs on behalf of {}",
        pubpresence_lab::ejabberd::PRIVILEGED_AS
    );
    assert_eq!(
        log.contains(&wrapping),
        e.wants_privileged_iq(),
        "{}: {log}",
        e.label()
    );
    for u in ["dave", "erin"] {
        e.register(u, u).expect("register");
    }
    // Never subscribed: seen through the permission alone.
    let dave = user(&e, "dave", "tab", 151).await;
    w.wait_until("dave on live", T, |s| {
        s.live.iter().any(|i| i.fulljid == dave.jid)
    })
    .await;
    assert_eq!(w.active().await[&dave.jid].ip, "127.0.0.151");
    dave.show(Some("away"));
    w.wait_until("dave away", T, |s| s.live.iter().any(|i| st(i) == "away"))
        .await;
    // Subscribed AND privileged: every change once on live.
    let erin = user(&e, "erin", "pc", 152).await;
    erin.subscribe_to(&e.component_jid);
    w.wait_until("erin on live", T, |s| {
        s.live.iter().any(|i| i.fulljid == erin.jid)
    })
    .await;
    erin.show(Some("xa"));
    erin.show(Some("chat"));
    w.wait_until("erin chat", T, |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == erin.jid && st(i) == "chat")
    })
    .await;
    let erin_live: Vec<&str> = w
        .seen()
        .live
        .iter()
        .filter(|i| i.fulljid == erin.jid)
        .map(st)
        .collect();
    assert_eq!(
        erin_live,
        ["online", "xa", "chat"],
        "one live item per change"
    );
    // An explicit unavailable: off active at once.
    erin.c2s
        .send(presence(None, Some("unavailable"), None))
        .expect("unavailable");
    w.wait_until("erin offline", T, |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == erin.jid && st(i) == "offline")
    })
    .await;
    // A stream closed without unavailable: ejabberd tells the component
    // nothing; the session check takes it off within 15 s.
    let gone = Instant::now();
    let djid = dave.jid.clone();
    dave.close().await;
    w.wait_until("dave offline", Duration::from_secs(15), |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == djid && st(i) == "offline")
    })
    .await;
    println!(
        "session closed without unavailable: off active after {} ms",
        gone.elapsed().as_millis()
    );
    assert!(w.active_users().await.is_empty());
    drop(erin);
}

/// What a server that drops a privileged component's plain requests gets
/// without `privileged_as`: one line naming the fix and an exit, never a
/// silent retry; where the server takes plain requests (23.01), the key
/// is noted as unused and the component goes online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_as_is_asked_for_where_the_server_needs_it() {
    let e = start(true);
    let cfg: String = e
        .config_toml(&["watcher@localhost"])
        .lines()
        .filter(|l| !l.starts_with("privileged_as"))
        .map(|l| format!("{l}\n"))
        .collect();
    if e.wants_privileged_iq() {
        let mut pp = Pubpresence::start(&cfg);
        let status = pp
            .wait(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{}: still running:\n{}", e.label(), pp.log_text()));
        assert!(!status.success(), "{status}");
        let log = pp.log_text();
        let wanted = "localhost grants this component XEP-0356 privileges and advertises IQ \
                      permission: such a server (ejabberd 24.10 and later) drops every request \
                      of the component that is not a privileged IQ. Set `privileged_as = \
                      \"pubpresence@localhost\"`";
        assert!(log.contains(wanted), "{}: {log}", e.label());
        assert!(!log.contains("refused"), "{log}");
    } else {
        // Before the first table, where a top-level key must stand.
        let with_key = cfg.replacen(
            "\n[access]",
            "\nprivileged_as = \"pubpresence@localhost\"\n[access]",
            1,
        );
        let (pp, _w) = {
            e.register("watcher", "watcher").expect("register watcher");
            let pp = Pubpresence::start(&with_key);
            let w = Watcher::connect_to(e.c2s_addr(), &e.domain, &e.pubsub_jid, "watcher").await;
            w.until_online(&pp).await;
            (pp, w)
        };
        let log = pp.log_text();
        assert!(
            log.contains("privileged_as is not used"),
            "{}: {log}",
            e.label()
        );
    }
}

/// ejabberd keeps a component's XEP-0356 grant per JID and drops it when
/// *any* connection of that JID closes (README, "Running two instances"):
/// here a second connection as the component, closed at once. Where the
/// component's requests go as privileged IQs (24.10 and later), its grant
/// check finds the loss within two checks and it connects again, staying
/// online; a session that starts afterwards is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_dropped_by_another_connection_is_noticed_and_got_again() {
    let e = start(true);
    let (pp, mut w) = online(&e).await;
    let (conn, _inbound, task) = pubpresence::xmpp::connect_component(
        &e.component_addr(),
        &e.component_jid,
        &e.secret,
        Duration::from_secs(5),
    )
    .await
    .unwrap_or_else(|err| panic!("{}: second component connection: {err}", e.label()));
    // `close` returns once the server has sent its footer, i.e. after
    // ejabberd ran the disconnect hook that drops the grant.
    conn.close().await;
    let _ = task.await;
    if !e.wants_privileged_iq() {
        // 23.01 drops the presence grant the same way, but grants no IQ
        // that would show it: the README names this gap.
        println!(
            "{}: grants no IQ permission, so no request shows the loss",
            e.label()
        );
        return;
    }
    w.clear();
    let check = pubpresence::xmpp::stream::GRANT_CHECK_EVERY;
    pp.wait_log(
        "stopped answering privileged IQs",
        check * 2 + Duration::from_secs(5),
        "the lost grant was not noticed",
    )
    .await;
    pp.wait_log_count(
        "online: active is up to date",
        2,
        T,
        "not online again after reconnecting",
    )
    .await;
    e.register("late", "late").expect("register");
    let late = user(&e, "late", "r", 161).await;
    w.wait_until("late on live (the grant is back)", T, |s| {
        s.live.iter().any(|i| i.fulljid == late.jid)
    })
    .await;
    // And the check holds while the grant does: no loss in two more checks
    // (a check the server never answers would look like one).
    tokio::time::sleep(check * 2 + Duration::from_secs(1)).await;
    let log = pp.log_text();
    assert_eq!(
        log.matches("stopped answering privileged IQs").count(),
        1,
        "{}: one loss, one reconnect: {log}",
        e.label()
    );
    drop((pp, late));
}

/// With mod_pubsub in SQL, a busy database makes ejabberd answer a publish
/// `internal-server-error` ("Database failure", type `wait`): nothing was
/// written, and the component asks again (README, "Configuring ejabberd")
/// instead of leaving active wrong until the next audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_busy_sql_store_refuses_is_asked_again() {
    let e = Ejabberd::start_with(EjabberdOptions {
        pubsub_sql: true,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let (pp, mut w) = online(&e).await;
    let desk = subscribed_alice(&e, &mut w, 152).await;
    assert!(!pp.log_text().contains("asking again"), "{}", pp.log_text());

    let lock = e.lock_sql_store().unwrap_or_else(|e| panic!("{e}"));
    desk.show(Some("dnd"));
    // The first answer refused it; the next attempt comes 200 ms later.
    pp.wait_log(
        "Database failure); asking again",
        T,
        "the publish refused by the locked store is asked again",
    )
    .await;
    lock.release().unwrap_or_else(|e| panic!("{e}"));

    w.wait_until("dnd on live", T, |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == desk.jid && st(i) == "dnd")
    })
    .await;
    assert_eq!(st(&w.active().await[&desk.jid]), "dnd", "active has it too");
    assert!(
        !pp.log_text().contains("failed"),
        "nothing given up: {}",
        pp.log_text()
    );
}
