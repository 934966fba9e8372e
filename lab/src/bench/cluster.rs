//! `pubpresence-lab bench --ejabberd-cluster`: start-up time and the
//! cost of one audit with many sessions spread over a two-node ejabberd
//! cluster (23.01, XEP-0356 privileged presence, no roster subscriptions).
//!
//! One run:
//! 1. a lab ejabberd of two nodes (`join_cluster`) with `mod_privilege`
//!    presence permission for the component; N accounts registered in band;
//! 2. N sessions, half on each node's c2s port, each from its own loopback
//!    address; each sends one available presence and nothing else (no
//!    subscription request to the component, unlike `client::sim`: the
//!    component sees them through its privileges only);
//! 3. cold start-up: the component as a child `pubpresence run` with audits
//!    off and active empty, from the spawn to its log line `online: active
//!    is up to date` (written once `online` is on the status node, which is
//!    then read back); CPU of the component and of both nodes' Erlang VMs,
//!    and the component's bytes read and written, over that time;
//! 4. warm start-up: the component stopped (SIGTERM) and started again with
//!    active full and `audit_interval = T`, T chosen from the cold start-up
//!    so that the first audit falls well after `online`;
//! 5. one audit: the window opens 1 s before the audit is due (T after the
//!    spawn) and closes at the audit's log line (`audit checked=...`);
//! 6. an equal window without an audit, a whole number of 5-s periods
//!    later: the session checks that privileged presence on ejabberd needs
//!    (one listing every 5 s) fall into it exactly when they fall into the
//!    audit's window; the audit's window less this one is its own cost;
//! 7. the background: a window of `background` (30 s by default: six
//!    session checks) with no audit, and the same scaled to the audit
//!    window's length (a cross-check);
//! 8. the component stopped, the same sessions: a window as long again, the
//!    nodes' own background (the clients' keepalive pings, Mnesia); the
//!    background less this is what the session checks cost the nodes.
//!
//! Bytes on the wire: the payload bytes of the component's TCP connections
//! to the nodes' component listeners (its only sockets), `bytes_received`
//! and `bytes_sent` of the kernel's TCP_INFO as `ss -tin` prints them.
//! Not `/proc/PID/io`: its `rchar`/`wchar` count `read`/`write` system
//! calls only, and Rust's `TcpStream` uses `recv`/`send`, which they miss
//! (seen: 0 bytes over an audit).

use super::args::BenchArgs;
use super::client::{client_iq, read_status};
use super::error::BenchError;
use super::measure::{cpu_seconds, rss_kib, Machine};
use super::output;
use crate::ejabberd::{self, Ejabberd, EjabberdOptions};
use crate::sim;
use pubpresence::minidom::Element;
use pubpresence::wire::status::ServiceStatus;
use pubpresence::wire::user::{Status, UserItem};
use pubpresence::wire::{ns, pubsub};
use pubpresence::xmpp::c2s::{self, C2s};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The server, named next to every figure: the ejabberd version the lab
/// really runs (`crate::install`).
pub fn server() -> String {
    let label = crate::install::ejabberd()
        .map(|i| i.label())
        .unwrap_or_else(|_| "ejabberd (not installed)".into());
    format!(
        "{label}, a cluster of two nodes on this machine, mod_privilege presence: \
         managed_entity, no roster subscriptions, loglevel info"
    )
}
const ACTIVE: &str = "presence/active";
const WATCHER: &str = "watcher";
/// Account names: `s1`..`sN` (password = name).
const PREFIX: &str = "s";
/// Under XEP-0356 on ejabberd the component lists the sessions this often
/// (`SESSION_CHECK` in src/component/service/audit.rs).
const SESSION_CHECK_S: f64 = 5.0;
const IQ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long before the audit is due its window opens.
const PRE_AUDIT: Duration = Duration::from_secs(1);
/// The component's log line once `online` is published.
const ONLINE_LINE: &str = "online: active is up to date";
/// The first words of an audit's log line.
const AUDIT_LINE: &str = "audit checked=";
/// Source addresses of node 0's and node 1's sessions.
const FIRST_IP: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 10, 0, 1), Ipv4Addr::new(127, 20, 0, 1)];

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Sessions in all (node 0 gets the odd one).
    pub connections: usize,
    /// The background window (no audit).
    pub background: Duration,
    /// The `pubpresence` binary (`pubpresence run --config`).
    pub component_bin: PathBuf,
    /// Logins in flight at once, per node.
    pub login_concurrency: usize,
}

impl ClusterOptions {
    /// 10,000 sessions, a 30-s background window.
    pub fn full(component_bin: PathBuf) -> ClusterOptions {
        ClusterOptions {
            connections: 10_000,
            background: Duration::from_secs(30),
            component_bin,
            login_concurrency: 32,
        }
    }

    /// `--connections` and `--duration` (the background window) of `args`.
    pub fn from_args(args: &BenchArgs, component_bin: PathBuf) -> ClusterOptions {
        let mut o = ClusterOptions::full(component_bin);
        if let Some(n) = args.connections {
            o.connections = n;
        }
        if let Some(d) = args.duration {
            o.background = d;
        }
        o
    }
}

fn setup(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

/// What one window cost. Bytes are `f64` because the background is scaled.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Cost {
    pub window_s: f64,
    pub component_cpu_s: f64,
    /// One per ejabberd node, node 0 first: its Erlang VM (beam.smp), all
    /// threads.
    pub node_cpu_s: Vec<f64>,
    /// Payload bytes the component received from the nodes (TCP_INFO).
    pub read_bytes: f64,
    /// Payload bytes the component sent to the nodes (TCP_INFO).
    pub written_bytes: f64,
    /// The benchmark process itself (the client sessions, the watcher).
    pub clients_cpu_s: f64,
}

impl Cost {
    fn between(a: &Sample, b: &Sample) -> Cost {
        let d = |x: f64, y: f64| (y - x).max(0.0);
        Cost {
            window_s: b.at.saturating_duration_since(a.at).as_secs_f64(),
            component_cpu_s: d(a.component_cpu, b.component_cpu),
            node_cpu_s: a
                .nodes_cpu
                .iter()
                .zip(&b.nodes_cpu)
                .map(|(x, y)| d(*x, *y))
                .collect(),
            read_bytes: d(a.received as f64, b.received as f64),
            written_bytes: d(a.sent as f64, b.sent as f64),
            clients_cpu_s: d(a.clients_cpu, b.clients_cpu),
        }
    }

    /// The same rates over `window_s`.
    fn scaled_to(&self, window_s: f64) -> Cost {
        let f = if self.window_s > 0.0 {
            window_s / self.window_s
        } else {
            0.0
        };
        Cost {
            window_s,
            component_cpu_s: self.component_cpu_s * f,
            node_cpu_s: self.node_cpu_s.iter().map(|c| c * f).collect(),
            read_bytes: self.read_bytes * f,
            written_bytes: self.written_bytes * f,
            clients_cpu_s: self.clients_cpu_s * f,
        }
    }

    /// `self - other`, figure by figure (may be negative: noise).
    fn minus(&self, other: &Cost) -> Cost {
        Cost {
            window_s: self.window_s,
            component_cpu_s: self.component_cpu_s - other.component_cpu_s,
            node_cpu_s: self
                .node_cpu_s
                .iter()
                .zip(&other.node_cpu_s)
                .map(|(a, b)| a - b)
                .collect(),
            read_bytes: self.read_bytes - other.read_bytes,
            written_bytes: self.written_bytes - other.written_bytes,
            clients_cpu_s: self.clients_cpu_s - other.clients_cpu_s,
        }
    }

    pub fn nodes_cpu_s(&self) -> f64 {
        self.node_cpu_s.iter().sum()
    }
}

/// What is measured: the nodes' Erlang VMs, their component listeners.
struct Probe {
    nodes: Vec<u32>,
    ports: Vec<u16>,
}

/// Counters at one instant.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    component_cpu: f64,
    nodes_cpu: Vec<f64>,
    clients_cpu: f64,
    sent: u64,
    received: u64,
}

/// Payload bytes (sent, received) of the established TCP connections whose
/// remote port is one of `ports`, summed, from `ss -tin` (TCP_INFO).
fn wire_bytes(ports: &[u16]) -> Result<(u64, u64), BenchError> {
    let mut args: Vec<String> = ["-H", "-t", "-i", "-n", "state", "established", "("]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (i, p) in ports.iter().enumerate() {
        if i > 0 {
            args.push("or".into());
        }
        args.extend(["dport".into(), "=".into(), format!(":{p}")]);
    }
    args.push(")".into());
    let out = Command::new("ss")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| setup(format!("running ss (iproute2): {e}")))?;
    if !out.status.success() {
        return Err(setup(format!(
            "ss {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(parse_ss(&String::from_utf8_lossy(&out.stdout)))
}

/// Sums `bytes_sent` (or `bytes_acked` - 1 where an old kernel has no
/// `bytes_sent`) and `bytes_received` over the sockets `ss -tin` printed.
fn parse_ss(text: &str) -> (u64, u64) {
    let (mut sent, mut received) = (0, 0);
    for line in text.lines() {
        let value = |key: &str| -> Option<u64> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
        };
        if let Some(s) = value("bytes_sent:") {
            sent += s;
        } else if let Some(a) = value("bytes_acked:") {
            sent += a.saturating_sub(1);
        }
        received += value("bytes_received:").unwrap_or(0);
    }
    (sent, received)
}

/// The counters now. `component: None` before it is spawned (a new
/// process starts from zero, and so do its connections).
fn sample(component: Option<u32>, probe: &Probe) -> Result<Sample, BenchError> {
    let at = Instant::now();
    let (component_cpu, (sent, received)) = match component {
        Some(pid) => (
            cpu_seconds(pid).ok_or_else(|| setup("the component's CPU time is unreadable"))?,
            wire_bytes(&probe.ports)?,
        ),
        None => (0.0, (0, 0)),
    };
    let nodes_cpu = probe
        .nodes
        .iter()
        .map(|p| cpu_seconds(*p).ok_or_else(|| setup(format!("ejabberd VM {p} is gone"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Sample {
        at,
        component_cpu,
        nodes_cpu,
        clients_cpu: cpu_seconds(std::process::id()).unwrap_or(0.0),
        sent,
        received,
    })
}

/// `key=value` fields of a log line.
fn fields(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

fn field_usize(line: &str, key: &str) -> Option<usize> {
    fields(line).get(key).and_then(|v| v.parse().ok())
}

/// Reads the new complete lines of a growing log file.
struct LogWatch {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogWatch {
    fn new(path: &Path) -> LogWatch {
        LogWatch {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
        }
    }

    fn new_lines(&mut self) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let mut lines = Vec::new();
        while let Some(at) = self.partial.find('\n') {
            lines.push(self.partial[..at].to_string());
            self.partial.drain(..=at);
        }
        lines
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    format!("--- {} ---\n{}", path.display(), lines[start..].join("\n"))
}

/// The component as a child process; killed on drop if still running.
struct Component {
    child: Child,
    log: PathBuf,
}

impl Component {
    fn start(bin: &Path, config: &Path, log: &Path) -> Result<Component, BenchError> {
        let file = std::fs::File::create(log).map_err(setup)?;
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(config)
            // Its own default (info): a RUST_LOG meant for the benchmark
            // would change what is measured.
            .env_remove("RUST_LOG")
            .env_remove("PUBPRESENCE_SECRET")
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(setup)?)
            .stderr(file)
            .spawn()
            .map_err(|e| setup(format!("starting {}: {e}", bin.display())))?;
        Ok(Component {
            child,
            log: log.to_path_buf(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGTERM, bounded; SIGKILL after 30 s.
    async fn stop(&mut self) {
        crate::process::stop_async(&mut self.child, Duration::from_secs(30)).await;
    }

    /// Waits for a log line that `want` accepts; every line read is also
    /// given to `seen`.
    async fn wait_line(
        &mut self,
        log: &mut LogWatch,
        what: &str,
        limit: Duration,
        want: impl Fn(&str) -> bool,
        mut seen: impl FnMut(&str),
    ) -> Result<(Instant, String), BenchError> {
        let deadline = Instant::now() + limit;
        loop {
            for line in log.new_lines() {
                seen(&line);
                if want(&line) {
                    return Ok((Instant::now(), line));
                }
            }
            if self.exited() {
                return Err(BenchError::Component(format!(
                    "exited while waiting for {what}\n{}",
                    tail(&self.log, 30)
                )));
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(format!(
                    "{what} within {limit:?}\n{}",
                    tail(&self.log, 30)
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One start-up of the component.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Startup {
    /// From the spawn to `online` (its log line).
    pub seconds: f64,
    /// Over the same time.
    pub cost: Cost,
    /// `connections` of the online log line.
    pub tracked: usize,
    /// Items of `presence/active` once online.
    pub active_items: usize,
    /// Of those, items with an IP address.
    pub active_with_ip: usize,
    /// Of those, items with status `unknown` (sessions that sent no
    /// presence since the component started: ejabberd replays none).
    pub active_unknown: usize,
    /// The component's VmRSS once online.
    pub rss_kib: u64,
    /// Warnings the component logged before `online` (with 10,000
    /// sessions: publishes the server did not answer within `iq_timeout`).
    pub warnings: usize,
    /// Of those, publishes unanswered within `iq_timeout` ("no answer
    /// within"), which the component takes as done.
    pub unanswered_publishes: usize,
}

/// One audit and the background next to it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Audit {
    pub audit_interval_s: u64,
    /// The audit's log line.
    pub line: String,
    pub checked: usize,
    pub on_active: usize,
    pub added: usize,
    pub probed: usize,
    pub removed: usize,
    /// From when it was due (T after the spawn) to its log line.
    pub seconds_after_due: f64,
    /// From `PRE_AUDIT` before it was due to its log line.
    pub window: Cost,
    /// A window as long as `window`, a whole number of session-check
    /// periods (5 s) later, without an audit: the same phase of the 5-s
    /// session checks, so it holds one of them exactly when `window` does.
    pub equal_window: Cost,
    /// `window - equal_window`: the audit's own cost.
    pub net: Cost,
    /// Whether a session check (its listing) fell inside both windows: more
    /// than half a check's bytes read in `equal_window`.
    pub check_in_window: bool,
    /// A window of `background` without an audit (2 s after the equal one).
    pub background: Cost,
    /// `background` scaled to the audit window's length (a cross-check of
    /// `equal_window`, smoothing the 5-s checks).
    pub background_same_length: Cost,
    /// The same sessions with the component stopped, a window as long as
    /// `background` (the nodes' own background: the clients' keepalive
    /// pings, Mnesia).
    pub without_component: Cost,
    /// `background - without_component`, per 5-s session check: what the
    /// component's checks cost (all of the component's background is them).
    pub per_session_check: Cost,
    /// Audits logged outside the measured window (none expected).
    pub unplanned_audits: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterReport {
    pub mode: &'static str,
    pub machine: Machine,
    pub server: String,
    pub connections: usize,
    /// Sessions on node 0 and node 1.
    pub per_node: Vec<usize>,
    /// In-band registration of the accounts.
    pub register_s: f64,
    /// Logging in every session (both nodes at once).
    pub login_s: f64,
    /// Active empty, audits off.
    pub cold_startup: Startup,
    /// Restart with active full.
    pub warm_startup: Startup,
    pub audit: Audit,
}

impl ClusterReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    pub fn table(&self) -> String {
        let m = &self.machine;
        let a = &self.audit;
        let mut s = format!(
            "pubpresence bench --ejabberd-cluster on {} CPUs, {}\nserver: {}\n\
             {} sessions ({} on node 0, {} on node 1), each from its own loopback address\n\
             setup: {:.1} s to register the accounts, {:.1} s to log the sessions in\n\n",
            m.nproc,
            m.model,
            self.server,
            self.connections,
            self.per_node.first().copied().unwrap_or(0),
            self.per_node.get(1).copied().unwrap_or(0),
            self.register_s,
            self.login_s,
        );
        s.push_str(
            "                                   window s  comp CPU s  node0 CPU s  node1 CPU s  comp read kB  comp written kB\n",
        );
        let row = |s: &mut String, name: &str, c: &Cost| {
            s.push_str(&format!(
                "{name:<34} {:>8.2}  {:>10.3}  {:>11.3}  {:>11.3}  {:>12.1}  {:>15.1}\n",
                c.window_s,
                c.component_cpu_s,
                c.node_cpu_s.first().copied().unwrap_or(0.0),
                c.node_cpu_s.get(1).copied().unwrap_or(0.0),
                c.read_bytes / 1000.0,
                c.written_bytes / 1000.0,
            ));
        };
        row(
            &mut s,
            "cold start-up (active empty)",
            &self.cold_startup.cost,
        );
        row(
            &mut s,
            "warm start-up (active full)",
            &self.warm_startup.cost,
        );
        row(&mut s, "audit window", &a.window);
        row(&mut s, "equal window, no audit", &a.equal_window);
        row(&mut s, "audit, net of the equal window", &a.net);
        row(&mut s, "background window (no audit)", &a.background);
        row(
            &mut s,
            "  scaled to the audit window",
            &a.background_same_length,
        );
        row(
            &mut s,
            "same sessions, component stopped",
            &a.without_component,
        );
        row(
            &mut s,
            "per 5-s session check (difference)",
            &a.per_session_check,
        );
        for (name, st) in [("cold", &self.cold_startup), ("warm", &self.warm_startup)] {
            s.push_str(&format!(
                "\n{name} start-up to online: {:.2} s; tracked {}; active holds {} items ({} with an IP, {} `unknown`); component RSS {} KiB; {} warnings logged ({} publishes unanswered within iq_timeout)",
                st.seconds, st.tracked, st.active_items, st.active_with_ip, st.active_unknown, st.rss_kib, st.warnings, st.unanswered_publishes
            ));
        }
        s.push_str(&format!(
            "\naudit (audit_interval = {} s): {:.2} s from due to its log line: {}\n",
            a.audit_interval_s, a.seconds_after_due, a.line
        ));
        if a.check_in_window {
            s.push_str(
                "a 5-s session check fell inside the audit window (and so inside the equal one)\n",
            );
        }
        if !a.unplanned_audits.is_empty() {
            s.push_str(&format!(
                "WARNING: audits outside the window: {:?}\n",
                a.unplanned_audits
            ));
        }
        s.push_str(
            "(bytes: TCP payload of the component's connections to both nodes, from TCP_INFO (ss -tin); CPU: utime+stime from /proc/PID/stat)\n",
        );
        s
    }
}

/// Items on active: all, with an IP, `unknown`.
async fn active_counts(c: &C2s, pubsub_jid: &str) -> Result<(usize, usize, usize), BenchError> {
    let r = c
        .iq(
            client_iq("get", pubsub_jid, pubsub::items(ACTIVE)),
            IQ_TIMEOUT,
        )
        .await?;
    let items: Vec<UserItem> = pubsub::parse_items(&r)
        .into_iter()
        .filter_map(|(_, p)| p.as_ref().and_then(UserItem::from_element))
        .collect();
    Ok((
        items.len(),
        items.iter().filter(|i| !i.ip.is_empty()).count(),
        items.iter().filter(|i| i.status == Status::Unknown).count(),
    ))
}

/// Logs in `names` (password = name, resource `bench`) at `addr`, from
/// `first_ip` counting up, `concurrency` at a time; each sends one
/// available presence. Their incoming stanzas are dropped.
async fn connect_sessions(
    addr: SocketAddr,
    domain: &str,
    names: Vec<String>,
    first_ip: Ipv4Addr,
    concurrency: usize,
) -> Result<Vec<C2s>, BenchError> {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (i, name) in names.into_iter().enumerate() {
        let ip = sim::address(first_ip, i)
            .ok_or_else(|| setup(format!("session {i} does not fit in 127.0.0.0/8")))?;
        let sem = sem.clone();
        let jid = format!("{name}@{domain}/bench");
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let mut retry = Duration::from_millis(250);
            let mut attempt = 0;
            loop {
                attempt += 1;
                match c2s::connect_as(&jid, &name, addr, IpAddr::V4(ip)).await {
                    Ok((c, rx)) => {
                        drop(rx);
                        c.send(Element::builder("presence", ns::CLIENT).build())?;
                        return Ok::<C2s, BenchError>(c);
                    }
                    Err(e) if attempt >= 5 => return Err(BenchError::C2s(e)),
                    Err(e) => {
                        tracing::warn!("login of {jid} failed ({e}); retrying in {retry:?}");
                        tokio::time::sleep(retry).await;
                        retry *= 2;
                    }
                }
            }
        });
    }
    let mut sessions = Vec::new();
    while let Some(r) = set.join_next().await {
        sessions.push(r.map_err(setup)??);
    }
    Ok(sessions)
}

/// The soft limit on open files of process `pid`.
fn open_files_limit(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// `ejabberdctl` starts the VM through `su`, whose PAM session sets the
/// soft limit on open files to 1,024 here (Debian's systemd unit for
/// ejabberd sets 65,536): a lab node then refuses connections beyond about
/// 1,000 (`Failed TCP accept: too many open files`, seen). Each node's
/// `ejabberdctl.cfg` is given an `ERL` wrapper that raises the soft limit to
/// the hard one, and the cluster is restarted (same ports, same data).
fn raise_open_files(e: &mut Ejabberd, need: usize) -> Result<(), ejabberd::EjabberdError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what: String| move |source| ejabberd::EjabberdError::Io { what, source };
    for node in e.nodes() {
        let wrapper = node.dir.join("erl-nofile");
        std::fs::write(
            &wrapper,
            "#!/bin/sh
# written by pubpresence bench --ejabberd-cluster (lab/src/bench/cluster.rs)
             ulimit -n \"$(ulimit -Hn)\" 2>/dev/null || ulimit -n 65536 2>/dev/null
             exec /usr/bin/erl \"$@\"
",
        )
        .map_err(io(format!("writing {}", wrapper.display())))?;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
            .map_err(io(format!("chmod {}", wrapper.display())))?;
        let cfg = node.dir.join("ejabberdctl.cfg");
        let mut text =
            std::fs::read_to_string(&cfg).map_err(io(format!("reading {}", cfg.display())))?;
        text.push_str(&format!("ERL={}\n", wrapper.display()));
        std::fs::write(&cfg, text).map_err(io(format!("writing {}", cfg.display())))?;
    }
    e.restart()?;
    for node in e.nodes() {
        let limit = node.pid().and_then(open_files_limit).unwrap_or(0);
        if limit < need as u64 {
            return Err(ejabberd::EjabberdError::Startup(format!(
                "ejabberd node {} may open only {limit} files, {need} needed: raise the hard \
                 limit (`ulimit -Hn`) of this shell",
                node.name
            )));
        }
    }
    Ok(())
}

/// Runs the benchmark; stops everything it started.
pub async fn run(opts: ClusterOptions) -> Result<ClusterReport, BenchError> {
    if opts.connections < 2 {
        return Err(setup("--connections must be at least 2 (one per node)"));
    }
    if opts.background < Duration::from_secs(1) {
        return Err(setup("the background window must be at least 1 s"));
    }
    ejabberd::check_installed().map_err(setup)?;
    let n = opts.connections;
    let own = open_files_limit(std::process::id()).unwrap_or(0);
    if own < n as u64 + 200 {
        return Err(setup(format!(
            "{n} sessions need more open files than this process may have ({own}): raise `ulimit -n`"
        )));
    }
    tracing::info!("starting a two-node ejabberd cluster and registering {n} accounts");
    let (e, register_s) = tokio::task::spawn_blocking(move || {
        let mut e = Ejabberd::start_with(EjabberdOptions {
            privileged_presence: true,
            ..Default::default()
        })?;
        e.add_node()?;
        raise_open_files(&mut e, n / 2 + 200)?;
        let names: Vec<String> = std::iter::once(WATCHER.to_string())
            .chain((1..=n).map(|i| format!("{PREFIX}{i}")))
            .collect();
        let accounts: Vec<(&str, &str)> = names.iter().map(|s| (s.as_str(), s.as_str())).collect();
        let t = Instant::now();
        e.register_many(&accounts)?;
        Ok::<_, ejabberd::EjabberdError>((e, t.elapsed().as_secs_f64()))
    })
    .await
    .map_err(setup)?
    .map_err(setup)?;
    let outcome = bench(&e, &opts, register_s).await;
    if outcome.is_err() && std::env::var_os("PUBPRESENCE_KEEP_EJABBERD").is_some() {
        tracing::warn!("bench failed; lab kept in {}", e.dir.path().display());
    }
    let _ = tokio::task::spawn_blocking(move || drop(e)).await;
    outcome
}

async fn bench(
    e: &Ejabberd,
    opts: &ClusterOptions,
    register_s: f64,
) -> Result<ClusterReport, BenchError> {
    let nodes: Vec<u32> = e
        .nodes()
        .iter()
        .map(|node| {
            node.pid()
                .ok_or_else(|| setup(format!("ejabberd node {} has no pid", node.name)))
        })
        .collect::<Result<_, _>>()?;
    let probe = Probe {
        nodes,
        ports: e.nodes().iter().map(|n| n.component_port).collect(),
    };
    let c2s_addrs = [
        e.c2s_addr_of(0).map_err(setup)?,
        e.c2s_addr_of(1).map_err(setup)?,
    ];
    let dir = e.dir.path().to_path_buf();
    let n = opts.connections;
    let per_node = vec![n - n / 2, n / 2];

    let (watcher, w_rx) = c2s::connect_as(
        &format!("{WATCHER}@{}/bench", e.domain),
        WATCHER,
        c2s_addrs[0],
        crate::loopback(3),
    )
    .await?;
    drop(w_rx);

    tracing::info!(
        "logging in {n} sessions ({} on node 0, {} on node 1, {} in flight per node)",
        per_node[0],
        per_node[1],
        opts.login_concurrency
    );
    let t = Instant::now();
    let names = |range: std::ops::Range<usize>| -> Vec<String> {
        range.map(|i| format!("{PREFIX}{}", i + 1)).collect()
    };
    let (s0, s1) = tokio::join!(
        connect_sessions(
            c2s_addrs[0],
            &e.domain,
            names(0..per_node[0]),
            FIRST_IP[0],
            opts.login_concurrency
        ),
        connect_sessions(
            c2s_addrs[1],
            &e.domain,
            names(per_node[0]..n),
            FIRST_IP[1],
            opts.login_concurrency
        ),
    );
    let sessions = (s0?, s1?);
    let login_s = t.elapsed().as_secs_f64();
    tracing::info!("{n} sessions logged in after {login_s:.1} s");
    // Their available presences reach the server before the component starts.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let members = [format!("{WATCHER}@{}", e.domain)];
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    let base = e.config_toml_cluster(&members);
    let config_with = |audit: &str| {
        base.replacen(
            "[access]",
            &format!("audit_interval = \"{audit}\"\n\n[access]"),
            1,
        )
    };
    let bin = opts.component_bin.as_path();
    let startup_limit = Duration::from_secs(120 + n as u64 / 20);

    // Cold: active empty, audits off.
    let cold_cfg = dir.join("bench-cold.toml");
    std::fs::write(&cold_cfg, config_with("0s")).map_err(setup)?;
    tracing::info!("cold start-up of the component (active empty, audits off)");
    let cold_log = dir.join("component-cold.log");
    let (cold, mut comp) = start_up(
        bin,
        &cold_cfg,
        &cold_log,
        &probe,
        &watcher,
        &e.pubsub_jid,
        startup_limit,
    )
    .await?;
    tracing::info!("cold start-up: {:.2} s", cold.0.seconds);
    comp.stop().await;
    let cold = cold.0;

    // Warm: active full; the first audit comes T after the spawn.
    let t_audit = (cold.seconds * 1.5 + 15.0)
        .max(opts.background.as_secs_f64() + 20.0)
        .ceil() as u64;
    let warm_cfg = dir.join("bench-warm.toml");
    std::fs::write(&warm_cfg, config_with(&format!("{t_audit}s"))).map_err(setup)?;
    tracing::info!("warm start-up of the component (active full, audit_interval = {t_audit} s)");
    let warm_log = dir.join("component-warm.log");
    let ((warm, spawned, mut log, mut unplanned), mut comp) = start_up(
        bin,
        &warm_cfg,
        &warm_log,
        &probe,
        &watcher,
        &e.pubsub_jid,
        startup_limit,
    )
    .await?;
    tracing::info!("warm start-up: {:.2} s", warm.seconds);
    let audit = measure_audit(
        &mut comp,
        &mut log,
        &probe,
        spawned,
        t_audit,
        opts.background,
        &mut unplanned,
    )
    .await;
    comp.stop().await;
    let mut audit = audit?;

    // The nodes' own background: the same sessions, no component.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let z0 = sample(None, &probe)?;
    tokio::time::sleep(opts.background).await;
    let z1 = sample(None, &probe)?;
    audit.without_component = Cost::between(&z0, &z1);
    audit.per_session_check = audit
        .background
        .minus(&audit.without_component.scaled_to(audit.background.window_s))
        .scaled_to(SESSION_CHECK_S);

    tracing::info!("closing the sessions");
    watcher.close().await;
    drop(sessions);
    Ok(ClusterReport {
        mode: "ejabberd-cluster",
        machine: Machine::probe(),
        server: server(),
        connections: n,
        per_node,
        register_s,
        login_s,
        cold_startup: cold,
        warm_startup: warm,
        audit,
    })
}

/// What `start_up` hands on: the figures, when it was spawned, its log as
/// read so far, audits seen meanwhile.
type Started = (Startup, Instant, LogWatch, Vec<String>);

/// Spawns the component and measures until `online`.
async fn start_up(
    bin: &Path,
    config: &Path,
    log_path: &Path,
    probe: &Probe,
    watcher: &C2s,
    pubsub_jid: &str,
    limit: Duration,
) -> Result<(Started, Component), BenchError> {
    let s0 = sample(None, probe)?;
    let spawned = Instant::now();
    let mut comp = Component::start(bin, config, log_path)?;
    let mut log = LogWatch::new(log_path);
    let mut audits = Vec::new();
    let (mut warnings, mut unanswered) = (0, 0);
    let (_, line) = comp
        .wait_line(
            &mut log,
            "online",
            limit,
            |l| l.contains(ONLINE_LINE),
            |l| {
                if l.contains(AUDIT_LINE) {
                    audits.push(l.to_string());
                }
                if l.contains(" WARN ") {
                    warnings += 1;
                    if l.contains("publishing") && l.contains("no answer within") {
                        unanswered += 1;
                    }
                }
            },
        )
        .await?;
    let s1 = sample(Some(comp.pid()), probe)?;
    let mut cost = Cost::between(&s0, &s1);
    // From the spawn, not from the sample before it.
    cost.window_s = s1.at.saturating_duration_since(spawned).as_secs_f64();
    let seconds = cost.window_s;
    // `online` is on the status node (the line follows its publish).
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_status(watcher, pubsub_jid).await != Some(ServiceStatus::Online) {
        if Instant::now() > deadline {
            return Err(BenchError::Component(format!(
                "logged online but the status node does not say so\n{}",
                tail(log_path, 20)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss = rss_kib(comp.pid()).unwrap_or(0);
    let (items, with_ip, unknown) = active_counts(watcher, pubsub_jid).await?;
    Ok((
        (
            Startup {
                seconds,
                cost,
                tracked: field_usize(&line, "connections").unwrap_or(0),
                active_items: items,
                active_with_ip: with_ip,
                active_unknown: unknown,
                rss_kib: rss,
                warnings,
                unanswered_publishes: unanswered,
            },
            spawned,
            log,
            audits,
        ),
        comp,
    ))
}

/// The first audit due after `online` (at `spawned` + k × `t_audit`), then
/// the background.
async fn measure_audit(
    comp: &mut Component,
    log: &mut LogWatch,
    probe: &Probe,
    spawned: Instant,
    t_audit: u64,
    background: Duration,
    unplanned: &mut Vec<String>,
) -> Result<Audit, BenchError> {
    let period = Duration::from_secs(t_audit);
    // A tick before online is skipped by the component: the next one counts.
    let mut due = spawned + period;
    while due < Instant::now() + PRE_AUDIT + Duration::from_millis(500) {
        due += period;
    }
    tracing::info!(
        "waiting {:.1} s for the audit",
        due.saturating_duration_since(Instant::now()).as_secs_f64()
    );
    // Audits before the window (none expected) are noted.
    let open = due - PRE_AUDIT;
    while Instant::now() < open {
        for l in log.new_lines() {
            if l.contains(AUDIT_LINE) {
                unplanned.push(l);
            }
        }
        if comp.exited() {
            return Err(BenchError::Component(format!(
                "exited before the audit\n{}",
                tail(&comp.log, 30)
            )));
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            open.min(Instant::now() + Duration::from_millis(200)),
        ))
        .await;
    }
    for l in log.new_lines() {
        if l.contains(AUDIT_LINE) {
            unplanned.push(l);
        }
    }
    let pid = comp.pid();
    let a0 = sample(Some(pid), probe)?;
    let (_, line) = comp
        .wait_line(
            log,
            "the audit's log line",
            period + Duration::from_secs(120),
            |l| l.contains(AUDIT_LINE),
            |_| {},
        )
        .await?;
    let a1 = sample(Some(pid), probe)?;
    let window = Cost::between(&a0, &a1);
    let seconds_after_due = a1.at.saturating_duration_since(due).as_secs_f64();
    tracing::info!("audit: {line}");

    // An equal window a whole number of check periods later.
    let check = Duration::from_secs_f64(SESSION_CHECK_S);
    let mut e_start = a0.at + 2 * check;
    while e_start < a1.at + Duration::from_millis(500) {
        e_start += check;
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(e_start)).await;
    let e0 = sample(Some(pid), probe)?;
    tokio::time::sleep(a1.at - a0.at).await;
    let e1 = sample(Some(pid), probe)?;
    let equal = Cost::between(&e0, &e1);

    // The background: no audit until the next one is due.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b0 = sample(Some(pid), probe)?;
    if Instant::now() + background > due + period {
        return Err(setup(format!(
            "the background window ({background:?}) would reach the next audit"
        )));
    }
    tokio::time::sleep(background).await;
    let b1 = sample(Some(pid), probe)?;
    for l in log.new_lines() {
        if l.contains(AUDIT_LINE) {
            unplanned.push(l);
        }
    }
    let bg = Cost::between(&b0, &b1);
    let same = bg.scaled_to(window.window_s);
    let net = window.minus(&equal);
    let per_check_bytes = bg.read_bytes * SESSION_CHECK_S / bg.window_s.max(1e-9);
    let f = fields(&line);
    let get = |k: &str| f.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(Audit {
        audit_interval_s: t_audit,
        checked: get("checked"),
        on_active: get("on_active"),
        added: get("added"),
        probed: get("probed"),
        removed: get("removed"),
        line: line
            .find(AUDIT_LINE)
            .map(|at| line[at..].to_string())
            .unwrap_or(line.clone()),
        seconds_after_due,
        window,
        check_in_window: equal.read_bytes > per_check_bytes / 2.0,
        equal_window: equal,
        net,
        background: bg,
        background_same_length: same,
        without_component: Cost::default(),
        per_session_check: Cost::default(),
        unplanned_audits: unplanned.clone(),
    })
}

/// `pubpresence-lab bench --ejabberd-cluster`: prints the table (and JSON with
/// `--json`); progress on stderr.
pub async fn main(args: BenchArgs) -> anyhow::Result<()> {
    output::init_logging("pubpresence_lab::bench_cluster=info");
    let opts = ClusterOptions::from_args(&args, crate::product_binary()?);
    eprintln!(
        "pubpresence bench --ejabberd-cluster: {} sessions over two nodes, background window {:?}; {}",
        opts.connections,
        opts.background,
        server()
    );
    // Ctrl-C: drop the run, which stops the component and the nodes.
    let report = tokio::select! {
        r = run(opts) => r?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    };
    output::print_report(args.json, &report.table(), &report.to_json());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ss() {
        let text = "0      0      127.0.0.1:46446 127.0.0.1:33573\n\
                    \t bbr wscale:10,10 rto:204 cwnd:11 bytes_sent:1000 bytes_acked:1001 \
                    bytes_received:300 segs_out:4\n\
                    0      0      127.0.0.1:46450 127.0.0.1:33574\n\
                    \t cubic bytes_acked:51 bytes_received:7 segs_out:4\n";
        assert_eq!(parse_ss(text), (1050, 307));
        assert_eq!(parse_ss(""), (0, 0));
    }

    #[test]
    fn reads_log_fields() {
        let line = "2026-01-01T00:00:00.000000Z  INFO audit checked=10000 on_active=10000 \
                    added=0 probed=0 removed=3";
        assert!(line.contains(AUDIT_LINE));
        assert_eq!(field_usize(line, "checked"), Some(10000));
        assert_eq!(field_usize(line, "removed"), Some(3));
        assert_eq!(field_usize(line, "nope"), None);
    }

    #[test]
    fn background_is_scaled_and_subtracted() {
        let bg = Cost {
            window_s: 30.0,
            component_cpu_s: 0.6,
            node_cpu_s: vec![3.0, 1.5],
            read_bytes: 6000.0,
            written_bytes: 600.0,
            clients_cpu_s: 0.3,
        };
        let same = bg.scaled_to(2.0);
        assert!((same.component_cpu_s - 0.04).abs() < 1e-9);
        assert!((same.node_cpu_s[0] - 0.2).abs() < 1e-9);
        assert!((same.read_bytes - 400.0).abs() < 1e-9);
        let window = Cost {
            window_s: 2.0,
            component_cpu_s: 0.5,
            node_cpu_s: vec![1.0, 0.3],
            read_bytes: 3400.0,
            written_bytes: 140.0,
            clients_cpu_s: 0.02,
        };
        let net = window.minus(&same);
        assert!((net.component_cpu_s - 0.46).abs() < 1e-9);
        assert!((net.node_cpu_s[1] - 0.2).abs() < 1e-9);
        assert!((net.read_bytes - 3000.0).abs() < 1e-9);
        assert!((net.written_bytes - 100.0).abs() < 1e-9);
        assert!((net.nodes_cpu_s() - 1.0).abs() < 1e-9);
    }
}
