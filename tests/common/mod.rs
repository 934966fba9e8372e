//! The Prosody harness for end-to-end tests: the lab's throwaway Prosody
//! 0.12 (`pubpresence_lab`, a temp dir on free loopback ports) with panics
//! for errors, plus helpers that ask the server (as its admin, XEP-0133)
//! which sessions really exist.
//!
//! Every test binary that says `mod common;` compiles all of this; not every
//! one uses all of it.
#![allow(dead_code)]

pub mod pp;
pub mod web;

use pubpresence::minidom::Element;
use pubpresence::xmpp::c2s::C2s;
use pubpresence_lab as lab;
use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::time::Duration;
use tokio::sync::mpsc::Receiver;

/// `user_sessions`' IQ timeout.
const IQ_TIMEOUT: Duration = Duration::from_secs(10);

pub use pubpresence_lab::loopback;

/// The lab's Prosody (`pubpresence_lab::Prosody`, reached through `Deref`
/// for its fields and other methods), with the fallible calls turned into
/// panics: a test that cannot start its server has nothing to test.
pub struct Prosody(lab::Prosody);

impl Prosody {
    /// Starts Prosody on free loopback ports (see `lab::Prosody::start`).
    pub fn start() -> Prosody {
        Prosody(lab::Prosody::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// With `options` (see `lab::ProsodyOptions`).
    pub fn start_with(options: lab::ProsodyOptions) -> Prosody {
        Prosody(lab::Prosody::start_with(options).unwrap_or_else(|e| panic!("{e}")))
    }

    /// With XEP-0356 presence permission for the component (mod_privilege).
    pub fn start_privileged() -> Prosody {
        Prosody(lab::Prosody::start_privileged().unwrap_or_else(|e| panic!("{e}")))
    }

    /// Creates an account (works whether or not the server is running).
    pub fn register(&self, user: &str, password: &str) {
        self.0
            .register(user, password)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Stops and starts again: same ports, same data (accounts).
    pub fn restart(&mut self) {
        self.0.restart().unwrap_or_else(|e| panic!("{e}"));
    }
}

impl From<lab::Prosody> for Prosody {
    fn from(p: lab::Prosody) -> Prosody {
        Prosody(p)
    }
}

impl Deref for Prosody {
    type Target = lab::Prosody;
    fn deref(&self) -> &lab::Prosody {
        &self.0
    }
}

impl DerefMut for Prosody {
    fn deref_mut(&mut self) -> &mut lab::Prosody {
        &mut self.0
    }
}

// ---------------------------------------------------------------------------
// Either server

/// What the test helpers (`pp`) need to know of a server.
pub trait Lab {
    fn c2s_addr(&self) -> std::net::SocketAddr;
    fn domain(&self) -> &str;
    fn component_jid(&self) -> &str;
    fn pubsub_jid(&self) -> &str;
}

impl Lab for Prosody {
    fn c2s_addr(&self) -> std::net::SocketAddr {
        self.0.c2s_addr()
    }
    fn domain(&self) -> &str {
        &self.0.domain
    }
    fn component_jid(&self) -> &str {
        &self.0.component_jid
    }
    fn pubsub_jid(&self) -> &str {
        &self.0.pubsub_jid
    }
}

/// A test's server: the same test code runs against both.
pub enum Server {
    Prosody(Prosody),
    Ejabberd(lab::ejabberd::Ejabberd),
}

impl Server {
    pub fn prosody() -> Server {
        Server::Prosody(Prosody::start())
    }

    pub fn ejabberd() -> Server {
        Server::Ejabberd(lab::ejabberd::Ejabberd::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// ejabberd with XEP-0356 presence permission for the component (on
    /// 24.10 and later also the IQ permission and `privileged_as` it needs).
    pub fn ejabberd_privileged() -> Server {
        Server::Ejabberd(
            lab::ejabberd::Ejabberd::start_with(lab::ejabberd::EjabberdOptions {
                privileged_presence: true,
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// The software and version this server really is ("Prosody 13.0.1").
    pub fn label(&self) -> String {
        match self {
            Server::Prosody(p) => p.label(),
            Server::Ejabberd(e) => e.label(),
        }
    }

    pub fn is_prosody(&self) -> bool {
        matches!(self, Server::Prosody(_))
    }

    pub fn secret(&self) -> &str {
        match self {
            Server::Prosody(p) => &p.secret,
            Server::Ejabberd(e) => &e.secret,
        }
    }

    pub fn register(&self, user: &str, password: &str) {
        match self {
            Server::Prosody(p) => p.register(user, password),
            // In-band: a few ms, where ejabberdctl takes 0.3 s.
            Server::Ejabberd(e) => e
                .register_many(&[(user, password)])
                .unwrap_or_else(|err| panic!("{err}")),
        }
    }

    pub fn component_addr(&self) -> String {
        match self {
            Server::Prosody(p) => p.component_addr(),
            Server::Ejabberd(e) => e.component_addr(),
        }
    }

    pub fn config_toml(&self, members: &[&str]) -> String {
        match self {
            Server::Prosody(p) => p.config_toml(members),
            Server::Ejabberd(e) => e.config_toml(members),
        }
    }

    pub fn restart(&mut self) {
        match self {
            Server::Prosody(p) => p.restart(),
            Server::Ejabberd(e) => e.restart().unwrap_or_else(|err| panic!("{err}")),
        }
    }
}

/// `cfg` (the component's config for `p`) rewritten to reach the server
/// through a relay of the lab's, which holds the component's traffic as
/// `Lag::set` says; the relay runs as long as the returned `Lag` lives.
pub async fn through_relay(p: &Server, cfg: &str) -> (lab::soak::lag::Lag, String) {
    let upstream = p.component_addr();
    let lag = lab::soak::lag::Lag::start(&[upstream.parse().expect("component address")], 1)
        .await
        .expect("relay");
    let relay = lag.relay_of(&upstream).expect("a relay for the component");
    let cfg = cfg.replace(&upstream, &relay);
    assert!(cfg.contains(&relay), "{cfg}");
    (lag, cfg)
}

impl Lab for Server {
    fn c2s_addr(&self) -> std::net::SocketAddr {
        match self {
            Server::Prosody(p) => p.c2s_addr(),
            Server::Ejabberd(e) => e.c2s_addr(),
        }
    }
    fn domain(&self) -> &str {
        match self {
            Server::Prosody(p) => &p.domain,
            Server::Ejabberd(e) => &e.domain,
        }
    }
    fn component_jid(&self) -> &str {
        match self {
            Server::Prosody(p) => &p.component_jid,
            Server::Ejabberd(e) => &e.component_jid,
        }
    }
    fn pubsub_jid(&self) -> &str {
        match self {
            Server::Prosody(p) => &p.pubsub_jid,
            Server::Ejabberd(e) => &e.pubsub_jid,
        }
    }
}

// ---------------------------------------------------------------------------
// Waiting for stanzas

/// Reads `rx` until `pred` returns `Some`; panics (with the last stanzas
/// seen) when `timeout` passes or the connection ends first.
pub async fn wait_for<T>(
    rx: &mut Receiver<Element>,
    timeout: Duration,
    mut pred: impl FnMut(&Element) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen: Vec<String> = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(el)) => {
                if let Some(t) = pred(&el) {
                    return t;
                }
                seen.push(String::from(&el));
            }
            Ok(None) => panic!(
                "the connection closed before the awaited stanza arrived; last stanzas:\n{}",
                last(&seen)
            ),
            Err(_) => panic!(
                "the awaited stanza did not arrive within {timeout:?}; last stanzas:\n{}",
                last(&seen)
            ),
        }
    }
}

fn last(seen: &[String]) -> String {
    let start = seen.len().saturating_sub(10);
    if seen.is_empty() {
        "(none)".into()
    } else {
        seen[start..].join("\n")
    }
}

// ---------------------------------------------------------------------------
// What the server says (XEP-0133 admin commands, as a server admin)

/// The lab server's admin (`admin`, password `admin`, an admin on both
/// servers), logged in as `admin@DOMAIN/resource` from 127.0.0.1.
pub async fn admin_login(p: &impl Lab, resource: &str) -> (C2s, Receiver<Element>) {
    pubpresence::xmpp::c2s::connect_as(
        &format!("admin@{}/{resource}", p.domain()),
        "admin",
        p.c2s_addr(),
        loopback(1),
    )
    .await
    .expect("admin login")
}

/// The server's real sessions of `users` ("alice" or "alice@domain"): full
/// JID -> IP, from user-stats.
pub async fn user_sessions(admin: &C2s, domain: &str, users: &[&str]) -> BTreeMap<String, String> {
    let mut sessions = BTreeMap::new();
    for user in users {
        let bare = if user.contains('@') {
            user.to_string()
        } else {
            format!("{user}@{domain}")
        };
        let result = run_command(
            admin,
            domain,
            "http://jabber.org/protocol/admin#user-stats",
            &[("accountjid", &bare)],
        )
        .await;
        let resources = form_values(&result, "onlineresources");
        let ips = form_values(&result, "ipaddresses");
        assert_eq!(
            resources.len(),
            ips.len(),
            "user-stats of {bare}: resources and IPs do not pair up: {}",
            String::from(&result)
        );
        for (resource, ip) in resources.into_iter().zip(ips) {
            // ejabberd writes `ip:port`: compare addresses only.
            let ip = pubpresence::wire::adhoc::normalise_ip(&ip, false);
            sessions.insert(format!("{bare}/{resource}"), ip);
        }
    }
    sessions
}

/// The bare JIDs of every user online on the admin's server, sorted.
pub async fn online_users(admin: &C2s) -> Vec<String> {
    let domain = admin.jid().domain().to_string();
    let result = run_command(
        admin,
        &domain,
        "http://jabber.org/protocol/admin#get-online-users-list",
        &[("max_items", "all")],
    )
    .await;
    let mut users = form_values(&result, "onlineuserjids");
    users.sort();
    users
}

/// Executes an ad-hoc command at `to`, submits `fields` in its form and
/// returns the final `<command/>` element.
async fn run_command(admin: &C2s, to: &str, node: &str, fields: &[(&str, &str)]) -> Element {
    pubpresence_lab::admin::run_command(admin, to, node, fields)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

use pubpresence_lab::admin::values as form_values;

fn xml(s: &str) -> Element {
    s.parse()
        .unwrap_or_else(|e| panic!("test XML does not parse ({e}): {s}"))
}

/// A two-node ejabberd cluster with privileged presence (XEP-0356), both
/// nodes running.
pub fn privileged_cluster() -> lab::ejabberd::Ejabberd {
    let mut e = lab::ejabberd::Ejabberd::start_with(lab::ejabberd::EjabberdOptions {
        privileged_presence: true,
        ..Default::default()
    })
    .unwrap_or_else(|err| panic!("{err}"));
    e.add_node()
        .unwrap_or_else(|err| panic!("second node: {err}"));
    e
}
