//! The Prosody harness for end-to-end tests: a throwaway Prosody 0.12 in a
//! temp dir on free loopback ports, plus helpers that ask the server (as its
//! admin, XEP-0133) which sessions really exist.
//!
//! Every test binary that says `mod common;` compiles all of this; not every
//! one uses all of it.
#![allow(dead_code)]

pub mod pp;

use pubpresence::client::c2s::C2s;
use pubpresence::minidom::Element;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::mpsc::Receiver;

/// How long the server may take to listen, and `user_sessions`' IQ timeout.
const STARTUP: Duration = Duration::from_secs(10);
const IQ_TIMEOUT: Duration = Duration::from_secs(10);

const COMMANDS: &str = "http://jabber.org/protocol/commands";
const ADMIN_FORM: &str = "http://jabber.org/protocol/admin";

/// 127.0.0.n: users connect from distinct loopback addresses so that the IPs
/// the server reports are really checked.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A running Prosody; killed (and its temp dir removed) on drop. With
/// `PUBPRESENCE_KEEP_PROSODY=1` in the environment the dir (config, log,
/// data) is kept for a look afterwards.
pub struct Prosody {
    pub dir: TempDir,
    pub c2s_port: u16,
    pub component_port: u16,
    /// "localhost"
    pub domain: String,
    /// "pubpresence.localhost": the external component's JID.
    pub component_jid: String,
    /// "pubsub.localhost": a pubsub service with memory storage.
    pub pubsub_jid: String,
    /// The component's secret.
    pub secret: String,
    child: Option<Child>,
}

impl Prosody {
    /// Starts Prosody and waits until its c2s and component ports listen.
    /// Registers "admin" (password "admin"), a server admin.
    pub fn start() -> Prosody {
        if !["prosody", "prosodyctl"].iter().all(|b| on_path(b)) {
            panic!("prosody is not installed: apt-get install prosody");
        }
        // The pubsub component stores items in SQLite: Prosody 0.12's
        // "memory" store loses items on active after a retract followed by a
        // republish of another id (README, "Prosody's pubsub storage").
        let dbi = Command::new("dpkg-query")
            .args(["-W", "-f", "${Status}", "lua-dbi-sqlite3"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
            .unwrap_or(false);
        if !dbi {
            panic!("lua-dbi-sqlite3 is not installed (Prosody's SQLite driver): apt-get install lua-dbi-sqlite3");
        }
        let dir = tempfile::Builder::new()
            .prefix("pubpresence-prosody-")
            .tempdir()
            .expect("temp dir");
        // Hold both listeners at once so that the two ports differ.
        let (c2s_port, component_port) = {
            let a = TcpListener::bind("127.0.0.1:0").expect("free port");
            let b = TcpListener::bind("127.0.0.1:0").expect("free port");
            (
                a.local_addr().expect("port").port(),
                b.local_addr().expect("port").port(),
            )
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut p = Prosody {
            c2s_port,
            component_port,
            domain: "localhost".into(),
            component_jid: "pubpresence.localhost".into(),
            pubsub_jid: "pubsub.localhost".into(),
            secret: format!("s3cret-{}-{nanos}", std::process::id()),
            child: None,
            dir,
        };
        // certs/ only keeps Prosody's certmanager from logging an error.
        for sub in ["data", "certs"] {
            std::fs::create_dir_all(p.dir.path().join(sub)).expect("data dir");
        }
        std::fs::write(p.config_path(), p.lua_config()).expect("write prosody config");
        p.register("admin", "admin");
        p.spawn();
        p
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("prosody.log")
    }

    fn lua_config(&self) -> String {
        let dir = self.dir.path().display();
        format!(
            r#"-- written by tests/common/mod.rs
run_as_root = true
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ debug = "{dir}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
component_ports = {{ {component} }}
component_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
admins = {{ "{component_jid}", "admin@{domain}" }}
modules_enabled = {{
    "roster"; "saslauth"; "disco"; "ping"; "posix";
    "adhoc"; "admin_adhoc";
}}
modules_disabled = {{ "s2s"; "tls" }}

VirtualHost "{domain}"

Component "{component_jid}"
    component_secret = "{secret}"

Component "{pubsub_jid}" "pubsub"
    storage = "sql"
    sql = {{ driver = "SQLite3", database = "{dir}/pubsub.sqlite" }}
    pubsub_max_items = 100000
    storage_archive_item_limit = 100000
"#,
            c2s = self.c2s_port,
            component = self.component_port,
            component_jid = self.component_jid,
            pubsub_jid = self.pubsub_jid,
            domain = self.domain,
            secret = self.secret,
        )
    }

    fn spawn(&mut self) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("prosody.stdout"))
            .expect("stdout file");
        let err = out.try_clone().expect("stderr file");
        let child = Command::new("prosody")
            .arg("--config")
            .arg(self.config_path())
            .arg("-F")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start prosody");
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        for port in [self.c2s_port, self.component_port] {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            loop {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!(
                        "prosody exited ({status}) before listening on {addr}\n{}",
                        self.log_tail(60)
                    );
                }
                if Instant::now() > deadline {
                    panic!(
                        "prosody did not listen on {addr} within {STARTUP:?}\n{}",
                        self.log_tail(60)
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The last `n` lines of Prosody's log and of its stdout/stderr.
    pub fn log_tail(&self, n: usize) -> String {
        let tail = |path: PathBuf| {
            let lines: Vec<String> = std::fs::File::open(&path)
                .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
                .unwrap_or_default();
            let start = lines.len().saturating_sub(n);
            format!("--- {} ---\n{}", path.display(), lines[start..].join("\n"))
        };
        format!(
            "{}\n{}",
            tail(self.log_path()),
            tail(self.dir.path().join("prosody.stdout"))
        )
    }

    /// Creates an account (works whether or not the server is running).
    pub fn register(&self, user: &str, password: &str) {
        let out = Command::new("prosodyctl")
            .arg("--config")
            .arg(self.config_path())
            .args(["register", user, &self.domain, password])
            .stdin(Stdio::null())
            .output()
            .expect("run prosodyctl");
        assert!(
            out.status.success(),
            "prosodyctl register {user}@{} failed: {}{}",
            self.domain,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn c2s_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.c2s_port))
    }

    pub fn component_addr(&self) -> String {
        format!("127.0.0.1:{}", self.component_port)
    }

    /// A pubpresence config file for this server, with a whitelist of
    /// `members` (full "user@domain" JIDs).
    pub fn config_toml(&self, members: &[&str]) -> String {
        let members: Vec<String> = members.iter().map(|m| format!("{m:?}")).collect();
        format!(
            r#"jid = "{jid}"
server = "{server}"
secret = "{secret}"
domain = "{domain}"
pubsub = "{pubsub}"
probe_timeout = "2s"

[access]
model = "whitelist"
members = [{members}]
"#,
            jid = self.component_jid,
            server = self.component_addr(),
            secret = self.secret,
            domain = self.domain,
            pubsub = self.pubsub_jid,
            members = members.join(", "),
        )
    }

    /// SIGTERM, then SIGKILL after 5 s. Data and ports are kept.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops and starts again: same ports, same data (accounts).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(40));
        }
        self.stop();
        if std::env::var_os("PUBPRESENCE_KEEP_PROSODY").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("prosody dir kept: {}", self.dir.path().display());
        }
    }
}

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|d| d.join(binary).is_file()))
        .unwrap_or(false)
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
    let execute = format!(
        "<iq xmlns='jabber:client' type='set' to='{to}'>\
         <command xmlns='{COMMANDS}' node='{node}' action='execute'/></iq>"
    );
    let first = admin
        .iq(xml(&execute), IQ_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("execute {node} at {to}: {e}"));
    let session = first
        .get_child("command", COMMANDS)
        .and_then(|c| c.attr("sessionid"))
        .unwrap_or_else(|| panic!("{node}: no session id in {}", String::from(&first)))
        .to_string();
    let mut form =
        format!("<field var='FORM_TYPE' type='hidden'><value>{ADMIN_FORM}</value></field>");
    for (var, value) in fields {
        form.push_str(&format!(
            "<field var='{var}'><value>{}</value></field>",
            escape(value)
        ));
    }
    let submit = format!(
        "<iq xmlns='jabber:client' type='set' to='{to}'>\
         <command xmlns='{COMMANDS}' node='{node}' sessionid='{}'>\
         <x xmlns='jabber:x:data' type='submit'>{form}</x></command></iq>",
        escape(&session)
    );
    let done = admin
        .iq(xml(&submit), IQ_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("submit {node} at {to}: {e}"));
    let command = done
        .get_child("command", COMMANDS)
        .unwrap_or_else(|| panic!("{node}: no command in {}", String::from(&done)))
        .clone();
    if let Some(note) = command
        .children()
        .find(|c| c.name() == "note" && c.attr("type") == Some("error"))
    {
        panic!("{node} failed: {}", note.text());
    }
    command
}

/// The non-empty values of the data-form field `var` inside `el`.
fn form_values(el: &Element, var: &str) -> Vec<String> {
    el.children()
        .filter(|x| x.name() == "x" && x.ns() == "jabber:x:data")
        .flat_map(|x| x.children())
        .filter(|f| f.name() == "field" && f.attr("var") == Some(var))
        .flat_map(|f| f.children())
        .filter(|v| v.name() == "value")
        .map(|v| v.text().trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn xml(s: &str) -> Element {
    s.parse()
        .unwrap_or_else(|e| panic!("test XML does not parse ({e}): {s}"))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}
