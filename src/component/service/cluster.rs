//! An ejabberd cluster (README, "An ejabberd cluster"): one connection per
//! node, the others receive-only, their stanzas merged into the session's
//! inbound.

use super::backoff::Backoff;
use super::session::Session;
use super::ServiceConfig;
use crate::xmpp::stream::Shared;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
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
/// capped backoff, forwarding its stanzas into the session's inbound, until
/// `closing` says the session ended.
async fn keep_node(
    cfg: ServiceConfig,
    addr: String,
    shared: Shared,
    inbound: mpsc::UnboundedSender<Element>,
    events: mpsc::UnboundedSender<NodeEvent>,
    mut closing: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new();
    loop {
        let connected = tokio::select! {
            r = crate::xmpp::stream::connect_secondary(&addr, &cfg.jid, &cfg.secret, shared.clone()) => r,
            _ = closing.changed() => return,
        };
        match connected {
            Ok(mut node) => {
                backoff.reset();
                let _ = events.send(NodeEvent::Up(addr.clone()));
                loop {
                    tokio::select! {
                        el = node.inbound.recv() => match el {
                            Some(el) => {
                                if inbound.send(el).is_err() {
                                    node.close().await;
                                    return;
                                }
                            }
                            None => break,
                        },
                        _ = closing.changed() => {
                            node.close().await;
                            tracing::info!(node = %addr, "closed the connection to cluster node");
                            return;
                        }
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
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = closing.changed() => return,
                }
                continue;
            }
        }
        let d = backoff.take();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = closing.changed() => return,
        }
    }
}

/// How long the session's end waits for each other node's stream to close.
const NODE_CLOSE_WAIT: Duration = Duration::from_secs(3);

/// The connections to a cluster's other nodes, kept while a session runs.
pub(super) struct Keepers {
    forward: Option<tokio::task::JoinHandle<()>>,
    nodes: Vec<tokio::task::JoinHandle<()>>,
    closing: watch::Sender<bool>,
}

impl Keepers {
    /// A single server: nothing to keep.
    pub(super) fn none() -> Self {
        Keepers {
            forward: None,
            nodes: Vec::new(),
            closing: watch::channel(false).0,
        }
    }

    /// Ends every other node's stream as a stream ends (our footer, then
    /// the node's) and waits for it, bounded. ejabberd removes the node's
    /// route to a component connection before it sends its footer; a socket
    /// merely dropped leaves that route standing a moment longer, and a
    /// connection of the same JID made meanwhile (our reconnect, or the
    /// next start) shares it, so the node hands some stanzas to the old
    /// connection, which drops them. Seen: every probe answer from one
    /// node's users lost after a quick restart.
    pub(super) async fn close(self) {
        let _ = self.closing.send(true);
        if let Some(f) = self.forward {
            f.abort();
        }
        for mut node in self.nodes {
            if tokio::time::timeout(NODE_CLOSE_WAIT, &mut node)
                .await
                .is_err()
            {
                node.abort();
            }
        }
    }
}

/// With several `server` entries: one connection per node. The first that
/// answered carries every request; the others bring their node's presences
/// (XEP-0356 presence comes only from the node the connection is on) and
/// whatever IQ answers come back there. Returns the merged inbound, the node
/// events and the keepers ([`Keepers::close`] when the session ends).
pub(super) fn attach_nodes(
    cfg: &ServiceConfig,
    primary: &str,
    shared: Shared,
    mut inbound: mpsc::UnboundedReceiver<Element>,
) -> (
    mpsc::UnboundedReceiver<Element>,
    mpsc::UnboundedReceiver<NodeEvent>,
    Keepers,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (closing, closing_rx) = watch::channel(false);
    let fwd = tx.clone();
    let forward = tokio::spawn(async move {
        while let Some(el) = inbound.recv().await {
            if fwd.send(el).is_err() {
                return;
            }
        }
    });
    let nodes = cfg
        .servers
        .iter()
        .filter(|a| a.as_str() != primary)
        .map(|addr| {
            tokio::spawn(keep_node(
                cfg.clone(),
                addr.clone(),
                shared.clone(),
                tx.clone(),
                ev_tx.clone(),
                closing_rx.clone(),
            ))
        })
        .collect();
    (
        rx,
        ev_rx,
        Keepers {
            forward: Some(forward),
            nodes,
            closing,
        },
    )
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
