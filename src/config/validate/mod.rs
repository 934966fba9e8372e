//! From the file as written to what a command gets. `Config::validate`
//! checks every key that can be checked without the environment (run on
//! every load, so a bad file fails early with the key's line);
//! [`Config::component`] and [`Config::watch`] add the environment and the
//! keys each command requires. The top-level keys, `[nodes]`, `[access]` and
//! `[privacy]` are here; `[watch]`, `[standby]` and `[metrics]` have a room
//! each.

mod metrics;
mod standby;
mod watch;

use std::path::PathBuf;

use xmpp_parsers::jid::BareJid;

use super::addr::host_port;
use super::jid::{bare_jid, domain_jid};
use super::{
    AccessSettings, ComponentSettings, Config, ConfigError, Env, Nodes, PrivacySettings, Secret,
};

impl Config {
    /// Checks every key that can be checked without the environment.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
            subscribe_unseen: self.subscribe_unseen,
            privacy: self.privacy_settings().map_err(with_file)?,
            standby: self.standby_settings(env)?,
            metrics: self.metrics_listen().map_err(with_file)?,
            state_dir: self.state_dir().map_err(with_file)?,
        })
    }

    /// `state_dir`, resolved against the config file's directory and
    /// checked to take a file: a wrong one is said at start, not at the
    /// clean stop that would write there.
    pub fn state_dir(&self) -> Result<Option<PathBuf>, ConfigError> {
        let Some(dir) = &self.state_dir else {
            return Ok(None);
        };
        if dir.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "state_dir",
                "is empty; remove the key to turn it off",
            ));
        }
        let dir = self.resolve_path(dir);
        let probe = dir.join(".pubpresence-write-check");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| {
                ConfigError::new(
                    "state_dir",
                    format!(
                        "{}: cannot write there ({e}): create it, owned by the user pubpresence \
                         runs as (the Debian package uses /var/lib/pubpresence), or remove the key",
                        dir.display()
                    ),
                )
            })?;
        Ok(Some(dir))
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

    pub(super) fn watch_only(&self) -> bool {
        self.watch.is_some()
            && self.server.is_none()
            && self.secret.is_none()
            && self.secret_file.is_none()
            && self.domain.is_none()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::testing::{no_env, parse, parse_err, MINIMAL};
    use crate::config::{AccessModel, IpMode, SecretSource, ENV_WATCH_PASSWORD};

    #[test]
    fn state_dir_is_resolved_and_must_take_a_file() {
        assert_eq!(
            parse(MINIMAL).component(&no_env).expect("ok").state_dir,
            None
        );
        let base = tempfile::tempdir().expect("dir");
        std::fs::create_dir(base.path().join("state")).expect("mkdir");
        let file = format!("state_dir = \"state\"\n{MINIMAL}");
        let c = Config::from_toml_str(&file, Some(base.path())).expect("parse");
        let s = c.component(&no_env).expect("component");
        assert_eq!(s.state_dir, Some(base.path().join("state")));
        assert_eq!(
            std::fs::read_dir(base.path().join("state"))
                .expect("ls")
                .count(),
            0
        );
        let missing = format!("state_dir = \"/nonexistent/pubpresence\"\n{MINIMAL}");
        let e = parse(&missing).component(&no_env).expect_err("no such dir");
        assert_eq!(e.key(), Some("state_dir"));
        let msg = e.to_string();
        assert!(
            msg.contains("/nonexistent/pubpresence: cannot write there"),
            "{msg}"
        );
        assert!(msg.contains("or remove the key"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let e = parse(&format!("state_dir = \"\"\n{MINIMAL}")).component(&no_env);
        assert_eq!(e.expect_err("empty").key(), Some("state_dir"));
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
    fn secret_and_secret_file_both_set() {
        let e = parse_err(&format!("{MINIMAL}secret_file = \"/x\"\n"));
        assert_eq!(e.key(), Some("secret_file"));
        assert!(!e.to_string().contains("s3cret"));
    }
}
