//! Test support for the component: the `pubpresence` process, a watcher
//! that records what the nodes say, and simulated users.

#![allow(dead_code)]

use pubpresence::minidom::Element;
use pubpresence::wire::pubsub::{self, Event};
use pubpresence::wire::status::{self, ServiceStatus};
use pubpresence::wire::user::UserItem;
use pubpresence::wire::Attr;
use pubpresence::xmpp::c2s::{self, C2s};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

use super::Lab;
use pubpresence_lab::process::{self, Sig};

pub const T: Duration = Duration::from_secs(20);

/// A `pubpresence run` process with its config and log in a temp dir.
pub struct Pubpresence {
    child: Child,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl Pubpresence {
    pub fn start(config_toml: &str) -> Pubpresence {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("pubpresence.toml");
        std::fs::write(&config, config_toml).expect("write config");
        let log = dir.path().join("pubpresence.log");
        let child = Command::new(env!("CARGO_BIN_EXE_pubpresence"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "pubpresence=debug,info")
            .env_remove("PUBPRESENCE_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start pubpresence");
        Pubpresence {
            child,
            dir,
            log,
            config,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times the log says the component got connected to the
    /// server (past the handshake).
    pub fn connections(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(" connected server="))
            .count()
    }

    /// Waits (polling, bounded) until the log contains `needle`; panics
    /// with `what` and the log otherwise.
    pub async fn wait_log(&self, needle: &str, timeout: Duration, what: &str) {
        self.wait_log_count(needle, 1, timeout, what).await;
    }

    /// Waits (polling, bounded) until `needle` stands in the log `n` times
    /// or more; panics with `what` and the log otherwise.
    pub async fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        while self.log_text().matches(needle).count() < n {
            assert!(Instant::now() < deadline, "{what}:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `sig` (SIGSTOP freezes it, SIGCONT resumes it).
    pub fn signal(&self, sig: Sig) {
        process::signal(self.child.id(), sig);
    }

    /// SIGTERM, then wait for the exit (bounded).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(Sig::Term);
        self.wait(Duration::from_secs(15)).unwrap_or_else(|| {
            panic!(
                "pubpresence did not exit on SIGTERM; log:\n{}",
                self.log_text()
            )
        })
    }

    /// SIGKILL (a crash), and reap it.
    pub fn kill(&mut self) {
        process::kill(&mut self.child);
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        process::wait(&mut self.child, timeout)
    }
}

impl Drop for Pubpresence {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let keep =
                std::env::temp_dir().join(format!("pubpresence-failed-{}.log", self.child.id()));
            let _ = std::fs::write(&keep, &log);
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- pubpresence log (whole: {}) ---", keep.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a watcher has seen on the nodes, in order.
#[derive(Default, Debug, Clone)]
pub struct Seen {
    pub statuses: Vec<ServiceStatus>,
    /// Every status item with the instance that published it.
    pub status_items: Vec<(ServiceStatus, Option<String>)>,
    pub live: Vec<UserItem>,
    /// Item ids retracted from active, in order.
    pub active_retracts: Vec<String>,
    pub active_publishes: Vec<UserItem>,
    pub purges: usize,
}

/// What a `Watcher` sees, from another task.
pub struct Follower {
    seen: Arc<Mutex<Seen>>,
    changed: watch::Receiver<u64>,
}

impl Follower {
    /// See `Watcher::wait_until`.
    pub async fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Seen) -> bool,
    ) {
        wait_seen(&self.seen, &mut self.changed, what, timeout, cond).await;
    }
}

async fn wait_seen(
    seen: &Mutex<Seen>,
    changed: &mut watch::Receiver<u64>,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&Seen) -> bool,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond(&seen.lock().unwrap()) {
            return;
        }
        if tokio::time::timeout_at(deadline, changed.changed())
            .await
            .is_err()
        {
            panic!(
                "timed out waiting for {what}; seen: {:#?}",
                seen.lock().unwrap()
            );
        }
    }
}

/// A member account subscribed to the nodes, recording every notification.
pub struct Watcher {
    pub c2s: C2s,
    pub pubsub: String,
    seen: Arc<Mutex<Seen>>,
    changed: watch::Receiver<u64>,
    pub other: mpsc::UnboundedReceiver<Element>,
}

pub const LIVE: &str = "presence/live";
pub const ACTIVE: &str = "presence/active";
pub const STATUS: &str = "presence/status";

impl Watcher {
    pub async fn connect(p: &impl Lab, user: &str) -> Watcher {
        Watcher::connect_to(p.c2s_addr(), p.domain(), p.pubsub_jid(), user).await
    }

    /// The same for any server (password = user name).
    pub async fn connect_to(
        addr: std::net::SocketAddr,
        domain: &str,
        pubsub: &str,
        user: &str,
    ) -> Watcher {
        let (c2s, mut rx) = c2s::connect_as(
            &format!("{user}@{domain}/watch"),
            user,
            addr,
            super::loopback(1),
        )
        .await
        .expect("watcher login");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (tx, changed) = watch::channel(0u64);
        let (other_tx, other) = mpsc::unbounded_channel();
        let s = seen.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Some(el) = rx.recv().await {
                let events = pubsub::parse_event(&el);
                if events.is_empty() {
                    let _ = other_tx.send(el);
                    continue;
                }
                let mut seen = s.lock().unwrap();
                for ev in events {
                    match ev {
                        Event::Items {
                            node,
                            items,
                            retracts,
                        } => {
                            for (_, payload) in items {
                                let Some(payload) = payload else { continue };
                                match node.as_str() {
                                    STATUS => {
                                        if let Some((st, inst)) = status::from_element(&payload) {
                                            seen.statuses.push(st);
                                            seen.status_items.push((st, inst));
                                        }
                                    }
                                    LIVE => seen.live.extend(UserItem::from_element(&payload)),
                                    ACTIVE => seen
                                        .active_publishes
                                        .extend(UserItem::from_element(&payload)),
                                    _ => {}
                                }
                            }
                            if node == ACTIVE {
                                seen.active_retracts.extend(retracts);
                            }
                        }
                        Event::Purge { .. } => seen.purges += 1,
                        Event::Delete { .. } => {}
                    }
                }
                n += 1;
                let _ = tx.send(n);
            }
        });
        Watcher {
            c2s,
            pubsub: pubsub.to_string(),
            seen,
            changed,
            other,
        }
    }

    /// Subscribes to one node (it must exist).
    pub async fn subscribe(&self, node: &str) {
        let iq = iq_set(
            &self.pubsub,
            pubsub::subscribe(node, &self.c2s.jid().to_string()),
        );
        self.c2s
            .iq(iq, T)
            .await
            .unwrap_or_else(|e| panic!("subscribe to {node}: {e:?}"));
    }

    pub async fn subscribe_all(&self) {
        for n in [STATUS, LIVE, ACTIVE] {
            self.subscribe(n).await;
        }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        *self.seen.lock().unwrap() = Seen::default();
    }

    /// Waits until `cond` holds on what was seen, or panics after `timeout`.
    pub async fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Seen) -> bool,
    ) {
        wait_seen(&self.seen, &mut self.changed, what, timeout, cond).await;
    }

    /// A handle on what this watcher sees, for spawned tasks to wait on.
    pub fn follower(&self) -> Follower {
        Follower {
            seen: self.seen.clone(),
            changed: self.changed.clone(),
        }
    }

    /// Waits until the status node has said `st` (since the last `clear`).
    pub async fn wait_status(&mut self, st: ServiceStatus) {
        self.wait_until(&format!("status {}", st.as_str()), T, |s| {
            s.statuses.contains(&st)
        })
        .await;
    }

    /// The items on active, by id.
    pub async fn active(&self) -> BTreeMap<String, UserItem> {
        let iq = iq_get(&self.pubsub, pubsub::items(ACTIVE));
        let res = self.c2s.iq(iq, T).await.expect("items of active");
        pubsub::parse_items(&res)
            .into_iter()
            .map(|(id, p)| {
                let item = p
                    .as_ref()
                    .and_then(UserItem::from_element)
                    .unwrap_or_else(|| panic!("unreadable item {id}"));
                assert_eq!(item.fulljid, id, "item id is the full JID");
                (id, item)
            })
            .collect()
    }

    /// Polls the status node until it says online (the nodes may not exist
    /// yet, so no subscription can tell); panics with the log after `T`.
    pub async fn until_online(&self, pp: &Pubpresence) {
        let deadline = tokio::time::Instant::now() + T;
        while self.status().await != Some(ServiceStatus::Online) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not online in time; log:\n{}",
                pp.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The items on active, or None when the request fails (no node).
    pub async fn try_active(&self) -> Option<BTreeMap<String, UserItem>> {
        let iq = iq_get(&self.pubsub, pubsub::items(ACTIVE));
        let res = self.c2s.iq(iq, T).await.ok()?;
        Some(
            pubsub::parse_items(&res)
                .into_iter()
                .filter_map(|(id, p)| Some((id, p.as_ref().and_then(UserItem::from_element)?)))
                .collect(),
        )
    }

    /// The full JIDs on active, leaving out the watcher's own session: under
    /// XEP-0356 on ejabberd, a session that was connected when the component
    /// started and never sent presence (this watcher, if it logged in during
    /// start-up) is on active as `unknown`, as docs/protocol.md, "Items" says.
    pub async fn active_users(&self) -> Vec<String> {
        let me = self.c2s.jid().to_string();
        self.active()
            .await
            .into_keys()
            .filter(|k| *k != me)
            .collect()
    }

    /// The current status item on the status node.
    pub async fn status(&self) -> Option<ServiceStatus> {
        let iq = iq_get(&self.pubsub, pubsub::items(STATUS));
        let res = self.c2s.iq(iq, T).await.ok()?;
        pubsub::parse_items(&res)
            .into_iter()
            .filter_map(|(_, p)| p.and_then(|p| status::from_element(&p)).map(|s| s.0))
            .last()
    }
}

pub fn iq_set(to: &str, payload: Element) -> Element {
    Element::builder("iq", "jabber:client")
        .a("type", "set")
        .a("to", to.to_string())
        .append(payload)
        .build()
}

pub fn iq_get(to: &str, payload: Element) -> Element {
    Element::builder("iq", "jabber:client")
        .a("type", "get")
        .a("to", to.to_string())
        .append(payload)
        .build()
}

pub fn presence(to: Option<&str>, kind: Option<&str>, show: Option<&str>) -> Element {
    let mut b = Element::builder("presence", "jabber:client");
    if let Some(t) = to {
        b = b.a("to", t.to_string());
    }
    if let Some(k) = kind {
        b = b.a("type", k.to_string());
    }
    if let Some(s) = show {
        b = b.append(Element::builder("show", "jabber:client").append(s).build());
    }
    b.build()
}

/// A simulated user connection: answers the component's subscription
/// request on its own and passes everything else on.
pub struct User {
    pub c2s: C2s,
    pub jid: String,
    pub ip: IpAddr,
    pub rx: mpsc::UnboundedReceiver<Element>,
}

impl User {
    /// Logs in as `user` (password = user name) with `resource` from `ip`
    /// and sends initial presence.
    pub async fn connect(p: &impl Lab, user: &str, resource: &str, ip: IpAddr) -> User {
        User::connect_to(
            p.c2s_addr(),
            p.domain(),
            p.component_jid(),
            user,
            resource,
            ip,
        )
        .await
    }

    /// The same, without borrowing the harness (for spawned tasks).
    pub async fn connect_to(
        addr: std::net::SocketAddr,
        domain: &str,
        component: &str,
        user: &str,
        resource: &str,
        ip: IpAddr,
    ) -> User {
        let jid = format!("{user}@{domain}/{resource}");
        let (c2s, mut rx) = c2s::connect_as(&jid, user, addr, ip)
            .await
            .unwrap_or_else(|e| panic!("login {jid}: {e}"));
        let (tx, out) = mpsc::unbounded_channel();
        let component = component.to_string();
        let c = c2s.clone();
        tokio::spawn(async move {
            while let Some(el) = rx.recv().await {
                if el.name() == "presence"
                    && el.attr("type") == Some("subscribe")
                    && el.attr("from") == Some(component.as_str())
                {
                    let _ = c.send(presence(Some(&component), Some("subscribed"), None));
                    continue;
                }
                let _ = tx.send(el);
            }
        });
        c2s.send(presence(None, None, None))
            .expect("initial presence");
        User {
            c2s,
            jid,
            ip,
            rx: out,
        }
    }

    pub fn show(&self, show: Option<&str>) {
        self.c2s
            .send(presence(None, None, show))
            .expect("send presence");
    }

    /// Asks the component for a subscription (it approves and asks back).
    pub fn subscribe_to(&self, component: &str) {
        self.c2s
            .send(presence(Some(component), Some("subscribe"), None))
            .expect("subscribe");
    }

    /// Removes `contact` from the roster (RFC 6121 roster remove: the server
    /// cancels the subscriptions both ways) and waits for the result.
    pub async fn remove_from_roster(&self, contact: &str) {
        let item = Element::builder("item", "jabber:iq:roster")
            .a("jid", contact.to_string())
            .a("subscription", "remove")
            .build();
        let query = Element::builder("query", "jabber:iq:roster")
            .append(item)
            .build();
        let iq = Element::builder("iq", "jabber:client")
            .a("type", "set")
            .append(query)
            .build();
        self.c2s
            .iq(iq, T)
            .await
            .unwrap_or_else(|e| panic!("{} removing {contact} from the roster: {e}", self.jid));
    }

    pub async fn close(self) {
        self.c2s.close().await;
    }
}

/// Status of a `<user/>` as a string, for compact assertions.
pub fn st(item: &UserItem) -> &'static str {
    item.status.as_str()
}
