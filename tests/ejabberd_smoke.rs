//! The ejabberd lab itself: a real ejabberd (23.01 or 24.12) in a temp dir, two users
//! from distinct loopback addresses, the admin's view of their sessions
//! (XEP-0133 user-stats, disco#items `online users`), the component
//! listener, and a second node joined into a cluster.

use pubpresence::minidom::Element;
use pubpresence::wire::privilege::{IqGrant, Permissions, Version, NEEDED};
use pubpresence::xmpp::c2s::{self, C2s};
use pubpresence_lab::ejabberd::{Ejabberd, EjabberdOptions};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Receiver;

const T: Duration = Duration::from_secs(10);
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

fn xml(s: &str) -> Element {
    s.parse()
        .unwrap_or_else(|e| panic!("test XML does not parse ({e}): {s}"))
}

async fn start(options: EjabberdOptions) -> Ejabberd {
    tokio::task::spawn_blocking(move || Ejabberd::start_with(options))
        .await
        .expect("start task")
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn login(e: &Ejabberd, node: usize, jid: &str, pw: &str, ip: u8) -> (C2s, Receiver<Element>) {
    let addr = e.c2s_addr_of(node).expect("node");
    let (c, rx) = c2s::connect_as(jid, pw, addr, loopback(ip))
        .await
        .unwrap_or_else(|err| panic!("login {jid}: {err}\n{}", e.log_tail(30)));
    c.send(xml("<presence xmlns='jabber:client'/>"))
        .expect("presence");
    (c, rx)
}

/// user-stats (XEP-0133) of `bare` as the admin: full JID -> `ip:port`.
async fn user_stats(admin: &C2s, domain: &str, bare: &str) -> BTreeMap<String, String> {
    let done = pubpresence_lab::admin::run_command(
        admin,
        domain,
        "http://jabber.org/protocol/admin#user-stats",
        &[("accountjid", bare)],
    )
    .await
    .unwrap_or_else(|e| panic!("user-stats: {e}"));
    let values = |var: &str| pubpresence_lab::admin::values(&done, var);
    let resources = values("onlineresources");
    let ips = values("ipaddresses");
    assert_eq!(
        resources.len(),
        ips.len(),
        "user-stats of {bare}: resources and IPs do not pair up: {}",
        String::from(&done)
    );
    resources
        .into_iter()
        .zip(ips)
        .map(|(r, ip)| (format!("{bare}/{r}"), ip))
        .collect()
}

/// disco#items node `online users` at the domain: every session's full JID.
async fn online_sessions(admin: &C2s, domain: &str) -> Vec<String> {
    let res = admin
        .iq(
            xml(&format!(
                "<iq xmlns='jabber:client' type='get' to='{domain}'>\
                 <query xmlns='{DISCO_ITEMS}' node='online users'/></iq>"
            )),
            T,
        )
        .await
        .unwrap_or_else(|e| panic!("disco#items online users: {e}"));
    let mut jids: Vec<String> = res
        .get_child("query", DISCO_ITEMS)
        .into_iter()
        .flat_map(|q| q.children())
        .filter_map(|i| i.attr("jid").map(str::to_string))
        .collect();
    jids.sort();
    jids
}

/// The IP part of ejabberd's `ip:port` (IPv4 here).
fn ip_of(v: &str) -> &str {
    v.rsplit_once(':').map_or(v, |(ip, _)| ip)
}

async fn eventually<T: PartialEq + std::fmt::Debug, F: std::future::Future<Output = T>>(
    want: T,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + T;
    loop {
        let got = f().await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "got {got:?}, expected {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_smoke() {
    let mut e = start(EjabberdOptions::default()).await;
    assert!(e.pid().is_some());
    e.register("alice", "wonderland").expect("register alice");
    e.register_many(&[("bob", "builder"), ("carol", "c")])
        .expect("in-band registration");
    assert!(
        e.register("alice", "again").is_err(),
        "registering an existing account must fail"
    );

    let (_alice, _arx) = login(&e, 0, "alice@localhost/desk", "wonderland", 2).await;
    let (_bob, _brx) = login(&e, 0, "bob@localhost/phone", "builder", 3).await;
    let (admin, _adrx) = login(&e, 0, "admin@localhost/check", "admin", 1).await;

    let a = user_stats(&admin, &e.domain, "alice@localhost").await;
    let b = user_stats(&admin, &e.domain, "bob@localhost").await;
    let ips: BTreeMap<&str, &str> = a
        .iter()
        .chain(b.iter())
        .map(|(k, v)| (k.as_str(), ip_of(v)))
        .collect();
    assert_eq!(
        ips,
        BTreeMap::from([
            ("alice@localhost/desk", "127.0.0.2"),
            ("bob@localhost/phone", "127.0.0.3"),
        ]),
        "user-stats: {a:?} {b:?}"
    );
    // ejabberd reports `ip:port`.
    assert!(a.values().all(|v| v.starts_with("127.0.0.2:")), "{a:?}");

    assert_eq!(
        online_sessions(&admin, &e.domain).await,
        vec![
            "admin@localhost/check".to_string(),
            "alice@localhost/desk".to_string(),
            "bob@localhost/phone".to_string(),
        ]
    );

    // The component listener takes the lab's secret (config_toml's).
    let cfg = e.config_toml(&["admin@localhost"]);
    assert!(
        cfg.contains(&e.component_addr()) && cfg.contains(&e.secret),
        "{cfg}"
    );
    let (conn, _inbound, _task) =
        pubpresence::xmpp::connect_component(&e.component_addr(), &e.component_jid, &e.secret, T)
            .await
            .unwrap_or_else(|err| panic!("component handshake: {err}\n{}", e.log_tail(30)));
    let ping = xml("<ping xmlns='urn:xmpp:ping'/>");
    conn.iq("get", &e.domain, ping)
        .await
        .expect("the server answers the component's ping");
    conn.close().await;

    // A restart keeps ports and accounts.
    let (c2s_before, pid_before) = (e.c2s_addr(), e.pid());
    tokio::task::block_in_place(|| e.restart()).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(e.c2s_addr(), c2s_before);
    assert_ne!(e.pid(), pid_before, "a new VM");
    let (_alice, _arx) = login(&e, 0, "alice@localhost/again", "wonderland", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_privileged_component_gets_the_permission_message() {
    let e = start(EjabberdOptions {
        privileged_presence: true,
        ..Default::default()
    })
    .await;
    let (_conn, mut inbound, _task) =
        pubpresence::xmpp::connect_component(&e.component_addr(), &e.component_jid, &e.secret, T)
            .await
            .unwrap_or_else(|err| panic!("component handshake: {err}\n{}", e.log_tail(30)));
    let perms = tokio::time::timeout(T, async {
        while let Some(el) = inbound.recv().await {
            if let Some(p) = Permissions::parse(&el) {
                return p;
            }
        }
        panic!("the component stream ended");
    })
    .await
    .expect("no privilege message within 10 s");
    assert_eq!(perms.host, "localhost");
    assert_eq!(
        perms.presence.as_deref(),
        Some("managed_entity"),
        "{perms:?}"
    );
    if e.wants_privileged_iq() {
        // ejabberd 24.10 on: XEP-0356 v2, with the lab's IQ grant.
        assert_eq!(perms.version, Version::V2, "{}: {perms:?}", e.label());
        assert!(perms.iq_advertised, "{perms:?}");
        assert_eq!(perms.missing(NEEDED), vec![], "{perms:?}");
        assert_eq!(perms.grant("jabber:iq:version"), Some(IqGrant::Get));
    } else {
        // ejabberd 23.01: v1, no IQ permission.
        assert_eq!(perms.version, Version::V1, "{}: {perms:?}", e.label());
        assert!(!perms.iq_advertised, "{perms:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_cluster_smoke() {
    let mut e = start(EjabberdOptions::default()).await;
    let n = tokio::task::block_in_place(|| e.add_node()).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(n, 1);
    assert_ne!(e.c2s_addr_of(1).expect("node 1"), e.c2s_addr());
    // Accounts are shared: registered through node 0, used on node 1.
    e.register("dave", "d").expect("register dave");
    let (_dave, _drx) = login(&e, 1, "dave@localhost/n2", "d", 4).await;
    let (admin, _adrx) = login(&e, 0, "admin@localhost/check", "admin", 1).await;
    // The admin on node 0 sees the session on node 1, with its address.
    eventually(
        vec![
            "admin@localhost/check".to_string(),
            "dave@localhost/n2".to_string(),
        ],
        || online_sessions(&admin, "localhost"),
    )
    .await;
    let d = user_stats(&admin, "localhost", "dave@localhost").await;
    assert_eq!(
        d.values().map(|v| ip_of(v)).collect::<Vec<_>>(),
        vec!["127.0.0.4"],
        "{d:?}"
    );
    assert!(e
        .config_toml_cluster(&[])
        .contains(&e.component_addr_of(1).expect("node 1")));

    // Node 1 dies with its session; node 0 drops it; node 1 comes back.
    tokio::task::block_in_place(|| e.kill_node(1)).expect("kill node 1");
    eventually(vec!["admin@localhost/check".to_string()], || {
        online_sessions(&admin, "localhost")
    })
    .await;
    tokio::task::block_in_place(|| e.start_node(1)).unwrap_or_else(|err| panic!("{err}"));
    let (_dave, _drx) = login(&e, 1, "dave@localhost/again", "d", 4).await;
    eventually(
        vec![
            "admin@localhost/check".to_string(),
            "dave@localhost/again".to_string(),
        ],
        || online_sessions(&admin, "localhost"),
    )
    .await;
}
