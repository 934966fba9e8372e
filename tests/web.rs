//! End-to-end tests of the web feed (docs/protocol.md, "Web feed"): `pubpresence watch
//! --json --http ADDR` (the real binary) against a real Prosody and the real
//! component; the backpressure test drives the library's `Feed` directly
//! with thousands of synthetic changes.

mod common;

use common::pp::{Pubpresence, User, Watcher};
use common::web::{
    assert_envelope, get_state, http, synced_state, Sse, WatchProcess, DASHBOARD, T, TOKEN,
};
use common::{loopback, Prosody};
use pubpresence::client::follow::WatchEvent;
use pubpresence::client::watch::{self, Update};
use pubpresence::client::web::Feed;
use pubpresence::config::Secret;
use pubpresence::wire::status::ServiceStatus;
use pubpresence::wire::time;
use pubpresence::wire::user::{Status, UserItem};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHECKER: &str = "checker";

// ---------------------------------------------------------------------------
// Set-up

/// Prosody with the dashboard, the checker and `users` registered, the
/// component running and online, the checker connected.
async fn setup(users: &[&str]) -> (Prosody, String, Pubpresence, Watcher) {
    let p = Prosody::start();
    p.register(DASHBOARD, DASHBOARD);
    p.register(CHECKER, CHECKER);
    for u in users {
        p.register(u, u);
    }
    let config = p.config_toml(&[
        &format!("{DASHBOARD}@{}", p.domain),
        &format!("{CHECKER}@{}", p.domain),
    ]);
    let pp = Pubpresence::start(&config);
    let checker = Watcher::connect(&p, CHECKER).await;
    checker.until_online(&pp).await;
    (p, config, pp, checker)
}

async fn connect(p: &Prosody, user: &str, resource: &str, ip: u8) -> User {
    let u = User::connect(p, user, resource, loopback(ip)).await;
    u.subscribe_to(&p.component_jid);
    u
}

/// Waits until active holds `n` items, all with their IP known.
async fn wait_active(checker: &Watcher, n: usize) -> BTreeMap<String, UserItem> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let active = checker.active().await;
        if active.len() == n && active.values().all(|i| !i.ip.is_empty()) {
            return active;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "active: {active:?}, not {n} items"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The users of the JSON (docs/protocol.md, "JSON events") for these items.
fn users_json(items: &BTreeMap<String, UserItem>) -> Value {
    let snap = WatchEvent::Snapshot(items.values().cloned().collect());
    watch::to_json(&snap, &time::now())["users"].clone()
}

// ---------------------------------------------------------------------------
// The web feed, test 1

/// `/state` and the first snapshot on `/events` are the items of active; a
/// connect, a status change and a disconnect arrive as set, set, remove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_events_follow_active() {
    let (p, config, pp, checker) = setup(&["alice", "bob", "carol"]).await;
    let _alice = connect(&p, "alice", "desk", 20).await;
    let _bob = connect(&p, "bob", "phone", 21).await;
    let active = wait_active(&checker, 2).await;
    let w = WatchProcess::start(&p, &config);
    let http = http();

    // /state, once in sync.
    let state = synced_state(&http, &w).await;
    assert_eq!(state["service"], "online");
    assert!(time::parse(state["at"].as_str().expect("at")).is_some());
    assert_eq!(state["users"], users_json(&active), "/state = active");

    // /events: the service status, then the snapshot.
    let mut sse = Sse::open(&http, &w.url("/events")).await;
    let (kind, v) = sse.expect("service").await;
    assert_eq!(kind, "service");
    assert_envelope("service", &v);
    assert_eq!(v["status"], "online");
    let (kind, v) = sse.expect("snapshot").await;
    assert_eq!(kind, "snapshot");
    assert_envelope("snapshot", &v);
    assert_eq!(v["users"], users_json(&active), "snapshot = active");
    assert_eq!(v["users"][0]["ip"], "127.0.0.20");

    // A connect: a set with carol's address (the first publish may come
    // before the component knows the address: wait for the one with it).
    let carol = connect(&p, "carol", "laptop", 22).await;
    let jid = format!("carol@{}/laptop", p.domain);
    let set = loop {
        let (kind, v) = sse.expect("carol's set").await;
        assert_envelope(&kind, &v);
        assert_eq!(
            (kind.as_str(), &v["fulljid"]),
            ("set", &Value::from(jid.clone())),
            "{v}"
        );
        if v["ip"] == "127.0.0.22" {
            break v;
        }
    };
    assert_eq!(set["name"], format!("carol@{}", p.domain));
    assert_eq!(set["status"], "online");
    assert!(time::parse(set["since"].as_str().expect("since")).is_some());

    // A status change.
    carol.show(Some("away"));
    let (kind, v) = sse.expect("the change to away").await;
    assert_envelope("set", &v);
    assert_eq!(kind, "set");
    assert_eq!(v["fulljid"], jid);
    assert_eq!(v["name"], format!("carol@{}", p.domain));
    assert_eq!(v["status"], "away");
    assert_eq!(v["ip"], "127.0.0.22");

    // A disconnect.
    carol.close().await;
    let (kind, v) = sse.expect("carol's remove").await;
    assert_eq!(kind, "remove");
    assert_envelope("remove", &v);
    assert_eq!(v["fulljid"], jid);
    assert_eq!(v["name"], format!("carol@{}", p.domain));

    // And /state is active again.
    let active = wait_active(&checker, 2).await;
    let state = get_state(&http, &w.url("/state")).await;
    assert_eq!(state["users"], users_json(&active));
    assert!(!w.read("err").contains(TOKEN), "the token is never logged");
    assert!(!w.read("out").contains(TOKEN));
    drop(pp);
}

// ---------------------------------------------------------------------------
// The web feed, test 2

/// Without the token, or with a wrong one, every path is 401 without data;
/// with it (header or query), 200. The token appears in no output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_token_are_refused() {
    let (p, config, pp, checker) = setup(&["alice"]).await;
    let _alice = connect(&p, "alice", "desk", 30).await;
    wait_active(&checker, 1).await;
    let w = WatchProcess::start(&p, &config);
    let http = http();
    // In sync first, so that there is data to leak.
    let deadline = tokio::time::Instant::now() + T;
    while get_state(&http, &w.url("/state")).await["users"]
        .as_array()
        .map_or(0, |a| a.len())
        != 1
    {
        assert!(tokio::time::Instant::now() < deadline, "never in sync");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let wrong = format!("{TOKEN}x");
    for path in ["/", "/events", "/state"] {
        let url = w.url(path);
        let attempts = [
            http.get(&url),
            http.get(&url).bearer_auth(&wrong),
            http.get(&url).bearer_auth(""),
            http.get(&url).basic_auth("dashboard", Some(TOKEN)),
            http.get(format!("{url}?token={wrong}")),
            http.get(format!("{url}?token=")),
            http.get(format!("{url}?tok={TOKEN}")),
        ];
        for (i, req) in attempts.into_iter().enumerate() {
            let r = tokio::time::timeout(T, req.send())
                .await
                .expect("answered")
                .expect("GET");
            assert_eq!(r.status(), 401, "{path} attempt {i}");
            let body = tokio::time::timeout(T, r.text())
                .await
                .expect("body ends")
                .expect("body");
            for secret in ["alice", "127.0.0.30", "fulljid", "online", TOKEN] {
                assert!(!body.contains(secret), "{path} attempt {i}: {body}");
            }
        }
    }

    // With the token: the page (query), the state (header), the events (query).
    let r = http
        .get(w.url(&format!("/?token={TOKEN}")))
        .send()
        .await
        .expect("GET /");
    assert_eq!(r.status(), 200);
    let csp = r
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = r.text().await.expect("page");
    assert!(html.contains("EventSource"), "the script is inlined");
    assert!(html.contains("feed lost, reconnecting"));
    for external in ["http://", "https://", "src=\"//", "href=\"//", "@import"] {
        assert!(
            !html.contains(external),
            "nothing from other hosts: {external}"
        );
    }
    let r = http
        .get(w.url(&format!("/events?token={TOKEN}")))
        .send()
        .await
        .expect("GET /events");
    assert_eq!(r.status(), 200);
    drop(r);

    assert!(!w.read("err").contains(TOKEN), "the token is never logged");
    assert!(!w.read("out").contains(TOKEN));
    assert!(!pp.log_text().contains(TOKEN));
}

// ---------------------------------------------------------------------------
// The web feed, test 4

/// Event `seq`, as the watch runner numbers them.
fn numbered(seq: u64, event: WatchEvent) -> Update {
    Update::Event { seq, event }
}

fn item(i: usize) -> UserItem {
    UserItem {
        fulljid: format!("user{}@example.org/r{i}", i % 50),
        name: format!("user{}@example.org", i % 50),
        status: if i % 2 == 0 {
            Status::Away
        } else {
            Status::Online
        },
        ip: format!("192.0.2.{}", i % 250),
        since: time::now(),
    }
}

/// A consumer that never reads is cut off while thousands of changes flow;
/// another consumer gets every change, in order, and the producer never
/// waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_that_stops_reading_is_cut_off() {
    const N: usize = 8000;
    let feed = Feed::with_backlog(Some(Secret::new(TOKEN)), 1024);
    let rss_before = rss_kib();
    let addr = feed
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    feed.update(&numbered(1, WatchEvent::Service(ServiceStatus::Online)));
    feed.update(&numbered(2, WatchEvent::Snapshot(vec![])));

    // The stalled consumer: a small receive window, and it never reads.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stalled = socket.connect(addr).await.expect("connect");
    stalled
        .write_all(
            format!(
                "GET /events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("request");

    // The reading consumer.
    let http = http();
    let mut sse = Sse::open(&http, &format!("http://{addr}/events")).await;
    assert_eq!(sse.expect("service").await.0, "service");
    assert_eq!(sse.expect("snapshot").await.0, "snapshot");
    let deadline = tokio::time::Instant::now() + T;
    while feed.consumers() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "two consumers");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(N);
        while got.len() < N {
            let Some((kind, v)) = sse.next().await else {
                break;
            };
            assert_eq!(kind, "set");
            got.push(v["fulljid"].as_str().unwrap_or_default().to_string());
        }
        got
    });

    // Thousands of changes, at about 5,000 a second; updating never waits.
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..N {
        let t = std::time::Instant::now();
        feed.update(&numbered(i as u64 + 3, WatchEvent::Set(item(i))));
        slowest = slowest.max(t.elapsed());
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    eprintln!(
        "{N} changes in {:?}; slowest update {slowest:?}",
        started.elapsed()
    );
    assert!(slowest < Duration::from_millis(100), "{slowest:?}");

    let got = tokio::time::timeout(T, reader)
        .await
        .expect("the reader gets every change in time")
        .expect("reader");
    let want: Vec<String> = (0..N).map(|i| item(i).fulljid).collect();
    assert_eq!(got.len(), N, "every change reached the reading consumer");
    assert_eq!(got, want, "in order");
    assert!(feed.cut_off() >= 1, "the stalled consumer was cut off");

    // The stalled consumer's connection is closed: reading it now gives what
    // was in flight, then the end (far less than everything).
    let mut all = Vec::new();
    let read = tokio::time::timeout(T, stalled.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the stalled connection ends");
    let total: usize = (0..N).map(|i| item(i).fulljid.len() + 150).sum();
    assert!(
        all.len() < total / 2,
        "the stalled consumer got {} bytes of about {total}",
        all.len()
    );
    let deadline = tokio::time::Instant::now() + T;
    while feed.consumers() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cut consumer is gone"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Memory stays bounded: nothing piles up for the stalled consumer.
    let grown = rss_kib().saturating_sub(rss_before);
    eprintln!("RSS grew by {grown} KiB");
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
}

/// This process's resident set, KiB (0 where /proc is missing).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The web feed, test 3: the page in a real headless Chromium (DevTools protocol
// over --remote-debugging-pipe, through two FIFOs)

/// Debian's chromium, if installed.
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A headless Chromium driven over the DevTools protocol (blocking).
struct Browser {
    child: Child,
    to: std::fs::File,
    from: std::fs::File,
    buf: Vec<u8>,
    next: u64,
    /// Every protocol event received (method, params).
    events: Vec<(String, Value)>,
    session: Option<String>,
    _dir: tempfile::TempDir,
}

impl Browser {
    fn launch() -> Browser {
        let dir = tempfile::tempdir().expect("browser dir");
        let (to, from) = (dir.path().join("to"), dir.path().join("from"));
        for f in [&to, &from] {
            let ok = Command::new("mkfifo").arg(f).status().expect("mkfifo");
            assert!(ok.success());
        }
        let script = format!(
            "exec \"$0\" \"$@\" 3<'{}' 4>'{}'",
            to.display(),
            from.display()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(chromium().expect("chromium"))
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let to = std::fs::OpenOptions::new()
            .write(true)
            .open(&to)
            .expect("open the pipe to chromium");
        let from = std::fs::File::open(&from).expect("open the pipe from chromium");
        Browser {
            child,
            to,
            from,
            buf: Vec::new(),
            next: 0,
            events: Vec::new(),
            session: None,
            _dir: dir,
        }
    }

    fn recv(&mut self) -> Value {
        use std::io::Read;
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == 0) {
                let msg: Vec<u8> = self.buf.drain(..=end).collect();
                return serde_json::from_slice(&msg[..end]).expect("protocol JSON");
            }
            let mut chunk = [0u8; 65536];
            let n = self.from.read(&mut chunk).expect("read from chromium");
            assert!(n > 0, "chromium closed the pipe");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        use std::io::Write;
        self.next += 1;
        let id = self.next;
        let mut msg = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = Value::from(s.clone());
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let m = self.recv();
            if m["id"] == id {
                assert!(m.get("error").is_none(), "{method}: {m}");
                return m["result"].clone();
            }
            if let Some(method) = m["method"].as_str() {
                self.events.push((method.to_string(), m["params"].clone()));
            }
        }
    }

    /// Opens a tab, watches its requests and loads `url` in it.
    fn open(&mut self, url: &str) {
        let t = self.call(
            "Target.createTarget",
            serde_json::json!({"url": "about:blank"}),
        );
        let s = self.call(
            "Target.attachToTarget",
            serde_json::json!({"targetId": t["targetId"], "flatten": true}),
        );
        self.session = s["sessionId"].as_str().map(String::from);
        self.call("Network.enable", serde_json::json!({}));
        self.call("Page.navigate", serde_json::json!({"url": url}));
    }

    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": js, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the page's text satisfies `pred`.
    fn wait_text(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + T;
        loop {
            let text = self.text();
            if pred(&text) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the page never showed {what}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The URLs of every request the page made.
    fn requests(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|(m, _)| m == "Network.requestWillBeSent")
            .filter_map(|(_, p)| p["request"]["url"].as_str().map(String::from))
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `f` on the browser in a blocking thread and gives it back.
async fn with<R: Send + 'static>(
    b: Browser,
    f: impl FnOnce(&mut Browser) -> R + Send + 'static,
) -> (Browser, R) {
    tokio::task::spawn_blocking(move || {
        let mut b = b;
        let r = f(&mut b);
        (b, r)
    })
    .await
    .expect("browser thread")
}

/// The page, opened with the token, shows the connected users with their
/// IPs, follows a connect and a disconnect in place (no reload), and asks
/// nothing of any host but its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_users_in_chromium() {
    assert!(
        chromium().is_some(),
        "chromium is not installed (apt-get install chromium)"
    );
    let (p, config, pp, checker) = setup(&["alice", "bob", "carol"]).await;
    let _alice = connect(&p, "alice", "desk", 40).await;
    let _bob = connect(&p, "bob", "phone", 41).await;
    let bob = connect(&p, "bob", "laptop", 42).await;
    bob.show(Some("dnd"));
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let active = checker.active().await;
        if active.len() == 3
            && active.values().all(|i| !i.ip.is_empty())
            && active.values().any(|i| i.status == Status::Dnd)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "active: {active:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let w = WatchProcess::start(&p, &config);
    let url = w.url(&format!("/?token={TOKEN}"));
    let domain = p.domain.clone();
    let b = tokio::task::spawn_blocking(Browser::launch)
        .await
        .expect("launch");
    let (b, text) = with(b, move |b| {
        b.open(&url);
        let text = b.wait_text("the three connections", |t| {
            ["127.0.0.40", "127.0.0.41", "127.0.0.42"]
                .iter()
                .all(|ip| t.contains(ip))
        });
        // Survives only if the page is never reloaded.
        b.eval("window.__noReload = 1");
        text
    })
    .await;
    // A picture of the page for the README (target/tmp/web-feed.png).
    let (b, png) = with(b, |b| {
        b.call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({"width": 1100, "height": 520, "deviceScaleFactor": 1, "mobile": false}),
        );
        std::thread::sleep(Duration::from_millis(300));
        let shot = b.call("Page.captureScreenshot", serde_json::json!({"format": "png"}));
        base64_decode(shot["data"].as_str().unwrap_or_default())
    })
    .await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-feed.png");
    std::fs::write(&shot, png).expect("write the screenshot");
    eprintln!("screenshot: {}", shot.display());
    for want in [
        format!("alice@{domain}"),
        format!("bob@{domain}"),
        "laptop".into(),
        "dnd".into(),
        "service: online".into(),
    ] {
        assert!(text.contains(&want), "the page shows {want}:\n{text}");
    }

    // The filter box narrows the rows, not the counts.
    let (b, rows) = with(b, |b| {
        let shown = b.eval(
            "var f = document.getElementById('filter'); f.value = 'LAPTOP'; \
             f.dispatchEvent(new Event('input')); document.getElementById('rows').innerText",
        );
        b.eval(
            "var f = document.getElementById('filter'); f.value = ''; \
             f.dispatchEvent(new Event('input'))",
        );
        shown.as_str().unwrap_or_default().to_string()
    })
    .await;
    assert!(rows.contains("127.0.0.42"), "{rows}");
    assert!(
        !rows.contains("127.0.0.40") && !rows.contains("127.0.0.41"),
        "{rows}"
    );

    let carol = connect(&p, "carol", "tablet", 43).await;
    let (b, _) = with(b, |b| {
        b.wait_text("carol's connect", |t| t.contains("127.0.0.43"));
        assert_eq!(b.eval("window.__noReload"), 1, "no reload");
    })
    .await;
    carol.close().await;
    let (b, _) = with(b, |b| {
        b.wait_text("carol's disconnect", |t| !t.contains("127.0.0.43"));
        assert_eq!(b.eval("window.__noReload"), 1, "no reload");
    })
    .await;

    // A component restart: the page goes through offline/init and comes
    // back with a new snapshot by itself.
    let mut pp = pp;
    assert!(pp.terminate().success(), "clean exit");
    let (b, _) = with(b, |b| {
        b.wait_text("the service offline", |t| t.contains("service: offline"));
    })
    .await;
    let pp = Pubpresence::start(&config);
    let (b, _) = with(b, |b| {
        b.wait_text("the users again after the restart", |t| {
            t.contains("service: online")
                && ["127.0.0.40", "127.0.0.41", "127.0.0.42"]
                    .iter()
                    .all(|ip| t.contains(ip))
        });
        assert_eq!(b.eval("window.__noReload"), 1, "no reload");
    })
    .await;

    // The feed itself lost: the page says so.
    let base = w.base.clone();
    drop(w);
    let (b, _) = with(b, |b| {
        b.wait_text("feed lost", |t| t.contains("feed lost, reconnecting"));
    })
    .await;

    let own = format!("{base}/");
    let requests = b.requests();
    assert!(
        requests.iter().any(|u| u.contains("/events?token=")),
        "{requests:?}"
    );
    for u in &requests {
        assert!(u.starts_with(&own), "a request to another host: {u}");
    }
    drop(b);
    drop(pp);
}

/// An idle stream carries a comment line at least every 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_gets_comments() {
    let feed = Feed::new(None);
    let addr = feed
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let http = http();
    let res = http
        .get(format!("http://{addr}/events"))
        .send()
        .await
        .expect("GET /events");
    let mut sse = Sse::from_response(res);
    // Nothing is known yet: no event at all, only comments.
    let r = tokio::time::timeout(Duration::from_secs(16), sse.next()).await;
    assert!(r.is_err(), "no event: {r:?}");
    assert!(
        sse.comments >= 1 || sse.buf.starts_with(':'),
        "{:?}",
        sse.buf
    );
}

/// Standard base64 (the screenshot the DevTools protocol returns).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
