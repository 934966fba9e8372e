//! The watcher's requests to the pubsub service, shared by the benchmarks.

use pubpresence::minidom::Element;
use pubpresence::wire::status::{self as wstatus, ServiceStatus};
use pubpresence::wire::{ns, pubsub, Attr};
use pubpresence::xmpp::c2s::C2s;
use std::time::Duration;

pub(crate) const LIVE: &str = "presence/live";
pub(crate) const ACTIVE: &str = "presence/active";
pub(crate) const STATUS: &str = "presence/status";
pub(crate) const IQ_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn client_iq_id(id: &str, kind: &str, to: &str, payload: Element) -> Element {
    Element::builder("iq", ns::CLIENT)
        .a("type", kind)
        .a("id", id)
        .a("to", to)
        .append(payload)
        .build()
}

pub(crate) fn client_iq(kind: &str, to: &str, payload: Element) -> Element {
    Element::builder("iq", ns::CLIENT)
        .a("type", kind)
        .a("to", to)
        .append(payload)
        .build()
}

/// The status node's current status, if it can be read.
pub(crate) async fn read_status(c: &C2s, pubsub_jid: &str) -> Option<ServiceStatus> {
    let r = c
        .iq(
            client_iq("get", pubsub_jid, pubsub::items(STATUS)),
            IQ_TIMEOUT,
        )
        .await
        .ok()?;
    pubsub::parse_items(&r)
        .into_iter()
        .filter_map(|(_, p)| p.as_ref().and_then(wstatus::from_element))
        .map(|(s, _)| s)
        .next_back()
}
