//! The harness itself: a real Prosody, the c2s client from distinct source
//! addresses, the admin view of the server's sessions, and a client that
//! survives hostile input.

mod common;

use common::{loopback, user_sessions, wait_for, Prosody};
use pubpresence::minidom::Element;
use pubpresence::xmpp::c2s::{self, C2sError, C2sOptions};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn xml(s: &str) -> Element {
    s.parse().expect("test XML")
}

fn ping(to: &str) -> Element {
    xml(&format!(
        "<iq xmlns='jabber:client' type='get' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
}

/// Polls the server's view of alice's sessions until it equals `want`.
async fn wait_sessions(admin: &c2s::C2s, p: &Prosody, want: &BTreeMap<String, String>) {
    let deadline = Instant::now() + T;
    loop {
        let got = user_sessions(admin, &p.domain, &["alice"]).await;
        if &got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server's sessions of alice stayed {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_smoke() {
    let mut p = Prosody::start();
    p.register("alice", "wonderland");

    // A wrong password is a clear error, without the password.
    let err = c2s::connect_as(
        "alice@localhost/x",
        "nope-secret",
        p.c2s_addr(),
        loopback(1),
    )
    .await
    .expect_err("a wrong password must not log in");
    let msg = err.to_string();
    assert!(matches!(err, C2sError::Auth(_)), "{err:?}");
    assert!(
        msg.contains("authentication failed for alice@localhost"),
        "{msg}"
    );
    assert!(!msg.contains("nope-secret"), "{msg}");

    // Plaintext is refused unless allowed (this server offers no TLS).
    let err = c2s::connect(&C2sOptions {
        jid: "alice@localhost".parse().expect("jid"),
        password: "wonderland".into(),
        server: Some(p.c2s_addr().to_string()),
        bind_ip: None,
        allow_plaintext: false,
    })
    .await
    .expect_err("no TLS, no plaintext: no login");
    assert!(matches!(err, C2sError::NoTls { .. }), "{err:?}");

    let (desk, mut desk_rx) = c2s::connect_as(
        "alice@localhost/desk",
        "wonderland",
        p.c2s_addr(),
        loopback(2),
    )
    .await
    .expect("desk login");
    let (phone, mut phone_rx) = c2s::connect_as(
        "alice@localhost/phone",
        "wonderland",
        p.c2s_addr(),
        loopback(3),
    )
    .await
    .expect("phone login");
    assert_eq!(desk.jid().to_string(), "alice@localhost/desk");
    assert_eq!(phone.jid().to_string(), "alice@localhost/phone");
    desk.send(xml("<presence xmlns='jabber:client'/>"))
        .expect("desk presence");
    phone
        .send(xml("<presence xmlns='jabber:client'/>"))
        .expect("phone presence");
    // Each resource sees the other's presence.
    wait_for(&mut desk_rx, T, |el| {
        (el.name() == "presence" && el.attr("from") == Some("alice@localhost/phone")).then_some(())
    })
    .await;

    let (admin, _admin_rx) = common::admin_login(&p, "check").await;
    let mut want = BTreeMap::from([
        ("alice@localhost/desk".to_string(), "127.0.0.2".to_string()),
        ("alice@localhost/phone".to_string(), "127.0.0.3".to_string()),
    ]);
    wait_sessions(&admin, &p, &want).await;
    assert_eq!(
        common::online_users(&admin).await,
        vec!["admin@localhost".to_string(), "alice@localhost".to_string()]
    );

    // Hostile input: the server relays the bogus presence to desk; both
    // connections survive and answer pings afterwards.
    phone
        .send_raw("<presence><show>bogus</show></presence>")
        .await
        .expect("raw write");
    wait_for(&mut desk_rx, T, |el| {
        let show = el.get_child("show", "jabber:client")?;
        (el.attr("from") == Some("alice@localhost/phone") && show.text() == "bogus").then_some(())
    })
    .await;
    let pong = phone
        .iq(ping("localhost"), T)
        .await
        .expect("phone still answers");
    assert_eq!(pong.attr("type"), Some("result"));
    desk.iq(ping("localhost"), T)
        .await
        .expect("desk still answers");

    // An error IQ is a stanza error with its condition.
    let err = desk
        .iq(
            xml("<iq xmlns='jabber:client' type='get' to='localhost'><nothing xmlns='urn:example:none'/></iq>"),
            T,
        )
        .await
        .expect_err("an unknown payload is refused");
    assert!(
        matches!(&err, C2sError::Stanza { condition, .. } if condition == "service-unavailable" || condition == "feature-not-implemented"),
        "{err:?}"
    );

    // A clean logout: desk hears phone go unavailable, the session is gone,
    // and phone's receiver ends.
    phone.close().await;
    wait_for(&mut desk_rx, T, |el| {
        (el.attr("from") == Some("alice@localhost/phone") && el.attr("type") == Some("unavailable"))
            .then_some(())
    })
    .await;
    want.remove("alice@localhost/phone");
    wait_sessions(&admin, &p, &want).await;
    let end = tokio::time::timeout(T, async { while phone_rx.recv().await.is_some() {} }).await;
    assert!(end.is_ok(), "the closed connection's receiver ends");

    admin.close().await;

    // restart(): same port, same accounts; the old session ends with it.
    p.restart();
    let end = tokio::time::timeout(T, async { while desk_rx.recv().await.is_some() {} }).await;
    assert!(end.is_ok(), "a connection to a stopped server ends");
    assert!(desk.is_closed());
    assert!(matches!(
        desk.send(xml("<presence xmlns='jabber:client'/>")),
        Err(C2sError::Disconnected)
    ));
    let (again, _rx) = c2s::connect_as(
        "alice@localhost/desk",
        "wonderland",
        p.c2s_addr(),
        loopback(2),
    )
    .await
    .expect("login after restart");
    again
        .iq(ping("localhost"), T)
        .await
        .expect("ping after restart");
    again.close().await;
}
