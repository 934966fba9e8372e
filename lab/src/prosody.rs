//! A throwaway Prosody (0.12 or 13: [`super::install`]) for tests, the demo
//! and the benchmark: its own directory under the system temp dir, free
//! loopback ports, no TLS, no s2s, a pubsub service with SQLite storage. It
//! never touches a system Prosody.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::install::Install;

/// How long the server may take to listen on its ports.
const STARTUP: Duration = Duration::from_secs(10);
/// How long a SIGTERM may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What Debian packages provide what the lab needs.
pub const INSTALL_HINT: &str =
    "bash scripts/install-servers.sh (apt-get install prosody prosody-modules lua-dbi-sqlite3)";

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{0} is not installed: {INSTALL_HINT}")]
    NotInstalled(&'static str),
    /// The Prosody the environment names is missing; the text says how to
    /// install it.
    #[error("{0}")]
    Missing(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("prosodyctl register {user} failed: {output}")]
    Register { user: String, output: String },
    /// The server did not come up; the text ends with the tail of its log.
    #[error("{0}")]
    Startup(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// A running Prosody; stopped (by its PID) and its directory removed on
/// drop. With `PUBPRESENCE_KEEP_PROSODY=1` in the environment the directory
/// (config, log, data) is kept for a look afterwards.
pub struct Prosody {
    pub dir: super::LabDir,
    pub c2s_port: u16,
    pub component_port: u16,
    /// "localhost"
    pub domain: String,
    /// "pubpresence.localhost": the external component's JID.
    pub component_jid: String,
    /// "pubsub.localhost": a pubsub service with SQLite storage.
    pub pubsub_jid: String,
    /// The component's secret.
    pub secret: String,
    /// The installed Prosody this lab runs (its binaries and version).
    pub install: Install,
    child: Option<Child>,
    options: ProsodyOptions,
}

/// How the lab's Prosody is set up; `Default` is what the tests use.
#[derive(Debug, Clone, Default)]
pub struct ProsodyOptions {
    /// XEP-0356 presence permission for the component (`start_privileged`).
    pub privileged: bool,
    /// Log at `info` instead of `debug` (the benchmarks: debug logging costs
    /// Prosody CPU per stanza).
    pub quiet_log: bool,
    /// `network_settings = { nagle = false }`: TCP_NODELAY on Prosody's
    /// sockets (0.12's server_epoll calls it `nagle`; `tcp_nodelay` is
    /// silently ignored).
    pub no_nagle: bool,
    /// The pubsub service's items in memory (`storage = "memory"`) instead
    /// of SQLite: no commit per publish.
    pub memory_storage: bool,
    /// Prosody's default store for the pubsub service (flat files, no
    /// `storage` line): what `doctor`'s storage-cost check must name.
    pub file_storage: bool,
    /// `pubsub_max_items` and `storage_archive_item_limit` of the pubsub
    /// service (100000 unless set).
    pub item_cap: Option<u64>,
    /// The component is not in `admins`: no XEP-0133 commands for it.
    pub no_admin: bool,
    /// The pubsub service answers the first [`BUSY_OWNER_REFUSALS`]
    /// creations, configurations and affiliation changes of each node
    /// "Database failure" (type `wait`), as ejabberd before 25.10 may
    /// (`prosody-plugins/mod_lab_busy_owner.lua`).
    pub busy_owner: bool,
    /// Prosody holds its one thread for [`SLOW_HANDSHAKE`] right after it
    /// queued the answer to the component's handshake, as mod_privilege
    /// does while it sends every session's presence
    /// (`prosody-plugins/mod_lab_slow_handshake.lua`).
    pub slow_handshake: bool,
    /// The component's first ping to the domain after each authentication
    /// (the round trip behind its start-up probes) is never answered
    /// (`prosody-plugins/mod_lab_lost_barrier.lua`).
    pub lost_barrier: bool,
    /// The VirtualHost holds client sessions without sockets when the
    /// admin asks for them (`prosody-plugins/mod_lab_held_sessions.lua`,
    /// [`crate::held::hold`]): sizes past the open-file limit.
    pub held_sessions: bool,
    /// Prosody's garbage collector in Lua 5.4's generational mode
    /// (`gc = { mode = "generational" }`) instead of its default,
    /// incremental with a threshold of 105 %. Its effect at 100,000
    /// sessions is not measured apart (docs/benchmarks.md).
    pub generational_gc: bool,
    /// `max_send_buffer_size` in `network_settings`, in MiB. Prosody 13's
    /// server_epoll closes a connection whose unsent data would pass it
    /// (32 MiB unless set), and one answer holding the whole of active is
    /// that big near 80,000 sessions. 0.12's server_epoll has no such cap.
    pub send_buffer_mib: Option<u32>,
    /// The pubsub service answers every fetch of `presence/active`
    /// [`SLOW_FETCH`] late, as Prosody does at 100,000 items
    /// (`prosody-plugins/mod_lab_slow_fetch.lua`).
    pub slow_fetch: bool,
    /// The component's probes and pings to the domain are handled
    /// [`SLOW_PROBES`] late, in order, as by a server busy answering
    /// 100,000 sessions' probes (`prosody-plugins/mod_lab_slow_probes.lua`).
    pub slow_probes: bool,
    /// The pubsub service closes the connection of the first fetch of
    /// `presence/active` from this kind of session instead of answering it,
    /// as Prosody 13 does past its send-buffer cap
    /// (`prosody-plugins/mod_lab_cut_fetch.lua`).
    pub cut_fetch: Option<Cut>,
}

/// Whose fetch a `cut_fetch` Prosody cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// The component's (its session type `component`).
    Component,
    /// A client's, such as `pubpresence watch` (session type `c2s`).
    Client,
}

impl Cut {
    /// Prosody's name for the session type (`origin.type`).
    fn origin(self) -> &'static str {
        match self {
            Cut::Component => "component",
            Cut::Client => "c2s",
        }
    }
}

impl ProsodyOptions {
    /// Whether one of the lab's own modules is asked for (`plugin_paths`).
    fn uses_lab_modules(&self) -> bool {
        self.busy_owner
            || self.slow_handshake
            || self.lost_barrier
            || self.held_sessions
            || self.slow_fetch
            || self.slow_probes
            || self.cut_fetch.is_some()
    }
}

/// How long a `slow_handshake` Prosody holds the component's handshake
/// answer back: longer than the component's wait for a connection and the
/// server's stream header.
pub const SLOW_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(12);

/// How late a `slow_probes` Prosody handles the component's probes and
/// pings: longer than `probe_timeout` (3 s) and a test's `iq_timeout` (1 s).
pub const SLOW_PROBES: std::time::Duration = std::time::Duration::from_secs(4);

/// How late a `slow_fetch` pubsub service answers a fetch of active.
pub const SLOW_FETCH: std::time::Duration = std::time::Duration::from_secs(3);

/// How many of each node-owner request on each node a `busy_owner` pubsub
/// service refuses.
pub const BUSY_OWNER_REFUSALS: usize = 2;

/// The lab's own Prosody modules (`plugin_paths`).
const PLUGINS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/prosody-plugins");

/// The global `network_settings` line (nothing when none is asked for).
fn network_settings(o: &ProsodyOptions) -> String {
    let mut settings = Vec::new();
    if o.no_nagle {
        settings.push("nagle = false".to_string());
    }
    if let Some(mib) = o.send_buffer_mib {
        settings.push(format!("max_send_buffer_size = {mib}*1024*1024"));
    }
    if settings.is_empty() {
        return String::new();
    }
    format!("\nnetwork_settings = {{ {} }}", settings.join("; "))
}

/// A component section's `modules_enabled` line and the modules' settings
/// (nothing when no module is asked for).
fn section_modules(modules: &[&str], settings: &str) -> String {
    if modules.is_empty() {
        return String::new();
    }
    format!(
        "\n    modules_enabled = {{ {} }}{settings}",
        modules.join("; ")
    )
}

impl std::fmt::Debug for Prosody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prosody")
            .field("dir", &self.dir.path())
            .field("c2s_port", &self.c2s_port)
            .field("component_port", &self.component_port)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

/// Whether what the lab needs is installed; the error says how to fix it.
pub fn check_installed() -> Result<Install, LabError> {
    let install = super::install::prosody().map_err(LabError::Missing)?;
    // The pubsub component stores items in SQLite: Prosody 0.12's "memory"
    // store loses items on active after a retract followed by a republish.
    let dbi = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", "lua-dbi-sqlite3"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false);
    if !dbi {
        return Err(LabError::NotInstalled(
            "lua-dbi-sqlite3 (Prosody's SQLite driver)",
        ));
    }
    Ok(install)
}

impl Prosody {
    /// Starts Prosody and waits until its c2s and component ports listen.
    /// Registers "admin" (password "admin"), a server admin. Blocks (up to
    /// 10 s): call it from `spawn_blocking` in async code that must stay
    /// responsive.
    pub fn start() -> Result<Prosody, LabError> {
        Prosody::start_with(ProsodyOptions::default())
    }

    /// With XEP-0356: `mod_privilege` (Debian's `prosody-modules`) grants
    /// the component presence permission, enabled both on the host and in
    /// the component's section (README, "Presence without rosters on Prosody (XEP-0356)": the global line alone
    /// forwards nothing).
    pub fn start_privileged() -> Result<Prosody, LabError> {
        let install = check_installed()?;
        let module = install.path("/usr/lib/prosody/modules/mod_privilege/mod_privilege.lua");
        if !module.is_file() {
            return Err(LabError::NotInstalled("prosody-modules (mod_privilege)"));
        }
        Prosody::start_with(ProsodyOptions {
            privileged: true,
            ..ProsodyOptions::default()
        })
    }

    /// How this Prosody was set up.
    pub fn options(&self) -> &ProsodyOptions {
        &self.options
    }

    /// Starts Prosody set up as `options` say (see [`Prosody::start`]).
    pub fn start_with(options: ProsodyOptions) -> Result<Prosody, LabError> {
        let install = check_installed()?;
        let dir = super::LabDir::new("pubpresence-prosody-").map_err(io("creating a temp dir"))?;
        // Hold both listeners at once so that the two ports differ.
        let (c2s_port, component_port) = {
            let ports = super::free_ports(2).map_err(io("finding free ports"))?;
            (ports[0], ports[1])
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
            install,
            child: None,
            dir,
            options,
        };
        // certs/ only keeps Prosody's certmanager from logging an error.
        for sub in ["data", "certs"] {
            let d = p.dir.path().join(sub);
            std::fs::create_dir_all(&d).map_err(io(format!("creating {}", d.display())))?;
        }
        std::fs::write(p.config_path(), p.lua_config())
            .map_err(io("writing the prosody config"))?;
        // Captured by the test harness and shown with a failing test's output.
        eprintln!("lab: {} in {}", p.label(), p.dir.path().display());
        p.register("admin", "admin")?;
        p.spawn()?;
        Ok(p)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("prosody.log")
    }

    /// "Prosody 13.0.1": what this lab really runs.
    pub fn label(&self) -> String {
        self.install.label()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn lua_config(&self) -> String {
        // docs/benchmarks.md, "Profiling Prosody": the module reads the
        // directory from the environment Prosody inherits.
        let profiling =
            std::env::var_os("PUBPRESENCE_LAB_PROSODY_PROFILE").is_some_and(|d| !d.is_empty());
        self.lua_config_with(profiling)
    }

    /// The config, loading the Lua profiler when `profiling`.
    fn lua_config_with(&self, profiling: bool) -> String {
        let dir = self.dir.path().display();
        let o = &self.options;
        format!(
            r#"-- written by pubpresence::lab (lab/src/prosody.rs)
run_as_root = true{profile_path}
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ {level} = "{dir}/prosody.log" }}{network}{gc}
interfaces = {{ "127.0.0.1", "::1" }}
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
admins = {{ {admins} }}
modules_enabled = {{
    "roster"; "saslauth"; "disco"; "ping"; "posix";
    "adhoc"; "admin_adhoc"; "version"; "time";{privilege_module}{profile_module}{held_module}
}}
modules_disabled = {{ "s2s"; "tls" }}

VirtualHost "{domain}"{privileged_entities}

Component "{component_jid}"
    component_secret = "{secret}"{component_modules}

Component "{pubsub_jid}" "pubsub"
    {storage}
    pubsub_max_items = {cap}
    storage_archive_item_limit = {cap}{pubsub_modules}
"#,
            pubsub_modules = self.pubsub_modules(),
            cap = o.item_cap.unwrap_or(100_000),
            admins = if o.no_admin {
                format!("\"admin@{}\"", self.domain)
            } else {
                format!("\"{}\", \"admin@{}\"", self.component_jid, self.domain)
            },
            profile_path = if profiling || o.uses_lab_modules() {
                format!("\nplugin_paths = {{ \"{PLUGINS_DIR}\" }}")
            } else {
                String::new()
            },
            profile_module = if profiling { " \"lab_profile\";" } else { "" },
            held_module = if o.held_sessions {
                " \"lab_held_sessions\";"
            } else {
                ""
            },
            level = if o.quiet_log { "info" } else { "debug" },
            gc = if o.generational_gc {
                "\ngc = { mode = \"generational\" }"
            } else {
                ""
            },
            network = network_settings(o),
            storage = if o.file_storage {
                "-- the default store: flat files".to_string()
            } else if o.memory_storage {
                "storage = \"memory\"".to_string()
            } else {
                format!(
                    "storage = \"sql\"\n    sql = {{ driver = \"SQLite3\", database = \"{dir}/pubsub.sqlite\" }}"
                )
            },
            c2s = self.c2s_port,
            component = self.component_port,
            component_jid = self.component_jid,
            pubsub_jid = self.pubsub_jid,
            domain = self.domain,
            secret = self.secret,
            privilege_module = if self.options.privileged {
                " \"privilege\";"
            } else {
                ""
            },
            privileged_entities = if self.options.privileged {
                format!(
                    "\n    privileged_entities = {{ [\"{}\"] = {{ presence = \"managed_entity\"; roster = \"both\" }} }}",
                    self.component_jid
                )
            } else {
                String::new()
            },
            component_modules = self.component_modules(),
        )
    }

    /// The pubsub service's lab modules, all the options asked for together.
    fn pubsub_modules(&self) -> String {
        let mut modules = Vec::new();
        let mut settings = String::new();
        if self.options.busy_owner {
            modules.push("\"lab_busy_owner\"");
            settings += &format!("\n    lab_busy_owner_failures = {BUSY_OWNER_REFUSALS}");
        }
        if self.options.slow_fetch {
            modules.push("\"lab_slow_fetch\"");
            settings += &format!("\n    lab_slow_fetch_seconds = {}", SLOW_FETCH.as_secs());
        }
        if let Some(cut) = self.options.cut_fetch {
            modules.push("\"lab_cut_fetch\"");
            settings += &format!(
                "\n    lab_cut_fetch_times = 1\n    lab_cut_fetch_origin = \"{}\"",
                cut.origin()
            );
        }
        section_modules(&modules, &settings)
    }

    /// The component's own modules, all the options asked for together.
    fn component_modules(&self) -> String {
        let mut modules = Vec::new();
        let mut settings = String::new();
        if self.options.privileged {
            modules.push("\"privilege\"");
        }
        if self.options.slow_handshake {
            modules.push("\"lab_slow_handshake\"");
            settings = format!(
                "\n    lab_slow_handshake_seconds = {}",
                SLOW_HANDSHAKE.as_secs()
            );
        }
        if self.options.lost_barrier {
            modules.push("\"lab_lost_barrier\"");
        }
        if self.options.slow_probes {
            modules.push("\"lab_slow_probes\"");
            settings += &format!("\n    lab_slow_probes_seconds = {}", SLOW_PROBES.as_secs());
        }
        section_modules(&modules, &settings)
    }

    fn spawn(&mut self) -> Result<(), LabError> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("prosody.stdout"))
            .map_err(io("opening prosody's stdout file"))?;
        let err = out
            .try_clone()
            .map_err(io("opening prosody's stdout file"))?;
        let child = Command::new(self.install.path("/usr/bin/prosody"))
            .arg("--config")
            .arg(self.config_path())
            .arg("-F")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C in the terminal reaches only
            // our process, which then stops the server in order (the
            // component publishes `offline` first).
            .process_group(0)
            .spawn()
            .map_err(io("starting prosody"))?;
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
                    self.child = None;
                    return Err(LabError::Startup(format!(
                        "prosody exited ({status}) before listening on {addr}\n{}",
                        self.log_tail(60)
                    )));
                }
                if Instant::now() > deadline {
                    self.stop();
                    return Err(LabError::Startup(format!(
                        "prosody did not listen on {addr} within {STARTUP:?}\n{}",
                        self.log_tail(60)
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
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
    pub fn register(&self, user: &str, password: &str) -> Result<(), LabError> {
        let out = Command::new(self.install.path("/usr/bin/prosodyctl"))
            .arg("--config")
            .arg(self.config_path())
            .args(["register", user, &self.domain, password])
            .stdin(Stdio::null())
            .output()
            .map_err(io("running prosodyctl"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(LabError::Register {
                user: format!("{user}@{}", self.domain),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            })
        }
    }

    pub fn c2s_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.c2s_port))
    }

    pub fn component_addr(&self) -> String {
        format!("127.0.0.1:{}", self.component_port)
    }

    /// A pubpresence config file for this server, with a whitelist of
    /// `members` (full "user@domain" JIDs). `server` is written as a
    /// one-element list, the cluster form: every Prosody test runs the
    /// component through the same code as a cluster of one.
    pub fn config_toml(&self, members: &[&str]) -> String {
        let members: Vec<String> = members.iter().map(|m| format!("{m:?}")).collect();
        format!(
            r#"jid = "{jid}"
server = ["{server}"]
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
        crate::process::stop(&mut child, STOP_GRACE);
    }

    /// Stops and starts again: same ports, same data (accounts).
    pub fn restart(&mut self) -> Result<(), LabError> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{} (lab server) log:\n{}", self.label(), self.log_tail(40));
        }
        self.stop();
        if std::env::var_os("PUBPRESENCE_KEEP_PROSODY").is_some() {
            self.dir.keep();
            eprintln!("prosody dir kept: {}", self.dir.path().display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(options: ProsodyOptions) -> String {
        config_with(options, false)
    }

    fn config_with(options: ProsodyOptions, profiling: bool) -> String {
        let p = Prosody {
            dir: super::super::LabDir::new("pubpresence-config-test-").expect("temp dir"),
            c2s_port: 1,
            component_port: 2,
            domain: "localhost".into(),
            component_jid: "pubpresence.localhost".into(),
            pubsub_jid: "pubsub.localhost".into(),
            secret: "x".into(),
            install: Install {
                root: PathBuf::from("/"),
                software: "Prosody",
                version: "0.12.3".into(),
            },
            child: None,
            options,
        };
        p.lua_config_with(profiling)
    }

    #[test]
    fn options_shape_the_config() {
        let plain = config(ProsodyOptions::default());
        assert!(plain.contains("log = { debug = "), "{plain}");
        assert!(!plain.contains("network_settings"), "{plain}");
        assert!(plain
            .contains("    storage = \"sql\"\n    sql = { driver = \"SQLite3\", database = \""));
        assert!(!plain.contains("privilege"), "{plain}");
        assert!(!plain.contains("lab_profile"), "{plain}");
        assert!(!plain.contains("plugin_paths"), "{plain}");
        let profiled = config_with(ProsodyOptions::default(), true);
        assert!(
            profiled.contains(&format!(
                "\nplugin_paths = {{ \"{}/prosody-plugins\" }}\n",
                env!("CARGO_MANIFEST_DIR")
            )),
            "{profiled}"
        );
        assert!(
            profiled.contains("\"time\"; \"lab_profile\";\n"),
            "{profiled}"
        );

        let bench = config(ProsodyOptions {
            quiet_log: true,
            no_nagle: true,
            memory_storage: true,
            ..ProsodyOptions::default()
        });
        assert!(bench.contains("log = { info = "), "{bench}");
        assert!(
            bench.contains("\nnetwork_settings = { nagle = false }\n"),
            "{bench}"
        );
        let big = config(ProsodyOptions {
            no_nagle: true,
            send_buffer_mib: Some(128),
            ..ProsodyOptions::default()
        });
        assert!(
            big.contains(
                "\nnetwork_settings = { nagle = false; max_send_buffer_size = 128*1024*1024 }\n"
            ),
            "{big}"
        );
        assert!(bench.contains("Component \"pubsub.localhost\" \"pubsub\"\n    storage = \"memory\"\n    pubsub_max_items = 100000\n"), "{bench}");
        assert!(!bench.contains("SQLite3"), "{bench}");
    }

    /// The component's modules add up: asking for two loads both.
    #[test]
    fn component_modules_combine() {
        let module_line = |options: ProsodyOptions| {
            let text = config(options);
            let component = &text[text
                .find("Component \"pubpresence.localhost\"")
                .expect("component")..];
            component
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with("    "))
                .filter(|l| l.contains("modules_enabled") || l.contains("lab_slow"))
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(module_line(ProsodyOptions::default()), "");
        assert_eq!(
            module_line(ProsodyOptions {
                privileged: true,
                ..ProsodyOptions::default()
            }),
            "modules_enabled = { \"privilege\" }"
        );
        assert_eq!(
            module_line(ProsodyOptions {
                privileged: true,
                slow_handshake: true,
                ..ProsodyOptions::default()
            }),
            format!(
                "modules_enabled = {{ \"privilege\"; \"lab_slow_handshake\" }}\n\
                 lab_slow_handshake_seconds = {}",
                SLOW_HANDSHAKE.as_secs()
            )
        );
    }
}
