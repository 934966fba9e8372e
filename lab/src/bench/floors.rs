//! The server's own floors for the component's start-up and restart
//! (docs/benchmarks.md, "Floors"): the least work the server must do for the
//! same result, done by a plain client with nothing of the component's logic,
//! in the same run as the figure it bounds.
//!
//! - Start-up (active empty, N sessions): the component publishes each
//!   connection on active and, once confirmed, on live, 256 in flight
//!   (docs/protocol.md, "What the component publishes, and when", step 6).
//!   The floor publishes the same N items the same way to two fresh nodes
//!   configured as active and live; and, for reference, once each to one
//!   node (the least any publisher of N items costs).
//! - Restart with nothing changed: the component connects, lists the
//!   server's sessions, probes every user and fetches active (steps 1 and
//!   4-5). The floor connects as the same component (while it is stopped),
//!   lists, probes every listed user with a round trip behind the probes,
//!   and fetches active beside them: only the questions, none of the
//!   component's set-up or answers. Where the listing states no addresses
//!   (ejabberd), a second floor also asks every user's (user-stats), as
//!   the component must to know that no address changed.

use super::client::{client_iq, IQ_TIMEOUT};
use super::error::{setup, BenchError};
use super::measure::cpu_seconds;
use futures::StreamExt;
use pubpresence::component::{privileges, publisher};
use pubpresence::minidom::Element;
use pubpresence::wire::user::UserItem;
use pubpresence::wire::{ns, presence, pubsub};
use pubpresence::xmpp::c2s::{C2s, C2sError};
use pubpresence::xmpp::iq::again_while;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The component's requests in flight at once (its dispatcher's bound).
pub(crate) const IN_FLIGHT: usize = pubpresence::component::WRITES_IN_FLIGHT;

/// The start-up floor's figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PublishFloor {
    pub items: usize,
    pub in_flight: usize,
    /// Each item on an active-like node, then (confirmed) on a live-like node.
    pub pairs_s: f64,
    /// Each item once, on one node.
    pub single_s: f64,
    /// The server's CPU seconds during the pairs.
    pub pairs_server_cpu_s: f64,
}

/// The restart floor's figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestartFloor {
    /// Connect + handshake to the last answer (listing, probes, active).
    pub seconds: f64,
    pub handshake_s: f64,
    pub listing_s: f64,
    /// From the first probe to the round trip behind them, and with
    /// `AsComponent::answers` to the last listed session's answer.
    pub probes_s: f64,
    /// With `AsComponent::answers`: listed sessions whose answer had not
    /// come within `ANSWERS_WAIT`.
    pub unanswered: Option<usize>,
    /// With `AsComponent::addresses`: every user's user-stats, beside the
    /// probes.
    pub addresses_s: Option<f64>,
    /// The fetch of active, beside the listing and probes.
    pub active_s: f64,
    pub sessions: usize,
    pub users: usize,
    pub active_items: usize,
    /// The server's CPU seconds from the connect to the last answer.
    pub server_cpu_s: f64,
}

/// CPU seconds of `pid` since `from` (0 when unreadable).
pub(crate) fn cpu_since(pid: u32, from: Option<f64>) -> f64 {
    match (from, cpu_seconds(pid)) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    }
}

/// Node configurations as the component gives active and live (open access
/// instead of a whitelist: the floor's reader need not be a member). Active's
/// `max_items` is `max`, as the component asks: on ejabberd's SQL store a
/// number makes every publish read the publisher's item ids first.
pub(crate) fn active_like() -> Element {
    pubsub::config_form(&[
        ("pubsub#access_model", "open".into()),
        ("pubsub#deliver_payloads", "1".into()),
        ("pubsub#persist_items", "1".into()),
        ("pubsub#max_items", "max".into()),
        ("pubsub#send_last_published_item", "never".into()),
        ("pubsub#notify_retract", "1".into()),
    ])
}

pub(crate) fn live_like() -> Element {
    pubsub::config_form(&[
        ("pubsub#access_model", "open".into()),
        ("pubsub#deliver_payloads", "1".into()),
        ("pubsub#persist_items", "0".into()),
        ("pubsub#send_last_published_item", "never".into()),
    ])
}

/// Creates `node` with `config`, as `c`, asking again on a temporary error
/// as the component does (`pubpresence::xmpp::iq::again_on_wait` says why:
/// ejabberd before 25.10 gives such a creation up with "Database failure").
/// Seen in CI on a 23.01 cluster, right after the node before it.
pub(crate) async fn create(
    c: &C2s,
    service: &str,
    node: &str,
    config: Element,
) -> Result<(), BenchError> {
    again_while(C2sError::is_temporary, || {
        c.iq(
            client_iq("set", service, pubsub::create(node, config.clone())),
            IQ_TIMEOUT,
        )
    })
    .await
    .map(drop)
    .map_err(|e| setup(format!("creating {node}: {e}")))
}

/// Deletes a floor's node, saying how long that took: a server may be busy
/// with it for long (ejabberd deletes the items one by one).
async fn delete(c: &C2s, service: &str, node: &str) {
    let t = Instant::now();
    match c
        .iq(client_iq("set", service, pubsub::delete(node)), IQ_TIMEOUT)
        .await
    {
        Ok(_) => tracing::info!("deleted {node} in {:.2} s", t.elapsed().as_secs_f64()),
        Err(e) => tracing::warn!("deleting {node}: {e}"),
    }
}

/// The items of `node` (active) as `c` reads them: what the start-up floor
/// publishes again.
pub(crate) async fn items_of(
    c: &C2s,
    service: &str,
    node: &str,
) -> Result<Vec<UserItem>, BenchError> {
    c.iq(
        client_iq("get", service, pubsub::items(node)),
        pubpresence::xmpp::paging::ANSWER_WAIT,
    )
    .await
    .map(|r| {
        pubsub::parse_items(&r)
            .into_iter()
            .filter_map(|(_, p)| p.as_ref().and_then(UserItem::from_element))
            .collect()
    })
    .map_err(|e| setup(format!("reading {node} for the start-up floor: {e}")))
}

/// Publishes `items` as the component's start-up does (see the module
/// comment), `IN_FLIGHT` at once, with `subscriber` (the bench's watcher)
/// subscribed to the live-like node as it is to live. `c` must be allowed
/// to create nodes (the lab's admin).
pub(crate) async fn publish_floor(
    c: &C2s,
    subscriber: &C2s,
    service: &str,
    items: &[UserItem],
    server_pid: u32,
) -> Result<PublishFloor, BenchError> {
    let (active, live, single) = (
        "bench/floor-active",
        "bench/floor-live",
        "bench/floor-single",
    );
    create(c, service, active, active_like()).await?;
    create(c, service, live, live_like()).await?;
    create(c, service, single, active_like()).await?;
    let me = subscriber.jid().to_string();
    subscriber
        .iq(
            client_iq("set", service, pubsub::subscribe(live, &me)),
            IQ_TIMEOUT,
        )
        .await?;
    let publish = |node: &'static str, item: &UserItem, id: bool| {
        let id = id.then_some(item.fulljid.as_str());
        c.iq(
            client_iq("set", service, pubsub::publish(node, id, item.to_element())),
            Duration::from_secs(120),
        )
    };
    let t = Instant::now();
    let cpu = cpu_seconds(server_pid);
    let failed = futures::stream::iter(items)
        .map(|item| async move {
            publish(active, item, true).await?;
            publish(live, item, false).await
        })
        .buffer_unordered(IN_FLIGHT)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    let pairs_s = t.elapsed().as_secs_f64();
    let pairs_server_cpu_s = cpu_since(server_pid, cpu);
    let t = Instant::now();
    let failed_single = futures::stream::iter(items)
        .map(|item| publish(single, item, true))
        .buffer_unordered(IN_FLIGHT)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    let single_s = t.elapsed().as_secs_f64();
    for node in [active, live, single] {
        delete(c, service, node).await;
    }
    if failed + failed_single > 0 {
        return Err(setup(format!(
            "the start-up floor: {failed} pairs and {failed_single} single publishes refused"
        )));
    }
    Ok(PublishFloor {
        items: items.len(),
        in_flight: IN_FLIGHT,
        pairs_s,
        single_s,
        pairs_server_cpu_s,
    })
}

/// What the restart floor needs to reach the server as the component.
pub(crate) struct AsComponent<'a> {
    pub addr: String,
    pub jid: &'a str,
    pub secret: &'a str,
    pub domain: &'a str,
    pub pubsub: &'a str,
    pub active: &'a str,
    pub server_pid: u32,
    /// How this server lists its sessions (the component's own listing:
    /// default for Prosody's admin command, `Listing::disco_known` for
    /// ejabberd, so that the floor sends the one request the component's
    /// restart sends).
    pub listing: publisher::Listing,
    /// Also ask every user's addresses (user-stats), as the component must
    /// where the listing states none (ejabberd).
    pub addresses: bool,
    /// The users answer probes (their rosters hold the component) and the
    /// round trip behind the probes proves nothing about their answers
    /// (ejabberd answers it first): wait for every listed session's answer,
    /// as the component must (docs/protocol.md, "What the component
    /// publishes, and when"). Without it the floor's probe step ends before
    /// the server has sent the answers, which are part of its work.
    pub answers: bool,
    /// Probe the listed users. Not where the server sent every session's
    /// presence with its XEP-0356 permission (Prosody's mod_privilege), as
    /// the component does not (docs/protocol.md, "What the component
    /// publishes, and when", step 4).
    pub probes: bool,
    /// ejabberd 24.10 and later with XEP-0356: requests go as privileged IQs
    /// on behalf of this user, as the component's do (README, "XEP-0356 on
    /// ejabberd 24.10 and later"); plain, they get no answer.
    pub privileged_as: Option<&'a str>,
}

/// How long the restart floor waits for the probes' answers
/// (`AsComponent::answers`): well past the component's default
/// `probe_timeout` (3 s), so that a slow answer shows in the figure rather
/// than being cut off.
pub(crate) const ANSWERS_WAIT: Duration = Duration::from_secs(10);

/// How long the restart floor waits for any one answer. Its fetch of active
/// goes beside the probes, and Prosody works through both together: at
/// 100,000 sessions the fetch alone takes it about a minute and the
/// probes' answers another, so the fetch's answer came after more than
/// 120 s (docs/benchmarks.md, "Past the open-file limit: sessions held
/// inside Prosody").
const FLOOR_WAIT: Duration = Duration::from_secs(300);

/// The restart floor (see the module comment). The component must be
/// stopped: the floor connects with its JID.
pub(crate) async fn restart_floor(at: &AsComponent<'_>) -> Result<RestartFloor, BenchError> {
    let t0 = Instant::now();
    let cpu = cpu_seconds(at.server_pid);
    // A server still letting go of the stopped component's connection
    // refuses this one (`conflict`) for a while: asked again, as the
    // component does.
    let give_up = Instant::now() + Duration::from_secs(60);
    let (conn, mut inbound, _task) = loop {
        match pubpresence::xmpp::connect_component(&at.addr, at.jid, at.secret, FLOOR_WAIT).await {
            Err(pubpresence::xmpp::ConnectError::Conflict { .. }) if Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            r => break r.map_err(|e| setup(format!("the restart floor's connection: {e}")))?,
        }
    };
    if let Some(user) = at.privileged_as {
        // The server's permission message comes first; until then a request
        // might go the wrong way.
        let (_, permissions) = privileges::await_permissions(&mut inbound).await;
        match permissions {
            Some(p) => {
                if let privileges::Decision::Wrap { .. } =
                    privileges::decide(&p, Some(user), at.domain)
                {
                    conn.wrapping().enable(user, p);
                }
            }
            None => {
                return Err(setup(
                    "the restart floor: the server sent no XEP-0356 permissions",
                ))
            }
        }
    }
    // Presences (the probes' answers) are read as fast as they come; with
    // `answers`, their senders are passed on to be ticked off.
    let (from_tx, mut from_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let answers = at.answers;
    tokio::spawn(async move {
        while let Some(stanza) = inbound.recv().await {
            if !answers || stanza.name() != "presence" {
                continue;
            }
            if let Some(from) = stanza.attr("from") {
                let _ = from_tx.send(from.to_string());
            }
        }
    });
    let handshake_s = t0.elapsed().as_secs_f64();
    let iq_err = |what: &str| {
        let what = what.to_string();
        move |e: pubpresence::xmpp::IqError| setup(format!("the restart floor's {what}: {e}"))
    };
    let who = async {
        let t = Instant::now();
        let listed = publisher::online_sessions_via(&conn, at.domain, &at.listing)
            .await
            .map_err(iq_err("listing"))?;
        let listing_s = t.elapsed().as_secs_f64();
        tracing::info!("the restart floor's listing answered in {listing_s:.1} s");
        let sessions = listed.len();
        let users: HashSet<&str> = listed.iter().map(|s| s.bare.as_str()).collect();
        let t = Instant::now();
        if at.probes {
            for u in &users {
                conn.send(presence::probe(at.jid, u))
                    .map_err(iq_err("probes"))?;
            }
        }
        let ping = Element::builder("ping", ns::PING).build();
        let round_trip = async {
            conn.iq("get", at.domain, ping)
                .await
                .map_err(iq_err("round trip behind the probes"))
        };
        let listed_answers = async {
            if !at.answers {
                return None;
            }
            let mut waiting: HashSet<&str> = listed.iter().map(|s| s.fulljid.as_str()).collect();
            let deadline = tokio::time::Instant::now() + ANSWERS_WAIT;
            while !waiting.is_empty() {
                match tokio::time::timeout_at(deadline, from_rx.recv()).await {
                    Ok(Some(from)) => {
                        waiting.remove(from.as_str());
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            Some(waiting.len())
        };
        let probes = async {
            let (pinged, unanswered) = tokio::join!(round_trip, listed_answers);
            pinged?;
            let probes_s = t.elapsed().as_secs_f64();
            tracing::info!("the restart floor's probes: round trip back in {probes_s:.1} s");
            Ok::<_, BenchError>((probes_s, unanswered))
        };
        // Beside the probes, where asked: every user's addresses.
        let addresses = async {
            if !at.addresses {
                return Ok::<_, BenchError>(None);
            }
            let t = Instant::now();
            let failed = futures::stream::iter(&users)
                .map(|u| publisher::user_stats(&conn, at.domain, u))
                .buffer_unordered(IN_FLIGHT)
                .filter(|r| std::future::ready(r.is_err()))
                .count()
                .await;
            if failed > 0 {
                return Err(setup(format!(
                    "the restart floor: {failed} user-stats requests failed"
                )));
            }
            Ok(Some(t.elapsed().as_secs_f64()))
        };
        let (probes, addresses_s) = tokio::join!(probes, addresses);
        Ok::<_, BenchError>((listing_s, probes?, addresses_s?, sessions, users.len()))
    };
    let fetch = async {
        let t = Instant::now();
        let res = conn
            .iq("get", at.pubsub, pubsub::items(at.active))
            .await
            .map_err(iq_err("fetch of active"))?;
        let active_s = t.elapsed().as_secs_f64();
        tracing::info!("the restart floor's fetch of active answered in {active_s:.1} s");
        Ok::<_, BenchError>((active_s, pubsub::parse_items(&res).len()))
    };
    let (who, fetched) = tokio::join!(who, fetch);
    let seconds = t0.elapsed().as_secs_f64();
    let server_cpu_s = cpu_since(at.server_pid, cpu);
    conn.close().await;
    let (listing_s, (probes_s, unanswered), addresses_s, sessions, users) = who?;
    let (active_s, active_items) = fetched?;
    Ok(RestartFloor {
        seconds,
        handshake_s,
        listing_s,
        probes_s,
        unanswered,
        addresses_s,
        active_s,
        sessions,
        users,
        active_items,
        server_cpu_s,
    })
}
