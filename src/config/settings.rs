//! What the commands get: the checked settings handed to `pubpresence run`
//! and `pubpresence watch`, with JIDs parsed, secrets resolved and defaults
//! applied. Only `validate` builds them; apart from the host name behind the
//! default instance name, nothing here reads the file or the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use xmpp_parsers::jid::BareJid;

use super::{AccessModel, IpMode, Nodes, Secret, SecretSource};

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
    /// `subscribe_unseen`: ask unseen users for a subscription.
    pub subscribe_unseen: bool,
    pub privacy: PrivacySettings,
    /// `[standby]`: wait while another instance is active, then take over.
    pub standby: Option<StandbySettings>,
    /// `[metrics] listen`: serve `GET /metrics` (Prometheus) there.
    pub metrics: Option<SocketAddr>,
    /// `state_dir`, resolved and checked to take a file.
    pub state_dir: Option<PathBuf>,
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

/// Events the web feed keeps for consumers that resume, unless
/// `[watch] http_resume_window` says otherwise (docs/protocol.md, "Resuming
/// a stream"): some 2 MB, and at 1,000 changes a second the last 8 s.
pub const DEFAULT_RESUME_WINDOW: usize = 8192;

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
    /// Events the web feed keeps for consumers that resume (0: none).
    pub http_resume_window: usize,
    pub probe_timeout: Duration,
    pub iq_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{no_env, parse, MINIMAL, STANDBY};

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
