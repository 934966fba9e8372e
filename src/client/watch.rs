//! Following pubpresence over an ordinary c2s connection (docs/protocol.md, "Client procedure"): probe
//! the component, subscribe to status and live, fetch active once online,
//! replay what was buffered, then every change. Starts over by itself when
//! the service goes back to `init` or `offline`.

use super::follow::{Follower, Step, WatchEvent};
use crate::config::{Nodes, WatchSettings};
use crate::wire::status::{self, ServiceStatus};
use crate::wire::user::UserItem;
use crate::wire::{pubsub, time, Attr};
use crate::xmpp::c2s::{self as c2s_mod, C2s, C2sError, C2sOptions};
use crate::xmpp::paging;
use serde_json::json;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use xmpp_parsers::jid::Jid;
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

impl Target {
    /// The target of a `[watch]` config.
    pub fn from_settings(s: &WatchSettings) -> Target {
        Target {
            component: s.component.to_string(),
            pubsub: s.pubsub.to_string(),
            nodes: s.nodes.clone(),
            probe_timeout: s.probe_timeout,
            iq_timeout: s.iq_timeout,
        }
    }
}

/// How a `[watch]` config logs in (from the system's default source address).
pub fn login_options(s: &WatchSettings) -> C2sOptions {
    C2sOptions {
        jid: Jid::from(s.jid.clone()),
        password: s.password.expose().to_string(),
        server: Some(s.server.clone()),
        bind_ip: None,
        allow_plaintext: s.allow_plaintext,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    C2s(#[from] C2sError),
    #[error("the connection to the server was lost")]
    Disconnected,
    /// The status or live node was deleted (by an admin, or a server that
    /// lost its data): our subscription went with it, so the procedure
    /// starts again (docs/protocol.md, "Client procedure", step 8).
    #[error("the pubsub node {0} was deleted, and our subscription with it; following again from the start")]
    NodeDeleted(String),
    /// The pubsub service refused our subscription: not a member of the
    /// nodes' whitelist (or another access model keeps us out).
    #[error("{jid} may not subscribe to {node} on {pubsub}: {condition} (is {jid} in the component's [access] members?)")]
    Denied {
        jid: String,
        node: String,
        pubsub: String,
        condition: String,
    },
}

impl WatchError {
    /// Errors that retrying will not cure: wrong password, no TLS where it
    /// is required, refused subscription, an invalid JID.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            WatchError::Denied { .. }
                | WatchError::C2s(
                    C2sError::Auth(_)
                        | C2sError::NoTls { .. }
                        | C2sError::InvalidJid(..)
                        | C2sError::Tls { .. }
                )
        )
    }
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
    // Subscribe to status and live first (live before waiting: docs/protocol.md, "Client procedure", step 2).
    // A node that does not exist yet means the component never ran: retry.
    let mut subscribed = false;
    let (fetch_tx, mut fetch_rx) = mpsc::channel::<Option<Vec<UserItem>>>(4);
    let mut next_try = tokio::time::Instant::now();
    let mut wait = SUBSCRIBE_RETRY_FIRST;
    let mut denied_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_try), if !subscribed => {
                match subscribe(&c2s, &target, &me).await {
                    Ok(true) => {
                        subscribed = true;
                        // Probe: available without show means online.
                        c2s.send(probe(&target.component))?;
                    }
                    Ok(false) => {
                        denied_since = None;
                        // A probe has a running component check its nodes
                        // (docs/protocol.md, "Component presence"): one
                        // deleted behind its back is recreated at once.
                        c2s.send(probe(&target.component))?;
                    }
                    // A component that is creating its nodes has not added
                    // the members yet: a refusal is final only if it lasts.
                    Err(e @ WatchError::Denied { .. }) => {
                        let since = *denied_since.get_or_insert_with(tokio::time::Instant::now);
                        if since.elapsed() >= DENIED_GRACE {
                            return Err(e);
                        }
                        tracing::info!("{e}; retrying (the component may be setting the node up)");
                    }
                    Err(e) => return Err(e),
                }
                next_try = tokio::time::Instant::now() + wait;
                wait = (wait * 2).min(SUBSCRIBE_RETRY_CAP);
            }
            el = inbound.recv() => {
                let Some(el) = el else { return Err(WatchError::Disconnected) };
                if let Some(node) = deleted(&target, &el) {
                    return Err(WatchError::NodeDeleted(node));
                }
                // Nothing counts before the live subscription is confirmed
                // (step 2): a status subscription left from an earlier
                // connection, or made before live turned out not to exist,
                // would have active fetched while live events go unheard.
                // The status comes again once subscribed (the item sent on
                // subscription, and the probe).
                if !subscribed {
                    continue;
                }
                let step = handle(&mut f, &target, &el);
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

/// Retries of the first subscription while the nodes do not exist yet (or
/// refuse us for a moment): doubling from the first to the cap.
const SUBSCRIBE_RETRY_FIRST: Duration = Duration::from_millis(250);
const SUBSCRIBE_RETRY_CAP: Duration = Duration::from_secs(4);
/// How long a refused subscription may last before it is final.
const DENIED_GRACE: Duration = Duration::from_secs(10);

/// Stanza error conditions by which a pubsub service says "not you".
const DENIED: [&str; 5] = [
    "forbidden",
    "not-allowed",
    "not-authorized",
    "registration-required",
    "subscription-required",
];

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
            Err(C2sError::Stanza { condition, .. }) if DENIED.contains(&condition.as_str()) => {
                return Err(WatchError::Denied {
                    jid: me.split('/').next().unwrap_or(me).to_string(),
                    node: node.clone(),
                    pubsub: target.pubsub.clone(),
                    condition,
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

fn probe(component: &str) -> Element {
    Element::builder("presence", crate::wire::ns::CLIENT)
        .a("to", component.to_string())
        .a("type", "probe")
        .build()
}

/// Whether a stanza comes from the pubsub service (a domain JID: compared
/// without regard to case, as the server may write it otherwise than the
/// config does).
fn from_service(target: &Target, el: &Element) -> bool {
    el.attr("from")
        .is_some_and(|f| f.eq_ignore_ascii_case(&target.pubsub))
}

/// The node we follow (status or live) that a notification says was deleted.
fn deleted(target: &Target, el: &Element) -> Option<String> {
    if el.name() != "message" {
        return None;
    }
    let from_service = from_service(target, el);
    pubsub::parse_event(el).into_iter().find_map(|ev| match ev {
        pubsub::Event::Delete { node }
            if from_service && (node == target.nodes.status || node == target.nodes.live) =>
        {
            Some(node)
        }
        _ => None,
    })
}

fn handle(f: &mut Follower, target: &Target, el: &Element) -> Step {
    match el.name() {
        // Only the pubsub service speaks for the nodes: anyone else on the
        // server can send us a message that looks like a notification.
        "message" if !from_service(target, el) => Step::default(),
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
            // Page by page where the service pages (`xmpp::paging`).
            let r = paging::all_items(&target.nodes.active, paging::PAGE, |ask| {
                let wait = paging::answer_wait(target.iq_timeout);
                c2s.iq(iq("get", &target.pubsub, ask), wait)
            })
            .await;
            let items = match r {
                Ok(all) => Some(
                    all.into_iter()
                        .filter_map(|(_, p)| p.as_ref().and_then(UserItem::from_element))
                        .collect(),
                ),
                Err(C2sError::Disconnected) => {
                    tracing::warn!(
                        "fetching active failed: the connection was lost before the answer: {}",
                        paging::CUT_MID_ANSWER
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!("fetching active failed: {e}");
                    if matches!(&e, C2sError::Stanza { condition, .. } if condition == "item-not-found")
                    {
                        // Deleted behind the component's back: a probe has it
                        // check its nodes (docs/protocol.md, "Component presence").
                        let _ = c2s.send(probe(&target.component));
                    }
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

/// What [`run`] reports: the follower's events, and its own link.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// An event, numbered from 1 in the order [`run`] emits them: the `seq`
    /// of the JSON lines and of the web feed (docs/protocol.md, "Resuming
    /// a stream").
    Event { seq: u64, event: WatchEvent },
    /// Logged in (again) as this full JID.
    Connected(String),
    /// The connection was lost (or a login failed); next attempt in `retry_in`.
    Lost { reason: String, retry_in: Duration },
}

/// Reconnect backoff: doubling from the first to the cap, as the component.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_CAP: Duration = Duration::from_secs(30);
/// A session this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);
/// Bound on the unsubscribe-and-close at shutdown.
const GOODBYE: Duration = Duration::from_secs(3);

/// Logs in, follows (docs/protocol.md, "Client procedure") and reconnects with capped exponential backoff
/// when the connection drops, until `shutdown` turns true or `out` is
/// closed. Each new connection starts the procedure over: a new `service`
/// event and a new `snapshot` follow.
///
/// Fails at once when the first login fails (wrong password, server
/// unreachable: the caller wants to hear it, not a retry loop), and at any
/// time on an error retrying cannot cure ([`WatchError::is_fatal`]).
///
/// Without a resource in `login.jid`, one is chosen for the whole run: a
/// reconnect takes over the same full JID, so the pubsub subscriptions (made
/// for the full JID) stay the same ones instead of piling up one per
/// connection. They are removed at shutdown.
pub async fn run(
    mut login: C2sOptions,
    target: Target,
    out: mpsc::Sender<Update>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), WatchError> {
    if let Err(bare) = login.jid.try_as_full() {
        let resource = format!("watch-{:08x}", random_u64() as u32);
        let full = bare
            .with_resource_str(&resource)
            .map_err(|e| C2sError::InvalidJid(login.jid.to_string(), e.to_string()))?;
        login.jid = Jid::from(full);
    }
    let mut retry = RETRY_FIRST;
    let mut ever_connected = false;
    // One numbering for the whole run, across reconnects.
    let mut seq = 0u64;
    let mut numbered = |event: WatchEvent| {
        seq += 1;
        Update::Event { seq, event }
    };
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let connected = tokio::select! {
            r = c2s_mod::connect(&login) => r,
            _ = shutdown.changed() => return Ok(()),
        };
        let reason = match connected {
            Err(e) if !ever_connected || WatchError::from(e.clone()).is_fatal() => {
                return Err(e.into())
            }
            Err(e) => e.to_string(),
            Ok((c2s, inbound)) => {
                ever_connected = true;
                let started = tokio::time::Instant::now();
                tracing::info!(jid = %c2s.jid(), "logged in");
                if out
                    .send(Update::Connected(c2s.jid().to_string()))
                    .await
                    .is_err()
                {
                    goodbye(&c2s, &target).await;
                    return Ok(());
                }
                let (tx, mut rx) = mpsc::channel(64);
                let session = follow(c2s.clone(), inbound, target.clone(), tx);
                tokio::pin!(session);
                let ended = loop {
                    tokio::select! {
                        r = &mut session => break Some(r),
                        Some(ev) = rx.recv() => {
                            if out.send(numbered(ev)).await.is_err() {
                                break None;
                            }
                        }
                        _ = shutdown.changed() => break None,
                    }
                };
                // Events the follower queued before it ended still count.
                while let Ok(ev) = rx.try_recv() {
                    let _ = out.send(numbered(ev)).await;
                }
                match ended {
                    None | Some(Ok(())) => {
                        goodbye(&c2s, &target).await;
                        return Ok(());
                    }
                    Some(Err(e)) if e.is_fatal() => {
                        c2s.close().await;
                        return Err(e);
                    }
                    Some(Err(e)) => {
                        c2s.close().await;
                        // A deleted node is no trouble with the link: no
                        // growing backoff for it.
                        if started.elapsed() >= STABLE || matches!(e, WatchError::NodeDeleted(_)) {
                            retry = RETRY_FIRST;
                        }
                        e.to_string()
                    }
                }
            }
        };
        tracing::warn!("watch: {reason}; reconnecting in {retry:?}");
        let lost = Update::Lost {
            reason,
            retry_in: retry,
        };
        if out.send(lost).await.is_err() {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        retry = (retry * 2).min(RETRY_CAP);
    }
}

/// Clean exit: unsubscribe from status and live (best effort, bounded) and
/// close the stream.
async fn goodbye(c2s: &C2s, target: &Target) {
    let me = c2s.jid().to_string();
    let _ = tokio::time::timeout(GOODBYE, async {
        for node in [&target.nodes.status, &target.nodes.live] {
            let _ = c2s
                .iq(iq("set", &target.pubsub, unsubscribe(node, &me)), GOODBYE)
                .await;
        }
    })
    .await;
    c2s.clone().close().await;
}

fn unsubscribe(node: &str, jid: &str) -> Element {
    Element::builder("pubsub", crate::wire::ns::PUBSUB)
        .append(
            Element::builder("unsubscribe", crate::wire::ns::PUBSUB)
                .a("node", node)
                .a("jid", jid)
                .build(),
        )
        .build()
}

/// Enough randomness for a resource name or a feed epoch, without a
/// dependency.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
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

/// The JSON object (docs/protocol.md, "JSON events") for an event, `at` = when the client learned it.
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

/// An event's JSON object with its `seq` (docs/protocol.md, "JSON events").
pub fn event_json(seq: u64, ev: &WatchEvent, at: &time::Timestamp) -> serde_json::Value {
    let mut v = to_json(ev, at);
    v["seq"] = json!(seq);
    v
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

    fn target() -> Target {
        Target {
            component: "pubpresence.example.org".into(),
            pubsub: "pubsub.example.org".into(),
            nodes: crate::config::Nodes::default(),
            probe_timeout: Duration::from_secs(2),
            iq_timeout: Duration::from_secs(10),
        }
    }

    fn xml(s: &str) -> Element {
        s.parse().unwrap()
    }

    #[test]
    fn a_deleted_node_we_follow_is_noticed_from_the_service_only() {
        let t = target();
        let delete = |from: &str, node: &str| {
            xml(&format!(
                "<message xmlns='jabber:client' from='{from}'><event xmlns='http://jabber.org/protocol/pubsub#event'><delete node='{node}'/></event></message>"
            ))
        };
        assert_eq!(
            deleted(&t, &delete("pubsub.example.org", "presence/live")).as_deref(),
            Some("presence/live")
        );
        assert_eq!(
            deleted(&t, &delete("pubsub.example.org", "presence/status")).as_deref(),
            Some("presence/status")
        );
        // Not followed (active is fetched, never subscribed to), or not the service.
        assert_eq!(
            deleted(&t, &delete("pubsub.example.org", "presence/active")),
            None
        );
        assert_eq!(
            deleted(&t, &delete("eve@example.org/x", "presence/live")),
            None
        );
    }

    #[test]
    fn live_items_from_anyone_but_the_service_are_ignored() {
        let t = target();
        let item = |from: &str| {
            xml(&format!(
                "<message xmlns='jabber:client' from='{from}'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='presence/live'><item><user xmlns='urn:pubpresence:0' fulljid='forged@example.org/x' ip='192.0.2.66' name='forged@example.org' since='2026-01-01T00:00:00Z' status='online'/></item></items></event></message>"
            ))
        };
        let mut f = Follower::new();
        assert!(!f.status(ServiceStatus::Online).events.is_empty());
        f.active_fetched(vec![]);
        assert_eq!(
            handle(&mut f, &t, &item("eve@example.org/x")),
            Step::default()
        );
        assert_eq!(
            handle(&mut f, &t, &item("pubsub.example.org.evil")),
            Step::default()
        );
        for from in ["pubsub.example.org", "PubSub.Example.org"] {
            // (A domain's case does not matter.)
            let mut f = Follower::new();
            f.status(ServiceStatus::Online);
            f.active_fetched(vec![]);
            let step = handle(&mut f, &t, &item(from));
            assert!(
                matches!(&step.events[..], [WatchEvent::Set(u)] if u.fulljid == "forged@example.org/x"),
                "{from}: {step:?}"
            );
        }
    }

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
