//! XEP-0356 (privileged entity): the permission message a server sends a
//! component on connect, and privileged IQs (`urn:xmpp:privilege:2`).
//!
//! Why privileged IQs at all: ejabberd 24.10 and later, once mod_privilege
//! grants the component anything, drop every IQ the component sends to a
//! bare JID or a domain unless it is wrapped in `<privileged_iq/>` and sent
//! on behalf of one of the server's users (the hook
//! `mod_privilege:component_send_packet`; an IQ to another domain, such as
//! the pubsub service, is dropped even when the grant names it: reported
//! upstream as processone/ejabberd#4336 and #4472). The server re-sends the
//! inner IQ from that user and wraps the answer in
//! `<privilege><forwarded/></privilege>`. README, "XEP-0356 on ejabberd
//! 24.10 and later".

use super::{ns, Attr};
use xmpp_parsers::minidom::Element;

pub const FORWARD: &str = "urn:xmpp:forward:0";

/// Which version of XEP-0356 the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `urn:xmpp:privilege:1`: ejabberd up to 24.07.
    V1,
    /// `urn:xmpp:privilege:2`: Prosody's mod_privilege, ejabberd 24.10 on.
    V2,
}

/// What a server may let the component do with IQs of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IqGrant {
    Get,
    Set,
    Both,
}

impl IqGrant {
    fn parse(s: &str) -> Option<IqGrant> {
        match s {
            "get" => Some(IqGrant::Get),
            "set" => Some(IqGrant::Set),
            "both" => Some(IqGrant::Both),
            _ => None,
        }
    }

    /// Whether an IQ of `kind` (`get`/`set`) is allowed.
    pub fn allows(self, kind: &str) -> bool {
        matches!(
            (self, kind),
            (IqGrant::Both, _) | (IqGrant::Get, "get") | (IqGrant::Set, "set")
        )
    }
}

/// The permission message (`<message><privilege/></message>`), read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub version: Version,
    /// The server's host that granted them (the message's `from`).
    pub host: String,
    /// `presence` permission other than `none` (`roster`, `managed_entity`).
    pub presence: Option<String>,
    /// Whether the message has a `<perm access='iq'/>` at all. ejabberd from
    /// 24.10 always sends one (empty when nothing is granted); Prosody only
    /// when its config grants IQ namespaces.
    pub iq_advertised: bool,
    /// The IQ namespaces granted, with what each allows.
    pub iq: Vec<(String, IqGrant)>,
}

impl Permissions {
    /// Reads a permission message; `None` for any other stanza.
    pub fn parse(message: &Element) -> Option<Permissions> {
        if message.name() != "message" {
            return None;
        }
        let (privilege, version) = message.children().find_map(|c| {
            if c.is("privilege", ns::PRIVILEGE_1) {
                Some((c, Version::V1))
            } else if c.is("privilege", ns::PRIVILEGE_2) {
                Some((c, Version::V2))
            } else {
                None
            }
        })?;
        let perms = || privilege.children().filter(|p| p.name() == "perm");
        let presence = perms()
            .filter(|p| p.attr("access") == Some("presence"))
            .filter_map(|p| p.attr("type"))
            .find(|t| *t != "none")
            .map(str::to_string);
        let iq_perm: Vec<&Element> = perms().filter(|p| p.attr("access") == Some("iq")).collect();
        let iq = iq_perm
            .iter()
            .flat_map(|p| p.children().filter(|n| n.name() == "namespace"))
            .filter_map(|n| Some((n.attr("ns")?.to_string(), IqGrant::parse(n.attr("type")?)?)))
            .collect();
        Some(Permissions {
            version,
            host: message.attr("from").unwrap_or_default().to_string(),
            presence,
            iq_advertised: !iq_perm.is_empty(),
            iq,
        })
    }

    /// What the server lets the component do with namespace `ns`.
    pub fn grant(&self, ns: &str) -> Option<IqGrant> {
        self.iq.iter().find(|(n, _)| n == ns).map(|(_, g)| *g)
    }

    /// The namespaces of `needed` (namespace, kind) that are not granted.
    pub fn missing<'a>(&self, needed: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        needed
            .iter()
            .filter(|(ns, kind)| !self.grant(ns).is_some_and(|g| g.allows(kind)))
            .copied()
            .collect()
    }
}

/// The requests the component sends to the server and the pubsub service,
/// each namespace with the IQ type it needs: what `privileged_as` must be
/// granted (README, "XEP-0356 on ejabberd 24.10 and later").
pub const NEEDED: &[(&str, &str)] = &[
    (ns::PUBSUB, "set"),
    (ns::PUBSUB, "get"),
    (ns::PUBSUB_OWNER, "set"),
    (ns::PUBSUB_OWNER, "get"),
    (ns::COMMANDS, "set"),
    (ns::DISCO_ITEMS, "get"),
];

/// Wraps an IQ of `kind` to `to` as a privileged IQ on behalf of `user`
/// (a bare JID of the server): `<iq to=user><privileged_iq><iq to=to>`.
/// The outer IQ carries `id`; so does the inner one.
pub fn wrap(kind: &str, from: &str, user: &str, to: &str, id: &str, payload: Element) -> Element {
    let inner = Element::builder("iq", ns::CLIENT)
        .a("type", kind)
        .a("id", id)
        .a("to", to)
        .a("from", user)
        .append(payload)
        .build();
    let privileged = Element::builder("privileged_iq", ns::PRIVILEGE_2)
        .append(inner)
        .build();
    super::iq(kind, from, user, id, Some(privileged))
}

/// The answer inside a privileged IQ's answer
/// (`<iq><privilege><forwarded><iq/></forwarded></privilege></iq>`), or the
/// answer itself when it wraps nothing (the server refused the wrapper).
pub fn unwrap(answer: Element) -> Element {
    let inner = answer
        .children()
        .find(|c| c.is("privilege", ns::PRIVILEGE_2))
        .and_then(|p| p.get_child("forwarded", FORWARD))
        .and_then(|f| f.children().find(|c| c.name() == "iq"))
        .cloned();
    inner.unwrap_or(answer)
}

/// Whether a request to `to` must be wrapped: ejabberd's hook looks only at
/// IQs to a JID without a resource.
pub fn needs_wrapping(to: &str) -> bool {
    !to.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(s: &str) -> Element {
        s.parse().expect("test XML")
    }

    #[test]
    fn reads_ejabberd_24_permissions() {
        // As ejabberd 24.12 sent it, with the lab's grant.
        let m = el(
            "<message xmlns='jabber:component:accept' to='pubpresence.localhost' from='localhost'>\
            <privilege xmlns='urn:xmpp:privilege:2'><perm type='none' access='message'/>\
            <perm type='none' access='roster'/><perm access='iq'>\
            <namespace type='both' ns='http://jabber.org/protocol/pubsub'/>\
            <namespace type='get' ns='http://jabber.org/protocol/disco#items'/>\
            <namespace type='none' ns='jabber:iq:version'/></perm>\
            <perm type='managed_entity' access='presence'/></privilege></message>",
        );
        let p = Permissions::parse(&m).expect("a permission message");
        assert_eq!(p.version, Version::V2);
        assert_eq!(p.host, "localhost");
        assert_eq!(p.presence.as_deref(), Some("managed_entity"));
        assert!(p.iq_advertised);
        assert_eq!(
            p.iq,
            vec![
                (ns::PUBSUB.to_string(), IqGrant::Both),
                (ns::DISCO_ITEMS.to_string(), IqGrant::Get)
            ]
        );
        assert_eq!(
            p.missing(NEEDED),
            vec![
                (ns::PUBSUB_OWNER, "set"),
                (ns::PUBSUB_OWNER, "get"),
                (ns::COMMANDS, "set")
            ]
        );
    }

    #[test]
    fn reads_ejabberd_24_without_iq_grant_and_23_and_prosody() {
        let bare = el("<message xmlns='jabber:component:accept' from='localhost'>\
            <privilege xmlns='urn:xmpp:privilege:2'><perm access='iq'/>\
            <perm type='managed_entity' access='presence'/></privilege></message>");
        let p = Permissions::parse(&bare).expect("parsed");
        assert!(p.iq_advertised && p.iq.is_empty());
        assert_eq!(p.missing(NEEDED).len(), NEEDED.len());

        let v1 = el("<message xmlns='jabber:component:accept' from='localhost'>\
            <privilege xmlns='urn:xmpp:privilege:1'><perm access='message' type='none'/>\
            <perm access='roster' type='none'/><perm access='presence' type='roster'/>\
            </privilege></message>");
        let p = Permissions::parse(&v1).expect("parsed");
        assert_eq!(p.version, Version::V1);
        assert_eq!(p.presence.as_deref(), Some("roster"));
        assert!(!p.iq_advertised);

        let prosody = el("<message xmlns='jabber:component:accept' from='localhost'>\
            <privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/>\
            <perm access='presence' type='managed_entity'/></privilege></message>");
        let p = Permissions::parse(&prosody).expect("parsed");
        assert!(!p.iq_advertised);
        assert_eq!(p.presence.as_deref(), Some("managed_entity"));

        let other = el("<message xmlns='jabber:component:accept'><body>hi</body></message>");
        assert_eq!(Permissions::parse(&other), None);
    }

    #[test]
    fn wraps_and_unwraps() {
        let payload = Element::builder("pubsub", ns::PUBSUB).build();
        let w = wrap(
            "set",
            "pubpresence.localhost",
            "pubpresence@localhost",
            "pubsub.localhost",
            "pp7",
            payload,
        );
        assert_eq!(
            String::from(&w),
            "<iq xmlns='jabber:component:accept' from='pubpresence.localhost' id='pp7' \
             to='pubpresence@localhost' type='set'><privileged_iq xmlns='urn:xmpp:privilege:2'>\
             <iq xmlns='jabber:client' from='pubpresence@localhost' id='pp7' \
             to='pubsub.localhost' type='set'><pubsub xmlns='http://jabber.org/protocol/pubsub'/>\
             </iq></privileged_iq></iq>"
        );
        // As ejabberd 24.12 answered.
        let answer = el("<iq xmlns='jabber:component:accept' to='pubpresence.localhost' \
            from='pubpresence@localhost' type='error' id='pp7'><privilege xmlns='urn:xmpp:privilege:2'>\
            <forwarded xmlns='urn:xmpp:forward:0'><iq to='pubpresence@localhost' from='pubsub.localhost' \
            type='error' id='pp7' xmlns='jabber:client'><error type='cancel'>\
            <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>\
            </forwarded></privilege></iq>");
        let inner = unwrap(answer);
        assert_eq!(inner.attr("from"), Some("pubsub.localhost"));
        assert_eq!(
            super::super::StanzaError::from_stanza(&inner).condition,
            "item-not-found"
        );
        let plain = el("<iq xmlns='jabber:component:accept' type='error' id='pp8'>\
            <error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
        assert_eq!(unwrap(plain.clone()), plain);
        assert!(needs_wrapping("pubsub.localhost") && needs_wrapping("a@localhost"));
        assert!(!needs_wrapping("a@localhost/desk"));
    }
}
