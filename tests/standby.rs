//! docs/protocol.md, "Standby and takeover", against real Prosody and ejabberd: two
//! instances, one active; takeover after kill -9 and after SIGTERM, with the
//! figures printed; a restarted instance stays standby; only one instance
//! publishes. On ejabberd also fencing of a frozen instance.

mod common;

use common::pp::*;
use common::{loopback, Lab, Server};
use pubpresence::wire::status::ServiceStatus;
use pubpresence_lab::process::Sig;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn config(p: &Server, instance: &str) -> String {
    format!(
        "instance = \"{instance}\"\n{}\n[standby]\njid = \"standby@localhost\"\npassword = \"standby\"\n\
         server = \"{}\"\nallow_plaintext = true\ntakeover = \"2s\"\n",
        p.config_toml(&["watcher@localhost", "standby@localhost"]),
        p.c2s_addr()
    )
}

fn items_of(w: &Watcher, inst: &str) -> Vec<ServiceStatus> {
    w.seen()
        .status_items
        .iter()
        .filter(|(_, i)| i.as_deref() == Some(inst))
        .map(|(s, _)| *s)
        .collect()
}

/// Waits until instance `inst` has published `st` (since the last clear).
async fn wait_item(w: &mut Watcher, inst: &str, st: ServiceStatus, timeout: Duration) {
    let inst = inst.to_string();
    w.wait_until(&format!("{inst} {}", st.as_str()), timeout, |s| {
        s.status_items
            .iter()
            .any(|(x, i)| *x == st && i.as_deref() == Some(inst.as_str()))
    })
    .await;
}

/// Polls active until it holds exactly `want` (full JID -> status), or
/// panics after `timeout` with what it holds and `context()`.
async fn statuses_become(
    w: &Watcher,
    want: &BTreeMap<String, &str>,
    timeout: Duration,
    context: impl Fn() -> String,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let active = w.active().await;
        let got: BTreeMap<String, &str> = active
            .values()
            .map(|i| (i.fulljid.clone(), st(i)))
            .collect();
        if &got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "active not exact: {got:?}, want {want:?}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn exact(w: &Watcher, want: &BTreeMap<String, (&str, String)>) {
    let active = w.active().await;
    let got: BTreeMap<String, (&str, String)> = active
        .values()
        // With XEP-0356 presence permission every session is on active,
        // the watcher's and the standby account's too: they never send
        // presence, so ejabberd's listing is all that shows them, as
        // `unknown` (README, "Presence without rosters (XEP-0356)").
        .filter(|i| {
            let ours = i.fulljid.starts_with("watcher@") || i.fulljid.starts_with("standby@");
            !(ours && st(i) == "unknown")
        })
        .map(|i| (i.fulljid.clone(), (st(i), i.ip.clone())))
        .collect();
    assert_eq!(&got, want, "active exact");
}

async fn one_active_instance_takes_over_after_kill_and_after_sigterm(p: Server) {
    let server = p.label();
    for u in ["watcher", "standby"] {
        p.register(u, u);
    }
    // A starts alone: nobody answers its pings, it takes over.
    let mut a = Pubpresence::start(&config(&p, "a"));
    let mut w = Watcher::connect(&p, "watcher").await;
    w.until_online(&a).await;
    w.subscribe_all().await;
    // B starts while A is active: it waits and never publishes.
    let b = Pubpresence::start(&config(&p, "b"));
    b.wait_log("instance a is active; waiting", T, "b not waiting")
        .await;
    let mut users = Vec::new();
    for i in 0..6u8 {
        let name = format!("s{i}");
        p.register(&name, &name);
        let u = User::connect(&p, &name, "r", loopback(130 + i)).await;
        u.subscribe_to(p.component_jid());
        let jid = u.jid.clone();
        w.wait_until(&jid, T, |s| s.live.iter().any(|i| i.fulljid == jid))
            .await;
        users.push(u);
    }
    for u in &users {
        u.show(Some("away"));
    }
    w.wait_until("six away", T, |s| {
        s.live.iter().filter(|i| st(i) == "away").count() == 6
    })
    .await;
    assert!(items_of(&w, "b").is_empty(), "b never published");
    assert_eq!(w.seen().live.len(), 12, "every change applied once");

    // kill -9 of A, with changes during the gap.
    w.clear();
    let killed = Instant::now();
    a.kill();
    users.remove(0).close().await;
    users[0].show(Some("dnd"));
    let newcomer = User::connect(&p, "s1", "new", loopback(140)).await;
    wait_item(&mut w, "b", ServiceStatus::Online, Duration::from_secs(10)).await;
    let took = killed.elapsed();
    println!(
        "{server}: takeover after kill -9: {} ms (target: 5000)",
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(5),
        "b online {took:?} after the kill"
    );
    let mut want: BTreeMap<String, (&str, String)> = (2..6)
        .map(|i| {
            (
                format!("s{i}@localhost/r"),
                ("away", format!("127.0.0.{}", 130 + i)),
            )
        })
        .collect();
    want.insert("s1@localhost/r".into(), ("dnd", "127.0.0.131".into()));
    want.insert("s1@localhost/new".into(), ("online", "127.0.0.140".into()));
    exact(&w, &want).await;
    // (With presence permission the standby account's session is on
    // active: B ends it when it takes over, and its item goes too.)
    let retracted: Vec<String> = w
        .seen()
        .active_retracts
        .into_iter()
        .filter(|j| !j.starts_with("standby@"))
        .collect();
    assert_eq!(
        retracted,
        vec!["s0@localhost/r".to_string()],
        "no connection that stayed was retracted"
    );

    // A restarted: stays standby, status untouched.
    w.clear();
    let a2 = Pubpresence::start(&config(&p, "a"));
    a2.wait_log("instance b is active; waiting", T, "a not waiting")
        .await;
    users[1].show(Some("xa"));
    w.wait_until("xa", T, |s| s.live.iter().any(|i| st(i) == "xa"))
        .await;
    assert!(
        w.seen().status_items.is_empty(),
        "status untouched: {:?}",
        w.seen().status_items
    );

    // SIGTERM of B: A is online within 2 s.
    let mut b = b;
    let stopped = Instant::now();
    assert!(b.terminate().success());
    wait_item(&mut w, "a", ServiceStatus::Online, Duration::from_secs(10)).await;
    let took = stopped.elapsed();
    println!(
        "{server}: takeover after SIGTERM: {} ms (target: 2000)",
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(2),
        "a online {took:?} after SIGTERM of b"
    );
    want.insert("s2@localhost/r".into(), ("xa", "127.0.0.132".into()));
    exact(&w, &want).await;
    drop((users, newcomer, a2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_active_instance_takes_over_after_kill_and_after_sigterm_on_prosody() {
    one_active_instance_takes_over_after_kill_and_after_sigterm(Server::prosody()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_active_instance_takes_over_after_kill_and_after_sigterm_on_ejabberd() {
    one_active_instance_takes_over_after_kill_and_after_sigterm(Server::ejabberd()).await;
}

/// The same with XEP-0356 presence permission: on ejabberd 24.10 and later
/// each instance's requests go as privileged IQs, and the grant is the
/// server's per component JID, so the standby must not connect before the
/// old connection is gone (README, "Running two instances").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_active_instance_takes_over_after_kill_and_after_sigterm_on_privileged_ejabberd() {
    one_active_instance_takes_over_after_kill_and_after_sigterm(Server::ejabberd_privileged())
        .await;
}

/// Standby (docs/protocol.md, "Standby and takeover") on ejabberd, which accepts a second connection for the same
/// component: the active instance is frozen (SIGSTOP) until the standby
/// starts its takeover (its `init` is on the status node), then resumed
/// (SIGCONT): it steps down without publishing anything, the takeover
/// completes, and active ends exact, statuses included: the status changes
/// that ejabberd handed to the frozen instance are lost with it, so it asks
/// the other, once gone, to probe every user again (docs/protocol.md,
/// "Standby and takeover"). With eight changes each going to either
/// connection at random, a run without that request passes once in 256.
///
/// While both connections exist ejabberd hands each stanza for the
/// component to one of them at random, IQ answers included (README, "Running two instances"),
/// so the standby's start-up cannot complete while the frozen instance still
/// holds its connection: it retries until the fenced instance has left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_instance_is_fenced_off_on_ejabberd() {
    let e = Server::ejabberd();
    let names = ["f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9"];
    for u in ["watcher", "standby"].iter().chain(&names) {
        e.register(u, u);
    }
    let cfg = |instance: &str| {
        format!(
            "instance = \"{instance}\"\naudit_interval = \"2s\"\n{}\n[standby]\njid = \"standby@localhost\"\n\
             password = \"standby\"\nserver = \"{}\"\nallow_plaintext = true\ntakeover = \"2s\"\n",
            e.config_toml(&["watcher@localhost", "standby@localhost"])
                .replace("probe_timeout = \"2s\"", "probe_timeout = \"2s\"\niq_timeout = \"2s\""),
            e.c2s_addr()
        )
    };
    let a = Pubpresence::start(&cfg("a"));
    let mut w = Watcher::connect(&e, "watcher").await;
    w.until_online(&a).await;
    w.subscribe_all().await;
    let b = Pubpresence::start(&cfg("b"));
    b.wait_log("instance a is active; waiting", T, "b not waiting")
        .await;
    let mut users = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let u = User::connect(&e, name, "r", loopback(190 + i as u8)).await;
        u.subscribe_to(e.component_jid());
        let jid = u.jid.clone();
        w.wait_until(&jid, T, |s| s.live.iter().any(|i| i.fulljid == jid))
            .await;
        users.push(u);
    }

    // Freeze A until B has taken over.
    w.clear();
    let signal = |sig| {
        pubpresence_lab::process::signal(a.pid(), sig);
    };
    signal(Sig::Stop);
    // Each takeover attempt of B gets the answer to its first request (the
    // status node's configuration, before `init`) only if ejabberd happens to
    // route it to B rather than to the frozen A: one chance in two per
    // attempt, an attempt every ~4 s (seen: four misses in a row in 15 s).
    wait_item(&mut w, "b", ServiceStatus::Init, Duration::from_secs(60)).await;
    // While both are connected: a session ends, the others change status.
    users.remove(2).close().await;
    let shows = ["away", "xa", "dnd", "chat"];
    let mut want = BTreeMap::new();
    for (k, u) in users.iter().enumerate() {
        let show = shows[k % shows.len()];
        u.show(Some(show));
        want.insert(u.jid.clone(), show);
    }
    // Resumed: A steps down and publishes nothing.
    let resumed = w.seen().status_items.len();
    signal(Sig::Cont);
    a.wait_log("stepping down", T, "a did not step down").await;
    // Having held a connection beside B's, A asks for every user to be
    // probed again once it is gone.
    a.wait_log(
        "asking the active instance to probe every user again",
        T,
        "a did not ask for the users to be probed again",
    )
    .await;
    // Then one instance ends up online. Usually B; but B's start-up cannot
    // finish while A holds its connection, so B may have gone back to
    // standby, found A answering in the instant before A stepped down, and
    // waited: then both are standbys, and whichever takes over first wins.
    w.wait_until("an instance online", Duration::from_secs(60), |s| {
        matches!(s.status_items.last(), Some((ServiceStatus::Online, _)))
    })
    .await;
    let after: Vec<_> = w.seen().status_items[resumed..].to_vec();
    let log = a.log_text();
    let stepped = log.find("stepping down").unwrap_or(0);
    let took_over_again = log[stepped..].contains("taking over");
    assert!(
        after.iter().all(|(_, i)| i.as_deref() != Some("a")) || took_over_again,
        "a published after resuming without a new takeover: {after:?}\n{log}"
    );
    // Active exact: what A swallowed is repaired (B's audits for the
    // session that ended, the probes A asked for for the statuses).
    statuses_become(&w, &want, Duration::from_secs(20), || {
        format!("{}\n{}", a.log_text(), b.log_text())
    })
    .await;
    drop((users, a, b));
}

/// The active instance's side of that request, made deterministic: a second
/// connection as the component (the test's own, standing for an instance
/// that took over in vain) receives part of the status changes, which are
/// lost with it. Once it is closed, a probe from the standby account has the
/// active instance probe every user again, and active ends exact. The changes
/// go on until one goes to the other connection: that user's last status
/// never reaches the active instance, so without the probes the test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presences_that_went_to_another_connection_are_probed_again_on_ejabberd() {
    let e = Server::ejabberd();
    let names = ["g1", "g2", "g3", "g4"];
    for u in ["watcher", "standby"].iter().chain(&names) {
        e.register(u, u);
    }
    let a = Pubpresence::start(&config(&e, "a"));
    let mut w = Watcher::connect(&e, "watcher").await;
    w.until_online(&a).await;
    w.subscribe_all().await;
    let mut users = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let u = User::connect(&e, name, "r", loopback(200 + i as u8)).await;
        u.subscribe_to(e.component_jid());
        let jid = u.jid.clone();
        w.wait_until(&jid, T, |s| s.live.iter().any(|i| i.fulljid == jid))
            .await;
        users.push(u);
    }

    let (other, mut other_rx, _task) =
        pubpresence::xmpp::connect_component(&e.component_addr(), e.component_jid(), e.secret(), T)
            .await
            .expect("a second connection as the component");
    let shows = ["away", "xa", "dnd", "chat"];
    let mut want: BTreeMap<String, &str> =
        users.iter().map(|u| (u.jid.clone(), "online")).collect();
    let mut lost = None;
    for n in 0..40 {
        let k = n % users.len();
        let show = shows[(n / users.len() + k) % shows.len()];
        users[k].show(Some(show));
        want.insert(users[k].jid.clone(), show);
        // Where did it go? To A (live shows it) or to the other connection.
        let jid = users[k].jid.clone();
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let seen_by_a = w
                .seen()
                .live
                .iter()
                .rev()
                .find(|i| i.fulljid == jid)
                .is_some_and(|i| st(i) == show);
            if seen_by_a {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(50), other_rx.recv()).await {
                Ok(Some(el))
                    if el.name() == "presence" && el.attr("from") == Some(jid.as_str()) =>
                {
                    lost = Some(format!("{jid} {show}"));
                    break;
                }
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => panic!("the second connection ended"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{jid} {show} went nowhere"
            );
        }
        if lost.is_some() {
            break;
        }
    }
    let lost = lost.expect("ejabberd gave the second connection none of 40 changes");
    other.close().await;

    // What a leaving instance sends (docs/protocol.md, "Standby and takeover").
    let (sb, _sb_rx) = pubpresence::xmpp::c2s::connect_as(
        "standby@localhost/leaving",
        "standby",
        e.c2s_addr(),
        loopback(1),
    )
    .await
    .expect("standby login");
    sb.send(presence(Some(e.component_jid()), Some("probe"), None))
        .expect("probe");
    a.wait_log("probing every user again", T, "no new probe of every user")
        .await;
    statuses_become(&w, &want, T, || {
        format!("({lost} went to the other connection)\n{}", a.log_text())
    })
    .await;
    drop((users, sb, a));
}
