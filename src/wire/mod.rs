//! Payloads and stanzas on the wire: building and parsing, no I/O, no state.

pub mod adhoc;
pub mod disco;
pub mod forms;
pub mod presence;
pub mod privilege;
pub mod pubsub;
pub mod status;
pub mod time;
pub mod user;

/// Namespaces used by pubpresence.
pub mod ns {
    pub const COMPONENT_ACCEPT: &str = "jabber:component:accept";
    pub const CLIENT: &str = "jabber:client";
    pub const USER: &str = "urn:pubpresence:0";
    pub const DATA: &str = "jabber:x:data";
    pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
    pub const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
    pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
    pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
    pub const COMMANDS: &str = "http://jabber.org/protocol/commands";
    pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
    pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
    pub const PING: &str = "urn:xmpp:ping";
    pub const VERSION: &str = "jabber:iq:version";
    pub const TIME: &str = "urn:xmpp:time";
    pub const DELAY: &str = "urn:xmpp:delay";
    pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    pub const STREAMS: &str = "http://etherx.jabber.org/streams";
    pub const XMPP_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
    pub const PRIVILEGE_1: &str = "urn:xmpp:privilege:1";
    pub const PRIVILEGE_2: &str = "urn:xmpp:privilege:2";
    pub const USER_STATS: &str = "http://jabber.org/protocol/admin#user-stats";
    pub const ONLINE_USERS_LIST: &str = "http://jabber.org/protocol/admin#get-online-users-list";
}

use xmpp_parsers::minidom::Element;

/// The error carried by an `<iq type='error'/>` (or any stanza error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    /// The defined condition, e.g. `item-not-found`.
    pub condition: String,
    /// The error type attribute (`cancel`, `modify`, `auth`, `wait`).
    pub kind: String,
    /// Human-readable text, if the server sent some.
    pub text: Option<String>,
    /// An application-specific condition (e.g. pubsub's `precondition-not-met`).
    pub app: Option<String>,
}

impl std::fmt::Display for StanzaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.condition)?;
        if let Some(app) = &self.app {
            write!(f, " ({app})")?;
        }
        if let Some(t) = &self.text {
            write!(f, ": {t}")?;
        }
        Ok(())
    }
}

impl StanzaError {
    /// Reads the `<error/>` child of a stanza of type `error`.
    pub fn from_stanza(stanza: &Element) -> StanzaError {
        let mut out = StanzaError {
            condition: "undefined-condition".into(),
            kind: String::new(),
            text: None,
            app: None,
        };
        let Some(err) = stanza.children().find(|c| c.name() == "error") else {
            return out;
        };
        out.kind = err.attr("type").unwrap_or_default().to_string();
        for c in err.children() {
            if c.ns() == ns::STANZAS {
                if c.name() == "text" {
                    out.text = Some(c.text());
                } else {
                    out.condition = c.name().to_string();
                }
            } else {
                out.app = Some(c.name().to_string());
            }
        }
        out
    }
}

/// Text escaped for XML written by hand (attribute values in single or
/// double quotes, and character data). Stanzas built with minidom need none.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// A reply's addressing: the request's `id` copied, its `from` and `to`
/// swapped.
fn addressed_to_sender(
    mut b: xmpp_parsers::minidom::ElementBuilder,
    request: &Element,
) -> xmpp_parsers::minidom::ElementBuilder {
    if let Some(id) = request.attr("id") {
        b = b.a("id", id);
    }
    if let Some(from) = request.attr("from") {
        b = b.a("to", from);
    }
    if let Some(to) = request.attr("to") {
        b = b.a("from", to);
    }
    b
}

/// Builds an `<error/>` reply to `stanza` (swapping to/from), for IQs the
/// component does not handle and stanzas it refuses.
pub fn error_reply(stanza: &Element, kind: &str, condition: &str) -> Element {
    let b = Element::builder(stanza.name(), stanza.ns()).a("type", "error");
    addressed_to_sender(b, stanza)
        .append(
            Element::builder("error", stanza.ns())
                .a("type", kind)
                .append(Element::builder(condition, ns::STANZAS).build())
                .build(),
        )
        .build()
}

/// An `<iq type='result'/>` answering `request` (for IQs the component
/// serves), with `payload` if any.
pub fn result_reply(request: &Element, payload: Option<Element>) -> Element {
    let b = Element::builder("iq", ns::COMPONENT_ACCEPT).a("type", "result");
    let mut b = addressed_to_sender(b, request);
    if let Some(p) = payload {
        b = b.append(p);
    }
    b.build()
}

/// An IQ of the given type with one payload child.
pub fn iq(kind: &str, from: &str, to: &str, id: &str, payload: Option<Element>) -> Element {
    let mut b = Element::builder("iq", ns::COMPONENT_ACCEPT)
        .a("type", kind)
        .a("id", id)
        .a("to", to);
    if !from.is_empty() {
        b = b.a("from", from);
    }
    if let Some(p) = payload {
        b = b.append(p);
    }
    b.build()
}

/// Builder shorthand: minidom 0.19 wants attribute names as `NcName`; ours
/// are all literals, so a failed conversion is a programming error.
pub trait Attr {
    fn a<V: xmpp_parsers::minidom::IntoAttributeValue>(self, name: &'static str, v: V) -> Self;
}

impl Attr for xmpp_parsers::minidom::ElementBuilder {
    fn a<V: xmpp_parsers::minidom::IntoAttributeValue>(self, name: &'static str, v: V) -> Self {
        #[allow(clippy::expect_used)]
        let name = xmpp_parsers::minidom::rxml::NcName::try_from(name)
            .expect("attribute names in pubpresence are valid literals");
        self.attr(name, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        match xml.parse() {
            Ok(e) => e,
            Err(e) => panic!("test stanza {xml}: {e}"),
        }
    }

    #[test]
    fn result_reply_swaps_addresses_and_copies_the_id() {
        let req = el("<iq xmlns='jabber:component:accept' type='get' id='p1' \
             from='a@example.org/r' to='pubpresence.example.org'><ping xmlns='urn:xmpp:ping'/></iq>");
        let want = el("<iq xmlns='jabber:component:accept' type='result' id='p1' \
             to='a@example.org/r' from='pubpresence.example.org'/>");
        assert_eq!(result_reply(&req, None), want);
        let payload = Element::builder("query", ns::DISCO_INFO).build();
        let r = result_reply(&req, Some(payload.clone()));
        assert_eq!(r.attr("type"), Some("result"));
        assert_eq!(r.attr("id"), Some("p1"));
        assert_eq!(r.children().collect::<Vec<_>>(), vec![&payload]);
    }

    #[test]
    fn result_reply_leaves_out_what_the_request_lacks() {
        let req = el("<iq xmlns='jabber:component:accept' type='get'/>");
        let r = result_reply(&req, None);
        assert_eq!(r.attr("id"), None);
        assert_eq!(r.attr("to"), None);
        assert_eq!(r.attr("from"), None);
        assert_eq!(r.attr("type"), Some("result"));
    }

    #[test]
    fn error_reply_addresses_like_result_reply() {
        let req = el("<iq xmlns='jabber:component:accept' type='set' id='x' \
             from='a@example.org/r' to='pubpresence.example.org'/>");
        let want = el("<iq xmlns='jabber:component:accept' type='error' id='x' \
             to='a@example.org/r' from='pubpresence.example.org'><error type='cancel'>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
        assert_eq!(error_reply(&req, "cancel", "service-unavailable"), want);
    }
}
