//! The service: connection with backoff, start-up (docs/protocol.md, "What
//! the component publishes, and when"), the event loop that feeds the
//! tracker and executes its actions, and clean shutdown.
//!
//! Rooms: `config` (what the service needs), `reconnect` (the component
//! loop, with `backoff`), `session` (one connection's event loop),
//! `startup` (discovery and reconciliation), `waiting` (the bounded wait
//! for probe answers, and the sessions whose answer is late), `inbound`
//! (the stanzas the component answers, as pure functions), `worker` (the
//! tracker's actions written to the server), `audit` (audits and session
//! checks), `cluster` (the other nodes of a cluster). Standby (`super::standby`) is handed
//! the component loop; it does not import this module.

mod audit;
mod backoff;
mod cluster;
mod config;
mod inbound;
mod reconnect;
mod session;
mod startup;
mod unseen;
mod waiting;
mod worker;

pub use super::standby::LoopEnd;
pub use cluster::NodeEvent;
pub use config::ServiceConfig;
pub use reconnect::component_loop;

use super::metrics::{self, Metrics};
use super::publisher::SetupError;
use crate::xmpp::ConnectError;
use std::net::SocketAddr;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Connect(ConnectError),
    #[error("{0}")]
    Setup(SetupError),
    /// The server's XEP-0356 set-up drops our requests (the text says what
    /// to change).
    #[error("{0}")]
    Privileges(String),
    /// The metrics endpoint could not listen (a configuration problem).
    #[error("metrics.listen = {addr}: cannot serve the metrics endpoint there: {err}")]
    Metrics {
        addr: SocketAddr,
        err: std::io::Error,
    },
    /// Nothing to connect to.
    #[error(
        "[component] server lists no address: give it the host:port of the server's component \
         listener (one per node of a cluster)"
    )]
    NoServers,
}

/// Runs the component until `shutdown` turns true (then exits cleanly) or a
/// fatal error (wrong secret, a refused node configuration). With
/// `[standby]`, as one of several instances (see `standby`).
/// With `metrics`, the endpoint is bound first: an address that cannot be
/// bound is an error before anything connects.
pub async fn run(mut cfg: ServiceConfig, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    if cfg.servers.is_empty() {
        return Err(RunError::NoServers);
    }
    let endpoint = match cfg.metrics {
        Some(addr) => {
            let m = Metrics::new(cfg.standby.is_some());
            let (bound, task) = m
                .serve(addr)
                .await
                .map_err(|err| RunError::Metrics { addr, err })?;
            tracing::info!("metrics: serving http://{bound}{}", metrics::PATH);
            cfg.telemetry = m;
            Some(task)
        }
        None => None,
    };
    let r = match cfg.standby_setup() {
        Some(setup) => {
            let c = &cfg;
            super::standby::run(setup, shutdown, move |shutdown, step_down| {
                component_loop(c, shutdown, Some(step_down))
            })
            .await
        }
        None => component_loop(&cfg, shutdown, None).await.map(|_| ()),
    };
    if let Some(task) = endpoint {
        task.abort();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_server_list_is_an_error_not_a_panic() {
        let mut cfg = config::tests::sample();
        cfg.servers.clear();
        let (_tx, rx) = watch::channel(false);
        let r = run(cfg.clone(), rx.clone()).await;
        assert!(matches!(r, Err(RunError::NoServers)), "{r:?}");
        let msg = RunError::NoServers.to_string();
        assert!(
            msg.starts_with("[component] server lists no address"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        // The loop standby runs says the same instead of dividing by zero.
        let r = component_loop(&cfg, rx, None).await;
        assert!(matches!(r, Err(RunError::NoServers)), "{r:?}");
    }
}
