//! The soak's moving parts (the component's instances are in `component`):
//! `pubpresence watch --json --http` as a child process
//! (the reference client and the web feed), a consumer of the feed's
//! `/events` that is cut and resumes, and the admin session the checker reads
//! the truth and active with.

use super::check::{self, Row, Seen, Table};
use crate::lock;
use pubpresence::minidom::Element;
use pubpresence::wire::ns;
use pubpresence::wire::user::UserItem;
use pubpresence::wire::Attr;
use pubpresence::xmpp::c2s::{self, C2s};
use pubpresence::xmpp::paging;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

pub const ACTIVE: &str = "presence/active";
pub const LIVE: &str = "presence/live";
const IQ_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn io(what: &str) -> impl Fn(std::io::Error) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{what}: {e}")
}

/// What the reference client (`watch --json`) said: its table, its live
/// events in order (with their `seq`) and resyncs.
#[derive(Debug, Default)]
pub struct RefState {
    pub table: Table,
    /// Every `set`/`remove` since the start, in order.
    pub live: Vec<Seen>,
    /// `snapshot` and `service` events (each a resync or a status change).
    pub resyncs: usize,
    pub last_seq: u64,
    pub unreadable: usize,
}

impl RefState {
    fn line(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            self.unreadable += 1;
            return;
        };
        self.last_seq = v["seq"].as_u64().unwrap_or(self.last_seq);
        match v["event"].as_str() {
            Some("snapshot") => {
                self.resyncs += 1;
                match check::table_of_json(&v["users"]) {
                    Some(t) => self.table = t,
                    None => self.unreadable += 1,
                }
            }
            Some("service") => self.resyncs += 1,
            Some("set") => match Row::of_json(&v) {
                Some((j, row)) => {
                    self.live.push(Seen {
                        fulljid: j.clone(),
                        status: row.status.clone(),
                    });
                    self.table.insert(j, row);
                }
                None => self.unreadable += 1,
            },
            Some("remove") => match v["fulljid"].as_str() {
                Some(j) => {
                    self.live.push(Seen {
                        fulljid: j.to_string(),
                        status: "offline".into(),
                    });
                    self.table.remove(j);
                }
                None => self.unreadable += 1,
            },
            _ => self.unreadable += 1,
        }
    }
}

/// `pubpresence watch --json --http 127.0.0.1:0` as a child process.
pub struct WatchProc {
    child: tokio::process::Child,
    pub base: String,
    pub state: Arc<Mutex<RefState>>,
    /// The full JID it logged in as last (from its log).
    pub jid: Arc<Mutex<Option<String>>>,
}

impl WatchProc {
    pub async fn start(bin: &Path, config: &Path, dir: &Path) -> anyhow::Result<WatchProc> {
        let mut child = tokio::process::Command::new(bin)
            .args(["watch", "--json", "--http", "127.0.0.1:0", "--config"])
            .arg(config)
            .env_remove("PUBPRESENCE_HTTP_TOKEN")
            .env("RUST_LOG", "pubpresence=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io("starting pubpresence watch"))?;
        let state = Arc::new(Mutex::new(RefState::default()));
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            anyhow::bail!("pubpresence watch: no pipes");
        };
        let st = state.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                lock(&st).line(&l);
            }
        });
        // stderr to a file, and the feed's address from it.
        let (addr_tx, mut addr_rx) = watch::channel(None::<String>);
        let log = dir.join("watch.log");
        let jid = Arc::new(Mutex::new(None));
        let me = jid.clone();
        tokio::spawn(async move {
            let mut file = tokio::fs::File::create(&log).await.ok();
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if let Some(rest) = l.split("web feed on ").nth(1) {
                    if let Some(url) = rest.split_whitespace().next() {
                        let _ = addr_tx.send(Some(url.trim_end_matches('/').to_string()));
                    }
                }
                if l.contains("logged in") {
                    if let Some(j) = l
                        .split("jid=")
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                    {
                        *lock(&me) = Some(j.to_string());
                    }
                }
                if let Some(f) = file.as_mut() {
                    use tokio::io::AsyncWriteExt;
                    let _ = f.write_all(format!("{l}\n").as_bytes()).await;
                }
            }
        });
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(b) = addr_rx.borrow_and_update().clone() {
                    return Some(b);
                }
                if addr_rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "pubpresence watch did not say where its web feed is (see {}/watch.log)",
                dir.display()
            )
        })?;
        Ok(WatchProc {
            child,
            base,
            state,
            jid,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// What `/state` said.
#[derive(Debug, Clone)]
pub struct FeedState {
    pub table: Table,
    pub service: String,
    pub synced: bool,
    pub seq: u64,
}

pub async fn get_state(http: &reqwest::Client, base: &str, token: &str) -> Option<FeedState> {
    let r = http
        .get(format!("{base}/state"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
    Some(FeedState {
        table: check::table_of_json(&v["users"])?,
        service: v["service"].as_str().unwrap_or("").to_string(),
        synced: v["synced"].as_bool().unwrap_or(false),
        seq: v["seq"].as_u64().unwrap_or(0),
    })
}

/// `pubpresence_requests_in_flight` from the component's metrics at `url`.
pub async fn in_flight(http: &reqwest::Client, url: &str) -> Option<u64> {
    gauge(http, url, "pubpresence_requests_in_flight").await
}

/// One unlabelled sample from the component's metrics at `url`.
pub async fn gauge(http: &reqwest::Client, url: &str, name: &str) -> Option<u64> {
    let r = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let text = r.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// What the SSE consumer has.
#[derive(Debug, Default)]
pub struct SseState {
    pub table: Table,
    /// Reconnections answered with exactly the missed events.
    pub resumed: usize,
    /// Reconnections answered with a new snapshot (`reset`).
    pub reset: usize,
    pub connects: usize,
    pub errors: usize,
    pub last_id: Option<String>,
}

/// A consumer of `/events` that keeps its table from the stream, and, when
/// told (a duration on `cut`), drops the connection, stays away that long
/// and comes back with `Last-Event-ID`.
pub fn spawn_sse(
    http: reqwest::Client,
    url: String,
    token: String,
    mut cut: watch::Receiver<Duration>,
) -> Arc<Mutex<SseState>> {
    let state = Arc::new(Mutex::new(SseState::default()));
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let last = lock(&st).last_id.clone();
            let mut req = http.get(&url).bearer_auth(&token);
            if let Some(id) = &last {
                req = req.header("Last-Event-ID", id.as_str());
            }
            let res = match req.send().await {
                Ok(r) if r.status() == 200 => r,
                _ => {
                    lock(&st).errors += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            lock(&st).connects += 1;
            let mut parser = crate::sse::SseParser::default();
            let mut first = true;
            let mut res = res;
            let away = loop {
                tokio::select! {
                    c = res.chunk() => match c {
                        Ok(Some(bytes)) => {
                            let mut s = lock(&st);
                            parser.feed(&bytes, |event, data| {
                                apply_sse(&mut s, event, data, &mut first, last.is_some())
                            });
                            if let Some(id) = parser.last_id() {
                                s.last_id = Some(id.to_string());
                            }
                        }
                        _ => break Duration::from_millis(200),
                    },
                    r = cut.changed() => {
                        if r.is_err() { return; }
                        break *cut.borrow_and_update();
                    }
                }
            };
            drop(res);
            tokio::time::sleep(away).await;
        }
    });
    state
}

fn apply_sse(s: &mut SseState, event: &[u8], data: &[u8], first: &mut bool, resuming: bool) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        s.errors += 1;
        return;
    };
    let was_first = std::mem::replace(first, false);
    match event {
        b"snapshot" => {
            if resuming && was_first {
                s.reset += 1;
            }
            match check::table_of_json(&v["users"]) {
                Some(t) => s.table = t,
                None => s.errors += 1,
            }
        }
        b"set" => {
            if resuming && was_first {
                s.resumed += 1;
            }
            match Row::of_json(&v) {
                Some((j, row)) => {
                    s.table.insert(j, row);
                }
                None => s.errors += 1,
            }
        }
        b"remove" => {
            if resuming && was_first {
                s.resumed += 1;
            }
            if let Some(j) = v["fulljid"].as_str() {
                s.table.remove(j);
            }
        }
        _ => {
            if resuming && was_first {
                s.resumed += 1;
            }
        }
    }
}

/// A session logged in again whenever it is gone (a server restart): the
/// server's admin (the server's real sessions, deleting a node, hostile
/// stanzas) or a member of the whitelist (reading active: on ejabberd the
/// admin may not).
pub struct Admin {
    jid: String,
    password: String,
    server: SocketAddr,
    c2s: Option<C2s>,
}

impl Admin {
    pub fn new(jid: String, password: &str, server: SocketAddr) -> Admin {
        Admin {
            jid,
            password: password.to_string(),
            server,
            c2s: None,
        }
    }

    pub async fn session(&mut self) -> Option<C2s> {
        if let Some(c) = &self.c2s {
            if !c.is_closed() {
                return Some(c.clone());
            }
        }
        let (c, mut rx) =
            c2s::connect_as(&self.jid, &self.password, self.server, crate::loopback(1))
                .await
                .ok()?;
        // Nothing it is sent matters: drain it.
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        self.c2s = Some(c.clone());
        Some(c)
    }

    async fn iq(&mut self, to: &str, kind: &str, payload: Element) -> Result<Element, String> {
        let c = self
            .session()
            .await
            .ok_or_else(|| format!("{} cannot log in", self.jid))?;
        let iq = Element::builder("iq", ns::CLIENT)
            .a("type", kind)
            .a("to", to)
            .append(payload)
            .build();
        c.iq(iq, IQ_TIMEOUT).await.map_err(|e| e.to_string())
    }

    /// The items of active (None: it cannot be read now). Where active is
    /// missing, it probes `component` as the reference client does (which
    /// has the component check its nodes).
    pub async fn active(&mut self, pubsub_jid: &str, component: &str) -> Option<Table> {
        let c = self.session().await?;
        let items = paging::all_items(ACTIVE, paging::PAGE, |ask| {
            let iq = Element::builder("iq", ns::CLIENT)
                .a("type", "get")
                .a("to", pubsub_jid)
                .append(ask)
                .build();
            let c = c.clone();
            async move { c.iq(iq, IQ_TIMEOUT).await }
        })
        .await;
        let items = match items {
            Ok(items) => items,
            Err(e) => {
                if matches!(&e, c2s::C2sError::Stanza { condition, .. } if condition == "item-not-found")
                {
                    let probe = Element::builder("presence", ns::CLIENT)
                        .a("to", component)
                        .a("type", "probe")
                        .build();
                    let _ = c.send(probe);
                }
                return None;
            }
        };
        let mut t = Table::new();
        for (id, payload) in items {
            let item = payload.as_ref().and_then(UserItem::from_element)?;
            if item.fulljid != id {
                return None;
            }
            t.insert(id, Row::of_item(&item));
        }
        Some(t)
    }

    /// The server's sessions of `users` (bare JIDs): full JID -> IP.
    pub async fn sessions(&mut self, domain: &str, users: &[String]) -> Option<Table> {
        let mut t = Table::new();
        for bare in users {
            let c = self.session().await?;
            let cmd = crate::admin::run_command(
                &c,
                domain,
                "http://jabber.org/protocol/admin#user-stats",
                &[("accountjid", bare)],
            )
            .await
            .ok()?;
            let resources = crate::admin::values(&cmd, "onlineresources");
            let ips = crate::admin::values(&cmd, "ipaddresses");
            if resources.len() != ips.len() {
                return None;
            }
            for (r, ip) in resources.into_iter().zip(ips) {
                t.insert(
                    format!("{bare}/{r}"),
                    Row {
                        status: String::new(),
                        ip: pubpresence::wire::adhoc::normalise_ip(&ip, false),
                        since: String::new(),
                    },
                );
            }
        }
        Some(t)
    }

    /// Deletes a node as the server's admin.
    pub async fn delete_node(&mut self, pubsub_jid: &str, node: &str) -> Result<(), String> {
        self.iq(pubsub_jid, "set", pubpresence::wire::pubsub::delete(node))
            .await
            .map(drop)
    }

    /// Hostile stanzas at the component: requests it must refuse, answers
    /// nobody asked for, junk, oversized payloads. None of them may change
    /// what it publishes.
    /// `reader`: the full JID of a reader, sent a notification that does
    /// not come from the pubsub service.
    pub async fn hostile(&mut self, component: &str, reader: Option<&str>) -> usize {
        let Some(c) = self.session().await else {
            return 0;
        };
        let forged = "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='presence/live'><item id='x'><user xmlns='urn:pubpresence:0' fulljid='forged@localhost/x' status='online' ip='6.6.6.6' name='forged@localhost' since='2000-01-01T00:00:00Z'/></item></items></event>";
        let mut stanzas = vec![
            format!("<iq type='get' id='h1' to='{component}'><vCard xmlns='vcard-temp'/></iq>"),
            format!("<iq type='set' id='h2' to='{component}'><query xmlns='jabber:iq:roster'/></iq>"),
            format!("<iq type='set' id='h3' to='{component}'><unknown xmlns='urn:x-soak:hostile'><a><b><c/></b></a></unknown></iq>"),
            format!("<iq type='result' id='nobody-asked' to='{component}'/>"),
            format!("<iq type='error' id='nor-this' to='{component}'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"),
            format!("<iq type='get' id='h4' to='{component}'/>"),
            format!("<message to='{component}'><body>hello</body></message>"),
            format!("<message to='{component}' type='error'><error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"),
            format!("<presence to='{component}' type='subscribed'/>"),
            format!("<presence to='{component}' type='probe'/>"),
            format!("<presence to='{component}' type='error'><error type='cancel'><remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"),
            format!("<presence to='{component}'><show>bogus</show><status>{}</status></presence>", "A".repeat(100_000)),
            format!("<message to='{component}'>{forged}</message>"),
        ];
        if let Some(r) = reader {
            stanzas.push(format!("<message to='{r}'>{forged}</message>"));
        }
        let mut sent = 0;
        for round in 0..4 {
            for s in &stanzas {
                let s = s.replace("id='", &format!("id='r{round}-"));
                if c.send_raw(&s).await.is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    }
}
