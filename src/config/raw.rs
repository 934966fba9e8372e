//! The file as written: the serde types TOML is read into (every table
//! refuses unknown keys), the defaults of the optional keys, and the
//! deserializers for durations and `server`. Nothing here checks a value
//! beyond its type: that is `validate`'s job, so that these types stay a
//! plain picture of the file.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::Secret;

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
    /// This instance's name (default: see
    /// [`ComponentSettings::instance_name`](super::ComponentSettings::instance_name)).
    pub instance: Option<String>,
    /// A bare JID of `domain` on whose behalf requests are sent as XEP-0356
    /// privileged IQs (ejabberd 24.10 and later with mod_privilege).
    pub privileged_as: Option<String>,
    /// Ask each connected user whose presence never reaches the component
    /// for a subscription, at start-up and at each audit, at most once a
    /// day per user (README, "Checking the set-up: `pubpresence doctor`").
    #[serde(default)]
    pub subscribe_unseen: bool,
    /// Where a clean stop saves its copy of active for the next start
    /// (README, "Fast restarts: `state_dir`"). Unset: every start fetches
    /// active.
    pub state_dir: Option<PathBuf>,
    /// A tracing filter such as `info` or `pubpresence=debug`.
    pub log: Option<String>,
    #[serde(default)]
    pub privacy: PrivacyConfig,
    pub watch: Option<WatchConfig>,
    pub standby: Option<StandbyConfig>,
    pub metrics: Option<MetricsConfig>,
    /// The file this was loaded from.
    #[serde(skip)]
    pub(super) source: Option<PathBuf>,
    /// Directory that relative `*_file` paths are resolved against.
    #[serde(skip)]
    pub(super) base_dir: Option<PathBuf>,
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
pub struct PrivacyConfig {
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
    /// Events kept for consumers of `/events` that resume (0: none).
    pub http_resume_window: Option<usize>,
}

/// `[standby]` as written (README, "Running two instances").
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

#[cfg(test)]
mod tests {
    use crate::config::testing::{no_env, parse, MINIMAL};

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
}
