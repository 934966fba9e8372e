//! What the service needs to run, built from the config file's settings.

use super::super::metrics::Metrics;
use super::super::privacy::Privacy;
use super::super::publisher::NodeNames;
use super::super::standby;
use crate::config::{ComponentSettings, StandbySettings};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What the service needs to run (built from the config file by the CLI).
#[derive(Clone)]
pub struct ServiceConfig {
    pub jid: String,
    pub servers: Vec<String>,
    pub secret: String,
    pub domain: String,
    pub pubsub: String,
    pub nodes: NodeNames,
    pub access_model: String,
    pub members: Vec<String>,
    pub probe_timeout: Duration,
    pub iq_timeout: Duration,
    pub instance: Option<String>,
    /// Send requests as XEP-0356 privileged IQs on behalf of this user when
    /// the server asks for them (`privileges::decide`).
    pub privileged_as: Option<String>,
    /// `subscribe_unseen`: ask users whose presence never arrives for a
    /// subscription (`unseen`).
    pub subscribe_unseen: bool,
    /// When each user was last asked, kept across reconnects.
    pub asked: super::unseen::Asked,
    pub privacy: Privacy,
    /// Zero: no audits.
    pub audit_interval: Duration,
    /// Run as one of several instances (README, "Running two instances").
    pub standby: Option<StandbySettings>,
    /// `[metrics] listen`: serve `GET /metrics` there (bound by [`run`]).
    pub metrics: Option<SocketAddr>,
    /// What the service counts: a no-op until [`run`] serves `metrics`.
    pub telemetry: Metrics,
    /// Where a clean stop saves its copy of active (`saved`).
    pub state_dir: Option<PathBuf>,
}

impl ServiceConfig {
    /// From the checked settings of a config file.
    pub fn from_settings(s: &ComponentSettings) -> ServiceConfig {
        ServiceConfig {
            jid: s.jid.to_string(),
            servers: s.servers.clone(),
            secret: s.secret.expose().to_string(),
            domain: s.domain.to_string(),
            pubsub: s.pubsub.to_string(),
            nodes: s.nodes.clone(),
            access_model: s.access.model.as_str().to_string(),
            members: s.access.members.iter().map(|m| m.to_string()).collect(),
            probe_timeout: s.probe_timeout,
            iq_timeout: s.iq_timeout,
            instance: s.instance_name(),
            privileged_as: s.privileged_as.as_ref().map(|j| j.to_string()),
            subscribe_unseen: s.subscribe_unseen,
            asked: Default::default(),
            audit_interval: s.audit_interval,
            standby: s.standby.clone(),
            metrics: s.metrics,
            telemetry: Metrics::disabled(),
            state_dir: s.state_dir.clone(),
            privacy: Privacy {
                ip: s.privacy.ip,
                hide: s.privacy.hide.iter().map(|h| h.to_string()).collect(),
            },
        }
    }
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("jid", &self.jid)
            .field("servers", &self.servers)
            .field("secret", &"***")
            .field("domain", &self.domain)
            .field("pubsub", &self.pubsub)
            .finish_non_exhaustive()
    }
}

impl ServiceConfig {
    /// What standby needs (docs/protocol.md, "Standby and takeover"), when
    /// `[standby]` is set.
    pub fn standby_setup(&self) -> Option<standby::Setup> {
        let settings = self.standby.clone()?;
        Some(standby::Setup {
            jid: self.jid.clone(),
            pubsub: self.pubsub.clone(),
            status_node: self.nodes.status.clone(),
            iq_timeout: self.iq_timeout,
            instance: self.instance.clone(),
            telemetry: self.telemetry.clone(),
            settings,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A configuration as the tests of the service's rooms need one.
    pub(in super::super) fn sample() -> ServiceConfig {
        ServiceConfig {
            jid: "pubpresence.example.org".into(),
            servers: vec!["127.0.0.1:5347".into()],
            secret: "s3cr3t-never-printed".into(),
            domain: "example.org".into(),
            pubsub: "pubsub.example.org".into(),
            nodes: NodeNames {
                live: "presence/live".into(),
                active: "presence/active".into(),
                status: "presence/status".into(),
            },
            access_model: "whitelist".into(),
            members: vec!["dashboard@example.org".into()],
            probe_timeout: Duration::from_secs(3),
            iq_timeout: Duration::from_secs(10),
            instance: Some("pp-1".into()),
            privileged_as: None,
            subscribe_unseen: false,
            asked: Default::default(),
            privacy: Privacy::default(),
            audit_interval: Duration::ZERO,
            standby: None,
            metrics: None,
            telemetry: Metrics::disabled(),
            state_dir: None,
        }
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let cfg = sample();
        for text in [format!("{cfg:?}"), format!("{cfg:#?}")] {
            assert!(!text.contains(&cfg.secret), "{text}");
            assert!(text.contains("***"), "{text}");
            assert!(text.contains("pubpresence.example.org"), "{text}");
        }
    }

    #[test]
    fn no_standby_setup_without_standby() {
        assert!(sample().standby_setup().is_none());
    }
}
