//! The configuration file (SPEC sections 1, 2 "Access", 7, 8 and 9; `[metrics]`).
//!
//! A TOML file is parsed into [`Config`] (every table refuses unknown keys),
//! checked key by key, and then turned into what a command needs:
//! [`Config::component`] for `pubpresence run`, [`Config::watch`] for
//! `pubpresence watch`, [`Config::describe`] for `pubpresence check-config`.
//!
//! Secrets (the component secret, the watch and standby passwords, the web feed token)
//! are held in [`Secret`], which never prints its value. Every error is one
//! line naming the key, and never contains a secret: toml's own error text
//! quotes the offending source line, so parse errors are rebuilt here from
//! the error's key path and line number only.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use xmpp_parsers::jid::BareJid;

/// Environment variable that overrides `secret` / `secret_file`.
pub const ENV_SECRET: &str = "PUBPRESENCE_SECRET";
/// Environment variable that overrides `[watch] password` / `password_file`.
pub const ENV_WATCH_PASSWORD: &str = "PUBPRESENCE_WATCH_PASSWORD";
/// Environment variable that overrides `[watch] http_token` / `http_token_file`.
pub const ENV_HTTP_TOKEN: &str = "PUBPRESENCE_HTTP_TOKEN";
/// Environment variable that overrides `[standby] password` / `password_file`.
pub const ENV_STANDBY_PASSWORD: &str = "PUBPRESENCE_STANDBY_PASSWORD";

/// Default `audit_interval`.
pub const DEFAULT_AUDIT_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Default `probe_timeout`.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default `iq_timeout`.
pub const DEFAULT_IQ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default c2s port for `[watch]` and `[standby]` when `server` is not given.
pub const DEFAULT_C2S_PORT: u16 = 5222;
/// Default `[standby] takeover`.
pub const DEFAULT_TAKEOVER: Duration = Duration::from_secs(2);

/// Key names whose values are secret: their values never appear in errors.
const SENSITIVE_KEYS: &[&str] = &["secret", "password", "http_token"];

/// How environment variables are looked up (injectable for tests).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, for [`Config::component`], [`Config::watch`] and
/// [`Config::describe`]. A variable set to the empty string counts as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------------------
// Secret

/// A secret string (shared secret, password, token). `Debug` and `Display`
/// print `***`; the value is only reachable through [`Secret::expose`].
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `candidate` without stopping at the first difference
    /// (for checking tokens presented by HTTP clients).
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a resolved secret came from (for `check-config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable (its name).
    Env(&'static str),
    /// The value written in the config file under this key.
    Inline(&'static str),
    /// A file, named under this key.
    File(&'static str, PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(var) => write!(f, "from env {var}"),
            SecretSource::Inline(key) => write!(f, "from {key}"),
            SecretSource::File(key, path) => write!(f, "from {key} {}", path.display()),
        }
    }
}

// ---------------------------------------------------------------------------
// Errors

/// A configuration problem: one line naming the file, line, key and problem.
/// Never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    file: Option<PathBuf>,
    line: Option<usize>,
    key: Option<String>,
    message: String,
}

impl ConfigError {
    /// An error about `key` (a dotted path such as `watch.password`).
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            line: None,
            key: Some(key.into()),
            message: one_line(&message.into()),
        }
    }

    fn bare(message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            line: None,
            key: None,
            message: one_line(&message.into()),
        }
    }

    /// Attaches the config file's path (shown first in the message).
    pub fn with_file(mut self, file: Option<&Path>) -> Self {
        if self.file.is_none() {
            self.file = file.map(Path::to_path_buf);
        }
        self
    }

    /// The key the error is about, as a dotted path (`server`, `watch.jid`).
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The problem, without file, line or key.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The 1-based line in the config file, where known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The config file, where the config was loaded from one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    fn render(&self) -> String {
        let mut out = String::new();
        match (&self.file, self.line) {
            (Some(file), Some(line)) => out.push_str(&format!("{}:{line}: ", file.display())),
            (Some(file), None) => out.push_str(&format!("{}: ", file.display())),
            (None, Some(line)) => out.push_str(&format!("line {line}: ")),
            (None, None) => {}
        }
        if let Some(key) = &self.key {
            out.push_str(key);
            out.push_str(": ");
        }
        out.push_str(&self.message);
        out
    }
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------
// The file, as written

/// The config file as written (after parsing and checking each key).
/// Secrets held here print as `***`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The component's JID (a domain JID).
    pub jid: String,
    /// Component listeners, `host:port`; a string or a list in the file.
    #[serde(default, deserialize_with = "de_servers")]
    pub server: Option<Vec<String>>,
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    /// The server host whose users are tracked.
    pub domain: Option<String>,
    /// The pubsub service holding the nodes.
    pub pubsub: String,
    #[serde(default)]
    pub nodes: Nodes,
    #[serde(default)]
    pub access: Access,
    /// "0s" turns the audit off.
    #[serde(default = "default_audit_interval", deserialize_with = "de_duration")]
    pub audit_interval: Duration,
    /// Bound on the start-up wait for probe answers.
    #[serde(default = "default_probe_timeout", deserialize_with = "de_duration")]
    pub probe_timeout: Duration,
    /// How long to wait for the answer to an IQ.
    #[serde(default = "default_iq_timeout", deserialize_with = "de_duration")]
    pub iq_timeout: Duration,
    /// This instance's name (default: see [`ComponentSettings::instance_name`]).
    pub instance: Option<String>,
    /// A bare JID of `domain` on whose behalf requests are sent as XEP-0356
    /// privileged IQs (ejabberd 24.10 and later with mod_privilege).
    pub privileged_as: Option<String>,
    /// A tracing filter such as `info` or `pubpresence=debug`.
    pub log: Option<String>,
    #[serde(default)]
    pub privacy: Privacy,
    pub watch: Option<WatchConfig>,
    pub standby: Option<StandbyConfig>,
    pub metrics: Option<MetricsConfig>,
    /// The file this was loaded from.
    #[serde(skip)]
    source: Option<PathBuf>,
    /// Directory that relative `*_file` paths are resolved against.
    #[serde(skip)]
    base_dir: Option<PathBuf>,
}

/// `[nodes]`: the names of the three nodes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Nodes {
    pub live: String,
    pub active: String,
    pub status: String,
}

impl Default for Nodes {
    fn default() -> Self {
        Nodes {
            live: "presence/live".into(),
            active: "presence/active".into(),
            status: "presence/status".into(),
        }
    }
}

/// `[access] model`: the pubsub access model set on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessModel {
    #[default]
    Whitelist,
    Open,
    Presence,
    Roster,
    Authorize,
}

impl AccessModel {
    /// The value of `pubsub#access_model`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessModel::Whitelist => "whitelist",
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Authorize => "authorize",
        }
    }
}

impl fmt::Display for AccessModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[access]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    #[serde(default)]
    pub model: AccessModel,
    /// With `whitelist`: the JIDs made members of all three nodes.
    #[serde(default)]
    pub members: Vec<String>,
}

/// `[privacy] ip`: what is published of each connection's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpMode {
    /// As the server reports it.
    #[default]
    Full,
    /// IPv4 to its /24, IPv6 to its /48.
    Masked,
    /// `ip=''`.
    None,
}

impl IpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IpMode::Full => "full",
            IpMode::Masked => "masked",
            IpMode::None => "none",
        }
    }
}

impl fmt::Display for IpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[privacy]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Privacy {
    #[serde(default)]
    pub ip: IpMode,
    /// Bare JIDs never published.
    #[serde(default)]
    pub hide: Vec<String>,
}

/// `[watch]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// The account the reference client logs in with.
    pub jid: String,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// c2s `host:port`; default: the jid's domain, port 5222.
    pub server: Option<String>,
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Serve the web feed on this address.
    pub http: Option<String>,
    pub http_token: Option<Secret>,
    pub http_token_file: Option<PathBuf>,
}

/// `[standby]` as written (SPEC section 8, "Standby").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyConfig {
    /// The ordinary account a waiting instance logs in with (`user@domain`).
    pub jid: String,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// c2s `host:port`; default: the jid's domain, port 5222.
    pub server: Option<String>,
    #[serde(default)]
    pub allow_plaintext: bool,
    /// The active instance unreachable this long: take over. More than 0s.
    #[serde(default = "default_takeover", deserialize_with = "de_duration")]
    pub takeover: Duration,
}

/// `[metrics]` as written: the Prometheus endpoint of `pubpresence run`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` on this address (`127.0.0.1:9464`).
    pub listen: String,
}

fn default_takeover() -> Duration {
    DEFAULT_TAKEOVER
}

fn default_audit_interval() -> Duration {
    DEFAULT_AUDIT_INTERVAL
}

fn default_probe_timeout() -> Duration {
    DEFAULT_PROBE_TIMEOUT
}

fn default_iq_timeout() -> Duration {
    DEFAULT_IQ_TIMEOUT
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration string such as \"500ms\", \"30s\" or \"5m\"")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            humantime::parse_duration(s.trim()).map_err(|e| {
                E::custom(format!(
                    "invalid duration {s:?} ({e}); write it like \"500ms\", \"30s\", \"5m\""
                ))
            })
        }
    }
    d.deserialize_str(V)
}

fn de_servers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(s)) => Ok(Some(vec![s])),
        Ok(OneOrMany::Many(v)) => Ok(Some(v)),
        Err(_) => Err(de::Error::custom(
            "expected \"host:port\" or a list of them, such as [\"10.0.0.1:5347\", \"10.0.0.2:5347\"]",
        )),
    }
}

// ---------------------------------------------------------------------------
// What the commands get

/// `[access]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessSettings {
    pub model: AccessModel,
    /// With `whitelist`: exactly these are members of the nodes.
    pub members: Vec<BareJid>,
}

/// `[privacy]`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrivacySettings {
    pub ip: IpMode,
    pub hide: Vec<BareJid>,
}

impl PrivacySettings {
    /// Whether this user's connections must never be published.
    pub fn is_hidden(&self, user: &BareJid) -> bool {
        self.hide.iter().any(|h| h == user)
    }
}

/// Everything `pubpresence run` needs.
#[derive(Debug, Clone)]
pub struct ComponentSettings {
    /// The component's JID (domain JID).
    pub jid: BareJid,
    /// Component listeners, `host:port`; at least one.
    pub servers: Vec<String>,
    pub secret: Secret,
    pub secret_source: SecretSource,
    /// The server host whose users are tracked (domain JID).
    pub domain: BareJid,
    /// The pubsub service (domain JID).
    pub pubsub: BareJid,
    pub nodes: Nodes,
    pub access: AccessSettings,
    /// `Duration::ZERO`: no audit.
    pub audit_interval: Duration,
    pub probe_timeout: Duration,
    pub iq_timeout: Duration,
    /// As configured; see [`ComponentSettings::instance_name`] for the
    /// name to use.
    pub instance: Option<String>,
    /// `privileged_as`: send requests as XEP-0356 privileged IQs on behalf
    /// of this bare JID of `domain` when the server grants IQ permission
    /// (README, "XEP-0356 on ejabberd 24.10 and later").
    pub privileged_as: Option<BareJid>,
    pub privacy: PrivacySettings,
    /// `[standby]`: wait while another instance is active, then take over.
    pub standby: Option<StandbySettings>,
    /// `[metrics] listen`: serve `GET /metrics` (Prometheus) there.
    pub metrics: Option<SocketAddr>,
}

impl ComponentSettings {
    /// This instance's name: `instance` as configured; without it, when
    /// `[standby]` is set, `HOSTNAME-PID`; else `None`.
    pub fn instance_name(&self) -> Option<String> {
        match &self.instance {
            Some(name) => Some(name.clone()),
            None if self.standby.is_some() => Some(default_instance_name()),
            None => None,
        }
    }
}

/// `HOSTNAME-PID`, the default instance name.
pub fn default_instance_name() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

/// The host name: the kernel's (what `gethostname` returns), else
/// `/etc/hostname`, else `localhost`.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// `[standby]`, checked, with its password resolved.
#[derive(Debug, Clone)]
pub struct StandbySettings {
    /// The account to log in with while waiting (`[standby] jid`).
    pub jid: BareJid,
    pub password: Secret,
    /// c2s `host:port` (default: the jid's domain, port 5222).
    pub server: String,
    pub allow_plaintext: bool,
    /// Pings failing this long (more than zero): take over.
    pub takeover: Duration,
}

/// Everything `pubpresence watch` needs.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// The account to log in with (`[watch] jid`).
    pub jid: BareJid,
    pub password: Secret,
    /// c2s `host:port` (default: the jid's domain, port 5222).
    pub server: String,
    pub allow_plaintext: bool,
    /// The component to probe (top-level `jid`).
    pub component: BareJid,
    pub pubsub: BareJid,
    pub nodes: Nodes,
    /// Web feed address, if any.
    pub http: Option<SocketAddr>,
    /// Required when `http` is not a loopback address.
    pub http_token: Option<Secret>,
    pub probe_timeout: Duration,
    pub iq_timeout: Duration,
}

impl WatchSettings {
    /// Applies a web feed address given on the command line (`--http ADDR`),
    /// with the same rule as `[watch] http`: a non-loopback address needs a token.
    pub fn with_http(mut self, addr: &str) -> Result<Self, ConfigError> {
        let http = parse_http_addr("watch.http", addr)?;
        check_http_token(http, self.http_token.as_ref())?;
        self.http = Some(http);
        Ok(self)
    }
}

// ---------------------------------------------------------------------------
// Loading

impl Config {
    /// Reads, parses and checks the file at `path`. Relative `*_file` paths are
    /// resolved against the file's directory. Errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::bare(format!("cannot read the config file: {e}")).with_file(Some(path))
        })?;
        let base = path.parent();
        let mut config = Self::from_toml_str(&text, base).map_err(|e| e.with_file(Some(path)))?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and checks a config held in a string; relative `*_file` paths are
    /// resolved against `base_dir` (or the working directory).
    pub fn from_toml_str(s: &str, base_dir: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = parse_toml(s)?;
        config.base_dir = base_dir.map(Path::to_path_buf);
        if let Err(mut e) = config.validate() {
            if e.line.is_none() {
                e.line = e.key.as_deref().and_then(|k| line_of_key(s, k));
            }
            return Err(e);
        }
        Ok(config)
    }

    /// The file this config was loaded from.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::new(key, message).with_file(self.source.as_deref())
    }

    fn resolve_path(&self, path: &Path) -> PathBuf {
        match &self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// Checks every key that can be checked without the environment.
    fn validate(&self) -> Result<(), ConfigError> {
        domain_jid("jid", &self.jid)?;
        domain_jid("pubsub", &self.pubsub)?;
        if let Some(domain) = &self.domain {
            domain_jid("domain", domain)?;
        }
        if let Some(servers) = &self.server {
            if servers.is_empty() {
                return Err(ConfigError::new("server", "the list is empty"));
            }
            for (i, s) in servers.iter().enumerate() {
                let key = if servers.len() == 1 {
                    "server".to_string()
                } else {
                    format!("server[{i}]")
                };
                host_port(&key, s)?;
            }
        }
        if let Some(secret) = &self.secret {
            if secret.expose().is_empty() {
                return Err(ConfigError::new("secret", "is empty"));
            }
            if self.secret_file.is_some() {
                return Err(ConfigError::new(
                    "secret_file",
                    "secret and secret_file are both set; keep one",
                ));
            }
        }
        self.nodes.validate()?;
        for (i, m) in self.access.members.iter().enumerate() {
            bare_jid(&format!("access.members[{i}]"), m, false)?;
        }
        if self.iq_timeout.is_zero() {
            return Err(ConfigError::new("iq_timeout", "must be more than 0s"));
        }
        if let Some(instance) = &self.instance {
            if instance.trim().is_empty() {
                return Err(ConfigError::new("instance", "is empty"));
            }
        }
        self.privileged_as()?;
        if let Some(filter) = &self.log {
            tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| {
                ConfigError::new(
                    "log",
                    format!("{filter:?} is not a tracing filter such as \"info\" or \"pubpresence=debug\" ({e})"),
                )
            })?;
        }
        for (i, h) in self.privacy.hide.iter().enumerate() {
            bare_jid(&format!("privacy.hide[{i}]"), h, false)?;
        }
        if let Some(w) = &self.watch {
            w.validate()?;
        }
        if let Some(sb) = &self.standby {
            sb.validate()?;
        }
        self.metrics_listen()?;
        Ok(())
    }

    /// Resolves the component secret: env `PUBPRESENCE_SECRET`, else
    /// `secret`, else `secret_file`. `Ok(None)` when none is set.
    pub fn resolve_secret(
        &self,
        env: Env<'_>,
    ) -> Result<Option<(Secret, SecretSource)>, ConfigError> {
        self.resolve(
            env,
            ENV_SECRET,
            ("secret", self.secret.as_ref()),
            ("secret_file", self.secret_file.as_deref()),
        )
    }

    fn resolve(
        &self,
        env: Env<'_>,
        var: &'static str,
        inline: (&'static str, Option<&Secret>),
        file: (&'static str, Option<&Path>),
    ) -> Result<Option<(Secret, SecretSource)>, ConfigError> {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            return Ok(Some((Secret(v), SecretSource::Env(var))));
        }
        if let Some(s) = inline.1 {
            return Ok(Some((s.clone(), SecretSource::Inline(inline.0))));
        }
        let Some(path) = file.1 else {
            return Ok(None);
        };
        let path = self.resolve_path(path);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| self.err(file.0, format!("cannot read {}: {e}", path.display())))?;
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(self.err(file.0, format!("{} is empty", path.display())));
        }
        Ok(Some((
            Secret(value.to_string()),
            SecretSource::File(file.0, path),
        )))
    }

    /// What `pubpresence run` needs. Names the first missing key among
    /// `server`, `secret`, `domain`.
    pub fn component(&self, env: Env<'_>) -> Result<ComponentSettings, ConfigError> {
        let secret = self.resolve_secret(env)?;
        let mut missing = Vec::new();
        if self.server.is_none() {
            missing.push("server");
        }
        if secret.is_none() {
            missing.push("secret");
        }
        if self.domain.is_none() {
            missing.push("domain");
        }
        if let Some(first) = missing.first() {
            let how = match *first {
                "server" => "missing: host:port of the server's component listener",
                "secret" => "missing: set secret, secret_file or env PUBPRESENCE_SECRET",
                _ => "missing: the server host whose users are tracked",
            };
            let also = if missing.len() > 1 {
                format!(" (also missing: {})", missing[1..].join(", "))
            } else {
                String::new()
            };
            return Err(self.err(*first, format!("{how}; `pubpresence run` needs it{also}")));
        }
        let with_file = |e: ConfigError| e.with_file(self.source.as_deref());
        let (secret, secret_source) = secret.ok_or_else(|| self.err("secret", "missing"))?;
        let domain = self.domain.as_deref().unwrap_or_default();
        Ok(ComponentSettings {
            jid: domain_jid("jid", &self.jid).map_err(with_file)?,
            servers: self.server.clone().unwrap_or_default(),
            secret,
            secret_source,
            domain: domain_jid("domain", domain).map_err(with_file)?,
            pubsub: domain_jid("pubsub", &self.pubsub).map_err(with_file)?,
            nodes: self.nodes.clone(),
            access: self.access_settings().map_err(with_file)?,
            audit_interval: self.audit_interval,
            probe_timeout: self.probe_timeout,
            iq_timeout: self.iq_timeout,
            instance: self.instance.clone(),
            privileged_as: self.privileged_as().map_err(with_file)?,
            privacy: self.privacy_settings().map_err(with_file)?,
            standby: self.standby_settings(env)?,
            metrics: self.metrics_listen().map_err(with_file)?,
        })
    }

    /// `privileged_as`, checked: a bare JID with a local part, at `domain`
    /// (the server keeps XEP-0356 permissions per virtual host, and only
    /// forwards privileged IQs sent on behalf of its own users).
    pub fn privileged_as(&self) -> Result<Option<BareJid>, ConfigError> {
        let Some(value) = &self.privileged_as else {
            return Ok(None);
        };
        let jid = bare_jid("privileged_as", value, true)?;
        if let Some(domain) = &self.domain {
            if jid.domain().as_str() != domain.as_str() {
                return Err(ConfigError::new(
                    "privileged_as",
                    format!(
                        "{value:?} is not at domain {domain:?}: the server forwards privileged \
                         requests only on behalf of its own users, e.g. \"pubpresence@{domain}\""
                    ),
                ));
            }
        }
        Ok(Some(jid))
    }

    /// `[metrics] listen`, checked; `Ok(None)` without the table.
    pub fn metrics_listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(m) = &self.metrics else {
            return Ok(None);
        };
        let addr = parse_socket_addr("metrics.listen", &m.listen, "127.0.0.1:9464")?;
        if addr.port() == 0 {
            return Err(ConfigError::new(
                "metrics.listen",
                format!("{:?}: port 0 is not a fixed port to scrape", m.listen),
            ));
        }
        Ok(Some(addr))
    }

    /// The standby password: env `PUBPRESENCE_STANDBY_PASSWORD`, else
    /// `[standby] password`, else `password_file`.
    pub fn resolve_standby_password(
        &self,
        env: Env<'_>,
    ) -> Result<Option<(Secret, SecretSource)>, ConfigError> {
        let sb = self.standby.as_ref();
        self.resolve(
            env,
            ENV_STANDBY_PASSWORD,
            ("standby.password", sb.and_then(|s| s.password.as_ref())),
            (
                "standby.password_file",
                sb.and_then(|s| s.password_file.as_deref()),
            ),
        )
    }

    /// `[standby]`, checked, with its password resolved; `Ok(None)` without
    /// the table.
    pub fn standby_settings(&self, env: Env<'_>) -> Result<Option<StandbySettings>, ConfigError> {
        let Some(sb) = &self.standby else {
            return Ok(None);
        };
        let with_file = |e: ConfigError| e.with_file(self.source.as_deref());
        sb.validate().map_err(with_file)?;
        let jid = bare_jid("standby.jid", &sb.jid, true).map_err(with_file)?;
        let Some((password, _)) = self.resolve_standby_password(env)? else {
            return Err(self.err(
                "standby.password",
                format!(
                    "missing: set standby.password, standby.password_file or env {ENV_STANDBY_PASSWORD}"
                ),
            ));
        };
        let server = match &sb.server {
            Some(s) => s.clone(),
            None => format!("{}:{DEFAULT_C2S_PORT}", jid.domain()),
        };
        Ok(Some(StandbySettings {
            jid,
            password,
            server,
            allow_plaintext: sb.allow_plaintext,
            takeover: sb.takeover,
        }))
    }

    /// `[access]`, checked.
    pub fn access_settings(&self) -> Result<AccessSettings, ConfigError> {
        let members = self
            .access
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| bare_jid(&format!("access.members[{i}]"), m, false))
            .collect::<Result<_, _>>()?;
        Ok(AccessSettings {
            model: self.access.model,
            members,
        })
    }

    /// `[privacy]`, checked.
    pub fn privacy_settings(&self) -> Result<PrivacySettings, ConfigError> {
        let hide = self
            .privacy
            .hide
            .iter()
            .enumerate()
            .map(|(i, h)| bare_jid(&format!("privacy.hide[{i}]"), h, false))
            .collect::<Result<_, _>>()?;
        Ok(PrivacySettings {
            ip: self.privacy.ip,
            hide,
        })
    }

    /// The watch password: env `PUBPRESENCE_WATCH_PASSWORD`, else
    /// `[watch] password`, else `password_file`.
    pub fn resolve_watch_password(
        &self,
        env: Env<'_>,
    ) -> Result<Option<(Secret, SecretSource)>, ConfigError> {
        let w = self.watch.as_ref();
        self.resolve(
            env,
            ENV_WATCH_PASSWORD,
            ("watch.password", w.and_then(|w| w.password.as_ref())),
            (
                "watch.password_file",
                w.and_then(|w| w.password_file.as_deref()),
            ),
        )
    }

    /// The web feed token: env `PUBPRESENCE_HTTP_TOKEN`, else
    /// `[watch] http_token`, else `http_token_file`.
    pub fn resolve_http_token(
        &self,
        env: Env<'_>,
    ) -> Result<Option<(Secret, SecretSource)>, ConfigError> {
        let w = self.watch.as_ref();
        self.resolve(
            env,
            ENV_HTTP_TOKEN,
            ("watch.http_token", w.and_then(|w| w.http_token.as_ref())),
            (
                "watch.http_token_file",
                w.and_then(|w| w.http_token_file.as_deref()),
            ),
        )
    }

    /// What `pubpresence watch` needs: top-level `jid`, `pubsub`, `[nodes]`
    /// and `[watch]` with `jid` and a password. Never needs the secret.
    pub fn watch(&self, env: Env<'_>) -> Result<WatchSettings, ConfigError> {
        let with_file = |e: ConfigError| e.with_file(self.source.as_deref());
        let Some(w) = &self.watch else {
            return Err(self.err(
                "watch",
                "missing: `pubpresence watch` needs a [watch] table with jid and password",
            ));
        };
        let jid = bare_jid("watch.jid", &w.jid, true).map_err(with_file)?;
        let Some((password, _)) = self.resolve_watch_password(env)? else {
            return Err(self.err(
                "watch.password",
                "missing: set watch.password, watch.password_file or env PUBPRESENCE_WATCH_PASSWORD",
            ));
        };
        let server = match &w.server {
            Some(s) => {
                host_port("watch.server", s).map_err(with_file)?;
                s.clone()
            }
            None => format!("{}:{DEFAULT_C2S_PORT}", jid.domain()),
        };
        let http_token = self.resolve_http_token(env)?.map(|(t, _)| t);
        let http = match &w.http {
            Some(a) => {
                let addr = parse_http_addr("watch.http", a).map_err(with_file)?;
                check_http_token(addr, http_token.as_ref()).map_err(with_file)?;
                Some(addr)
            }
            None => None,
        };
        Ok(WatchSettings {
            jid,
            password,
            server,
            allow_plaintext: w.allow_plaintext,
            component: domain_jid("jid", &self.jid).map_err(with_file)?,
            pubsub: domain_jid("pubsub", &self.pubsub).map_err(with_file)?,
            nodes: self.nodes.clone(),
            http,
            http_token,
            probe_timeout: self.probe_timeout,
            iq_timeout: self.iq_timeout,
        })
    }

    /// Whether the file is usable for what it is meant for: a file with a
    /// `[watch]` table and none of `server`/`secret`/`domain` is a watch-only
    /// file and must satisfy [`Config::watch`]; a file without `[watch]` must
    /// satisfy [`Config::component`]; a file with both must satisfy both.
    /// This is the exit status of `pubpresence check-config`.
    pub fn check(&self, env: Env<'_>) -> Result<(), ConfigError> {
        if !self.watch_only() {
            self.component(env)?;
        }
        if self.watch.is_some() {
            self.watch(env)?;
        }
        Ok(())
    }

    fn watch_only(&self) -> bool {
        self.watch.is_some()
            && self.server.is_none()
            && self.secret.is_none()
            && self.secret_file.is_none()
            && self.domain.is_none()
    }

    /// The effective settings for `pubpresence check-config`: one setting per
    /// line, secrets masked (with where they came from), then `warning:` lines.
    /// Whether `jid` is in `access.members` (an invalid JID is not judged
    /// here: validation reports it).
    fn is_member(&self, jid: &str) -> bool {
        match BareJid::new(jid) {
            Ok(j) => self
                .access
                .members
                .iter()
                .any(|m| BareJid::new(m).is_ok_and(|m| m == j)),
            Err(_) => true,
        }
    }

    pub fn describe(&self, env: Env<'_>) -> String {
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        let q = |s: &str| format!("{s:?}");
        let list = |v: &[String]| {
            format!(
                "[{}]",
                v.iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let dur = |d: Duration| humantime::format_duration(d).to_string();

        if let Some(src) = &self.source {
            out.push(format!("# effective settings of {}", src.display()));
        }
        out.push(format!("jid = {}", q(&self.jid)));
        out.push(match &self.server {
            Some(s) => format!("server = {}", list(s)),
            None => "server = (not set)".into(),
        });
        out.push(describe_secret(
            "secret",
            self.resolve_secret(env),
            &mut warnings,
        ));
        out.push(match &self.domain {
            Some(d) => format!("domain = {}", q(d)),
            None => "domain = (not set)".into(),
        });
        out.push(format!("pubsub = {}", q(&self.pubsub)));
        out.push(format!("nodes.live = {}", q(&self.nodes.live)));
        out.push(format!("nodes.active = {}", q(&self.nodes.active)));
        out.push(format!("nodes.status = {}", q(&self.nodes.status)));
        out.push(format!("access.model = {}", self.access.model));
        out.push(format!("access.members = {}", list(&self.access.members)));
        out.push(format!(
            "audit_interval = {}{}",
            dur(self.audit_interval),
            if self.audit_interval.is_zero() {
                " (audit off)"
            } else {
                ""
            }
        ));
        out.push(format!("probe_timeout = {}", dur(self.probe_timeout)));
        out.push(format!("iq_timeout = {}", dur(self.iq_timeout)));
        out.push(match &self.instance {
            Some(i) => format!("instance = {}", q(i)),
            None => "instance = (default: host name and process id)".into(),
        });
        if let Some(p) = &self.privileged_as {
            out.push(format!(
                "privileged_as = {} (requests as XEP-0356 privileged IQs when the server grants IQ permission)",
                q(p)
            ));
        }
        out.push(match &self.log {
            Some(l) => format!("log = {}", q(l)),
            None => "log = (default)".into(),
        });
        let ip_note = match self.privacy.ip {
            IpMode::Full => "addresses published as the server reports them",
            IpMode::Masked => "IPv4 cut to its /24, IPv6 to its /48",
            IpMode::None => "no address published",
        };
        out.push(format!("privacy.ip = {} ({ip_note})", self.privacy.ip));
        out.push(format!(
            "privacy.hide = {}{}",
            list(&self.privacy.hide),
            if self.privacy.hide.is_empty() {
                " (nobody hidden)"
            } else {
                " (never published)"
            }
        ));

        if let Some(w) = &self.watch {
            out.push(format!("watch.jid = {}", q(&w.jid)));
            out.push(describe_secret(
                "watch.password",
                self.resolve_watch_password(env),
                &mut warnings,
            ));
            out.push(describe_server("watch", &w.jid, w.server.as_deref()));
            out.push(format!("watch.allow_plaintext = {}", w.allow_plaintext));
            out.push(match &w.http {
                Some(h) => format!("watch.http = {}", q(h)),
                None => "watch.http = (off)".into(),
            });
            out.push(describe_secret(
                "watch.http_token",
                self.resolve_http_token(env),
                &mut warnings,
            ));
            if w.allow_plaintext {
                warnings.push(plaintext_warning("watch"));
            }
            if self.access.model == AccessModel::Whitelist
                && !self.is_member(&w.jid)
                && !self.access.members.is_empty()
            {
                warnings.push(format!(
                    "watch.jid {:?} is not in access.members: it cannot read the nodes",
                    w.jid
                ));
            }
        }

        out.push(match self.metrics_listen() {
            Ok(Some(addr)) => {
                if !addr.ip().is_loopback() {
                    warnings.push(format!(
                        "metrics.listen = {addr} is not a loopback address: the endpoint has no \
                         authentication, so anyone who reaches that address reads the metrics \
                         (restrict it with a firewall, or listen on 127.0.0.1)"
                    ));
                }
                format!("metrics.listen = \"{addr}\" (GET http://{addr}/metrics)")
            }
            Ok(None) => "metrics = (off)".into(),
            Err(e) => {
                warnings.push(e.render_short());
                "metrics.listen = (invalid)".into()
            }
        });

        if let Some(sb) = &self.standby {
            out.push(format!("standby.jid = {}", q(&sb.jid)));
            out.push(describe_secret(
                "standby.password",
                self.resolve_standby_password(env),
                &mut warnings,
            ));
            out.push(describe_server("standby", &sb.jid, sb.server.as_deref()));
            out.push(format!("standby.allow_plaintext = {}", sb.allow_plaintext));
            out.push(format!("standby.takeover = {}", dur(sb.takeover)));
            if sb.allow_plaintext {
                warnings.push(plaintext_warning("standby"));
            }
            if self.access.model == AccessModel::Whitelist && !self.is_member(&sb.jid) {
                warnings.push(format!(
                    "standby.jid {:?} is not in access.members: it cannot read the status node",
                    sb.jid
                ));
            }
        }

        // Warnings about the settings themselves ([access] only matters to `run`).
        let access_model = if self.watch_only() {
            None
        } else {
            Some(self.access.model)
        };
        match access_model {
            None => {}
            Some(AccessModel::Whitelist) if self.access.members.is_empty() => warnings.push(
                "access.model = whitelist with no members: nobody but the component can read the nodes"
                    .into(),
            ),
            Some(AccessModel::Whitelist) => {}
            Some(model) => {
                if model == AccessModel::Open {
                    warnings.push(
                        "access.model = open: anyone who can reach the pubsub service reads every user's presence and IP address"
                            .into(),
                    );
                }
                if !self.access.members.is_empty() {
                    warnings.push(format!(
                        "access.members is ignored with access.model = {model} (it applies to whitelist only)"
                    ));
                }
            }
        }
        if self.audit_interval.is_zero() {
            warnings.push(
                "audit_interval = 0s: the audit is off; a lost presence stays on active until the next restart"
                    .into(),
            );
        }
        if self.probe_timeout > Duration::from_secs(10) {
            warnings.push(format!(
                "probe_timeout = {}: start-up waits this long for users who never answer a probe",
                dur(self.probe_timeout)
            ));
        }
        // Whether the file does what it is for (see `check`); a problem already
        // reported above is not repeated.
        let mut unusable = Vec::new();
        if !self.watch_only() {
            if let Err(e) = self.component(env) {
                unusable.push(("run", e.render_short()));
            }
        }
        if self.watch.is_some() {
            if let Err(e) = self.watch(env) {
                unusable.push(("watch", e.render_short()));
            }
        }
        for (command, problem) in unusable {
            if !warnings.contains(&problem) {
                warnings.push(format!("not usable for `pubpresence {command}`: {problem}"));
            }
        }
        warnings.dedup();
        out.extend(warnings.into_iter().map(|w| format!("warning: {w}")));
        let mut s = out.join("\n");
        s.push('\n');
        s
    }
}

impl ConfigError {
    /// Key and message only (no file, no line).
    fn render_short(&self) -> String {
        match &self.key {
            Some(k) => format!("{k}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

/// `TABLE.server = ...` as check-config prints it, with the default spelled
/// out when it is not set.
fn describe_server(table: &str, jid: &str, server: Option<&str>) -> String {
    match server {
        Some(s) => format!("{table}.server = {s:?}"),
        None => match BareJid::new(jid) {
            Ok(j) => format!(
                "{table}.server = \"{}:{DEFAULT_C2S_PORT}\" (default: the jid's domain)",
                j.domain()
            ),
            Err(_) => format!("{table}.server = (default: the jid's domain)"),
        },
    }
}

fn plaintext_warning(table: &str) -> String {
    format!("{table}.allow_plaintext = true: the password may cross the network unencrypted")
}

fn describe_secret(
    key: &str,
    resolved: Result<Option<(Secret, SecretSource)>, ConfigError>,
    warnings: &mut Vec<String>,
) -> String {
    match resolved {
        Ok(Some((secret, source))) => format!("{key} = {secret} ({source})"),
        Ok(None) => format!("{key} = (not set)"),
        Err(e) => {
            warnings.push(e.render_short());
            format!("{key} = (unreadable)")
        }
    }
}

impl Nodes {
    fn validate(&self) -> Result<(), ConfigError> {
        let all = [
            ("nodes.live", &self.live),
            ("nodes.active", &self.active),
            ("nodes.status", &self.status),
        ];
        for (key, name) in all {
            if name.trim().is_empty() {
                return Err(ConfigError::new(key, "node name is empty"));
            }
            if name.trim() != name.as_str() {
                return Err(ConfigError::new(
                    key,
                    format!("{name:?} starts or ends with white space"),
                ));
            }
        }
        for (i, (key, name)) in all.iter().enumerate() {
            if let Some((other, _)) = all[..i].iter().find(|(_, n)| n == name) {
                return Err(ConfigError::new(
                    *key,
                    format!("{name:?} is also {other}; the three nodes must differ"),
                ));
            }
        }
        Ok(())
    }
}

/// The keys `[watch]` and `[standby]` share: an ordinary account
/// (`jid`, `password` or `password_file`, optional c2s `server`).
fn validate_account(
    table: &str,
    jid: &str,
    password: Option<&Secret>,
    password_file: Option<&PathBuf>,
    server: Option<&String>,
) -> Result<(), ConfigError> {
    bare_jid(&format!("{table}.jid"), jid, true)?;
    if let Some(p) = password {
        if p.expose().is_empty() {
            return Err(ConfigError::new(format!("{table}.password"), "is empty"));
        }
        if password_file.is_some() {
            return Err(ConfigError::new(
                format!("{table}.password_file"),
                "password and password_file are both set; keep one",
            ));
        }
    }
    if let Some(s) = server {
        host_port(&format!("{table}.server"), s)?;
    }
    Ok(())
}

impl StandbyConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        validate_account(
            "standby",
            &self.jid,
            self.password.as_ref(),
            self.password_file.as_ref(),
            self.server.as_ref(),
        )?;
        if self.takeover.is_zero() {
            return Err(ConfigError::new("standby.takeover", "must be more than 0s"));
        }
        Ok(())
    }
}

impl WatchConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        validate_account(
            "watch",
            &self.jid,
            self.password.as_ref(),
            self.password_file.as_ref(),
            self.server.as_ref(),
        )?;
        if let Some(h) = &self.http {
            parse_http_addr("watch.http", h)?;
        }
        if let Some(t) = &self.http_token {
            if t.expose().is_empty() {
                return Err(ConfigError::new("watch.http_token", "is empty"));
            }
            if self.http_token_file.is_some() {
                return Err(ConfigError::new(
                    "watch.http_token_file",
                    "http_token and http_token_file are both set; keep one",
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Value checks

/// A JID without node and resource, such as `pubsub.example.org`.
fn domain_jid(key: &str, value: &str) -> Result<BareJid, ConfigError> {
    let jid = BareJid::new(value).map_err(|e| {
        ConfigError::new(
            key,
            format!("{value:?} is not a domain JID such as \"pubsub.example.org\" ({e})"),
        )
    })?;
    if jid.node().is_some() {
        return Err(ConfigError::new(
            key,
            format!("{value:?} is not a domain JID such as \"pubsub.example.org\" (no user@ part)"),
        ));
    }
    Ok(jid)
}

/// A bare JID (`user@domain`, or with `need_node == false` also `domain`).
fn bare_jid(key: &str, value: &str, need_node: bool) -> Result<BareJid, ConfigError> {
    let jid = BareJid::new(value).map_err(|e| {
        ConfigError::new(
            key,
            format!("{value:?} is not a bare JID such as \"user@example.org\" ({e})"),
        )
    })?;
    if need_node && jid.node().is_none() {
        return Err(ConfigError::new(
            key,
            format!("{value:?} is not a user account such as \"user@example.org\""),
        ));
    }
    Ok(jid)
}

/// `host:port`, with a numeric port; an IPv6 host goes in brackets.
fn host_port(key: &str, value: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| {
        ConfigError::new(
            key,
            format!("{value:?} is not host:port such as \"127.0.0.1:5347\" ({why})"),
        )
    };
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    match port.parse::<u16>() {
        Ok(0) => return Err(bad("port 0")),
        Ok(_) => {}
        Err(_) => return Err(bad("the port is not a number from 1 to 65535")),
    }
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ok = inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        if !ok {
            return Err(bad("not an IPv6 address in brackets"));
        }
    } else if host.contains(':') {
        return Err(bad(
            "an IPv6 address goes in brackets, as in \"[::1]:5347\"",
        ));
    } else if host
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '[' | ']'))
    {
        return Err(bad("not a host name or address"));
    }
    Ok(())
}

/// A socket address for the web feed (`127.0.0.1:8080`, `[::1]:8080`,
/// `localhost:8080`).
fn parse_http_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    parse_socket_addr(key, value, "127.0.0.1:8080")
}

/// A socket address to listen on (`127.0.0.1:PORT`, `[::1]:PORT`,
/// `localhost:PORT`); `example` is shown in the error.
fn parse_socket_addr(key: &str, value: &str, example: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = value.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = value.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        }
    }
    Err(ConfigError::new(
        key,
        format!("{value:?} is not an address:port such as \"{example}\""),
    ))
}

fn check_http_token(addr: SocketAddr, token: Option<&Secret>) -> Result<(), ConfigError> {
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(ConfigError::new(
            "watch.http_token",
            format!(
                "required: watch.http = {addr} is not a loopback address; set watch.http_token, \
                 watch.http_token_file or env {ENV_HTTP_TOKEN}, or serve on 127.0.0.1"
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Parse errors without the source text

fn parse_toml(s: &str) -> Result<Config, ConfigError> {
    let first = match toml::from_str::<Config>(s) {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    let line = first.span().map(|sp| line_of(s, sp.start));
    let table = match s.parse::<toml::Table>() {
        Ok(t) => t,
        Err(e) => {
            // A syntax error: toml's message names the problem (never a value);
            // the key is read from the offending line.
            let line = e.span().map(|sp| line_of(s, sp.start)).or(line);
            let key = line.and_then(|l| key_at_line(s, l));
            let err = ConfigError {
                file: None,
                line,
                key,
                message: scrub(s, None, &one_line(e.message())),
            };
            return Err(err);
        }
    };
    // A value or key error: deserialize again from the table, which gives the
    // key path (toml prints it as a last line "in `a.b`" when it has no span).
    let second = match Config::deserialize(toml::Value::Table(table.clone())) {
        Ok(c) => return Ok(c), // cannot differ; take it anyway
        Err(e) => e,
    };
    let shown = second.to_string();
    let path = shown
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("in `")?.strip_suffix('`'))
        .map(str::to_string);
    let message = one_line(second.message());
    let join = |name: &str| match &path {
        Some(p) => format!("{p}.{name}"),
        None => name.to_string(),
    };
    let (key, message, line) =
        if let Some((name, rest)) = backticked_after(&message, "unknown field `") {
            let rest = rest.trim_start_matches([',', ' ']);
            let msg = if rest.is_empty() {
                "unknown key".to_string()
            } else {
                format!("unknown key ({rest})")
            };
            (Some(join(name)), msg, line)
        } else if let Some((name, _)) = backticked_after(&message, "missing field `") {
            (
                Some(join(name)),
                "required key is missing".to_string(),
                None,
            )
        } else {
            let sensitive = path
                .as_deref()
                .and_then(|p| p.rsplit('.').next())
                .is_some_and(|last| SENSITIVE_KEYS.contains(&last));
            let msg = if sensitive {
                if message.starts_with("invalid type") {
                    "must be a string (the value is not shown)".to_string()
                } else {
                    "invalid value (the value is not shown)".to_string()
                }
            } else {
                message
            };
            (path, msg, line)
        };
    Err(ConfigError {
        file: None,
        line,
        key,
        message: scrub(s, Some(&table), &message),
    })
}

/// For `msg` starting with `prefix` (which ends in a backtick): the name up to
/// the closing backtick, and the rest of the message.
fn backticked_after<'a>(msg: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    msg.strip_prefix(prefix)?.split_once('`')
}

/// 1-based line of byte offset `at`.
fn line_of(s: &str, at: usize) -> usize {
    let at = at.min(s.len());
    s.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1
}

/// The dotted key written on each line (1-based line numbers), prefixed with
/// its table; a table header line gives the table's name.
fn keyed_lines(s: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut table: Option<String> = None;
    for (i, raw) in s.lines().enumerate() {
        let t = raw.trim();
        if let Some(h) = header_name(t) {
            out.push((i + 1, h.clone()));
            table = Some(h);
        } else if let Some(k) = t.split_once('=').and_then(|(k, _)| clean_key(k)) {
            let k = match &table {
                Some(tb) => format!("{tb}.{k}"),
                None => k,
            };
            out.push((i + 1, k));
        }
    }
    out
}

/// The dotted key written on (1-based) `line`.
fn key_at_line(s: &str, line: usize) -> Option<String> {
    keyed_lines(s)
        .into_iter()
        .find_map(|(l, k)| (l == line).then_some(k))
}

/// The (1-based) line where `key` is written (`server[1]` looks for `server`).
fn line_of_key(s: &str, key: &str) -> Option<usize> {
    let key = key.split('[').next().unwrap_or(key);
    keyed_lines(s)
        .into_iter()
        .find_map(|(l, k)| (k == key).then_some(l))
}

fn header_name(t: &str) -> Option<String> {
    let inner = t.strip_prefix("[[").or_else(|| t.strip_prefix('['))?;
    let (name, _) = inner.split_once(']')?;
    clean_key(name)
}

fn clean_key(k: &str) -> Option<String> {
    let parts: Vec<String> = k
        .split('.')
        .map(|p| p.trim().trim_matches(['"', '\'']).to_string())
        .collect();
    let ok = parts.iter().all(|p| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    ok.then(|| parts.join("."))
}

/// Removes from `msg` anything that looks like a value written for a secret key.
fn scrub(src: &str, table: Option<&toml::Table>, msg: &str) -> String {
    let mut candidates: Vec<String> = Vec::new();
    for line in src.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let Some(last) = clean_key(k).and_then(|k| k.rsplit('.').next().map(str::to_string)) else {
            continue;
        };
        if !SENSITIVE_KEYS.contains(&last.as_str()) {
            continue;
        }
        let v = v.trim();
        candidates.push(v.to_string());
        let unquoted = match v.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let rest = v.trim_start_matches(q);
                rest.split(q).next().unwrap_or(rest)
            }
            _ => v
                .split(|c: char| c.is_whitespace() || c == '#')
                .next()
                .unwrap_or(v),
        };
        candidates.push(unquoted.to_string());
    }
    if let Some(t) = table {
        let mut push = |v: Option<&toml::Value>| match v {
            Some(toml::Value::String(s)) => candidates.push(s.clone()),
            Some(other) => candidates.push(other.to_string()),
            None => {}
        };
        push(t.get("secret"));
        if let Some(toml::Value::Table(w)) = t.get("watch") {
            push(w.get("password"));
            push(w.get("http_token"));
        }
        if let Some(toml::Value::Table(sb)) = t.get("standby") {
            push(sb.get("password"));
        }
    }
    candidates.retain(|c| c.len() >= 3);
    candidates.sort_by_key(|c| std::cmp::Reverse(c.len()));
    let mut out = msg.to_string();
    for c in &candidates {
        if out.contains(c.as_str()) {
            out = out.replace(c.as_str(), "***");
        }
    }
    out
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const MINIMAL: &str = r#"
jid    = "pubpresence.example.org"
server = "127.0.0.1:5347"
secret = "s3cret"
domain = "example.org"
pubsub = "pubsub.example.org"
"#;

    const WATCH_ONLY: &str = r#"
jid    = "pubpresence.example.org"
pubsub = "pubsub.example.org"

[watch]
jid      = "dashboard@example.org"
password = "pw-hunter2"
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(s: &str) -> Config {
        match Config::from_toml_str(s, None) {
            Ok(c) => c,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn parse_err(s: &str) -> ConfigError {
        match Config::from_toml_str(s, None) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn minimal_file_and_defaults() {
        let c = parse(MINIMAL);
        let s = c.component(&no_env).expect("component");
        assert_eq!(s.jid.as_str(), "pubpresence.example.org");
        assert_eq!(s.servers, vec!["127.0.0.1:5347".to_string()]);
        assert_eq!(s.secret.expose(), "s3cret");
        assert_eq!(s.secret_source, SecretSource::Inline("secret"));
        assert_eq!(s.domain.as_str(), "example.org");
        assert_eq!(s.pubsub.as_str(), "pubsub.example.org");
        assert_eq!(s.nodes, Nodes::default());
        assert_eq!(s.nodes.live, "presence/live");
        assert_eq!(s.nodes.active, "presence/active");
        assert_eq!(s.nodes.status, "presence/status");
        assert_eq!(s.access.model, AccessModel::Whitelist);
        assert!(s.access.members.is_empty());
        assert_eq!(s.audit_interval, Duration::from_secs(300));
        assert_eq!(s.probe_timeout, Duration::from_secs(3));
        assert_eq!(s.iq_timeout, Duration::from_secs(10));
        assert_eq!(s.instance, None);
        assert_eq!(s.privacy.ip, IpMode::Full);
        assert!(s.privacy.hide.is_empty());
        assert_eq!(c.log, None);
        assert!(c.watch.is_none());
        assert!(c.check(&no_env).is_ok());
    }

    #[test]
    fn full_file() {
        let c = parse(
            r#"
jid    = "pubpresence.example.org"
server = ["10.0.0.1:5347", "[::1]:5347", "xmpp.example.org:5347"]
secret = "s3cret"
domain = "example.org"
pubsub = "pubsub.example.org"
audit_interval = "0s"
probe_timeout = "500ms"
iq_timeout = "1m"
instance = "a"
log = "pubpresence=debug,info"

[nodes]
live = "l"
active = "a"
status = "s"

[access]
model = "presence"
members = ["dashboard@example.org", "other.example.org"]

[privacy]
ip = "masked"
hide = ["CEO@example.org"]

[watch]
jid = "dashboard@example.org"
password_file = "/nonexistent"
server = "127.0.0.1:5222"
allow_plaintext = true
http = "0.0.0.0:8080"
http_token = "tok"
"#,
        );
        let s = c.component(&no_env).expect("component");
        assert_eq!(s.servers.len(), 3);
        assert_eq!(s.audit_interval, Duration::ZERO);
        assert_eq!(s.probe_timeout, Duration::from_millis(500));
        assert_eq!(s.iq_timeout, Duration::from_secs(60));
        assert_eq!(s.instance.as_deref(), Some("a"));
        assert_eq!(s.nodes.active, "a");
        assert_eq!(s.access.model, AccessModel::Presence);
        assert_eq!(s.access.members.len(), 2);
        assert_eq!(s.privacy.ip, IpMode::Masked);
        let ceo = BareJid::new("ceo@example.org").expect("jid");
        assert!(s.privacy.is_hidden(&ceo));
        assert_eq!(c.log.as_deref(), Some("pubpresence=debug,info"));
        // password_file unreadable, but env wins (the file is never read)
        let env = |k: &str| (k == ENV_WATCH_PASSWORD).then(|| "envpw".to_string());
        let w = c.watch(&env).expect("watch");
        assert_eq!(w.password.expose(), "envpw");
        assert_eq!(w.server, "127.0.0.1:5222");
        assert!(w.allow_plaintext);
        assert_eq!(w.http, Some("0.0.0.0:8080".parse().expect("addr")));
        assert_eq!(w.http_token.as_ref().map(Secret::expose), Some("tok"));
        let e = c.watch(&no_env).expect_err("file missing");
        assert_eq!(e.key(), Some("watch.password_file"));
    }

    #[test]
    fn unknown_key_refused_naming_it() {
        let e = parse_err(&format!("{MINIMAL}secrt = \"x\"\n"));
        assert_eq!(e.key(), Some("secrt"));
        assert!(e.to_string().contains("secrt"), "{e}");
        assert!(e.to_string().contains("unknown key"), "{e}");
        assert_eq!(e.line(), Some(7));

        let e = parse_err(&format!("{WATCH_ONLY}colour = \"blue\"\n"));
        assert_eq!(e.key(), Some("watch.colour"));
        let e = parse_err(&format!("{MINIMAL}[nodes]\nlive = \"x\"\nextra = \"y\"\n"));
        assert_eq!(e.key(), Some("nodes.extra"));
        let e = parse_err(&format!("{MINIMAL}[standbye]\njid = \"x@y\"\n"));
        assert_eq!(e.key(), Some("standbye"));
        let e = parse_err(&format!("{MINIMAL}[privacy]\nip = \"blurred\"\n"));
        assert_eq!(e.key(), Some("privacy.ip"));
        assert!(e.to_string().contains("blurred"), "{e}");
        let e = parse_err(&format!("{MINIMAL}[access]\nmodel = \"everyone\"\n"));
        assert_eq!(e.key(), Some("access.model"));
    }

    #[test]
    fn privileged_as_is_a_user_of_domain() {
        let cfg = Config::from_toml_str(
            &format!("{MINIMAL}privileged_as = \"pubpresence@example.org\"\n"),
            None,
        )
        .expect("valid");
        let jid = cfg.privileged_as().expect("checked").expect("set");
        assert_eq!(jid.to_string(), "pubpresence@example.org");
        let e = parse_err(&format!(
            "{MINIMAL}privileged_as = \"pubpresence@other.example.org\"\n"
        ));
        assert!(
            e.to_string()
                .contains("is not at domain \"example.org\": the server forwards privileged"),
            "{e}"
        );
    }

    #[test]
    fn missing_required_key_named() {
        let e = parse_err("jid = \"pubpresence.example.org\"\n");
        assert_eq!(e.key(), Some("pubsub"));
        assert!(e.to_string().starts_with("pubsub: "), "{e}");
        let e = parse_err("pubsub = \"pubsub.example.org\"\n");
        assert_eq!(e.key(), Some("jid"));
        let e = parse_err(
            "jid = \"c.example.org\"\npubsub = \"p.example.org\"\n[watch]\npassword = \"x\"\n",
        );
        assert_eq!(e.key(), Some("watch.jid"));
    }

    #[test]
    fn bad_values_named() {
        let cases = [
            ("audit_interval = \"5 parsecs\"", "audit_interval"),
            ("probe_timeout = 3", "probe_timeout"),
            ("iq_timeout = \"0s\"", "iq_timeout"),
            ("log = \"===\"", "log"),
            ("instance = \"\"", "instance"),
            ("privileged_as = \"example.org\"", "privileged_as"),
            (
                "privileged_as = \"pubpresence@other.example.org\"",
                "privileged_as",
            ),
        ];
        for (line, key) in cases {
            let e = parse_err(&format!("{MINIMAL}{line}\n"));
            assert_eq!(e.key(), Some(key), "{line}: {e}");
            assert!(e.to_string().contains(key), "{e}");
        }
        let e = parse_err(&format!("{MINIMAL}audit_interval = \"5 parsecs\"\n"));
        assert!(e.to_string().contains("invalid duration"), "{e}");
        assert_eq!(e.line(), Some(7));

        let base = "secret = \"s\"\ndomain = \"example.org\"\n";
        let cases = [
            ("jid = \"user@example.org\"\npubsub = \"p.example.org\"\nserver = \"h:1\"", "jid"),
            ("jid = \"c.example.org/res\"\npubsub = \"p.example.org\"\nserver = \"h:1\"", "jid"),
            ("jid = \"c.example.org\"\npubsub = \"a@p.example.org\"\nserver = \"h:1\"", "pubsub"),
            ("jid = \"c.example.org\"\npubsub = \"p.example.org\"\nserver = \"h\"", "server"),
            ("jid = \"c.example.org\"\npubsub = \"p.example.org\"\nserver = \"h:port\"", "server"),
            ("jid = \"c.example.org\"\npubsub = \"p.example.org\"\nserver = \"::1:5347\"", "server"),
            ("jid = \"c.example.org\"\npubsub = \"p.example.org\"\nserver = []", "server"),
            ("jid = \"c.example.org\"\npubsub = \"p.example.org\"\nserver = 5347", "server"),
            ("jid = \"c.example.org\"\npubsub = \"p.example.org\"\nserver = [\"h:1\", \"h\"]", "server[1]"),
            ("jid = \"c.example.org\"\npubsub = \"p.example.org\"\n[nodes]\nlive = \"\"", "nodes.live"),
            ("jid = \"c.example.org\"\npubsub = \"p.example.org\"\n[nodes]\nlive = \"presence/active\"", "nodes.active"),
            ("jid = \"c.example.org\"\npubsub = \"p.example.org\"\n[access]\nmembers = [\"a@b/c\"]", "access.members[0]"),
            ("jid = \"c.example.org\"\npubsub = \"p.example.org\"\n[privacy]\nhide = [\"@x\"]", "privacy.hide[0]"),
            ("jid = \"c.example.org\"\npubsub = \"p.example.org\"\n[watch]\njid = \"example.org\"", "watch.jid"),
            ("jid = \"c.example.org\"\npubsub = \"p.example.org\"\n[watch]\njid = \"a@example.org\"\nhttp = \"nowhere\"", "watch.http"),
            ("jid = \"c.example.org\"\npubsub = \"p.example.org\"\n[watch]\njid = \"a@example.org\"\nserver = \"x\"", "watch.server"),
            ("jid = \"c.example.org\"\npubsub = \"p.example.org\"\n[watch]\njid = \"a@example.org\"\npassword = \"a\"\npassword_file = \"b\"", "watch.password_file"),
        ];
        for (text, key) in cases {
            let e = parse_err(&format!("{base}{text}\n"));
            assert_eq!(e.key(), Some(key), "{text}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn checked_values_carry_their_line() {
        let e = parse_err(&format!(
            "{MINIMAL}[access]\nmembers = [\"ok@example.org\", \"a@b/c\"]\n"
        ));
        assert_eq!(e.key(), Some("access.members[1]"));
        assert_eq!(e.line(), Some(8));
        assert!(
            e.to_string().starts_with("line 8: access.members[1]: "),
            "{e}"
        );
        let e = parse_err(&MINIMAL.replace("127.0.0.1:5347", "127.0.0.1"));
        assert_eq!((e.key(), e.line()), (Some("server"), Some(3)));
    }

    #[test]
    fn secret_and_secret_file_both_set() {
        let e = parse_err(&format!("{MINIMAL}secret_file = \"/x\"\n"));
        assert_eq!(e.key(), Some("secret_file"));
        assert!(!e.to_string().contains("s3cret"));
    }

    #[test]
    fn server_as_list() {
        let c = parse(&MINIMAL.replace(
            "server = \"127.0.0.1:5347\"",
            "server = [\"10.0.0.1:5347\", \"10.0.0.2:5347\"]",
        ));
        let s = c.component(&no_env).expect("component");
        assert_eq!(s.servers, vec!["10.0.0.1:5347", "10.0.0.2:5347"]);
        assert!(c
            .describe(&no_env)
            .contains("server = [\"10.0.0.1:5347\", \"10.0.0.2:5347\"]"));
    }

    #[test]
    fn env_overrides_secret() {
        let c = parse(MINIMAL);
        let env = |k: &str| (k == ENV_SECRET).then(|| "from-env".to_string());
        let s = c.component(&env).expect("component");
        assert_eq!(s.secret.expose(), "from-env");
        assert_eq!(s.secret_source, SecretSource::Env(ENV_SECRET));
        assert!(c
            .describe(&env)
            .contains("secret = *** (from env PUBPRESENCE_SECRET)"));
        // empty env counts as unset
        let empty = |k: &str| (k == ENV_SECRET).then(String::new);
        assert_eq!(
            c.component(&empty).expect("component").secret.expose(),
            "s3cret"
        );
    }

    #[test]
    fn secret_file_read_relative_to_config_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = std::fs::File::create(dir.path().join("secret.txt")).expect("create");
        f.write_all(b"file-secret\n").expect("write");
        let cfg_path = dir.path().join("pubpresence.toml");
        std::fs::write(
            &cfg_path,
            MINIMAL.replace("secret = \"s3cret\"", "secret_file = \"secret.txt\""),
        )
        .expect("write config");
        let c = Config::load(&cfg_path).expect("load");
        assert_eq!(c.source(), Some(cfg_path.as_path()));
        let s = c.component(&no_env).expect("component");
        assert_eq!(s.secret.expose(), "file-secret");
        assert!(matches!(
            s.secret_source,
            SecretSource::File("secret_file", _)
        ));
        let d = c.describe(&no_env);
        assert!(d.contains("secret = *** (from secret_file "), "{d}");
        assert!(!d.contains("file-secret"), "{d}");

        // a missing file names the key and the file, never a value
        std::fs::remove_file(dir.path().join("secret.txt")).expect("rm");
        let e = c.component(&no_env).expect_err("missing file");
        assert_eq!(e.key(), Some("secret_file"));
        assert!(
            e.to_string().starts_with(&cfg_path.display().to_string()),
            "{e}"
        );
        // env still wins without reading the file
        let env = |k: &str| (k == ENV_SECRET).then(|| "e".to_string());
        assert!(c.component(&env).is_ok());

        // empty file
        std::fs::write(dir.path().join("secret.txt"), "\n").expect("write");
        let e = c.component(&no_env).expect_err("empty file");
        assert_eq!(e.key(), Some("secret_file"));
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, format!("{MINIMAL}bogus = 1\n")).expect("write");
        let e = Config::load(&p).expect_err("bad");
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("{}:7: bogus: ", p.display())),
            "{shown}"
        );
        let e = Config::load(&dir.path().join("nope.toml")).expect_err("missing");
        assert!(e.to_string().contains("nope.toml"), "{e}");
    }

    #[test]
    fn secret_never_in_debug_describe_or_errors() {
        let c = parse(&format!(
            "{MINIMAL}[watch]\njid = \"d@example.org\"\npassword = \"pw-hunter2\"\nhttp = \"127.0.0.1:1\"\nhttp_token = \"tok-hunter2\"\n"
        ));
        let s = c.component(&no_env).expect("component");
        let w = c.watch(&no_env).expect("watch");
        for shown in [
            format!("{c:?}"),
            format!("{s:?}"),
            format!("{w:?}"),
            format!("{}", s.secret),
            c.describe(&no_env),
        ] {
            for secret in ["s3cret", "pw-hunter2", "tok-hunter2"] {
                assert!(!shown.contains(secret), "{secret} leaked in {shown}");
            }
        }
        let d = c.describe(&no_env);
        assert!(d.contains("secret = ***"), "{d}");
        assert!(
            d.contains("watch.password = *** (from watch.password)"),
            "{d}"
        );
        assert!(
            d.contains("watch.http_token = *** (from watch.http_token)"),
            "{d}"
        );
        assert!(Secret::new("abc").matches("abc"));
        assert!(!Secret::new("abc").matches("abd"));
        assert!(!Secret::new("abc").matches("ab"));
    }

    #[test]
    fn malformed_secret_lines_do_not_leak() {
        let head = "jid = \"c.example.org\"\npubsub = \"p.example.org\"\n";
        let bad_lines = [
            "secret = \"hunter2",
            "secret = \"hunter2\" trailing",
            "secret = hunter2",
            "secret = 'hunter2' 'again'",
            "secret = \"\"\"hunter2",
            "secret = [\"hunter2\"]",
            "secret = { value = \"hunter2\" }",
            "\"hunter2\"",
            "hunter2 hunter2",
            "secret = \"hunter2\"\nsecret = \"hunter2\"",
            "[watch]\njid = \"a@b\"\npassword = \"hunter2",
            "[watch]\njid = \"a@b\"\npassword = [\"hunter2\"]",
            "[watch]\njid = \"a@b\"\nhttp_token = { t = \"hunter2\" }",
        ];
        for bad in bad_lines {
            let e = parse_err(&format!("{head}{bad}\n"));
            let shown = e.to_string();
            assert!(
                !shown.contains("hunter2"),
                "leaked in {shown:?} for {bad:?}"
            );
            assert!(!shown.contains('\n'), "{shown:?}");
            assert!(e.line().is_some() || e.key().is_some(), "{shown}");
        }
        // integers used as a secret are not echoed either
        let e = parse_err(&format!("{head}secret = 98765432\n"));
        assert!(!e.to_string().contains("98765432"), "{e}");
        assert_eq!(e.key(), Some("secret"));
        let e = parse_err(&format!(
            "{head}[watch]\njid = \"a@b\"\npassword = 98765432\n"
        ));
        assert!(!e.to_string().contains("98765432"), "{e}");
        assert_eq!(e.key(), Some("watch.password"));
        // a syntax error names the key on its line
        let e = parse_err(&format!("{head}secret = \"hunter2\n"));
        assert_eq!(e.key(), Some("secret"));
        assert_eq!(e.line(), Some(3));
    }

    #[test]
    fn watch_only_file() {
        let c = parse(WATCH_ONLY);
        let w = c.watch(&no_env).expect("watch");
        assert_eq!(w.jid.as_str(), "dashboard@example.org");
        assert_eq!(w.password.expose(), "pw-hunter2");
        assert_eq!(w.server, "example.org:5222");
        assert!(!w.allow_plaintext);
        assert_eq!(w.component.as_str(), "pubpresence.example.org");
        assert_eq!(w.pubsub.as_str(), "pubsub.example.org");
        assert_eq!(w.nodes, Nodes::default());
        assert_eq!(w.http, None);
        assert!(c.check(&no_env).is_ok());

        let e = c.component(&no_env).expect_err("no server");
        assert_eq!(e.key(), Some("server"));
        assert!(
            e.to_string().contains("also missing: secret, domain"),
            "{e}"
        );
        let with_server = parse(&format!("server = \"h:1\"\n{WATCH_ONLY}"));
        assert_eq!(
            with_server.component(&no_env).expect_err("x").key(),
            Some("secret")
        );
        let env = |k: &str| (k == ENV_SECRET).then(|| "e".to_string());
        assert_eq!(
            with_server.component(&env).expect_err("x").key(),
            Some("domain")
        );

        let d = c.describe(&no_env);
        assert!(
            d.contains("watch.password = *** (from watch.password)"),
            "{d}"
        );
        assert!(!d.contains("not usable for `pubpresence run`"), "{d}");
        assert!(!d.contains("whitelist with no members"), "{d}");

        // a component file has no [watch]
        let e = parse(MINIMAL).watch(&no_env).expect_err("no watch");
        assert_eq!(e.key(), Some("watch"));
        // [watch] without any password
        let no_pw = parse(&WATCH_ONLY.replace("password = \"pw-hunter2\"", ""));
        assert_eq!(
            no_pw.watch(&no_env).expect_err("x").key(),
            Some("watch.password")
        );
        let env = |k: &str| (k == ENV_WATCH_PASSWORD).then(|| "e".to_string());
        assert_eq!(no_pw.watch(&env).expect("env pw").password.expose(), "e");
    }

    #[test]
    fn http_needs_token_off_loopback() {
        let with = |http: &str| parse(&format!("{WATCH_ONLY}http = \"{http}\"\n"));
        assert!(with("127.0.0.1:8080").watch(&no_env).is_ok());
        assert!(with("[::1]:8080").watch(&no_env).is_ok());
        assert!(with("localhost:8080").watch(&no_env).is_ok());
        let open = with("0.0.0.0:8080");
        let e = open.watch(&no_env).expect_err("no token");
        assert_eq!(e.key(), Some("watch.http_token"));
        assert!(e.to_string().contains("http_token"), "{e}");
        let env = |k: &str| (k == ENV_HTTP_TOKEN).then(|| "t".to_string());
        let w = open.watch(&env).expect("env token");
        assert_eq!(w.http_token.as_ref().map(Secret::expose), Some("t"));

        // --http on the command line follows the same rule
        let w = parse(WATCH_ONLY).watch(&no_env).expect("watch");
        assert!(w.clone().with_http("127.0.0.1:9000").is_ok());
        let e = w.with_http("192.0.2.1:9000").expect_err("no token");
        assert_eq!(e.key(), Some("watch.http_token"));
    }

    #[test]
    fn describe_shows_settings_and_warnings() {
        let c = parse(MINIMAL);
        let d = c.describe(&no_env);
        for line in [
            "jid = \"pubpresence.example.org\"",
            "secret = *** (from secret)",
            "nodes.active = \"presence/active\"",
            "access.model = whitelist",
            "audit_interval = 5m",
            "probe_timeout = 3s",
            "iq_timeout = 10s",
            "privacy.ip = full",
            "privacy.hide = []",
            "warning: access.model = whitelist with no members: nobody but the component can read the nodes",
        ] {
            assert!(d.contains(line), "missing {line:?} in\n{d}");
        }
        assert!(!d.contains("s3cret"));

        let c = parse(&format!(
            "{MINIMAL}audit_interval = \"0s\"\n[access]\nmodel = \"open\"\nmembers = [\"a@example.org\"]\n[privacy]\nip = \"none\"\nhide = [\"ceo@example.org\"]\n"
        ));
        let d = c.describe(&no_env);
        assert!(d.contains("privacy.ip = none"), "{d}");
        assert!(d.contains("privacy.hide = [\"ceo@example.org\"]"), "{d}");
        assert!(d.contains("warning: access.model = open"), "{d}");
        assert!(d.contains("warning: access.members is ignored"), "{d}");
        assert!(d.contains("warning: audit_interval = 0s"), "{d}");
        assert!(!d.contains("whitelist with no members"), "{d}");

        let no_secret = parse(&MINIMAL.replace("secret = \"s3cret\"", ""));
        let d = no_secret.describe(&no_env);
        assert!(d.contains("secret = (not set)"), "{d}");
        assert!(
            d.contains("warning: not usable for `pubpresence run`: secret: missing"),
            "{d}"
        );
        assert!(no_secret.check(&no_env).is_err());
    }

    const STANDBY: &str = r#"
[standby]
jid      = "pubpresence-standby@example.org"
password = "sb-hunter2"
"#;

    #[test]
    fn standby_parse_and_defaults() {
        let c = parse(&format!("{MINIMAL}{STANDBY}"));
        let s = c.component(&no_env).expect("component");
        let sb = s.standby.as_ref().expect("standby");
        assert_eq!(sb.jid.as_str(), "pubpresence-standby@example.org");
        assert_eq!(sb.password.expose(), "sb-hunter2");
        assert_eq!(sb.server, "example.org:5222");
        assert!(!sb.allow_plaintext);
        assert_eq!(sb.takeover, Duration::from_secs(2));
        assert_eq!(sb.takeover, DEFAULT_TAKEOVER);
        assert!(c.check(&no_env).is_ok());
        // without [standby]
        assert!(parse(MINIMAL)
            .component(&no_env)
            .expect("component")
            .standby
            .is_none());

        let c = parse(&format!(
            "{MINIMAL}{STANDBY}server = \"127.0.0.1:5222\"\nallow_plaintext = true\ntakeover = \"750ms\"\n"
        ));
        let sb = c
            .component(&no_env)
            .expect("component")
            .standby
            .expect("standby");
        assert_eq!(sb.server, "127.0.0.1:5222");
        assert!(sb.allow_plaintext);
        assert_eq!(sb.takeover, Duration::from_millis(750));
        let d = c.describe(&no_env);
        for line in [
            "standby.jid = \"pubpresence-standby@example.org\"",
            "standby.password = *** (from standby.password)",
            "standby.server = \"127.0.0.1:5222\"",
            "standby.allow_plaintext = true",
            "standby.takeover = 750ms",
            "warning: standby.allow_plaintext = true",
        ] {
            assert!(d.contains(line), "missing {line:?} in\n{d}");
        }
    }

    #[test]
    fn standby_password_sources() {
        // env wins over the inline value
        let c = parse(&format!("{MINIMAL}{STANDBY}"));
        let env = |k: &str| (k == ENV_STANDBY_PASSWORD).then(|| "sb-env".to_string());
        let sb = c.component(&env).expect("component").standby.expect("sb");
        assert_eq!(sb.password.expose(), "sb-env");
        assert!(c
            .describe(&env)
            .contains("standby.password = *** (from env PUBPRESENCE_STANDBY_PASSWORD)"));
        // other variables do not count
        let other = |k: &str| (k == ENV_WATCH_PASSWORD).then(|| "w".to_string());
        let sb = c.component(&other).expect("component").standby.expect("sb");
        assert_eq!(sb.password.expose(), "sb-hunter2");

        // password_file, relative to the config's directory
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("sb.txt"), "sb-file\n").expect("write");
        let text = format!(
            "{MINIMAL}{}",
            STANDBY.replace("password = \"sb-hunter2\"", "password_file = \"sb.txt\"")
        );
        let c = Config::from_toml_str(&text, Some(dir.path())).expect("parse");
        let sb = c
            .component(&no_env)
            .expect("component")
            .standby
            .expect("sb");
        assert_eq!(sb.password.expose(), "sb-file");
        let d = c.describe(&no_env);
        assert!(
            d.contains("standby.password = *** (from standby.password_file "),
            "{d}"
        );
        assert!(!d.contains("sb-file"), "{d}");
        std::fs::remove_file(dir.path().join("sb.txt")).expect("rm");
        let e = c.component(&no_env).expect_err("missing file");
        assert_eq!(e.key(), Some("standby.password_file"));
        assert!(c.component(&env).is_ok());
    }

    #[test]
    fn standby_missing_password_named() {
        let c = parse(&format!(
            "{MINIMAL}[standby]\njid = \"pubpresence-standby@example.org\"\n"
        ));
        let e = c.component(&no_env).expect_err("no password");
        assert_eq!(e.key(), Some("standby.password"));
        assert!(e.to_string().contains(ENV_STANDBY_PASSWORD), "{e}");
        assert!(c.check(&no_env).is_err());
        let d = c.describe(&no_env);
        assert!(d.contains("standby.password = (not set)"), "{d}");
        assert!(
            d.contains("warning: not usable for `pubpresence run`: standby.password: missing"),
            "{d}"
        );
        let env = |k: &str| (k == ENV_STANDBY_PASSWORD).then(|| "e".to_string());
        assert!(c.component(&env).is_ok());
        // empty env counts as unset
        let empty = |k: &str| (k == ENV_STANDBY_PASSWORD).then(String::new);
        assert_eq!(
            c.component(&empty).expect_err("empty").key(),
            Some("standby.password")
        );
    }

    #[test]
    fn standby_bad_values_named() {
        let cases = [
            ("takeover = \"0s\"", "standby.takeover"),
            ("takeover = \"2 fortnights\"", "standby.takeover"),
            ("takeover = 2", "standby.takeover"),
            ("server = \"nowhere\"", "standby.server"),
            ("allow_plaintext = \"yes\"", "standby.allow_plaintext"),
            ("password_file = \"/x\"", "standby.password_file"),
            ("colour = \"blue\"", "standby.colour"),
        ];
        for (line, key) in cases {
            let e = parse_err(&format!("{MINIMAL}{STANDBY}{line}\n"));
            assert_eq!(e.key(), Some(key), "{line}: {e}");
            assert!(e.to_string().contains(key), "{e}");
            assert!(!e.to_string().contains("sb-hunter2"), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        let e = parse_err(&format!("{MINIMAL}{STANDBY}colour = \"blue\"\n"));
        assert!(e.to_string().contains("unknown key"), "{e}");
        assert_eq!(e.line(), Some(11));
        let e = parse_err(&format!("{MINIMAL}{STANDBY}takeover = \"0s\"\n"));
        assert_eq!(e.line(), Some(11));

        let bad_jid = |jid: &str| {
            parse_err(&format!(
                "{MINIMAL}[standby]\njid = \"{jid}\"\npassword = \"x\"\n"
            ))
        };
        assert_eq!(bad_jid("example.org").key(), Some("standby.jid"));
        assert_eq!(bad_jid("a@b/c").key(), Some("standby.jid"));
        let e = parse_err(&format!("{MINIMAL}[standby]\npassword = \"sb-hunter2\"\n"));
        assert_eq!(e.key(), Some("standby.jid"));
        assert!(!e.to_string().contains("sb-hunter2"), "{e}");
        let e = parse_err(&format!(
            "{MINIMAL}[standby]\njid = \"a@example.org\"\npassword = \"\"\n"
        ));
        assert_eq!(e.key(), Some("standby.password"));
    }

    #[test]
    fn standby_password_never_shown() {
        let c = parse(&format!("{MINIMAL}{STANDBY}"));
        let s = c.component(&no_env).expect("component");
        let sb = s.standby.clone().expect("standby");
        for shown in [
            format!("{c:?}"),
            format!("{s:?}"),
            format!("{sb:?}"),
            c.describe(&no_env),
        ] {
            assert!(!shown.contains("sb-hunter2"), "leaked in {shown}");
        }
        let head =
            "jid = \"c.example.org\"\npubsub = \"p.example.org\"\n[standby]\njid = \"a@b\"\n";
        for bad in [
            "password = \"hunter2",
            "password = [\"hunter2\"]",
            "password = { v = \"hunter2\" }",
            "password = hunter2",
        ] {
            let e = parse_err(&format!("{head}{bad}\n"));
            let shown = e.to_string();
            assert!(
                !shown.contains("hunter2"),
                "leaked in {shown:?} for {bad:?}"
            );
            assert!(!shown.contains('\n'), "{shown:?}");
        }
        let e = parse_err(&format!("{head}password = 98765432\n"));
        assert!(!e.to_string().contains("98765432"), "{e}");
        assert_eq!(e.key(), Some("standby.password"));
    }

    #[test]
    fn standby_not_a_member_warned() {
        let d = parse(&format!("{MINIMAL}{STANDBY}")).describe(&no_env);
        assert!(
            d.contains("warning: standby.jid \"pubpresence-standby@example.org\" is not in access.members: it cannot read the status node"),
            "{d}"
        );
        assert!(!d.contains("standby.allow_plaintext = true"), "{d}");
        let members = format!(
            "{MINIMAL}[access]\nmembers = [\"Pubpresence-Standby@example.org\"]\n{STANDBY}"
        );
        let d = parse(&members).describe(&no_env);
        assert!(!d.contains("it cannot read the status node"), "{d}");
        let open = format!("{MINIMAL}[access]\nmodel = \"presence\"\n{STANDBY}");
        let d = parse(&open).describe(&no_env);
        assert!(!d.contains("it cannot read the status node"), "{d}");
    }

    #[test]
    fn metrics_table() {
        // absent: off
        let c = parse(MINIMAL);
        assert_eq!(c.component(&no_env).expect("component").metrics, None);
        assert!(c.describe(&no_env).contains("metrics = (off)"));

        let c = parse(&format!(
            "{MINIMAL}[metrics]\nlisten = \"127.0.0.1:9464\"\n"
        ));
        let s = c.component(&no_env).expect("component");
        assert_eq!(s.metrics, Some("127.0.0.1:9464".parse().expect("addr")));
        let d = c.describe(&no_env);
        assert!(
            d.contains("metrics.listen = \"127.0.0.1:9464\" (GET http://127.0.0.1:9464/metrics)"),
            "{d}"
        );
        assert!(!d.contains("no authentication"), "{d}");
        let c = parse(&format!(
            "{MINIMAL}[metrics]\nlisten = \"localhost:9464\"\n"
        ));
        assert_eq!(
            c.component(&no_env).expect("component").metrics,
            Some("127.0.0.1:9464".parse().expect("addr"))
        );
        let c = parse(&format!("{MINIMAL}[metrics]\nlisten = \"[::1]:9464\"\n"));
        assert!(c.component(&no_env).expect("component").metrics.is_some());

        // any address is allowed, with a warning off loopback
        let c = parse(&format!("{MINIMAL}[metrics]\nlisten = \"0.0.0.0:9464\"\n"));
        assert_eq!(
            c.component(&no_env).expect("component").metrics,
            Some("0.0.0.0:9464".parse().expect("addr"))
        );
        assert!(c.check(&no_env).is_ok());
        let d = c.describe(&no_env);
        assert!(
            d.contains("warning: metrics.listen = 0.0.0.0:9464 is not a loopback address: the endpoint has no authentication"),
            "{d}"
        );
    }

    #[test]
    fn metrics_bad_values_named() {
        let cases = [
            ("listen = \"nowhere\"", "metrics.listen"),
            ("listen = \"example.org:9464\"", "metrics.listen"),
            ("listen = \"127.0.0.1\"", "metrics.listen"),
            ("listen = \"127.0.0.1:0\"", "metrics.listen"),
            ("listen = 9464", "metrics.listen"),
            ("listen = \"127.0.0.1:9464\"\npath = \"/m\"", "metrics.path"),
            ("", "metrics.listen"),
        ];
        for (line, key) in cases {
            let e = parse_err(&format!("{MINIMAL}[metrics]\n{line}\n"));
            assert_eq!(e.key(), Some(key), "{line}: {e}");
            assert!(e.to_string().contains(key), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        let e = parse_err(&format!("{MINIMAL}[metrics]\nlisten = \"nowhere\"\n"));
        assert_eq!(e.line(), Some(8));
        assert!(e.to_string().contains("127.0.0.1:9464"), "{e}");
        let e = parse_err(&format!(
            "{MINIMAL}[metrics]\nlisten = \"127.0.0.1:9464\"\npath = \"/m\"\n"
        ));
        assert!(e.to_string().contains("unknown key"), "{e}");
    }

    #[test]
    fn instance_name_default_with_standby() {
        let s = parse(MINIMAL).component(&no_env).expect("component");
        assert_eq!(s.instance_name(), None);

        let s = parse(&format!("{MINIMAL}{STANDBY}"))
            .component(&no_env)
            .expect("component");
        assert_eq!(s.instance, None);
        let name = s.instance_name().expect("default name");
        let suffix = format!("-{}", std::process::id());
        assert!(name.ends_with(&suffix), "{name}");
        assert!(name.len() > suffix.len(), "{name}");
        assert_eq!(name, default_instance_name());

        let s = parse(&format!("{MINIMAL}instance = \"a\"\n{STANDBY}"))
            .component(&no_env)
            .expect("component");
        assert_eq!(s.instance_name().as_deref(), Some("a"));
        let s = parse(&format!("{MINIMAL}instance = \"a\"\n"))
            .component(&no_env)
            .expect("component");
        assert_eq!(s.instance_name().as_deref(), Some("a"));
    }
}
