//! An ejabberd cluster (README, "An ejabberd cluster"): one connection per
//! node, the others receive-only, their stanzas merged into the session's
//! inbound.

use super::backoff::Backoff;
use super::session::Session;
use super::ServiceConfig;
use crate::xmpp::stream::{Secondary, Shared};
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
/// `closing` says the session ended; then ends the node's stream as a
/// stream ends (see [`Keepers::close`]).
async fn keep_node(
    cfg: ServiceConfig,
    addr: String,
    shared: Shared,
    inbound: mpsc::UnboundedSender<Element>,
    events: mpsc::UnboundedSender<NodeEvent>,
    mut closing: watch::Receiver<bool>,
) {
    let mut node = None;
    tokio::select! {
        _ = node_loop(&cfg, &addr, &shared, &inbound, &events, &mut node) => {}
        _ = closing.changed() => {}
    }
    if let Some(node) = node {
        node.close().await;
        tracing::info!(node = %addr, "closed the connection to cluster node");
    }
}

/// [`keep_node`]'s connect–forward–back-off loop. The connection lives in
/// `node`, outside this future, so that the keeper can close it when the
/// session ends. Returns only when the session's inbound has gone.
async fn node_loop(
    cfg: &ServiceConfig,
    addr: &str,
    shared: &Shared,
    inbound: &mpsc::UnboundedSender<Element>,
    events: &mpsc::UnboundedSender<NodeEvent>,
    node: &mut Option<Secondary>,
) {
    let mut backoff = Backoff::new();
    loop {
        match crate::xmpp::stream::connect_secondary(addr, &cfg.jid, &cfg.secret, shared.clone())
            .await
        {
            Ok(connected) => {
                backoff.reset();
                let _ = events.send(NodeEvent::Up(addr.to_string()));
                let conn = node.insert(connected);
                while let Some(el) = conn.inbound.recv().await {
                    if inbound.send(el).is_err() {
                        return;
                    }
                }
                let reason = match (&mut conn.task).await {
                    Ok(r) => r.to_string(),
                    Err(e) => e.to_string(),
                };
                *node = None;
                let _ = events.send(NodeEvent::Down(addr.to_string(), reason));
            }
            Err(e) => {
                let d = backoff.take();
                tracing::warn!(node = %addr, "{e}; retrying in {d:?}");
                tokio::time::sleep(d).await;
                continue;
            }
        }
        tokio::time::sleep(backoff.take()).await;
    }
}

/// How long the session's end waits, in all, for the other nodes' streams
/// to close.
const NODE_CLOSE_WAIT: Duration = Duration::from_secs(3);

/// The connections to a cluster's other nodes, kept while a session runs.
pub(super) struct Keepers {
    forward: tokio::task::JoinHandle<()>,
    nodes: Vec<tokio::task::JoinHandle<()>>,
    closing: watch::Sender<bool>,
}

impl Keepers {
    /// Ends every other node's stream as a stream ends (our footer, then
    /// the node's) and waits for them, all within one bound. ejabberd
    /// removes the node's route to a component connection before it sends
    /// its footer; a socket merely dropped leaves that route standing a
    /// moment longer, and a connection of the same JID made meanwhile (our
    /// reconnect, or the next start) shares it, so the node hands some
    /// stanzas to the old connection, which drops them. Seen: every probe
    /// answer from one node's users lost after a quick restart.
    pub(super) async fn close(self) {
        let _ = self.closing.send(true);
        self.forward.abort();
        let deadline = tokio::time::Instant::now() + NODE_CLOSE_WAIT;
        for mut node in self.nodes {
            if tokio::time::timeout_at(deadline, &mut node).await.is_err() {
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
            forward,
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
