//! Presence stanzas: reading what users send, building what the component sends.

use super::ns;
use super::time::{self, Timestamp};
use super::user::Status;
use super::Attr;
use super::StanzaError;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::minidom::Element;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceKind {
    /// Available with this status.
    Available(Status),
    Unavailable,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Probe,
    Error(StanzaError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceIn {
    pub from: Jid,
    pub to: Option<Jid>,
    pub kind: PresenceKind,
    /// XEP-0203 stamp (a probe answer carries when the presence was set).
    pub delay: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    #[error("presence without a valid 'from'")]
    BadFrom,
    #[error("presence with an invalid <show/> value {0:?}")]
    BadShow(String),
    #[error("presence of unknown type {0:?}")]
    BadType(String),
}

/// Reads an incoming presence. Refuses (never panics on) what RFC 6121 does
/// not allow, so the caller can log and skip it.
pub fn parse(el: &Element) -> Result<PresenceIn, PresenceError> {
    let from: Jid = el
        .attr("from")
        .and_then(|f| f.parse().ok())
        .ok_or(PresenceError::BadFrom)?;
    let to = el.attr("to").and_then(|t| t.parse().ok());
    let kind = match el.attr("type") {
        None | Some("") => {
            let show = el.children().find(|c| c.name() == "show").map(|s| s.text());
            match Status::from_show(show.as_deref()) {
                Some(s) => PresenceKind::Available(s),
                None => {
                    // Bounded: a hostile client can send a huge <show/>.
                    let bad = show.unwrap_or_default().chars().take(32).collect();
                    return Err(PresenceError::BadShow(bad));
                }
            }
        }
        Some("unavailable") => PresenceKind::Unavailable,
        Some("subscribe") => PresenceKind::Subscribe,
        Some("subscribed") => PresenceKind::Subscribed,
        Some("unsubscribe") => PresenceKind::Unsubscribe,
        Some("unsubscribed") => PresenceKind::Unsubscribed,
        Some("probe") => PresenceKind::Probe,
        Some("error") => PresenceKind::Error(StanzaError::from_stanza(el)),
        Some(other) => {
            // Bounded, on a character boundary (a byte cut could panic).
            return Err(PresenceError::BadType(other.chars().take(32).collect()));
        }
    };
    let delay = el
        .children()
        .find(|c| c.is("delay", ns::DELAY))
        .and_then(|d| d.attr("stamp"))
        .and_then(time::parse);
    Ok(PresenceIn {
        from,
        to,
        kind,
        delay,
    })
}

/// A probe from the component to `to` (a bare JID): its sessions answer
/// with their current presence.
pub fn probe(from: &str, to: &str) -> Element {
    build(from, to, Some("probe"), None)
}

/// A presence from the component. `kind` is a `type` attribute or None for
/// available; `show` only applies to available.
pub fn build(from: &str, to: &str, kind: Option<&str>, show: Option<&str>) -> Element {
    let mut b = Element::builder("presence", ns::COMPONENT_ACCEPT)
        .a("from", from)
        .a("to", to);
    if let Some(k) = kind {
        b = b.a("type", k);
    }
    if let Some(s) = show {
        b = b.append(
            Element::builder("show", ns::COMPONENT_ACCEPT)
                .append(s)
                .build(),
        );
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(xml: &str) -> Result<PresenceIn, PresenceError> {
        parse(&xml.parse::<Element>().unwrap())
    }

    #[test]
    fn available_with_and_without_show() {
        let x = p("<presence xmlns='jabber:component:accept' from='a@l/r' to='c.l'/>").unwrap();
        assert_eq!(x.kind, PresenceKind::Available(Status::Online));
        assert_eq!(x.from.to_string(), "a@l/r");
        let x =
            p("<presence xmlns='jabber:component:accept' from='a@l/r'><show>xa</show></presence>")
                .unwrap();
        assert_eq!(x.kind, PresenceKind::Available(Status::Xa));
    }

    #[test]
    fn refuses_bogus() {
        assert_eq!(
            p("<presence xmlns='jabber:component:accept' from='a@l/r'><show>bogus</show></presence>"),
            Err(PresenceError::BadShow("bogus".into()))
        );
        assert_eq!(
            p("<presence xmlns='jabber:component:accept' from='a@l/r' type='weird'/>"),
            Err(PresenceError::BadType("weird".into()))
        );
        assert_eq!(
            p("<presence xmlns='jabber:component:accept'/>"),
            Err(PresenceError::BadFrom)
        );
        assert_eq!(
            p("<presence xmlns='jabber:component:accept' from='@@@'/>"),
            Err(PresenceError::BadFrom)
        );
    }

    #[test]
    fn long_multibyte_values_are_cut_on_character_boundaries() {
        let show = "é".repeat(40);
        let xml = format!(
            "<presence xmlns='jabber:component:accept' from='a@l/r'><show>{show}</show></presence>"
        );
        assert_eq!(p(&xml), Err(PresenceError::BadShow("é".repeat(32))));
        let xml = format!("<presence xmlns='jabber:component:accept' from='a@l/r' type='{show}'/>");
        assert_eq!(p(&xml), Err(PresenceError::BadType("é".repeat(32))));
    }

    #[test]
    fn unavailable_probe_error_and_delay() {
        let x = p("<presence xmlns='jabber:component:accept' from='a@l/r' type='unavailable'/>")
            .unwrap();
        assert_eq!(x.kind, PresenceKind::Unavailable);
        let x = p("<presence xmlns='jabber:component:accept' from='a@l/r'><delay xmlns='urn:xmpp:delay' stamp='2026-01-02T03:04:05Z'/></presence>").unwrap();
        assert_eq!(
            x.delay.map(|d| time::format(&d)).as_deref(),
            Some("2026-01-02T03:04:05Z")
        );
        let x = p("<presence xmlns='jabber:component:accept' from='a@l' type='error'><error type='cancel'><remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>").unwrap();
        match x.kind {
            PresenceKind::Error(e) => assert_eq!(e.condition, "remote-server-not-found"),
            k => panic!("{k:?}"),
        }
    }
}
