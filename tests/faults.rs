//! Faults and hostile input against a real Prosody: an
//! unreachable server, a crash under load, a node deleted behind the
//! component's back, IQs of every type, and presences built to hurt.

mod common;

use common::pp::*;
use common::{loopback, Prosody};
use pubpresence::minidom::Element;
use pubpresence::wire::ns;
use pubpresence::wire::status::ServiceStatus;
use pubpresence::xmpp::c2s::{self, C2sError};
use pubpresence_lab::process::Sig;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

async fn wait_online(pp: &Pubpresence, w: &Watcher) {
    w.until_online(pp).await;
}

/// Polls until active, as the watcher fetches it, satisfies `ok`.
async fn wait_active(
    pp: &Pubpresence,
    w: &Watcher,
    what: &str,
    ok: impl Fn(&BTreeMap<String, pubpresence::wire::user::UserItem>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        // The node may be missing for a moment while it is recreated.
        let active = w.try_active().await.unwrap_or_default();
        if ok(&active) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: active is {active:#?}\n{}",
            pp.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes `node` behind the component's back, as the server's admin.
async fn delete_as_admin(p: &Prosody, node: &str) {
    let (admin, _rx) = common::admin_login(p, "del").await;
    admin
        .iq(
            iq_set(&p.pubsub_jid, pubpresence::wire::pubsub::delete(node)),
            T,
        )
        .await
        .unwrap_or_else(|e| panic!("the admin deletes {node}: {e}"));
}

#[test]
fn unreachable_server_is_retried_and_sigterm_still_exits_at_once() {
    let port = pubpresence_lab::free_ports(1).expect("free port")[0];
    let cfg = format!(
        "jid = \"pubpresence.localhost\"\nserver = \"127.0.0.1:{port}\"\nsecret = \"x\"\n\
         domain = \"localhost\"\npubsub = \"pubsub.localhost\"\n[access]\nmodel = \"open\"\n"
    );
    let mut pp = Pubpresence::start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pp.log_text().matches("retrying in").count() < 3 {
        assert!(
            Instant::now() < deadline,
            "no retries logged:\n{}",
            pp.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pp
        .log_text()
        .contains(&format!("cannot connect to 127.0.0.1:{port}")));
    let t = Instant::now();
    assert!(pp.terminate().success(), "exit 0 on SIGTERM");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "prompt exit: {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_then_restart_converges() {
    let p = Prosody::start();
    p.register("watcher", "watcher");
    let cfg = p.config_toml(&["watcher@localhost"]);
    let mut pp = Pubpresence::start(&cfg);
    let mut w = Watcher::connect(&p, "watcher").await;
    wait_online(&pp, &w).await;
    w.subscribe_all().await;
    let mut users = Vec::new();
    for i in 0..8u8 {
        let name = format!("k{i}");
        p.register(&name, &name);
        let u = User::connect(&p, &name, "r", loopback(90 + i)).await;
        u.subscribe_to(&p.component_jid);
        let jid = u.jid.clone();
        w.wait_until(&jid, T, |s| s.live.iter().any(|i| i.fulljid == jid))
            .await;
        users.push(u);
    }
    // Load, a crash in the middle of it, and changes during the gap.
    for (i, u) in users.iter().enumerate() {
        u.show(Some(["away", "xa", "dnd", "chat"][i % 4]));
    }
    pp.kill();
    let gone = users.remove(0);
    gone.close().await;
    users[0].show(Some("dnd"));
    let newcomer = User::connect(&p, "k1", "second", loopback(120)).await;
    // The killed instance left `online` on the status node: wait for the
    // new instance's own init → online.
    w.clear();
    let _pp = Pubpresence::start(&cfg);
    w.wait_status(ServiceStatus::Init).await;
    w.wait_status(ServiceStatus::Online).await;
    let want: BTreeMap<String, (String, String)> = [
        ("k1@localhost/r", "dnd", "127.0.0.91"),
        ("k1@localhost/second", "online", "127.0.0.120"),
        ("k2@localhost/r", "dnd", "127.0.0.92"),
        ("k3@localhost/r", "chat", "127.0.0.93"),
        ("k4@localhost/r", "away", "127.0.0.94"),
        ("k5@localhost/r", "xa", "127.0.0.95"),
        ("k6@localhost/r", "dnd", "127.0.0.96"),
        ("k7@localhost/r", "chat", "127.0.0.97"),
    ]
    .into_iter()
    .map(|(j, s, ip)| (j.to_string(), (s.to_string(), ip.to_string())))
    .collect();
    let active = w.active().await;
    let got: BTreeMap<String, (String, String)> = active
        .values()
        .map(|i| (i.fulljid.clone(), (st(i).to_string(), i.ip.clone())))
        .collect();
    assert_eq!(got, want, "active exact once online after the crash");
    drop((users, newcomer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_deleted_behind_its_back_is_recreated() {
    let p = Prosody::start();
    p.register("watcher", "watcher");
    p.register("bob", "bob");
    let pp = Pubpresence::start(&p.config_toml(&["watcher@localhost"]));
    let mut w = Watcher::connect(&p, "watcher").await;
    wait_online(&pp, &w).await;
    w.subscribe_all().await;
    let bob = User::connect(&p, "bob", "r", loopback(100)).await;
    bob.subscribe_to(&p.component_jid);
    w.wait_until("bob on live", T, |s| {
        s.live.iter().any(|i| i.fulljid == bob.jid)
    })
    .await;

    delete_as_admin(&p, ACTIVE).await;
    bob.show(Some("away"));
    wait_active(&pp, &w, "bob back on a recreated active", |a| {
        a.get(&bob.jid).map(st) == Some("away")
    })
    .await;
    assert!(
        pp.log_text().contains("was deleted behind our back"),
        "{}",
        pp.log_text()
    );
}

/// Active deleted behind the component's back and rebuilt: a connection
/// that did not change keeps its `since` (docs/protocol.md, "Items"). The
/// rebuild learns the sessions again from probe answers, whose stamps are the
/// server's; without what the process remembered of active, the `since`
/// moved back (`pubpresence-lab soak` saw it by a second). Here bob's change
/// reaches the frozen component 2.5 s after the server stamped it, so the
/// two differ by that much.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_active_keeps_the_since_of_unchanged_connections() {
    rebuilt_active_keeps_since(false).await;
}

/// The same with `[standby]`: the instance starts over itself, still the
/// active one, and keeps what it remembered. It went back to standby and
/// took over again, remembering nothing (found by the soak with
/// `--standby`: `since` moved backwards after a node deletion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_standby_a_rebuilt_active_keeps_the_since_of_unchanged_connections() {
    rebuilt_active_keeps_since(true).await;
}

async fn rebuilt_active_keeps_since(standby: bool) {
    let p = Prosody::start();
    for u in ["watcher", "bob", "alice", "standby"] {
        p.register(u, u);
    }
    let mut cfg = p.config_toml(&["watcher@localhost", "standby@localhost"]);
    if standby {
        cfg = format!(
            "instance = \"a\"\n{cfg}\n[standby]\njid = \"standby@localhost\"\npassword = \"standby\"\n\
             server = \"{}\"\nallow_plaintext = true\ntakeover = \"2s\"\n",
            p.c2s_addr()
        );
    }
    let pp = Pubpresence::start(&cfg);
    let w = Watcher::connect(&p, "watcher").await;
    wait_online(&pp, &w).await;
    let bob = User::connect(&p, "bob", "r", loopback(120)).await;
    bob.subscribe_to(&p.component_jid);
    let alice = User::connect(&p, "alice", "r", loopback(121)).await;
    alice.subscribe_to(&p.component_jid);
    wait_active(&pp, &w, "bob and alice on active", |a| {
        a.contains_key(&bob.jid) && a.contains_key(&alice.jid)
    })
    .await;
    pp.signal(Sig::Stop);
    bob.show(Some("away"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    pp.signal(Sig::Cont);
    wait_active(&pp, &w, "bob away", |a| {
        a.get(&bob.jid).map(st) == Some("away")
    })
    .await;
    let before = w.active().await[&bob.jid].since;

    delete_as_admin(&p, ACTIVE).await;
    // The component's next write finds active gone and starts over.
    alice.show(Some("dnd"));
    wait_active(&pp, &w, "active rebuilt with both", |a| {
        a.get(&alice.jid).map(st) == Some("dnd") && a.get(&bob.jid).map(st) == Some("away")
    })
    .await;
    assert!(
        pp.log_text().contains("was deleted behind our back"),
        "{}",
        pp.log_text()
    );
    let after = w.active().await[&bob.jid].since;
    assert_eq!(after, before, "bob's since, rebuilt");
    assert!(
        !pp.log_text().contains("back to standby"),
        "{}",
        pp.log_text()
    );
}

/// Active deleted while nobody changes: nothing the component writes finds
/// it gone, so a reader that fetches active and finds nothing probes the
/// component (docs/protocol.md, "Client procedure", step 5), which then
/// checks its nodes and rebuilds active with every connection. The soak's
/// 30-minute run found active missing for over 90 s without this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_deletion_is_found_when_a_reader_probes() {
    let p = Prosody::start();
    for u in ["watcher", "bob"] {
        p.register(u, u);
    }
    let pp = Pubpresence::start(&p.config_toml(&["watcher@localhost"]));
    let w = Watcher::connect(&p, "watcher").await;
    wait_online(&pp, &w).await;
    let bob = User::connect(&p, "bob", "r", loopback(122)).await;
    bob.subscribe_to(&p.component_jid);
    wait_active(&pp, &w, "bob on active", |a| a.contains_key(&bob.jid)).await;
    delete_as_admin(&p, ACTIVE).await;
    assert!(w.try_active().await.is_none(), "active is gone");
    w.c2s
        .send(presence(Some(&p.component_jid), Some("probe"), None))
        .expect("probe");
    wait_active(&pp, &w, "active rebuilt with bob", |a| {
        a.contains_key(&bob.jid)
    })
    .await;
    assert!(
        pp.log_text()
            .contains("node presence/active was deleted behind our back"),
        "{}",
        pp.log_text()
    );
}

/// The configuration form of `node` as the server's admin reads it.
async fn node_config(admin: &c2s::C2s, p: &Prosody, node: &str) -> BTreeMap<String, String> {
    let get = pubpresence::wire::pubsub::configure_get(node);
    let res = admin
        .iq(iq_get(&p.pubsub_jid, get), T)
        .await
        .expect("read node config");
    let form = res
        .children()
        .flat_map(|c| c.children())
        .find_map(pubpresence::wire::forms::find)
        .expect("a config form");
    form.children()
        .filter(|f| f.name() == "field")
        .filter_map(|f| {
            let var = f.attr("var")?.to_string();
            let v = f.children().find(|v| v.name() == "value")?.text();
            Some((var, v))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_reconfigured_behind_its_back_is_configured_again() {
    let p = Prosody::start();
    p.register("watcher", "watcher");
    let cfg = format!(
        "audit_interval = \"1s\"\n{}",
        p.config_toml(&["watcher@localhost"])
    );
    let pp = Pubpresence::start(&cfg);
    let w = Watcher::connect(&p, "watcher").await;
    wait_online(&pp, &w).await;
    let (admin, _rx) = common::admin_login(&p, "cfg").await;
    let before = node_config(&admin, &p, LIVE).await;
    assert_eq!(before["pubsub#access_model"], "whitelist");
    // Opened to everyone and its items made persistent, by hand.
    let form = pubpresence::wire::pubsub::config_form(&[
        ("pubsub#access_model", "open".to_string()),
        ("pubsub#persist_items", "1".to_string()),
    ]);
    admin
        .iq(
            iq_set(
                &p.pubsub_jid,
                pubpresence::wire::pubsub::configure(LIVE, form),
            ),
            T,
        )
        .await
        .expect("reconfigure live");
    assert_eq!(
        node_config(&admin, &p, LIVE).await["pubsub#access_model"],
        "open"
    );
    pp.wait_log("reconfigured behind our back", T, "drift not noticed")
        .await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let now = node_config(&admin, &p, LIVE).await;
        if now == before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "live not configured again: {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = pp.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("reconfigured behind our back"))
        .unwrap_or_default();
    assert!(
        line.contains("presence/live")
            && line.contains("pubsub#access_model: open instead of whitelist"),
        "one line naming the node and what changed: {line}"
    );
    // Once put right, audits leave the nodes alone.
    let n = log.matches("reconfigured behind our back").count();
    let audits = log.matches(" audit ").count();
    pp.wait_log_count(" audit ", audits + 2, T, "no more audits")
        .await;
    assert_eq!(
        pp.log_text()
            .matches("reconfigured behind our back")
            .count(),
        n,
        "{}",
        pp.log_text()
    );
}

/// Prosody with the component taken out of the global `admins`, and given
/// `extra` in the pubsub component's section instead.
fn prosody_without_admin_rights(pubsub_section: &str) -> Prosody {
    let mut p = Prosody::start();
    let lua = std::fs::read_to_string(p.config_path()).expect("read prosody config");
    let admins = format!("admins = {{ \"{}\", ", p.component_jid);
    assert_eq!(lua.matches(&admins).count(), 1, "{lua}");
    let pubsub = format!("Component \"{}\" \"pubsub\"\n", p.pubsub_jid);
    assert_eq!(lua.matches(&pubsub).count(), 1, "{lua}");
    let lua = lua
        .replace(&admins, "admins = { ")
        .replace(&pubsub, &format!("{pubsub}{pubsub_section}"));
    std::fs::write(p.config_path(), lua).expect("write prosody config");
    p.restart();
    p
}

#[test]
fn no_rights_on_the_pubsub_service_is_one_fatal_line_naming_the_setting() {
    let p = prosody_without_admin_rights("");
    let mut pp = Pubpresence::start(&p.config_toml(&[]));
    let status = pp.wait(T).expect("exits by itself");
    assert!(!status.success());
    let log = pp.log_text();
    let last = log.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("pubpresence: ")
            && last.contains("presence/status")
            && last.contains("forbidden")
            && last.contains("`admins`"),
        "one line naming the node, the refusal and the setting: {last}"
    );
    assert!(!log.contains(&p.secret), "no secret in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_admin_rights_on_the_server_is_one_clear_error_naming_the_setting() {
    // May own nodes on pubsub.localhost, but is no admin of localhost.
    let p = prosody_without_admin_rights("    admins = { \"pubpresence.localhost\" }\n");
    let mut pp = Pubpresence::start(&p.config_toml(&[]));
    pp.wait_log("listing online sessions failed", T, "no error line")
        .await;
    let log = pp.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("listing online sessions failed"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("forbidden") && line.contains("`admins`"),
        "names the refusal and the setting: {line}"
    );
    // Not fatal: the operator may fix the server; it keeps retrying.
    pp.wait_log("reconnecting in", T, "no retry").await;
    assert!(
        pp.wait(Duration::from_millis(200)).is_none(),
        "still running"
    );
    assert!(!log.contains(&p.secret), "no secret in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_every_iq_and_shrugs_off_hostile_stanzas() {
    let p = Prosody::start();
    p.register("watcher", "watcher");
    p.register("eve", "eve");
    let pp = Pubpresence::start(&p.config_toml(&["watcher@localhost"]));
    let mut w = Watcher::connect(&p, "watcher").await;
    wait_online(&pp, &w).await;
    w.subscribe_all().await;
    let eve = User::connect(&p, "eve", "r", loopback(110)).await;
    eve.subscribe_to(&p.component_jid);
    w.wait_until("eve on live", T, |s| {
        s.live.iter().any(|i| i.fulljid == eve.jid)
    })
    .await;
    let to = p.component_jid.as_str();

    // disco#info: who it is; ping: pong; anything else: service-unavailable.
    let info = eve
        .c2s
        .iq(
            iq_get(to, Element::builder("query", ns::DISCO_INFO).build()),
            T,
        )
        .await
        .expect("disco#info");
    let q = info.children().next().expect("query");
    assert!(q
        .children()
        .any(|c| c.name() == "identity" && c.attr("name") == Some("pubpresence")));
    assert!(q.children().any(|c| c.attr("var") == Some(ns::PING)));
    eve.c2s
        .iq(iq_get(to, Element::builder("ping", ns::PING).build()), T)
        .await
        .expect("pong");
    for (kind, payload) in [
        ("get", Element::builder("vCard", "vcard-temp").build()),
        ("set", Element::builder("query", "jabber:iq:roster").build()),
        ("get", Element::builder("query", ns::DISCO_ITEMS).build()),
        (
            "set",
            Element::builder("unknown", "urn:x-test:hostile").build(),
        ),
    ] {
        let iq = if kind == "get" {
            iq_get(to, payload)
        } else {
            iq_set(to, payload)
        };
        match eve.c2s.iq(iq, T).await {
            Err(C2sError::Stanza { condition, .. }) => assert_eq!(condition, "service-unavailable"),
            other => panic!("{kind}: expected service-unavailable, got {other:?}"),
        }
    }
    // Answers nobody asked for, messages, junk presences: ignored.
    for xml in [
        format!("<iq type='result' id='nobody-asked' to='{to}'/>"),
        format!("<iq type='error' id='nor-this' to='{to}'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"),
        format!("<message to='{to}'><body>hello</body></message>"),
        format!("<presence to='{to}' type='subscribed'/>"),
        "<presence><show>bogus</show><status>x</status></presence>".to_string(),
        "<presence><show>away</show><unknown xmlns='urn:x-test'><deep><deeper/></deep></unknown></presence>".to_string(),
        format!("<presence><show>xa</show><status>{}</status></presence>", "A".repeat(200_000)),
        format!("<presence><show>{}</show></presence>", "d".repeat(50_000)),
    ] {
        eve.c2s.send_raw(&xml).await.expect("send");
    }
    eve.show(Some("chat"));
    w.wait_until("eve chat", T, |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == eve.jid && st(i) == "chat")
    })
    .await;
    let live: Vec<&'static str> = w
        .seen()
        .live
        .iter()
        .filter(|i| i.fulljid == eve.jid)
        .map(st)
        .collect();
    assert_eq!(
        live,
        ["online", "away", "xa", "chat"],
        "only the valid changes, in order"
    );
    assert!(
        w.seen()
            .statuses
            .iter()
            .all(|s| *s == ServiceStatus::Online),
        "never back to init"
    );
    assert_eq!(pp.log_text().matches("start-up discovery done").count(), 1);
}

/// A pubsub service that gives node-owner requests up now and then:
/// "Database failure", type `wait`, as ejabberd before 25.10 answers a
/// transaction that met another's locks (README, "Configuring ejabberd").
/// The lab's Prosody plays it (`busy_owner`: the first two creations,
/// configurations and member changes of each node, `BUSY_OWNER_REFUSALS`). The component asks
/// again: it comes online on its first connection, with its nodes
/// configured as always.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_errors_on_node_setup_are_asked_again() {
    // Each request gets through on an attempt the component still makes.
    const _: () = assert!(
        pubpresence_lab::BUSY_OWNER_REFUSALS < pubpresence::xmpp::iq::OWNER_ATTEMPTS as usize
    );
    let p = Prosody::start_with(pubpresence_lab::ProsodyOptions {
        busy_owner: true,
        ..Default::default()
    });
    p.register("watcher", "watcher");
    let pp = Pubpresence::start(&p.config_toml(&["watcher@localhost"]));
    let w = Watcher::connect(&p, "watcher").await;
    wait_online(&pp, &w).await;

    let server_log = std::fs::read_to_string(p.log_path()).expect("read prosody's log");
    let refused = server_log
        .matches("answered with a temporary error")
        .count();
    // Status, active and live: each configured (not found), created and
    // given its member (the watcher), each request refused
    // BUSY_OWNER_REFUSALS (2) times: 18.
    assert_eq!(
        refused,
        3 * 3 * pubpresence_lab::BUSY_OWNER_REFUSALS,
        "{server_log}"
    );
    let log = pp.log_text();
    assert_eq!(
        log.matches("the server answered a temporary error (internal-server-error")
            .count(),
        refused,
        "every refusal asked again: {log}"
    );
    assert_eq!(pp.connections(), 1, "online on its first connection: {log}");
    let (admin, _rx) = common::admin_login(&p, "cfg").await;
    assert_eq!(
        node_config(&admin, &p, LIVE).await["pubsub#access_model"],
        "whitelist"
    );
    // A member: the watcher may read the whitelisted active.
    assert!(w.active().await.is_empty());
}
