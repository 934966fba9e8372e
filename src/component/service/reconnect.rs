//! The component loop: connect, run a session, reconnect with capped
//! backoff (or hand back to standby), and what a session's end means.

use super::backoff::Backoff;
use super::cluster::attach_nodes;
use super::session::run_session;
use super::{LoopEnd, RunError, ServiceConfig};
use crate::component::metrics::ErrorKind;
use crate::component::saved;
use crate::component::tracker::Memory;
use crate::wire::status::ServiceStatus;
use crate::xmpp::{connect_component, ConnectError, Disconnect};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How a session ended.
pub(super) enum Outcome {
    Shutdown,
    SteppedDown,
    Lost(String),
    /// A node was deleted behind our back: the whole start-up again, on a
    /// new connection, without the growing backoff of a lost link.
    NodeGone(String),
    /// The server dropped our XEP-0356 grant; the stream was closed so that
    /// a new connection gets it again. Not a loss of the active role.
    GrantLost,
    Fatal(RunError),
}

/// What the end of the connection task means for the session.
pub(super) fn task_ended(r: Result<Disconnect, tokio::task::JoinError>) -> Outcome {
    match r {
        Ok(Disconnect::GrantLost) => Outcome::GrantLost,
        Ok(r) => Outcome::Lost(r.to_string()),
        Err(e) => Outcome::Lost(e.to_string()),
    }
}

/// Connects as the component and keeps it connected: reconnects with capped
/// backoff, and runs the whole start-up on every connection. `step_down`
/// (standby mode) closes the stream at once, publishing nothing.
pub async fn component_loop(
    cfg: &ServiceConfig,
    mut shutdown: watch::Receiver<bool>,
    mut step_down: Option<watch::Receiver<bool>>,
) -> Result<LoopEnd, RunError> {
    if cfg.servers.is_empty() {
        return Err(RunError::NoServers);
    }
    let mut backoff = Backoff::new();
    let mut attempt = 0usize;
    // A clean stop of the other instance publishes `offline` a moment
    // before its stream closes: keep asking for a second before giving up.
    let mut conflict_until: Option<Instant> = None;
    // What active held when the last session ended (`run_session`).
    let mut memory = Memory::new();
    // The copy of active a clean stop saved, for the first start-up only
    // (README, "Fast restarts: `state_dir`").
    let mut saved = cfg.state_dir.as_deref().and_then(saved::take);
    loop {
        if *shutdown.borrow() {
            return Ok(LoopEnd::Shutdown);
        }
        let addr = &cfg.servers[attempt % cfg.servers.len()];
        attempt += 1;
        tracing::info!(server = %addr, jid = %cfg.jid, "connecting");
        let connected = tokio::select! {
            r = connect_component(addr, &cfg.jid, &cfg.secret, cfg.iq_timeout) => r,
            _ = shutdown.changed() => return Ok(LoopEnd::Shutdown),
        };
        match connected {
            Err(e) if e.is_fatal() => {
                cfg.telemetry.error(ErrorKind::Connect);
                return Err(RunError::Connect(e));
            }
            Err(ConnectError::Conflict { .. }) if step_down.is_some() => {
                let until =
                    *conflict_until.get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
                if Instant::now() >= until {
                    return Ok(LoopEnd::Conflict);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = shutdown.changed() => return Ok(LoopEnd::Shutdown),
                }
            }
            Err(e) => {
                cfg.telemetry.error(ErrorKind::Connect);
                let d = backoff.take();
                tracing::warn!("{e}; retrying in {d:?}");
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown.changed() => return Ok(LoopEnd::Shutdown),
                }
            }
            Ok((conn, inbound, task)) => {
                tracing::info!(server = %addr, "connected");
                let since = Instant::now();
                let (inbound, nodes, keepers) = if cfg.servers.len() > 1 {
                    let (i, n, k) = attach_nodes(cfg, addr, conn.shared(), inbound);
                    (i, Some(n), Some(k))
                } else {
                    (inbound, None, None)
                };
                let outcome = run_session(
                    cfg,
                    conn,
                    inbound,
                    task,
                    &mut shutdown,
                    step_down.as_mut(),
                    nodes,
                    &mut memory,
                    saved.take(),
                )
                .await;
                if let Some(keepers) = keepers {
                    keepers.close().await;
                }
                let node_gone = matches!(outcome, Outcome::NodeGone(_));
                match outcome {
                    Outcome::Shutdown => return Ok(LoopEnd::Shutdown),
                    Outcome::SteppedDown => {
                        cfg.telemetry.status(ServiceStatus::Init);
                        cfg.telemetry.tracked(0);
                        return Ok(LoopEnd::SteppedDown);
                    }
                    Outcome::Fatal(e) => return Err(e),
                    Outcome::GrantLost => {
                        // Still the active instance: connect again at once
                        // (the old stream's close was awaited, so the new
                        // connection's grant stays); the start-up's
                        // reconcile repairs what went unseen meanwhile.
                        cfg.telemetry.reconnect();
                        cfg.telemetry.status(ServiceStatus::Init);
                        cfg.telemetry.tracked(0);
                        tracing::warn!(
                            "connection lost: {}; reconnecting now",
                            Disconnect::GrantLost
                        );
                    }
                    // A node deleted behind our back says nothing of another
                    // instance: start over at once, still the active one,
                    // keeping `memory` (each unchanged connection's `since`).
                    Outcome::Lost(reason) if step_down.is_some() => {
                        cfg.telemetry.reconnect();
                        cfg.telemetry.status(ServiceStatus::Init);
                        cfg.telemetry.tracked(0);
                        tracing::warn!("connection lost: {reason}; back to standby");
                        return Ok(LoopEnd::Lost);
                    }
                    Outcome::Lost(reason) | Outcome::NodeGone(reason) => {
                        cfg.telemetry.reconnect();
                        cfg.telemetry.status(ServiceStatus::Init);
                        cfg.telemetry.tracked(0);
                        if node_gone || since.elapsed() > Duration::from_secs(30) {
                            backoff.reset();
                        }
                        let d = backoff.take();
                        tracing::warn!("connection lost: {reason}; reconnecting in {d:?}");
                        tokio::select! {
                            _ = tokio::time::sleep(d) => {}
                            _ = shutdown.changed() => return Ok(LoopEnd::Shutdown),
                        }
                    }
                }
            }
        }
    }
}
