//! An ejabberd cluster (README, "An ejabberd cluster"): one connection per
//! node, the others receive-only, their stanzas merged into the session's
//! inbound.

use super::backoff::Backoff;
use super::session::Session;
use super::ServiceConfig;
use crate::xmpp::stream::Shared;
use std::time::Duration;
use tokio::sync::mpsc;
use xmpp_parsers::minidom::Element;

/// A cluster node's secondary connection came or went.
#[derive(Debug)]
pub enum NodeEvent {
    Up(String),
    Down(String, String),
}

/// The next node event; never without cluster nodes.
pub(super) async fn node_event(
    nodes: &mut Option<mpsc::UnboundedReceiver<NodeEvent>>,
) -> Option<NodeEvent> {
    match nodes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Keeps a receive-only connection to one more node of a cluster, with
/// capped backoff, forwarding its stanzas into the session's inbound.
async fn keep_node(
    cfg: ServiceConfig,
    addr: String,
    shared: Shared,
    inbound: mpsc::UnboundedSender<Element>,
    events: mpsc::UnboundedSender<NodeEvent>,
) {
    let mut backoff = Backoff::new();
    loop {
        match crate::xmpp::stream::connect_secondary(&addr, &cfg.jid, &cfg.secret, shared.clone())
            .await
        {
            Ok(mut node) => {
                backoff.reset();
                let _ = events.send(NodeEvent::Up(addr.clone()));
                while let Some(el) = node.inbound.recv().await {
                    if inbound.send(el).is_err() {
                        return;
                    }
                }
                let reason = match (&mut node.task).await {
                    Ok(r) => r.to_string(),
                    Err(e) => e.to_string(),
                };
                let _ = events.send(NodeEvent::Down(addr.clone(), reason));
            }
            Err(e) => {
                let d = backoff.take();
                tracing::warn!(node = %addr, "{e}; retrying in {d:?}");
                tokio::time::sleep(d).await;
                continue;
            }
        }
        let d = backoff.take();
        tokio::time::sleep(d).await;
    }
}

/// With several `server` entries: one connection per node. The first that
/// answered carries every request; the others bring their node's presences
/// (XEP-0356 presence comes only from the node the connection is on) and
/// whatever IQ answers come back there. Returns the merged inbound, the node
/// events and the keepers (aborted when the session ends).
pub(super) fn attach_nodes(
    cfg: &ServiceConfig,
    primary: &str,
    shared: Shared,
    mut inbound: mpsc::UnboundedReceiver<Element>,
) -> (
    mpsc::UnboundedReceiver<Element>,
    mpsc::UnboundedReceiver<NodeEvent>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    let fwd = tx.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(el) = inbound.recv().await {
            if fwd.send(el).is_err() {
                return;
            }
        }
    }));
    for addr in cfg.servers.iter().filter(|a| a.as_str() != primary) {
        tasks.push(tokio::spawn(keep_node(
            cfg.clone(),
            addr.clone(),
            shared.clone(),
            tx.clone(),
            ev_tx.clone(),
        )));
    }
    (rx, ev_rx, tasks)
}

impl Session<'_> {
    /// A cluster node's connection came or went: an audit looks at what
    /// changed (a dead node's sessions vanish without any unavailable).
    pub(super) fn node_event(&mut self, ev: NodeEvent) {
        match ev {
            NodeEvent::Up(addr) => tracing::info!(node = %addr, "connected to cluster node"),
            NodeEvent::Down(addr, why) => {
                tracing::warn!(node = %addr, "lost the connection to cluster node: {why}; retrying");
                // Its sessions vanish without any unavailable, and the other
                // nodes may list them a little longer: check for 20 s.
                self.check_until = Some(tokio::time::Instant::now() + Duration::from_secs(20));
            }
        }
        self.start_audit();
    }
}
