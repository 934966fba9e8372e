//! Resuming a stream of the web feed (docs/protocol.md, "Resuming a
//! stream"): a consumer cut off mid-burst comes back with the last id it
//! saw and gets exactly what it missed, no snapshot; outside the window, or
//! after `watch` restarted, it gets a snapshot marked `reset`. Its state
//! then equals `/state` exactly, and every event number comes once, in
//! order. The first test drives the library's `Feed`, whose events the test
//! makes itself, so that the window edge is hit exactly; the second runs
//! the real `pubpresence watch` against a real Prosody and the component.

mod common;

use common::pp::{Pubpresence, User, Watcher};
use common::web::{get_state, http, Sse, WatchProcess, DASHBOARD, T, TOKEN};
use common::{loopback, Prosody};
use pubpresence::client::follow::WatchEvent;
use pubpresence::client::watch::Update;
use pubpresence::client::web::Feed;
use pubpresence::config::Secret;
use pubpresence::wire::status::ServiceStatus;
use pubpresence::wire::time;
use pubpresence::wire::user::{Status, UserItem};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// A consumer's table, built from the messages of `/events` as a client
/// developer would: a snapshot replaces it, set and remove change it. It
/// also checks the numbering: after its first message each event is the
/// next number, never one again and never one skipped.
#[derive(Default, Debug)]
struct Table {
    users: BTreeMap<String, Value>,
    service: Option<String>,
    /// The `seq` the table is at.
    seq: Option<u64>,
    /// Messages taken, and how many of them carried `reset`.
    taken: usize,
    resets: Vec<String>,
}

impl Table {
    fn apply(&mut self, kind: &str, v: &Value) {
        let seq = v["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {v}"));
        self.taken += 1;
        if let Some(reset) = v["reset"].as_str() {
            // A stream's first messages: the state as of `seq`.
            self.resets.push(reset.to_string());
            if kind == "service" {
                self.users.clear();
            }
        } else if let Some(at) = self.seq {
            assert_eq!(seq, at + 1, "event after {at}: {v}");
        }
        self.seq = Some(seq);
        match kind {
            "service" => self.service = v["status"].as_str().map(str::to_string),
            "snapshot" => {
                self.users = by_fulljid(&v["users"]);
            }
            "set" => {
                let mut u = v.clone();
                let o = u.as_object_mut().expect("object");
                for k in ["at", "event", "seq"] {
                    o.remove(k);
                }
                self.users
                    .insert(v["fulljid"].as_str().expect("fulljid").to_string(), u);
            }
            "remove" => {
                self.users.remove(v["fulljid"].as_str().expect("fulljid"));
            }
            other => panic!("unknown event {other}: {v}"),
        }
    }

    /// Reads a stream's first messages, the state: `service` and
    /// `snapshot`, both marked `reset`.
    async fn read_opening(&mut self, sse: &mut Sse) {
        for want in ["service", "snapshot"] {
            let (kind, v) = sse.expect(want).await;
            assert_eq!(kind, want, "{v}");
            assert!(v["reset"].is_string(), "{v}");
            self.apply(&kind, &v);
        }
    }

    /// Reads messages until the table is at `seq`.
    async fn read_to(&mut self, sse: &mut Sse, seq: u64) {
        while self.seq != Some(seq) {
            let (kind, v) = sse.expect(&format!("event {seq}")).await;
            self.apply(&kind, &v);
        }
    }

    fn users_json(&self) -> Value {
        Value::Array(self.users.values().cloned().collect())
    }
}

/// A `users` array as a table, keyed by `fulljid`.
fn by_fulljid(users: &Value) -> BTreeMap<String, Value> {
    users
        .as_array()
        .expect("users")
        .iter()
        .map(|u| {
            (
                u["fulljid"].as_str().expect("fulljid").to_string(),
                u.clone(),
            )
        })
        .collect()
}

fn item(i: usize, k: usize) -> UserItem {
    UserItem {
        fulljid: format!("user{}@example.org/r", i % 40),
        name: format!("user{}@example.org", i % 40),
        status: [Status::Online, Status::Away, Status::Dnd][k % 3],
        ip: format!("192.0.2.{}", i % 250),
        since: time::now(),
    }
}

/// Feeds events `from..=to` to `feed`: sets, and every seventh a remove.
fn burst(feed: &Feed, from: u64, to: u64) {
    for seq in from..=to {
        let i = seq as usize;
        let event = if i % 7 == 0 {
            let it = item(i, 0);
            WatchEvent::Remove {
                fulljid: it.fulljid,
                name: it.name,
            }
        } else {
            WatchEvent::Set(item(i, i / 40))
        };
        feed.update(&Update::Event { seq, event });
    }
}

async fn state(http: &reqwest::Client, base: &str) -> Value {
    get_state(http, &format!("{base}/state")).await
}

fn assert_same(table: &Table, state: &Value, label: &str) {
    assert_eq!(
        table.users_json(),
        state["users"],
        "{label}: table = /state"
    );
    assert_eq!(table.seq, state["seq"].as_u64(), "{label}: seq = /state's");
}

/// The window edge, the epoch change and `after=` on the library's feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_inside_the_window_and_resets_outside_it() {
    const WINDOW: usize = 64;
    let feed = Feed::with_limits(Some(Secret::new(TOKEN)), 1024, WINDOW);
    let addr = feed
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let base = format!("http://{addr}");
    let events = format!("{base}/events");
    let http = http();
    feed.update(&Update::Event {
        seq: 1,
        event: WatchEvent::Service(ServiceStatus::Online),
    });
    feed.update(&Update::Event {
        seq: 2,
        event: WatchEvent::Snapshot((0..10).map(|i| item(i, 0)).collect()),
    });
    let epoch = feed.epoch();

    // A new stream: the state, marked `new`, with the ids of event 2.
    let mut table = Table::default();
    let mut sse = Sse::open(&http, &events).await;
    table.read_opening(&mut sse).await;
    assert_eq!(table.resets, ["new", "new"]);
    assert_eq!(table.seq, Some(2));
    assert_eq!(sse.last_id.as_deref(), Some(format!("{epoch}-2").as_str()));

    // Cut off mid-burst: read up to event 20 of 40, then the connection
    // goes (what was in flight after 20 is lost with it).
    burst(&feed, 3, 40);
    table.read_to(&mut sse, 20).await;
    let last = sse.last_id.clone().expect("an id");
    assert_eq!(last, format!("{epoch}-20"));
    drop(sse);
    burst(&feed, 41, 60);

    // Back with Last-Event-ID: exactly 21..=60, no snapshot.
    let mut sse = Sse::resume(&http, &events, Some(&last)).await;
    table.read_to(&mut sse, 60).await;
    assert_eq!(table.resets.len(), 2, "no reset on resuming");
    assert_eq!(table.taken, 2 + 58, "each event once");
    assert_same(&table, &state(&http, &base).await, "resumed");
    drop(sse);

    // The window edge: the feed keeps the last 64 events. At 100 it holds
    // 37..=100, so a consumer at 36 resumes and one at 35 starts over.
    burst(&feed, 61, 100);
    let mut at36 = Sse::resume(&http, &events, Some(&format!("{epoch}-36"))).await;
    let (kind, v) = at36.expect("event 37").await;
    assert_eq!((kind.as_str(), v["seq"].as_u64()), ("set", Some(37)), "{v}");
    assert!(v.get("reset").is_none(), "{v}");
    let mut at35 = Sse::resume(&http, &events, Some(&format!("{epoch}-35"))).await;
    let mut fresh = Table::default();
    fresh.read_opening(&mut at35).await;
    assert_eq!(fresh.resets, ["window", "window"]);
    assert_same(&fresh, &state(&http, &base).await, "outside the window");

    // `/state`, then `?after=SEQ&epoch=EPOCH`: what came between the two.
    let st = state(&http, &base).await;
    assert_eq!(st["epoch"], epoch.as_str());
    assert_eq!(st["seq"], 100);
    let mut from_state = Table {
        users: by_fulljid(&st["users"]),
        seq: Some(100),
        ..Default::default()
    };
    burst(&feed, 101, 110);
    let mut after = Sse::open(&http, &format!("{events}?after=100&epoch={epoch}")).await;
    from_state.read_to(&mut after, 110).await;
    assert_eq!(from_state.taken, 10, "101..=110, nothing else");
    assert_same(&from_state, &state(&http, &base).await, "after /state");

    // An id ahead of the feed, or unreadable: the state again.
    for (id, why) in [(format!("{epoch}-999"), "unknown"), ("x".into(), "unknown")] {
        let mut s = Sse::resume(&http, &events, Some(&id)).await;
        let (kind, v) = s.expect("the state").await;
        assert_eq!(
            (kind.as_str(), v["reset"].as_str()),
            ("service", Some(why)),
            "{id}"
        );
    }

    // `watch` restarted: a new feed, a new epoch. The old id gives the
    // state, marked `epoch`.
    let restarted = Feed::with_limits(Some(Secret::new(TOKEN)), 1024, WINDOW);
    let addr2 = restarted
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    assert_ne!(restarted.epoch(), epoch);
    restarted.update(&Update::Event {
        seq: 1,
        event: WatchEvent::Service(ServiceStatus::Online),
    });
    restarted.update(&Update::Event {
        seq: 2,
        event: WatchEvent::Snapshot(vec![item(3, 0)]),
    });
    let mut s = Sse::resume(&http, &format!("http://{addr2}/events"), Some(&last)).await;
    let mut again = Table::default();
    again.read_opening(&mut s).await;
    assert_eq!(again.resets, ["epoch", "epoch"]);
    assert_same(
        &again,
        &state(&http, &format!("http://{addr2}")).await,
        "new epoch",
    );
    let id = s.last_id.clone().expect("id");
    assert_eq!(id, format!("{}-2", restarted.epoch()));
}

/// The real `watch`: users come and go while a consumer reads; it is cut
/// off mid-burst, resumes, and its table equals `/state`. Then `watch`
/// restarts and the same id gives a snapshot marked `epoch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_of_watch_resumes_after_a_cut() {
    const USERS: usize = 12;
    let p = Prosody::start();
    p.register(DASHBOARD, DASHBOARD);
    p.register("checker", "checker");
    let names: Vec<String> = (0..USERS).map(|i| format!("u{i}")).collect();
    for n in &names {
        p.register(n, n);
    }
    let config = p.config_toml(&[
        &format!("{DASHBOARD}@{}", p.domain),
        &format!("checker@{}", p.domain),
    ]);
    let pp = Pubpresence::start(&config);
    let checker = Watcher::connect(&p, "checker").await;
    checker.until_online(&pp).await;
    let w = WatchProcess::start(&p, &config);
    let http = http();
    let base = w.base.clone();
    let events = w.url("/events");

    // In sync, then a consumer reads the state.
    let deadline = tokio::time::Instant::now() + T;
    while state(&http, &base).await["synced"] != true {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watch never in sync"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut table = Table::default();
    let mut sse = Sse::open(&http, &events).await;
    table.read_opening(&mut sse).await;

    // A burst of logins; the consumer goes after the third event of it.
    let mut users = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let u = User::connect(&p, n, "r", loopback(40 + i as u8)).await;
        u.subscribe_to(&p.component_jid);
        users.push(u);
    }
    let start = table.seq.expect("seq");
    table.read_to(&mut sse, start + 3).await;
    let last = sse.last_id.clone().expect("id");
    drop(sse);
    // More while it is away: status changes and logouts.
    for (i, u) in users.iter().enumerate() {
        if i % 3 == 0 {
            u.show(Some("away"));
        }
    }
    for _ in 0..USERS / 4 {
        users.pop().expect("user").close().await;
    }
    // Quiet: active is what the users did (every IP known).
    let want = USERS - USERS / 4;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let active = checker.active().await;
        let aways = active.values().filter(|i| i.status == Status::Away).count();
        if active.len() == want
            && aways == want.div_ceil(3)
            && active.values().all(|i| !i.ip.is_empty())
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "active: {active:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // watch has taken it all in when /state shows the same users.
    let deadline = tokio::time::Instant::now() + T;
    let st = loop {
        let st = state(&http, &base).await;
        if st["users"].as_array().is_some_and(|u| {
            u.len() == want
                && u.iter()
                    .all(|u| u["ip"].as_str().is_some_and(|ip| !ip.is_empty()))
        }) && st["users"]
            .as_array()
            .map(|u| u.iter().filter(|u| u["status"] == "away").count())
            == Some(want.div_ceil(3))
        {
            break st;
        }
        assert!(tokio::time::Instant::now() < deadline, "/state: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seq = st["seq"].as_u64().expect("seq");
    assert!(seq > start + 3, "events came while the consumer was away");

    let mut sse = Sse::resume(&http, &events, Some(&last)).await;
    let taken = table.taken;
    table.read_to(&mut sse, seq).await;
    assert_eq!(table.resets.len(), 2, "resumed without a snapshot");
    assert_eq!(
        table.taken - taken,
        (seq - (start + 3)) as usize,
        "each missed event once"
    );
    assert_same(&table, &st, "resumed");
    drop(sse);

    // watch restarts: a new epoch, and the old id gives the state again.
    drop(w);
    let w2 = WatchProcess::start(&p, &config);
    let deadline = tokio::time::Instant::now() + T;
    while state(&http, &w2.base).await["synced"] != true {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watch never in sync"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st2 = state(&http, &w2.base).await;
    assert_ne!(st2["epoch"], st["epoch"]);
    let mut again = Table::default();
    let mut sse = Sse::resume(&http, &w2.url("/events"), Some(&last)).await;
    again.read_opening(&mut sse).await;
    assert_eq!(again.resets, ["epoch", "epoch"]);
    assert_eq!(
        again.users_json(),
        st["users"],
        "the same users after the restart"
    );
    // watch --json printed the same numbers as the feed: 1, 2, ... up to
    // /state's (read after the lines, so it may be ahead for a moment).
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let out = w2.read("out");
        let seqs: Vec<u64> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["seq"].as_u64())
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{out}");
        let now = state(&http, &w2.base).await["seq"].as_u64();
        if seqs.last().copied() == now {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lines {seqs:?}, /state at {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(users);
    drop(pp);
}
