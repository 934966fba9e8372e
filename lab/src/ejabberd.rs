//! A throwaway ejabberd (23.01 or 24.12: [`super::install`]) for tests, the demo and the
//! benchmark: one directory under the system temp dir with its own
//! `ejabberdctl.cfg`, `ejabberd.yml`, Mnesia spool and logs; free loopback
//! ports; a unique Erlang node name; no TLS, no s2s, no HTTP. It never
//! touches a system ejabberd (EPMD, the Erlang port mapper, is shared: that
//! is how node names stay distinct).
//!
//! The server mirrors [`super::prosody::Prosody`]: domain `localhost`, the
//! component `pubpresence.localhost` (admin rights, XEP-0114 listener), the
//! pubsub service `pubsub.localhost`, an `admin@localhost` account (password
//! `admin`) that may run the XEP-0133 commands. On top of that:
//!
//! - [`EjabberdOptions::privileged_presence`]: `mod_privilege` grants the
//!   component XEP-0356 presence permission (`presence: managed_entity`);
//! - a cluster: [`Ejabberd::add_node`] starts another node on its own ports
//!   and joins it to the first (`join_cluster`); every node has its own c2s
//!   and component listener ([`Ejabberd::c2s_addr_of`],
//!   [`Ejabberd::component_addr_of`], [`Ejabberd::config_toml_cluster`]), and
//!   can be stopped, killed (`kill -9` of its Erlang VM) and started again.
//!
//! `ejabberdctl` runs the Erlang VM as the `ejabberd` user, so the lab must
//! run as root (or as `ejabberd`); the directory is handed to that user.

use pubpresence::wire::xml_escape;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::install::Install;
use super::process::{signal, Sig};

mod sql;
pub use sql::SqlLock;
use sql::{create_sql_store, PUBSUB_DB};

/// How long a node may take to listen on its ports (it takes about 0.5 s).
const STARTUP: Duration = Duration::from_secs(30);
/// How long a SIGTERM may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Bound on one `ejabberdctl` command (each boots a small Erlang VM).
const CTL_TIMEOUT: Duration = Duration::from_secs(60);
/// XEP-0227's namespace (`Ejabberd::import_with_contact`).
const PIEFXIS: &str = "urn:xmpp:pie:0";
/// Bound on one in-band registration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// What installs what the lab needs.
pub const INSTALL_HINT: &str = "bash scripts/install-servers.sh (apt-get install ejabberd)";

#[derive(Debug, thiserror::Error)]
pub enum EjabberdError {
    /// The ejabberd the environment names is missing; the text says how to
    /// install it.
    #[error("{0}")]
    NotInstalled(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// An `ejabberdctl` command failed; `output` is what it printed.
    #[error("ejabberdctl {command} failed ({status}): {output}")]
    Ctl {
        command: String,
        status: String,
        output: String,
    },
    /// An in-band registration (XEP-0077) was refused or went wrong.
    #[error("registering {user} failed: {reason}")]
    Register { user: String, reason: String },
    /// A node did not come up (or not into the cluster); the text ends with
    /// the tail of its log.
    #[error("{0}")]
    Startup(String),
    #[error("no ejabberd node {0} in this lab")]
    NoSuchNode(usize),
    /// Reading or locking the SQL pubsub store failed.
    #[error("{0}")]
    Sql(String),
    /// Looking at the nodes' sockets failed, or a connection stayed open.
    #[error("{0}")]
    Sockets(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EjabberdError {
    let what = what.into();
    move |source| EjabberdError::Io { what, source }
}

/// The ejabberd the lab runs; the error says how to install it.
pub fn check_installed() -> Result<Install, EjabberdError> {
    super::install::ejabberd().map_err(EjabberdError::NotInstalled)
}

/// What the lab's server offers beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct EjabberdOptions {
    /// XEP-0356: `mod_privilege` with `presence: managed_entity` for the
    /// component: it receives every user's presence without a roster entry
    /// (on 23.01 with the gaps the README's "Presence without rosters (XEP-0356)" lists).
    pub privileged_presence: bool,
    /// XEP-0356 roster permission (`roster: both`) for the component.
    pub privileged_roster: bool,
    /// ejabberd's `loglevel: debug`: the log then holds every stanza each
    /// connection sends and receives (`ejabberd.log` of each node).
    pub debug_log: bool,
    /// mod_pubsub's `max_items_node` (here 100000 unless set; ejabberd's
    /// documented default is 1000): what `pubsub#max_items = max` means on
    /// ejabberd. Seen on 23.01: the node configuration form reports just
    /// `max`, a publish beyond the cap silently drops the oldest item, and
    /// a numeric `max_items` above it is refused (`resource-constraint`).
    pub max_items_node: Option<u64>,
    /// The component is not in the `admin` ACL: no XEP-0133 commands.
    pub no_admin: bool,
    /// Node creation on the pubsub service is denied to everyone.
    pub no_create_node: bool,
    /// Namespaces left out of the XEP-0356 `iq` grant on 24.10 and later
    /// (a grant that does not let every request through).
    pub iq_grant_omits: &'static [&'static str],
    /// Every node holds client sessions without sockets when the admin
    /// asks for them (`ejabberd-modules/mod_lab_held_sessions.erl`,
    /// [`crate::held::hold`]): sizes past the open-file limit.
    pub held_sessions: bool,
    /// mod_pubsub keeps its nodes and items in SQL (`db_type: sql`) instead
    /// of Mnesia: one SQLite file in the lab's directory, shared by every
    /// node, with `max_items_node: unlimited` unless `max_items_node` is set.
    /// What a large cluster would run with a shared PostgreSQL or MySQL
    /// (README, "Configuring ejabberd"): each new item is one row, where
    /// Mnesia rewrites the publisher's whole list of item ids.
    pub pubsub_sql: bool,
}

/// The lab's own ejabberd modules, in `lab/ejabberd-modules/`.
const LAB_MODULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ejabberd-modules");

/// Compiles the lab's module `name` into `ebin` with the system's `erlc`:
/// both ejabberd generations the lab runs use the system's Erlang
/// (`/usr/bin/erl`), and the module uses no record of ejabberd's own.
fn compile_lab_module(ebin: &std::path::Path, name: &str) -> Result<(), EjabberdError> {
    std::fs::create_dir_all(ebin).map_err(io(format!("creating {}", ebin.display())))?;
    let src = format!("{LAB_MODULES}/{name}.erl");
    let out = Command::new("erlc")
        .arg("-o")
        .arg(ebin)
        .arg(&src)
        .stdin(Stdio::null())
        .output()
        .map_err(io(
            "running erlc (Erlang's compiler, in erlang-base, which ejabberd installs)",
        ))?;
    if !out.status.success() {
        return Err(EjabberdError::Startup(format!(
            "erlc {src} failed: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// On ejabberd 24.10 and later, the user on whose behalf a privileged
/// component sends its requests (`privileged_as`): an admin of the lab's
/// server, no account needed.
pub const PRIVILEGED_AS: &str = "pubpresence@localhost";

/// The IQ permissions such a component is granted: what it asks of the
/// server and the pubsub service (`wire::privilege::NEEDED`), pings and
/// the server's version.
const PRIVILEGED_IQ: &[(&str, &str)] = &[
    ("http://jabber.org/protocol/pubsub", "both"),
    ("http://jabber.org/protocol/pubsub#owner", "both"),
    ("http://jabber.org/protocol/commands", "both"),
    ("http://jabber.org/protocol/disco#items", "get"),
    ("urn:xmpp:ping", "get"),
    ("jabber:iq:version", "get"),
    ("urn:xmpp:time", "get"),
];

/// One Erlang node of the lab: its directory, ports and VM.
#[derive(Debug)]
pub struct EjabberdNode {
    /// The Erlang node name, `pp_…@localhost`: unique, never `ejabberd@…`.
    pub name: String,
    /// `ejabberdctl.cfg`, `ejabberd.yml`, `db/` (Mnesia), `log/`.
    pub dir: PathBuf,
    pub c2s_port: u16,
    pub component_port: u16,
    /// The OS process id of the node's Erlang VM, while it runs.
    pid: Option<u32>,
    /// The `ejabberdctl` of the installed ejabberd.
    ctl: PathBuf,
}

impl EjabberdNode {
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log").join("ejabberd.log")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("ejabberd.yml")
    }

    fn pid_path(&self) -> PathBuf {
        self.dir.join("ejabberd.pid")
    }

    /// The OS process id of the node's Erlang VM, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    pub fn c2s_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.c2s_port))
    }

    pub fn component_addr(&self) -> String {
        format!("127.0.0.1:{}", self.component_port)
    }

    fn ctl_command(&self) -> Command {
        let mut c = Command::new(&self.ctl);
        c.arg("--config-dir")
            .arg(&self.dir)
            .arg("--config")
            .arg(self.config_path())
            .arg("--ctl-config")
            .arg(self.dir.join("ejabberdctl.cfg"))
            .arg("--spool")
            .arg(self.dir.join("db"))
            .arg("--logs")
            .arg(self.dir.join("log"))
            .arg("--node")
            .arg(&self.name)
            .stdin(Stdio::null());
        c
    }

    /// Runs `ejabberdctl ARGS` against this node; its stdout on success.
    fn ctl(&self, args: &[&str]) -> Result<String, EjabberdError> {
        self.ctl_within(args, CTL_TIMEOUT)
    }

    /// [`EjabberdNode::ctl`] for a command that may run longer than
    /// `CTL_TIMEOUT` (an import of many accounts).
    fn ctl_within(&self, args: &[&str], limit: Duration) -> Result<String, EjabberdError> {
        let mut cmd = self.ctl_command();
        cmd.args(args);
        let (status, output) = run_bounded(cmd, limit)
            .map_err(io(format!("running ejabberdctl {}", args.join(" "))))?;
        match status {
            Some(s) if s.success() => Ok(output),
            other => Err(EjabberdError::Ctl {
                command: format!("{} (node {})", args.join(" "), self.name),
                status: other.map_or_else(
                    || format!("no answer within {CTL_TIMEOUT:?}"),
                    |s| s.to_string(),
                ),
                output: output.trim().to_string(),
            }),
        }
    }

    fn is_running(&self) -> bool {
        self.pid.is_some_and(alive)
    }
}

/// A running ejabberd (one node, or a cluster of nodes on one machine);
/// every node is stopped and the directory removed on drop. With
/// `PUBPRESENCE_KEEP_EJABBERD=1` in the environment the directory (configs,
/// logs, spool) is kept for a look afterwards.
pub struct Ejabberd {
    /// The lab's directory: one subdirectory per node (`node0`, `node1`, …).
    pub dir: super::LabDir,
    /// Node 0's c2s port (the other nodes': [`Ejabberd::node`]).
    pub c2s_port: u16,
    /// Node 0's component (XEP-0114) port.
    pub component_port: u16,
    /// "localhost"
    pub domain: String,
    /// "pubpresence.localhost": the external component's JID.
    pub component_jid: String,
    /// "pubsub.localhost": mod_pubsub's service.
    pub pubsub_jid: String,
    /// The component's secret (the same on every node).
    pub secret: String,
    pub options: EjabberdOptions,
    /// The installed ejabberd this lab runs (its binaries and version).
    pub install: Install,
    nodes: Vec<EjabberdNode>,
    tag: String,
}

impl std::fmt::Debug for Ejabberd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ejabberd")
            .field("dir", &self.dir.path())
            .field("nodes", &self.nodes)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Ejabberd {
    /// Starts one node with the default options (no XEP-0356 privileges)
    /// and waits until its c2s and component ports listen. Registers
    /// "admin" (password "admin"), a server admin. Blocks (about 1 s, at
    /// most 30 s): call it from `spawn_blocking` in async code that must
    /// stay responsive.
    pub fn start() -> Result<Ejabberd, EjabberdError> {
        Ejabberd::start_with(EjabberdOptions::default())
    }

    /// [`Ejabberd::start`] with options.
    pub fn start_with(options: EjabberdOptions) -> Result<Ejabberd, EjabberdError> {
        let install = check_installed()?;
        let dir = super::LabDir::new("pubpresence-ejabberd-").map_err(io("creating a temp dir"))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Erlang node names: letters, digits and `_` need no quoting anywhere.
        let tag = format!("{}_{nanos:x}", std::process::id());
        let mut e = Ejabberd {
            dir,
            c2s_port: 0,
            component_port: 0,
            domain: "localhost".into(),
            component_jid: "pubpresence.localhost".into(),
            pubsub_jid: "pubsub.localhost".into(),
            secret: format!("s3cret-{tag}"),
            options,
            install,
            nodes: Vec::new(),
            tag,
        };
        // Captured by the test harness and shown with a failing test's output.
        eprintln!("lab: {} in {}", e.label(), e.dir.path().display());
        e.create_node()?;
        e.c2s_port = e.nodes[0].c2s_port;
        e.component_port = e.nodes[0].component_port;
        e.start_node(0)?;
        e.register("admin", "admin")?;
        Ok(e)
    }

    /// Adds a node: starts it on its own ports and joins it to node 0's
    /// cluster (`ejabberdctl join_cluster`); returns its index. Accounts,
    /// rosters and pubsub are shared by the cluster; sessions are per node.
    pub fn add_node(&mut self) -> Result<usize, EjabberdError> {
        let first = self.node(0)?;
        if !first.is_running() {
            return Err(EjabberdError::Startup(format!(
                "node 0 ({}) is not running: start it before adding a node",
                first.name
            )));
        }
        let seed = first.name.clone();
        let i = self.create_node()?;
        self.start_node(i)?;
        // join_cluster restarts ejabberd on the joining node, and its RPC can
        // time out while the node restarts (seen once on 23.01 in CI: "Failed
        // RPC connection to the node ...: timeout") though the join goes on:
        // what counts is list_cluster below; the refusal is said if it never
        // lists both.
        let joined = self.nodes[i].ctl(&["join_cluster", &seed]);
        // Wait until it is in the cluster and listens again.
        let deadline = Instant::now() + STARTUP;
        loop {
            let members = self.nodes[i].ctl(&["list_cluster"]).unwrap_or_default();
            let listed = |name: &str| members.lines().any(|l| l.trim().trim_matches('\'') == name);
            if listed(&seed) && listed(&self.nodes[i].name) {
                break;
            }
            if Instant::now() > deadline {
                if let Err(e) = joined {
                    return Err(e);
                }
                return Err(EjabberdError::Startup(format!(
                    "node {} did not join {seed} within {STARTUP:?} (list_cluster: {members:?})\n{}",
                    self.nodes[i].name,
                    self.log_tail(40)
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.wait_listening(i)?;
        Ok(i)
    }

    /// "ejabberd 24.12": what this lab really runs.
    pub fn label(&self) -> String {
        self.install.label()
    }

    /// Node `i` (0: the first).
    pub fn node(&self, i: usize) -> Result<&EjabberdNode, EjabberdError> {
        self.nodes.get(i).ok_or(EjabberdError::NoSuchNode(i))
    }

    pub fn nodes(&self) -> &[EjabberdNode] {
        &self.nodes
    }

    /// Node 0's VM process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.nodes.first().and_then(EjabberdNode::pid)
    }

    /// Node 0's log.
    pub fn log_path(&self) -> PathBuf {
        self.nodes
            .first()
            .map(EjabberdNode::log_path)
            .unwrap_or_else(|| self.dir.path().join("node0/log/ejabberd.log"))
    }

    /// Node 0's `ejabberd.yml`.
    pub fn config_path(&self) -> PathBuf {
        self.nodes
            .first()
            .map(EjabberdNode::config_path)
            .unwrap_or_else(|| self.dir.path().join("node0/ejabberd.yml"))
    }

    /// Node 0's c2s listener.
    pub fn c2s_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.c2s_port))
    }

    /// Node 0's component listener, as `host:port`.
    pub fn component_addr(&self) -> String {
        format!("127.0.0.1:{}", self.component_port)
    }

    /// Node `i`'s c2s listener (users connected there have their sessions
    /// on that node).
    pub fn c2s_addr_of(&self, i: usize) -> Result<SocketAddr, EjabberdError> {
        Ok(self.node(i)?.c2s_addr())
    }

    /// Node `i`'s component listener, as `host:port`.
    pub fn component_addr_of(&self, i: usize) -> Result<String, EjabberdError> {
        Ok(self.node(i)?.component_addr())
    }

    /// Every node's component listener, node 0 first.
    pub fn component_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(EjabberdNode::component_addr)
            .collect()
    }

    /// Waits (at most `limit`) until no node holds an open connection on its
    /// component listener. A new connection of the component's JID made
    /// while a node still holds an old one shares that node's route with it,
    /// and the node hands some stanzas for the JID to the old one, which
    /// drops them (seen: a restart floor lost every probe answer from one
    /// node's users). pubpresence and the floors end their streams as a
    /// stream ends, after which ejabberd has dropped the route; this covers
    /// a connection ended otherwise.
    pub fn wait_component_closed(&self, limit: Duration) -> Result<(), EjabberdError> {
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.component_port).collect();
        crate::sockets::wait_accepted_closed(&ports, limit).map_err(EjabberdError::Sockets)
    }

    /// A pubpresence config file for this server (node 0's listener), with
    /// a whitelist of `members` (full "user@domain" JIDs). The same shape as
    /// the Prosody lab's.
    pub fn config_toml(&self, members: &[&str]) -> String {
        self.config_toml_with(&format!("{:?}", self.component_addr()), members)
    }

    /// [`Ejabberd::config_toml`] with `server` as the list of every node's
    /// component listener (README, "An ejabberd cluster").
    pub fn config_toml_cluster(&self, members: &[&str]) -> String {
        let servers: Vec<String> = self
            .component_addrs()
            .iter()
            .map(|s| format!("{s:?}"))
            .collect();
        self.config_toml_with(&format!("[{}]", servers.join(", ")), members)
    }

    fn config_toml_with(&self, server: &str, members: &[&str]) -> String {
        let members: Vec<String> = members.iter().map(|m| format!("{m:?}")).collect();
        let privileged_as = if self.wants_privileged_iq() {
            format!("privileged_as = \"{PRIVILEGED_AS}\"\n")
        } else {
            String::new()
        };
        format!(
            r#"jid = "{jid}"
server = {server}
secret = "{secret}"
domain = "{domain}"
pubsub = "{pubsub}"
probe_timeout = "2s"
{privileged_as}
[access]
model = "whitelist"
members = [{members}]
"#,
            jid = self.component_jid,
            secret = self.secret,
            domain = self.domain,
            pubsub = self.pubsub_jid,
            members = members.join(", "),
        )
    }

    /// Creates an account with `ejabberdctl register` (about 0.3 s: it boots
    /// a small Erlang VM). Needs a running node (unlike `prosodyctl`).
    pub fn register(&self, user: &str, password: &str) -> Result<(), EjabberdError> {
        let node = self.running_node()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match node.ctl(&["register", user, &self.domain, password]) {
                // Seen right after a node started under load: Mnesia's
                // `passwd` table not there yet (`no_exists` on 23.01; 24.12
                // says `Database failure` for the same aborted transaction,
                // which wrote nothing), or, on 24.12, the listeners up
                // before the host (`Unknown virtual host`). Retried.
                Err(EjabberdError::Ctl { output, .. })
                    if attempt < 10
                        && (output.contains("no_exists")
                            || output.contains("Database failure")
                            || output.contains("Unknown virtual host")) =>
                {
                    std::thread::sleep(Duration::from_millis(300));
                }
                r => return r.map(|_| ()),
            }
        }
    }

    /// Creates many accounts in one request, each with `contact` in its
    /// roster with subscription `both`, as if every user had subscribed to
    /// it and been accepted: a XEP-0227 file imported with `ejabberdctl
    /// import_piefxis` (about a second for 10,000; in-band registration
    /// cannot fill rosters, and a subscription handshake per user would need
    /// `contact` online). An account that exists already is an error.
    pub fn import_with_contact(
        &self,
        accounts: &[(&str, &str)],
        contact: &str,
    ) -> Result<(), EjabberdError> {
        use pubpresence::minidom::Element;
        use pubpresence::wire::Attr;
        let user = |(name, password): &(&str, &str)| {
            Element::builder("user", PIEFXIS)
                .a("name", *name)
                .a("password", *password)
                .append(
                    Element::builder("query", "jabber:iq:roster").append(
                        Element::builder("item", "jabber:iq:roster")
                            .a("jid", contact)
                            .a("subscription", "both"),
                    ),
                )
                .build()
        };
        let host = Element::builder("host", PIEFXIS)
            .a("jid", self.domain.as_str())
            .append_all(accounts.iter().map(user));
        let data = Element::builder("server-data", PIEFXIS)
            .append(host)
            .build();
        let file = self.dir.path().join("accounts.xml");
        let io = |source| EjabberdError::Io {
            what: format!("writing {}", file.display()),
            source,
        };
        let mut text = Vec::new();
        data.write_to_decl(&mut text)
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        std::fs::write(&file, text).map_err(io)?;
        let path = file.to_string_lossy();
        let limit = CTL_TIMEOUT + Duration::from_millis(10 * accounts.len() as u64);
        self.running_node()?
            .ctl_within(&["import_piefxis", &path], limit)
            .map(|_| ())
    }

    /// Creates many accounts quickly with in-band registration (XEP-0077)
    /// over node 0's c2s port, several at a time (a few ms each). An account
    /// that exists already is an error, as with [`Ejabberd::register`].
    pub fn register_many(&self, accounts: &[(&str, &str)]) -> Result<(), EjabberdError> {
        let addr = self.running_node()?.c2s_addr();
        let domain = self.domain.as_str();
        let errors: Vec<EjabberdError> = std::thread::scope(|s| {
            let chunk = accounts.len().div_ceil(8).max(1);
            let workers: Vec<_> = accounts
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .filter_map(|(u, p)| register_inband(addr, domain, u, p).err())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_default())
                .collect()
        });
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs `ejabberdctl ARGS` against node `i` (for example
    /// `["connected_users"]`, `["kick_session", "alice", "localhost", "desk",
    /// "bye"]`); its stdout.
    pub fn ctl(&self, i: usize, args: &[&str]) -> Result<String, EjabberdError> {
        self.node(i)?.ctl(args)
    }

    fn running_node(&self) -> Result<&EjabberdNode, EjabberdError> {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .ok_or_else(|| EjabberdError::Startup("no ejabberd node of this lab is running".into()))
    }

    /// The last `n` lines of every node's log (and its error log, and what
    /// `ejabberdctl start` printed).
    pub fn log_tail(&self, n: usize) -> String {
        let mut out = Vec::new();
        for node in &self.nodes {
            out.push(tail(&node.log_path(), n));
            let err = node.dir.join("log").join("error.log");
            if std::fs::metadata(&err).is_ok_and(|m| m.len() > 0) {
                out.push(tail(&err, n));
            }
            let start = node.dir.join("start.out");
            if std::fs::metadata(&start).is_ok_and(|m| m.len() > 0) {
                out.push(tail(&start, n));
            }
        }
        out.join("\n")
    }

    /// Stops every node (extra nodes first, node 0 last, so that node 0
    /// holds the newest Mnesia state). Data and ports are kept.
    pub fn stop(&mut self) {
        for i in (0..self.nodes.len()).rev() {
            let _ = self.stop_node(i);
        }
    }

    /// Stops and starts every node again: same ports, same data (accounts,
    /// rosters, pubsub nodes and items), same cluster.
    pub fn restart(&mut self) -> Result<(), EjabberdError> {
        self.stop();
        for i in 0..self.nodes.len() {
            self.start_node(i)?;
        }
        Ok(())
    }

    /// Stops node `i` cleanly (SIGTERM to its VM: `init:stop`, as
    /// `ejabberdctl stop` does; SIGKILL after 10 s). Its sessions end with
    /// their streams closed.
    pub fn stop_node(&mut self, i: usize) -> Result<(), EjabberdError> {
        let node = self.nodes.get_mut(i).ok_or(EjabberdError::NoSuchNode(i))?;
        let Some(pid) = node.pid.take() else {
            return Ok(());
        };
        signal(pid, Sig::Term);
        let deadline = Instant::now() + STOP_GRACE;
        while alive(pid) {
            if Instant::now() > deadline {
                signal(pid, Sig::Kill);
                wait_gone(pid, Duration::from_secs(5));
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(node.pid_path());
        Ok(())
    }

    /// `kill -9` of node `i`'s Erlang VM: the node dies with its sessions,
    /// nobody sends their unavailable presence.
    pub fn kill_node(&mut self, i: usize) -> Result<(), EjabberdError> {
        let node = self.nodes.get_mut(i).ok_or(EjabberdError::NoSuchNode(i))?;
        if let Some(pid) = node.pid.take() {
            signal(pid, Sig::Kill);
            wait_gone(pid, Duration::from_secs(5));
        }
        let _ = std::fs::remove_file(node.pid_path());
        Ok(())
    }

    /// Waits until node `alive` no longer lists node `gone` in its cluster
    /// (it has handled the nodedown). Until then it may still route a
    /// component's stanzas to a connection that died with `gone`: seen on
    /// 24.12, a component that connected 40 ms after a kill -9 got neither
    /// its permission message nor any answer ("Component seems
    /// disconnected").
    pub fn wait_node_gone(&self, alive: usize, gone: usize) -> Result<(), EjabberdError> {
        let name = self.node(gone)?.name.clone();
        let deadline = Instant::now() + STARTUP;
        loop {
            let members = self.node(alive)?.ctl(&["list_cluster"]).unwrap_or_default();
            if !members.lines().any(|l| l.trim().trim_matches('\'') == name) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EjabberdError::Startup(format!(
                    "node {alive} still lists {name} {STARTUP:?} after it died (list_cluster: \
                     {members:?})"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts node `i` (again) and waits until it listens; a node of a
    /// cluster rejoins it by itself. Does nothing if it runs.
    pub fn start_node(&mut self, i: usize) -> Result<(), EjabberdError> {
        let node = self.node(i)?;
        if node.is_running() {
            return Ok(());
        }
        let _ = std::fs::remove_file(node.pid_path());
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("start.out"))
            .map_err(io("opening start.out"))?;
        let err = out.try_clone().map_err(io("opening start.out"))?;
        let mut cmd = node.ctl_command();
        cmd.arg("start").stdout(out).stderr(err);
        // `start` returns at once (the VM detaches itself).
        let (status, _) = run_bounded(cmd, CTL_TIMEOUT).map_err(io("running ejabberdctl start"))?;
        if !status.is_some_and(|s| s.success()) {
            return Err(EjabberdError::Startup(format!(
                "ejabberdctl start of {} failed ({status:?})\n{}",
                node.name,
                self.log_tail(40)
            )));
        }
        self.wait_listening(i)
    }

    /// Waits until node `i` has written its pid and listens on both ports.
    fn wait_listening(&mut self, i: usize) -> Result<(), EjabberdError> {
        let deadline = Instant::now() + STARTUP;
        let name = self.nodes[i].name.clone();
        loop {
            let node = &mut self.nodes[i];
            if node.pid.is_none() {
                node.pid = std::fs::read_to_string(node.pid_path())
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
            }
            if let Some(pid) = node.pid {
                if !alive(pid) {
                    node.pid = None;
                    return Err(EjabberdError::Startup(format!(
                        "ejabberd node {name} exited before listening\n{}",
                        self.log_tail(60)
                    )));
                }
                let up = [node.c2s_port, node.component_port].iter().all(|p| {
                    TcpStream::connect_timeout(
                        &SocketAddr::from(([127, 0, 0, 1], *p)),
                        Duration::from_millis(200),
                    )
                    .is_ok()
                });
                if up {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let tail = self.log_tail(60);
                // A VM that never wrote its pid file is found by its unique
                // node name, so that it does not outlive the lab.
                let node = &mut self.nodes[i];
                let pid = node.pid.take().or_else(|| find_vm(&node.name));
                if let Some(pid) = pid {
                    signal(pid, Sig::Kill);
                }
                return Err(EjabberdError::Startup(format!(
                    "ejabberd node {name} did not listen on {} and {} within {STARTUP:?}\n{tail}",
                    node.c2s_port, node.component_port
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates node `nodes.len()`'s directory and config; returns its index.
    fn create_node(&mut self) -> Result<usize, EjabberdError> {
        let i = self.nodes.len();
        let dir = self.dir.path().join(format!("node{i}"));
        for sub in ["db", "log"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io(format!("creating {}", d.display())))?;
        }
        // Hold both listeners at once so that the two ports differ.
        let (c2s_port, component_port) = {
            let ports = super::free_ports(2).map_err(io("finding free ports"))?;
            (ports[0], ports[1])
        };
        let node = EjabberdNode {
            name: format!("pp_{}_{i}@localhost", self.tag),
            dir: dir.clone(),
            c2s_port,
            component_port,
            pid: None,
            ctl: self.install.path("/usr/sbin/ejabberdctl"),
        };
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).map_err(io(format!("writing {name}")))
        };
        let ebin = self.dir.path().join("ebin");
        if self.options.held_sessions && i == 0 {
            compile_lab_module(&ebin, "mod_lab_held_sessions")?;
        }
        if self.options.pubsub_sql && i == 0 {
            create_sql_store(&self.install, &self.dir.path().join(PUBSUB_DB))?;
        }
        write("ejabberd.yml", self.yaml_config(&node))?;
        write(
            "ejabberdctl.cfg",
            ctl_config(&node, self.options.held_sessions.then_some(ebin.as_path())),
        )?;
        write("inetrc", INETRC.to_string())?;
        // ejabberdctl runs the VM as the `ejabberd` user.
        let out = Command::new("chown")
            .args(["-R", "ejabberd:ejabberd"])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .map_err(io("running chown"))?;
        if !out.status.success() {
            return Err(EjabberdError::Startup(format!(
                "chown -R ejabberd {} failed (the lab must run as root): {}",
                self.dir.path().display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        self.nodes.push(node);
        Ok(i)
    }

    /// Whether this server drops a privileged component's plain requests
    /// (ejabberd 24.10 and later): the component then sends privileged IQs
    /// on behalf of [`PRIVILEGED_AS`], which the config grants what they
    /// need (README, "XEP-0356 on ejabberd 24.10 and later").
    pub fn wants_privileged_iq(&self) -> bool {
        let o = &self.options;
        let v = (self.install.major(), self.install.minor());
        (o.privileged_presence || o.privileged_roster) && v >= (24, 10)
    }

    fn yaml_config(&self, node: &EjabberdNode) -> String {
        let o = &self.options;
        let mut privilege = String::new();
        if o.privileged_presence || o.privileged_roster {
            privilege.push_str("  mod_privilege:\n");
            if o.privileged_roster {
                privilege.push_str("    roster:\n      both: pubpresence_privileges\n");
            }
            if o.privileged_presence {
                privilege.push_str("    presence:\n      managed_entity: pubpresence_privileges\n");
            }
            if self.wants_privileged_iq() {
                privilege.push_str("    iq:\n");
                for (ns, kind) in PRIVILEGED_IQ {
                    if o.iq_grant_omits.contains(ns) {
                        continue;
                    }
                    privilege.push_str(&format!(
                        "      \"{ns}\":\n        {kind}: pubpresence_privileges\n"
                    ));
                }
            }
        }
        let privileged_admin = if self.wants_privileged_iq() {
            format!("\n      - \"{PRIVILEGED_AS}\"")
        } else {
            String::new()
        };
        format!(
            r#"# written by pubpresence::lab (lab/src/ejabberd.rs) for node {name}
loglevel: {loglevel}
log_rotate_count: 0
hosts:
  - "{domain}"
acme:
  auto: false
# No TLS anywhere: plain c2s (PLAIN and SCRAM allowed), no s2s, no HTTP.
listen:
  -
    port: {c2s}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    access: c2s
    starttls: false
    max_stanza_size: 1048576
  -
    port: {component}
    ip: "127.0.0.1"
    module: ejabberd_service
    hosts:
      "{component_jid}":
        password: {secret}
s2s_access: s2s
auth_method: internal
auth_password_format: plain
registration_timeout: infinity
acl:
  admin:
    user:
      - "admin@{domain}"{privileged_admin}{component_admin}
  pubpresence:
    server:
      - "{component_jid}"
  loopback:
    ip:
      - 127.0.0.0/8
      - ::1/128
access_rules:
  c2s:
    allow: all
  s2s:
    deny: all
  # mod_configure / mod_adhoc admin commands (XEP-0133): the component and
  # admin@{domain}.
  configure:
    allow: admin
  pubsub_createnode:
    - {createnode}: admin
    - {createnode}: pubpresence
  register:
    allow: loopback
  pubpresence_privileges:
    allow: pubpresence
api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"
modules:
  mod_adhoc: {{}}
  mod_admin_extra: {{}}
  mod_caps: {{}}
  mod_configure: {{}}
  mod_disco: {{}}
  mod_last: {{}}
  mod_ping: {{}}
  # In-band registration (register_many): from loopback only.
  mod_register:
    access: all
    ip_access: register
  mod_roster: {{}}
  mod_version: {{}}
  mod_time: {{}}
  mod_pubsub:
    access_createnode: pubsub_createnode
    plugins:
      - flat
      - pep
    max_items_node: {max_items_node}{pubsub_db}
{privilege}{lab_modules}{sql}"#,
            name = node.name,
            pubsub_db = if o.pubsub_sql {
                "\n    db_type: sql"
            } else {
                ""
            },
            sql = if o.pubsub_sql {
                format!(
                    "# mod_pubsub's store: one SQLite file for every node.\nsql_type: sqlite\nsql_database: {}\n",
                    yaml_string(&self.dir.path().join(PUBSUB_DB).to_string_lossy())
                )
            } else {
                String::new()
            },
            lab_modules = if o.held_sessions {
                "  mod_lab_held_sessions: {}\n"
            } else {
                ""
            },
            loglevel = if o.debug_log { "debug" } else { "info" },
            max_items_node = match (o.max_items_node, o.pubsub_sql) {
                (Some(n), _) => n.to_string(),
                // A numeric cap makes the SQL store read the publisher's
                // item ids at every publish of a new item.
                (None, true) => "unlimited".into(),
                (None, false) => "100000".into(),
            },
            createnode = if o.no_create_node { "deny" } else { "allow" },
            component_admin = if o.no_admin {
                String::new()
            } else {
                format!("\n    server:\n      - \"{}\"", self.component_jid)
            },
            domain = self.domain,
            c2s = node.c2s_port,
            component = node.component_port,
            component_jid = self.component_jid,
            secret = yaml_string(&self.secret),
        )
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{} (lab server) log:\n{}", self.label(), self.log_tail(40));
        }
        self.stop();
        if std::env::var_os("PUBPRESENCE_KEEP_EJABBERD").is_some() {
            self.dir.keep();
            eprintln!("ejabberd dir kept: {}", self.dir.path().display());
        }
    }
}

/// `ejabberdctl.cfg` of a node: loopback only (Erlang distribution and, if
/// this VM starts it, EPMD), its own pid file, and a distribution buffer
/// busy limit of 64 MB (`+zdbbl`) as the README's cluster section advises:
/// ejabberd hands a stanza to a session on the other node with `nosuspend`
/// and drops it when the link's buffer is over the limit (1 MB by default),
/// which lost probe answers at 10,000 sessions (docs/benchmarks.md, "Roster
/// mode: every address kept"). With `ebin`, the lab's compiled modules are
/// on the code path.
fn ctl_config(node: &EjabberdNode, ebin: Option<&std::path::Path>) -> String {
    let code_path = ebin.map_or(String::new(), |d| format!(" -pa {}", d.display()));
    format!(
        r#"# written by pubpresence::lab (lab/src/ejabberd.rs)
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface {{127,0,0,1}} +zdbbl 65536{code_path}"
ERL_EPMD_ADDRESS=127.0.0.1
EJABBERD_PID_PATH={pid}
EJABBERD_BYPASS_WARNINGS=true
"#,
        pid = node.pid_path().display()
    )
}

const INETRC: &str = r#"{lookup,["file","native"]}.
{host,{127,0,0,1}, ["localhost","hostalias"]}.
{file, resolv, "/etc/resolv.conf"}.
"#;

fn yaml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// XEP-0077 in-band registration of `user@domain` over a plain c2s stream.
fn register_inband(
    addr: SocketAddr,
    domain: &str,
    user: &str,
    password: &str,
) -> Result<(), EjabberdError> {
    let jid = format!("{user}@{domain}");
    let fail = |reason: String| EjabberdError::Register {
        user: jid.clone(),
        reason,
    };
    let mut s = TcpStream::connect_timeout(&addr, REGISTER_TIMEOUT)
        .map_err(|e| fail(format!("connecting to {addr}: {e}")))?;
    let _ = s.set_read_timeout(Some(REGISTER_TIMEOUT));
    let _ = s.set_nodelay(true);
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    let mut got = String::new();
    let mut read_until = |s: &mut TcpStream, want: &dyn Fn(&str) -> bool| {
        let mut buf = [0u8; 4096];
        while !want(&got) {
            if Instant::now() > deadline {
                return Err(fail(format!("no answer; got: {got}")));
            }
            match s.read(&mut buf) {
                Ok(0) => return Err(fail(format!("connection closed; got: {got}"))),
                Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) => return Err(fail(format!("reading: {e}; got: {got}"))),
            }
        }
        Ok(got.clone())
    };
    let header = format!(
        "<?xml version='1.0'?><stream:stream to='{}' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
        xml_escape(domain)
    );
    s.write_all(header.as_bytes())
        .map_err(|e| fail(format!("writing: {e}")))?;
    read_until(&mut s, &|g| g.contains("</stream:features>"))?;
    let iq = format!(
        "<iq type='set' id='reg1'><query xmlns='jabber:iq:register'>\
         <username>{}</username><password>{}</password></query></iq>",
        xml_escape(user),
        xml_escape(password)
    );
    s.write_all(iq.as_bytes())
        .map_err(|e| fail(format!("writing: {e}")))?;
    let answer = read_until(&mut s, &|g| {
        ["id='reg1'", "id=\"reg1\""].iter().any(|id| {
            g.find(id)
                .is_some_and(|at| g[at..].contains("</iq>") || g[at..].contains("/>"))
        }) || g.contains("</stream:stream>")
    })?;
    let _ = s.write_all(b"</stream:stream>");
    let iq_start = answer
        .find("id='reg1'")
        .or_else(|| answer.find("id=\"reg1\""))
        .and_then(|at| answer[..at].rfind("<iq"))
        .map(|at| &answer[at..])
        .unwrap_or(&answer);
    if iq_start.contains("type='result'") || iq_start.contains("type=\"result\"") {
        Ok(())
    } else {
        Err(fail(iq_start.chars().take(400).collect()))
    }
}

/// Runs `cmd` with its output captured, killing it after `timeout`. The
/// status is None when it had to be killed.
fn run_bounded(
    mut cmd: Command,
    timeout: Duration,
) -> std::io::Result<(Option<std::process::ExitStatus>, String)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = stdout.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = out.join().unwrap_or_default();
    text.push_str(&err.join().unwrap_or_default());
    Ok((status, text))
}

/// Whether process `pid` exists and is not a zombie (a detached VM is not
/// our child: nobody may reap it).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn wait_gone(pid: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Erlang VM whose command line names `node` (`-sname NAME@localhost`).
fn find_vm(node: &str) -> Option<u32> {
    let short = node.split('@').next()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let named = args
            .windows(2)
            .any(|w| w[0] == b"-sname" && (w[1] == short.as_bytes() || w[1] == node.as_bytes()));
        let beam = args
            .first()
            .is_some_and(|a| String::from_utf8_lossy(a).contains("beam"));
        (named && beam).then_some(pid)
    })
}

fn tail(path: &Path, n: usize) -> String {
    let lines: Vec<String> = std::fs::File::open(path)
        .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
        .unwrap_or_default();
    let start = lines.len().saturating_sub(n);
    format!("--- {} ---\n{}", path.display(), lines[start..].join("\n"))
}
