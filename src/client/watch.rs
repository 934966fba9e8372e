//! Following pubpresence over an ordinary c2s connection (SPEC §6): probe
//! the component, subscribe to status and live, fetch active once online,
//! replay what was buffered, then every change. Starts over by itself when
//! the service goes back to `init` or `offline`.

use super::c2s::{C2s, C2sError};
use super::follow::{Follower, Step, WatchEvent};
use crate::config::Nodes;
use crate::wire::status::{self, ServiceStatus};
use crate::wire::user::UserItem;
use crate::wire::{pubsub, time, Attr};
use serde_json::json;
use std::time::Duration;
use tokio::sync::mpsc;
use xmpp_parsers::minidom::Element;

/// Whom to follow.
#[derive(Debug, Clone)]
pub struct Target {
    /// The component's JID (probed).
    pub component: String,
    /// The pubsub service holding the nodes.
    pub pubsub: String,
    pub nodes: Nodes,
    pub probe_timeout: Duration,
    pub iq_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0}")]
    C2s(#[from] C2sError),
    #[error("the connection to the server was lost")]
    Disconnected,
}

fn iq(kind: &str, to: &str, payload: Element) -> Element {
    Element::builder("iq", crate::wire::ns::CLIENT)
        .a("type", kind)
        .a("to", to.to_string())
        .append(payload)
        .build()
}

/// Runs the procedure until the connection ends or `out` is closed.
pub async fn follow(
    c2s: C2s,
    mut inbound: mpsc::Receiver<Element>,
    target: Target,
    out: mpsc::Sender<WatchEvent>,
) -> Result<(), WatchError> {
    let me = c2s.jid().to_string();
    let mut f = Follower::new();
    // Subscribe to status and live first (live before waiting, SPEC §6 step 2).
    // A node that does not exist yet means the component never ran: retry.
    let mut subscribed = false;
    let (fetch_tx, mut fetch_rx) = mpsc::channel::<Option<Vec<UserItem>>>(4);
    let mut retry = tokio::time::interval(Duration::from_secs(2));
    let mut probed_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = retry.tick(), if !subscribed => {
                subscribed = subscribe(&c2s, &target, &me).await?;
                if subscribed {
                    // Probe: available without show means online.
                    let probe = Element::builder("presence", crate::wire::ns::CLIENT)
                        .a("to", target.component.clone())
                        .a("type", "probe")
                        .build();
                    c2s.send(probe)?;
                    probed_at = tokio::time::Instant::now();
                }
            }
            el = inbound.recv() => {
                let Some(el) = el else { return Err(WatchError::Disconnected) };
                let step = handle(&mut f, &target, &el, probed_at);
                if !emit(&out, step, &c2s, &target, &fetch_tx).await {
                    return Ok(());
                }
            }
            Some(fetched) = fetch_rx.recv() => {
                let step = match fetched {
                    Some(items) => f.active_fetched(items),
                    None => f.fetch_failed(),
                };
                if !emit(&out, step, &c2s, &target, &fetch_tx).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Subscribes to status and live; false when a node does not exist yet.
async fn subscribe(c2s: &C2s, target: &Target, me: &str) -> Result<bool, WatchError> {
    for node in [&target.nodes.status, &target.nodes.live] {
        match c2s
            .iq(
                iq("set", &target.pubsub, pubsub::subscribe(node, me)),
                target.iq_timeout,
            )
            .await
        {
            Ok(_) => {}
            Err(C2sError::Stanza { condition, .. }) if condition == "item-not-found" => {
                tracing::info!(node = %node, "node does not exist yet: is pubpresence running?");
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

fn handle(
    f: &mut Follower,
    target: &Target,
    el: &Element,
    _probed_at: tokio::time::Instant,
) -> Step {
    match el.name() {
        "message" => {
            let mut step = Step::default();
            for ev in pubsub::parse_event(el) {
                let pubsub::Event::Items { node, items, .. } = ev else {
                    continue;
                };
                for (_, payload) in items {
                    let Some(payload) = payload else { continue };
                    let s = if node == target.nodes.status {
                        match status::from_element(&payload) {
                            Some((st, _)) => f.status(st),
                            None => continue,
                        }
                    } else if node == target.nodes.live {
                        match UserItem::from_element(&payload) {
                            Some(item) => f.live(item),
                            None => continue,
                        }
                    } else {
                        continue;
                    };
                    step.events.extend(s.events);
                    step.fetch_active |= s.fetch_active;
                }
            }
            step
        }
        "presence" => {
            let from_component = el
                .attr("from")
                .is_some_and(|f| f.split('/').next() == Some(target.component.as_str()));
            let available = el.attr("type").is_none();
            let show = el.children().any(|c| c.name() == "show");
            if from_component && available && !show {
                f.status(ServiceStatus::Online)
            } else {
                Step::default()
            }
        }
        _ => Step::default(),
    }
}

/// Passes events on and starts a fetch of active when asked. False when
/// the consumer is gone.
async fn emit(
    out: &mpsc::Sender<WatchEvent>,
    step: Step,
    c2s: &C2s,
    target: &Target,
    fetch_tx: &mpsc::Sender<Option<Vec<UserItem>>>,
) -> bool {
    if step.fetch_active {
        let c2s = c2s.clone();
        let target = target.clone();
        let tx = fetch_tx.clone();
        tokio::spawn(async move {
            let r = c2s
                .iq(
                    iq("get", &target.pubsub, pubsub::items(&target.nodes.active)),
                    target.iq_timeout,
                )
                .await;
            let items = match r {
                Ok(res) => Some(
                    pubsub::parse_items(&res)
                        .into_iter()
                        .filter_map(|(_, p)| p.as_ref().and_then(UserItem::from_element))
                        .collect(),
                ),
                Err(e) => {
                    tracing::warn!("fetching active failed: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    None
                }
            };
            let _ = tx.send(items).await;
        });
    }
    for ev in step.events {
        if out.send(ev).await.is_err() {
            return false;
        }
    }
    true
}

fn user_json(i: &UserItem) -> serde_json::Value {
    json!({
        "fulljid": i.fulljid,
        "name": i.name,
        "status": i.status.as_str(),
        "ip": i.ip,
        "since": time::format(&i.since),
    })
}

/// The JSON object of SPEC §6 for an event, `at` = when the client learned it.
pub fn to_json(ev: &WatchEvent, at: &time::Timestamp) -> serde_json::Value {
    let at = time::format(at);
    match ev {
        WatchEvent::Service(st) => json!({"event": "service", "status": st.as_str(), "at": at}),
        WatchEvent::Snapshot(users) => json!({
            "event": "snapshot",
            "users": users.iter().map(user_json).collect::<Vec<_>>(),
            "at": at,
        }),
        WatchEvent::Set(i) => {
            let mut v = user_json(i);
            v["event"] = json!("set");
            v["at"] = json!(at);
            v
        }
        WatchEvent::Remove { fulljid, name } => {
            json!({"event": "remove", "fulljid": fulljid, "name": name, "at": at})
        }
    }
}

/// The kind of an event, as named on the wire (`service`, `snapshot`, ...).
pub fn kind(ev: &WatchEvent) -> &'static str {
    match ev {
        WatchEvent::Service(_) => "service",
        WatchEvent::Snapshot(_) => "snapshot",
        WatchEvent::Set(_) => "set",
        WatchEvent::Remove { .. } => "remove",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::user::Status;

    #[test]
    fn json_lines_as_spec() {
        let at = time::parse("2026-11-24T10:00:05Z").unwrap();
        let item = UserItem {
            fulljid: "alice@example.org/desk".into(),
            name: "alice@example.org".into(),
            status: Status::Away,
            ip: "192.0.2.7".into(),
            since: time::parse("2026-11-24T10:00:00Z").unwrap(),
        };
        assert_eq!(
            to_json(&WatchEvent::Set(item.clone()), &at).to_string(),
            r#"{"at":"2026-11-24T10:00:05Z","event":"set","fulljid":"alice@example.org/desk","ip":"192.0.2.7","name":"alice@example.org","since":"2026-11-24T10:00:00Z","status":"away"}"#
        );
        assert_eq!(
            to_json(&WatchEvent::Service(ServiceStatus::Init), &at).to_string(),
            r#"{"at":"2026-11-24T10:00:05Z","event":"service","status":"init"}"#
        );
        let snap = to_json(&WatchEvent::Snapshot(vec![item]), &at);
        assert_eq!(snap["users"][0]["status"], "away");
        assert_eq!(kind(&WatchEvent::Snapshot(vec![])), "snapshot");
    }
}
