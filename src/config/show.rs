//! The text of `pubpresence check-config`: [`Config::describe`] prints the
//! effective settings one per line, secrets masked (with where they came
//! from), then `warning:` lines. Kept apart because it is long and only
//! reports: the exit status of `check-config` is `Config::check`'s.

use std::time::Duration;

use xmpp_parsers::jid::BareJid;

use super::{
    AccessModel, Config, ConfigError, Env, IpMode, Secret, SecretSource, DEFAULT_C2S_PORT,
};

impl Config {
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

    /// The effective settings for `pubpresence check-config`: one setting per
    /// line, secrets masked (with where they came from), then `warning:` lines.
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
        out.push(match &self.state_dir {
            Some(d) => format!(
                "state_dir = {} (a clean stop saves active's content there for the next start)",
                q(&d.display().to_string())
            ),
            None => "state_dir = (not set: every start fetches active)".into(),
        });
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
        if self.subscribe_unseen {
            out.push(
                "subscribe_unseen = true (connected users the component cannot see are asked for a subscription, once a day at most)"
                    .into(),
            );
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
            out.push(match w.http_resume_window {
                Some(0) => "watch.http_resume_window = 0 (no resuming: a consumer that \
                            reconnects gets a new snapshot)"
                    .to_string(),
                Some(n) => format!("watch.http_resume_window = {n} events"),
                None => format!(
                    "watch.http_resume_window = {} events (default)",
                    crate::config::DEFAULT_RESUME_WINDOW
                ),
            });
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

#[cfg(test)]
mod tests {
    use crate::config::testing::{no_env, parse, MINIMAL, STANDBY};

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
}
