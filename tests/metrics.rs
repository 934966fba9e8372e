//! End-to-end test of the Prometheus endpoint (`[metrics] listen`)
//! against a real Prosody: the component's counters follow what a user
//! connection really does, read over HTTP as Prometheus would.

mod common;

use common::pp::*;
use common::{loopback, Prosody};
use pubpresence::wire::status::ServiceStatus;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

const WATCHER: &str = "watcher";

/// A loopback port nobody listens on right now.
fn free_addr() -> SocketAddr {
    let port = pubpresence_lab::free_ports(1).expect("free port")[0];
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config(p: &Prosody, metrics: SocketAddr) -> String {
    // `config_toml` ends with the [access] table: [metrics] goes after it.
    format!(
        "{}\n[metrics]\nlisten = \"{metrics}\"\n",
        p.config_toml(&[&format!("{WATCHER}@{}", p.domain)])
    )
}

/// Every sample of the exposition, by name with its labels as written
/// (`pubpresence_items_published_total{node="live"}`).
type Samples = BTreeMap<String, f64>;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

async fn scrape(http: &reqwest::Client, addr: SocketAddr) -> (String, Samples) {
    let res = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    read(res).await
}

async fn read(res: reqwest::Response) -> (String, Samples) {
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"]
        .to_str()
        .expect("content type")
        .to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = res.text().await.expect("body");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect();
    (text, samples)
}

/// Scrapes until every `(sample, value)` holds; panics with the last
/// exposition after `T`.
async fn wait_metrics(
    http: &reqwest::Client,
    addr: SocketAddr,
    pp: &Pubpresence,
    want: &[(&str, f64)],
) -> Samples {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let res = http.get(format!("http://{addr}/metrics")).send().await;
        let Ok(res) = res else {
            // Not listening yet (the process is starting).
            assert!(
                tokio::time::Instant::now() < deadline,
                "no metrics endpoint: {res:?}\nlog:\n{}",
                pp.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (text, s) = read(res).await;
        if want.iter().all(|(k, v)| s.get(*k) == Some(v)) {
            return s;
        }
        if tokio::time::Instant::now() > deadline {
            let wrong: Vec<String> = want
                .iter()
                .filter(|(k, v)| s.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}: want {v}, have {:?}", s.get(*k)))
                .collect();
            panic!(
                "metrics not as expected: {wrong:?}\n{text}\nlog:\n{}",
                pp.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const SEEN_AVAILABLE: &str = "pubpresence_presences_seen_total{kind=\"available\"}";
const SEEN_UNAVAILABLE: &str = "pubpresence_presences_seen_total{kind=\"unavailable\"}";
const LIVE_ITEMS: &str = "pubpresence_items_published_total{node=\"live\"}";
const ACTIVE_ITEMS: &str = "pubpresence_items_published_total{node=\"active\"}";
const STATUS_ITEMS: &str = "pubpresence_items_published_total{node=\"status\"}";
const SEEN_OTHER: &str = "pubpresence_presences_seen_total{kind=\"other\"}";
const RETRACTED: &str = "pubpresence_items_retracted_total";
const TRACKED: &str = "pubpresence_tracked_connections";
const IN_FLIGHT: &str = "pubpresence_requests_in_flight";
const STATUS: &str = "pubpresence_status";
const RECONNECTS: &str = "pubpresence_reconnects_total";
const RTT_LIVE: &str = "pubpresence_publish_rtt_seconds_count{node=\"live\"}";
const RTT_ACTIVE: &str = "pubpresence_publish_rtt_seconds_count{node=\"active\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_a_user_connection() {
    let p = Prosody::start();
    p.register(WATCHER, WATCHER);
    let addr = free_addr();
    let pp = Pubpresence::start(&config(&p, addr));
    let http = client();
    let mut w = Watcher::connect(&p, WATCHER).await;

    // Online: init and online published on status, nothing tracked yet.
    let s = wait_metrics(
        &http,
        addr,
        &pp,
        &[
            (STATUS, 1.0),
            (STATUS_ITEMS, 2.0),
            (TRACKED, 0.0),
            (IN_FLIGHT, 0.0),
        ],
    )
    .await;
    for k in [
        SEEN_AVAILABLE,
        SEEN_UNAVAILABLE,
        LIVE_ITEMS,
        ACTIVE_ITEMS,
        RETRACTED,
        RECONNECTS,
    ] {
        assert_eq!(s.get(k), Some(&0.0), "{k}");
    }
    assert!(pp
        .log_text()
        .contains(&format!("metrics: serving http://{addr}/metrics")));
    w.subscribe_all().await;
    w.wait_status(ServiceStatus::Online).await;

    // A user subscribes to the component. Prosody sends: subscribe, an
    // unavailable from the bare JID, subscribed, the connection's presence,
    // a probe of ours.
    p.register("alice", "alice");
    let u = User::connect(&p, "alice", "desk", loopback(2)).await;
    u.subscribe_to(&p.component_jid);
    let jid = u.jid.clone();
    w.wait_until("alice on live", T, |s| {
        s.live.iter().any(|i| i.fulljid == jid)
    })
    .await;
    let s = wait_metrics(
        &http,
        addr,
        &pp,
        &[
            (LIVE_ITEMS, 1.0),
            (ACTIVE_ITEMS, 1.0),
            (TRACKED, 1.0),
            // Every request answered: the lookup, active, live.
            (IN_FLIGHT, 0.0),
            (STATUS, 1.0),
            (SEEN_AVAILABLE, 1.0),
            (SEEN_UNAVAILABLE, 1.0),
            (SEEN_OTHER, 3.0),
        ],
    )
    .await;
    assert_eq!(s.get(RETRACTED), Some(&0.0));

    // A status change: one more item on active and on live.
    u.show(Some("away"));
    w.wait_until("alice away on live", T, |s| {
        s.live.iter().any(|i| i.fulljid == jid && st(i) == "away")
    })
    .await;
    wait_metrics(
        &http,
        addr,
        &pp,
        &[
            (SEEN_AVAILABLE, 2.0),
            (LIVE_ITEMS, 2.0),
            (ACTIVE_ITEMS, 2.0),
            (TRACKED, 1.0),
            (RTT_LIVE, 2.0),
            (RTT_ACTIVE, 2.0),
        ],
    )
    .await;

    // Gone: retracted from active, offline on live, nothing tracked. This
    // test counts every stanza: a departure within `WINDOW` of a presence
    // also has the user probed (docs/protocol.md, "What the component
    // publishes, and when"; tested in component.rs), so the window is let
    // pass first.
    tokio::time::sleep(pubpresence::component::replaced::WINDOW + Duration::from_millis(200)).await;
    u.close().await;
    w.wait_until("alice offline on live", T, |s| {
        s.live
            .iter()
            .any(|i| i.fulljid == jid && st(i) == "offline")
    })
    .await;
    let s = wait_metrics(
        &http,
        addr,
        &pp,
        &[
            (SEEN_UNAVAILABLE, 2.0),
            (RETRACTED, 1.0),
            (LIVE_ITEMS, 3.0),
            (TRACKED, 0.0),
            (IN_FLIGHT, 0.0),
        ],
    )
    .await;
    // Exact, and nothing else happened.
    for (k, v) in [
        (SEEN_AVAILABLE, 2.0),
        (SEEN_OTHER, 3.0),
        (ACTIVE_ITEMS, 2.0),
        (STATUS_ITEMS, 2.0),
        (STATUS, 1.0),
        (RTT_LIVE, 3.0),
        (RTT_ACTIVE, 2.0),
        (RECONNECTS, 0.0),
        ("pubpresence_audits_total", 0.0),
    ] {
        assert_eq!(s.get(k), Some(&v), "{k} in {s:?}");
    }
    for (k, v) in &s {
        if k.starts_with("pubpresence_errors_total") {
            assert_eq!(*v, 0.0, "{k} in {s:?}\nlog:\n{}", pp.log_text());
        }
    }
    // Round trips are seconds, far below the largest bucket.
    assert!(s["pubpresence_publish_rtt_seconds_sum{node=\"live\"}"] < 15.0);
    assert_eq!(
        s["pubpresence_publish_rtt_seconds_bucket{le=\"5.0\",node=\"live\"}"],
        3.0
    );
    // No role without [standby].
    assert!(!s.keys().any(|k| k.starts_with("pubpresence_role")));
    drop(pp);
}

#[test]
fn taken_metrics_address_is_a_start_up_error() {
    // Someone else listens there. No server is needed: the endpoint is
    // bound before anything connects.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let closed = free_addr();
    let mut pp = Pubpresence::start(&format!(
        "jid = \"pubpresence.localhost\"\nserver = \"{closed}\"\nsecret = \"s3cret-metrics\"\n\
         domain = \"localhost\"\npubsub = \"pubsub.localhost\"\n[metrics]\nlisten = \"{addr}\"\n"
    ));
    let st = pp
        .wait(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running; log:\n{}", pp.log_text()));
    assert!(!st.success(), "non-zero exit");
    let log = pp.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("metrics.listen = {addr}")))
        .collect();
    assert_eq!(lines.len(), 1, "one line naming the setting:\n{log}");
    assert!(lines[0].contains("ddress already in use"), "{}", lines[0]);
    // It never tried to connect.
    assert!(!log.contains("connecting"), "{log}");
    assert!(!log.contains("s3cret-metrics"), "{log}");
    drop(taken);
}

/// With `[standby]`, `pubpresence_role` says which instance is active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_follows_the_takeover() {
    let p = Prosody::start();
    for u in [WATCHER, "standby"] {
        p.register(u, u);
    }
    let with_standby = |instance: &str, metrics: SocketAddr| {
        format!(
            "instance = \"{instance}\"\n{}\n[standby]\njid = \"standby@{d}\"\npassword = \"standby\"\n\
             server = \"{}\"\nallow_plaintext = true\ntakeover = \"2s\"\n\n[metrics]\nlisten = \"{metrics}\"\n",
            p.config_toml(&[&format!("{WATCHER}@{d}", d = p.domain), &format!("standby@{}", p.domain)]),
            p.c2s_addr(),
            d = p.domain,
        )
    };
    let http = client();
    let (addr_a, addr_b) = (free_addr(), free_addr());
    // A alone: nobody answers its pings, it takes over.
    let mut a = Pubpresence::start(&with_standby("a", addr_a));
    wait_metrics(
        &http,
        addr_a,
        &a,
        &[("pubpresence_role", 1.0), (STATUS, 1.0)],
    )
    .await;
    // B starts while A is active: it waits.
    let b = Pubpresence::start(&with_standby("b", addr_b));
    b.wait_log("is active; waiting", T, "b never waited").await;
    let (_, s) = scrape(&http, addr_b).await;
    assert_eq!(s.get("pubpresence_role"), Some(&0.0), "{s:?}");
    assert_eq!(s.get(STATUS), Some(&0.0), "{s:?}");
    assert_eq!(s.get(STATUS_ITEMS), Some(&0.0), "{s:?}");
    // A stops cleanly: B takes over.
    assert!(a.terminate().success());
    wait_metrics(
        &http,
        addr_b,
        &b,
        &[
            ("pubpresence_role", 1.0),
            (STATUS, 1.0),
            (STATUS_ITEMS, 2.0),
        ],
    )
    .await;
}
