//! Where Prosody 13 differs from 0.12 in ways that touch pubpresence, each
//! checked against the real server the lab runs (`lab::install`: 0.12.3 or
//! 13.0.x). Every other suite runs on both versions too; these pin down the
//! differences themselves, so that a server upgrade that changes one of
//! them fails here, by name.

mod common;

use common::{admin_login, Prosody};
use pubpresence::minidom::Element;
use pubpresence::wire::{ns, pubsub, Attr};
use pubpresence::xmpp::{connect_component, Disconnect};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn iq(kind: &str, to: &str, payload: Element) -> Element {
    Element::builder("iq", ns::CLIENT)
        .a("type", kind)
        .a("to", to)
        .append(payload)
        .build()
}

fn is_13(p: &Prosody) -> bool {
    p.install.major() >= 13
}

/// Prosody 13 closes a component's stream with `invalid-from` at the first
/// stanza without `from` (0.12 filled it in). Every stanza pubpresence
/// sends names its sender (`wire::iq`, `presence::build`, the replies),
/// which every suite on 13 shows: one stanza without would end the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_stanza_without_from() {
    let p = Prosody::start();
    let (conn, _inbound, task) =
        connect_component(&p.component_addr(), &p.component_jid, &p.secret, T)
            .await
            .expect("component handshake");
    let probe = Element::builder("presence", ns::COMPONENT_ACCEPT)
        .a("to", "admin@localhost")
        .a("type", "probe")
        .build();
    conn.send(probe).expect("queued");
    // A request with `from` after it: answered only if the stream survived.
    let ping = Element::builder("ping", ns::PING).build();
    let answer = conn.iq("get", &p.domain, ping).await;
    if is_13(&p) {
        let end = tokio::time::timeout(T, task)
            .await
            .expect("the stream ends")
            .expect("the connection task");
        assert_eq!(
            end,
            Disconnect::StreamError("invalid-from".into()),
            "{}",
            p.label()
        );
        assert!(answer.is_err(), "{}: {answer:?}", p.label());
    } else {
        assert!(answer.is_ok(), "{}: {answer:?}", p.label());
        assert!(!task.is_finished(), "{}: the stream stays up", p.label());
    }
}

/// Reconfiguring an existing node to `pubsub#max_items = max` (what active
/// gets at every start-up) keeps the node's capacity at
/// `pubsub_max_items`, on both versions: 300 items (above Prosody's
/// built-in 256) all stay after the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_items_max_on_an_existing_node() {
    let p = Prosody::start();
    let (admin, _rx) = admin_login(&p, "max").await;
    let node = "t/max";
    let fields = |max: &str| {
        vec![
            ("pubsub#persist_items", "1".to_string()),
            ("pubsub#max_items", max.to_string()),
        ]
    };
    admin
        .iq(
            iq(
                "set",
                &p.pubsub_jid,
                pubsub::create(node, pubsub::config_form(&fields("1"))),
            ),
            T,
        )
        .await
        .expect("create with max_items 1");
    admin
        .iq(
            iq(
                "set",
                &p.pubsub_jid,
                pubsub::configure(node, pubsub::config_form(&fields("max"))),
            ),
            T,
        )
        .await
        .expect("reconfigure to max");
    let publishes = (0..300).map(|i| {
        let item = Element::builder("x", "urn:test").build();
        admin.iq(
            iq(
                "set",
                &p.pubsub_jid,
                pubsub::publish(node, Some(&format!("i{i}")), item),
            ),
            T,
        )
    });
    for r in futures::future::join_all(publishes).await {
        r.expect("publish");
    }
    let items = admin
        .iq(iq("get", &p.pubsub_jid, pubsub::items(node)), T)
        .await
        .expect("items");
    assert_eq!(pubsub::parse_items(&items).len(), 300, "{}", p.label());
}

/// Who may ask disco#info about a whitelist node: on 13 a member is told
/// (it has the node's metadata rights through its affiliation), a
/// stranger is refused; 0.12 tells anyone. pubpresence's clients never
/// ask (they read the nodes' items), so neither answer touches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disco_on_a_whitelist_node() {
    let p = Prosody::start();
    for u in ["member", "stranger"] {
        p.register(u, u);
    }
    let (admin, _rx) = admin_login(&p, "disco").await;
    let node = "t/whitelist";
    let form = pubsub::config_form(&[("pubsub#access_model", "whitelist".to_string())]);
    admin
        .iq(iq("set", &p.pubsub_jid, pubsub::create(node, form)), T)
        .await
        .expect("create");
    admin
        .iq(
            iq(
                "set",
                &p.pubsub_jid,
                pubsub::affiliations_set(node, &[("member@localhost".to_string(), "member")]),
            ),
            T,
        )
        .await
        .expect("affiliate the member");
    let ask = |user: &'static str| {
        let p = &p;
        async move {
            let (c, _rx) = pubpresence::xmpp::c2s::connect_as(
                &format!("{user}@localhost/d"),
                user,
                p.c2s_addr(),
                common::loopback(1),
            )
            .await
            .expect("login");
            let q = Element::builder("query", ns::DISCO_INFO)
                .a("node", node)
                .build();
            let r = c.iq(iq("get", &p.pubsub_jid, q), T).await;
            c.close().await;
            r.map(|_| ()).map_err(|e| e.to_string())
        }
    };
    let member = ask("member").await;
    let stranger = ask("stranger").await;
    assert!(member.is_ok(), "{}: member: {member:?}", p.label());
    if is_13(&p) {
        assert!(
            stranger.as_ref().is_err_and(|e| e.contains("forbidden")),
            "{}: stranger: {stranger:?}",
            p.label()
        );
    } else {
        assert!(stranger.is_ok(), "{}: stranger: {stranger:?}", p.label());
    }
}

/// Creating a node on the pubsub service: Prosody 13 checks a
/// `pubsub:create-node` permission, which its roles give admins only; 0.12
/// lets only admins create on a pubsub component as well. Both refuse an
/// ordinary user (`forbidden`), and both let an admin create (the admin
/// here; the component, an admin, in every suite): the README's
/// `admins = { "pubpresence.example.org" }` line covers both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_creation_rights() {
    let p = Prosody::start();
    p.register("eve", "eve");
    let (eve, _rx) = pubpresence::xmpp::c2s::connect_as(
        "eve@localhost/d",
        "eve",
        p.c2s_addr(),
        common::loopback(1),
    )
    .await
    .expect("login");
    let form = || pubsub::config_form(&[("pubsub#access_model", "open".to_string())]);
    let r = eve
        .iq(iq("set", &p.pubsub_jid, pubsub::create("t/eve", form())), T)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert!(
        r.as_ref().is_err_and(|e| e.contains("forbidden")),
        "{}: an ordinary user creating a node: {r:?}",
        p.label()
    );
    let (admin, _arx) = admin_login(&p, "create").await;
    admin
        .iq(
            iq("set", &p.pubsub_jid, pubsub::create("t/admin", form())),
            T,
        )
        .await
        .unwrap_or_else(|e| panic!("{}: the admin creating a node: {e}", p.label()));
}
