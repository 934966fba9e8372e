//! The knee's floor (docs/benchmarks.md, "What it does"): with the
//! component stopped, a plain client does the component's writes for every
//! change of the same churn, as they happen, on the component's own nodes:
//! the item on active under the connection's full JID, and once the server
//! confirmed it, on live. Active holds what it held (the base sessions'
//! items): on Prosody a publish costs more on a node with more items, and
//! the floor must pay that too. Its latency runs from the change sent to
//! the watcher's live notification, as pubpresence's does: the same server
//! work, less the component.
//!
//! As the component does, the changes of one connection are written in
//! order (a change waits until the previous one is on both nodes), those of
//! different connections independently.

use super::client::{client_iq, IQ_TIMEOUT};
use super::rate::SimLog;
use crate::sim::SimEvent;
use pubpresence::minidom::Element;
use pubpresence::wire::pubsub;
use pubpresence::wire::user::{Status, UserItem};
use pubpresence::xmpp::c2s::C2s;
use std::collections::HashMap;
use tokio::sync::mpsc;

/// Where the mirror writes.
pub(crate) struct Nodes {
    pub pubsub: String,
    /// Active (item id: the full JID).
    pub active: &'static str,
    /// Live, followed by the watcher.
    pub live: &'static str,
}

/// Reads the load's events into `log` (as the bench's plain reader does)
/// and mirrors every change at once.
pub(crate) fn spawn_mirroring_reader(
    mut rx: mpsc::UnboundedReceiver<SimEvent>,
    log: SimLog,
    client: C2s,
    nodes: Nodes,
) {
    tokio::spawn(async move {
        // One writer per connection, fed in the order of its changes.
        let mut writers: HashMap<String, mpsc::UnboundedSender<(Element, Element)>> =
            HashMap::new();
        while let Some(ev) = rx.recv().await {
            if let SimEvent::Change {
                fulljid,
                status,
                ip,
                ..
            } = &ev
            {
                let item = UserItem {
                    fulljid: fulljid.clone(),
                    name: fulljid.split('/').next().unwrap_or(fulljid).to_string(),
                    status: *status,
                    ip: ip.to_string(),
                    since: chrono::Utc::now(),
                };
                // A departure leaves active (retracted) and is `offline` on
                // live; any other change replaces the item.
                let on_active = if *status == Status::Offline {
                    pubsub::retract(nodes.active, fulljid)
                } else {
                    pubsub::publish(nodes.active, Some(fulljid), item.to_element())
                };
                let on_active = client_iq("set", &nodes.pubsub, on_active);
                let on_live = client_iq(
                    "set",
                    &nodes.pubsub,
                    pubsub::publish(nodes.live, None, item.to_element()),
                );
                let writer = writers
                    .entry(fulljid.clone())
                    .or_insert_with(|| writer(client.clone()));
                let _ = writer.send((on_active, on_live));
            }
            log.push(ev);
        }
    });
}

/// Writes one connection's pairs in order: active, and once the server
/// confirmed it, live.
fn writer(client: C2s) -> mpsc::UnboundedSender<(Element, Element)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Element, Element)>();
    tokio::spawn(async move {
        while let Some((on_active, on_live)) = rx.recv().await {
            if client.iq(on_active, IQ_TIMEOUT).await.is_ok() {
                let _ = client.iq(on_live, IQ_TIMEOUT).await;
            }
        }
    });
    tx
}
