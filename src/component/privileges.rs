//! What the component does with the XEP-0356 permissions a server grants:
//! track every user's presence, send its requests plain or as privileged
//! IQs, or stop with the one line the operator needs (README, "XEP-0356 on
//! ejabberd 24.10 and later"). No I/O: the service applies the decision;
//! `await_permissions` only reads the stanzas the connection already
//! received.

use crate::wire::privilege::{Permissions, Version, NEEDED};
use std::time::Duration;
use tokio::sync::mpsc;
use xmpp_parsers::minidom::Element;

/// How long to wait for the server's permission message when it matters:
/// a component with `privileged_as` waits this long before its first
/// request, and doctor this long on ejabberd when the version answer came
/// first. Both servers send the message right after the handshake, but
/// ejabberd hands it to another process, so an early answer can overtake it.
pub const PERMISSIONS_WAIT: Duration = Duration::from_secs(3);

/// The stanzas received up to and including the permission message, with
/// the permissions it grants; or those received within [`PERMISSIONS_WAIT`]
/// (or until the connection ended) when none came.
pub async fn await_permissions(
    inbound: &mut mpsc::UnboundedReceiver<Element>,
) -> (Vec<Element>, Option<Permissions>) {
    let mut received = Vec::new();
    let deadline = tokio::time::sleep(PERMISSIONS_WAIT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            el = inbound.recv() => match el {
                Some(el) => {
                    let perms = Permissions::parse(&el);
                    received.push(el);
                    if perms.is_some() {
                        return (received, perms);
                    }
                }
                None => return (received, None),
            },
            _ = &mut deadline => return (received, None),
        }
    }
}

/// How to go on after a permission message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Requests go plain. `presence`: the presence permission granted.
    Plain { presence: Option<String> },
    /// Requests to bare JIDs and domains go as privileged IQs on behalf of
    /// `user`.
    Wrap {
        user: String,
        presence: Option<String>,
    },
    /// The server will drop our requests and nothing here can change that:
    /// the operator must (one line, with the fix).
    Fatal(String),
}

/// Decides from a permission message and the `privileged_as` setting.
///
/// A server that advertises XEP-0356 IQ permission in `urn:xmpp:privilege:2`
/// (ejabberd from 24.10 always does, even when it grants none; Prosody only
/// when its config grants some) gets privileged IQs: that is the only form
/// in which ejabberd 24.10 and later let a privileged component's requests
/// through. Servers that do not (ejabberd 23.01 with `:1`, Prosody's usual
/// grant) get plain requests, as ever.
pub fn decide(p: &Permissions, privileged_as: Option<&str>, domain: &str) -> Decision {
    let presence = p.presence.clone();
    if !(p.version == Version::V2 && p.iq_advertised) {
        return Decision::Plain { presence };
    }
    let Some(user) = privileged_as else {
        return Decision::Fatal(format!(
            "{} grants this component XEP-0356 privileges and advertises IQ permission: such a \
             server (ejabberd 24.10 and later) drops every request of the component that is not \
             a privileged IQ. Set `privileged_as = \"pubpresence@{domain}\"` in the config and \
             grant that JID admin rights and mod_privilege's `iq` permission (README, \"XEP-0356 \
             on ejabberd 24.10 and later\"), or remove the component's mod_privilege grant and \
             rely on roster subscriptions",
            host(p)
        ));
    };
    let missing = p.missing(NEEDED);
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|(ns, kind)| format!("{ns} ({kind})"))
            .collect();
        return Decision::Fatal(format!(
            "{}'s XEP-0356 grant lacks IQ permission for {}: the server would drop those \
             requests. Add each namespace under mod_privilege's `iq` option (`\"NAMESPACE\": \
             {{both: RULE}}` with an access rule that allows this component; README, \"XEP-0356 \
             on ejabberd 24.10 and later\")",
            host(p),
            list.join(", ")
        ));
    }
    Decision::Wrap {
        user: user.to_string(),
        presence,
    }
}

fn host(p: &Permissions) -> &str {
    if p.host.is_empty() {
        "the server"
    } else {
        &p.host
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::privilege::IqGrant;

    fn stanza(xml: &str) -> Element {
        xml.parse().expect("stanza")
    }

    #[tokio::test]
    async fn awaiting_permissions_stops_at_the_message_and_keeps_what_came_before() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let presence = stanza(
            "<presence xmlns='jabber:component:accept' from='a@localhost/r' to='pubpresence.localhost'/>",
        );
        let message = stanza(
            "<message xmlns='jabber:component:accept' from='localhost' to='pubpresence.localhost'>\
             <privilege xmlns='urn:xmpp:privilege:2'><perm access='presence' type='managed_entity'/>\
             </privilege></message>",
        );
        let after = stanza("<presence xmlns='jabber:component:accept' from='b@localhost/r'/>");
        for el in [&presence, &message, &after] {
            tx.send(el.clone()).expect("send");
        }
        let (received, perms) = await_permissions(&mut rx).await;
        assert_eq!(received, vec![presence.clone(), message]);
        let perms = perms.expect("the permissions");
        assert_eq!(perms.presence.as_deref(), Some("managed_entity"));
        // What came after is left for the session.
        assert_eq!(rx.try_recv().ok(), Some(after));

        // A connection that ends first: what came, and no permissions.
        tx.send(presence.clone()).expect("send");
        drop(tx);
        assert_eq!(await_permissions(&mut rx).await, (vec![presence], None));
    }

    fn perms(version: Version, iq_advertised: bool, iq: &[(&str, IqGrant)]) -> Permissions {
        Permissions {
            version,
            host: "localhost".into(),
            presence: Some("managed_entity".into()),
            iq_advertised,
            iq: iq.iter().map(|(n, g)| (n.to_string(), *g)).collect(),
        }
    }

    fn all() -> Vec<(&'static str, IqGrant)> {
        NEEDED.iter().map(|(ns, _)| (*ns, IqGrant::Both)).collect()
    }

    #[test]
    fn ejabberd_23_and_prosody_get_plain_requests() {
        let presence = Some("managed_entity".to_string());
        for p in [
            perms(Version::V1, false, &[]),
            perms(Version::V2, false, &[]),
        ] {
            assert_eq!(
                decide(&p, None, "localhost"),
                Decision::Plain {
                    presence: presence.clone()
                }
            );
            assert_eq!(
                decide(&p, Some("pp@localhost"), "localhost"),
                Decision::Plain {
                    presence: presence.clone()
                }
            );
        }
    }

    #[test]
    fn ejabberd_24_wraps_with_a_full_grant() {
        let p = perms(Version::V2, true, &all());
        assert_eq!(
            decide(&p, Some("pubpresence@localhost"), "localhost"),
            Decision::Wrap {
                user: "pubpresence@localhost".into(),
                presence: Some("managed_entity".into())
            }
        );
    }

    #[test]
    fn ejabberd_24_without_privileged_as_or_grant_is_fatal_with_the_fix() {
        let p = perms(Version::V2, true, &[]);
        let Decision::Fatal(line) = decide(&p, None, "example.org") else {
            panic!("not fatal");
        };
        assert!(
            line.contains("privileged_as = \"pubpresence@example.org\""),
            "{line}"
        );
        assert!(!line.contains('\n'), "one line: {line}");

        let partial = perms(
            Version::V2,
            true,
            &[
                ("http://jabber.org/protocol/pubsub", IqGrant::Both),
                ("http://jabber.org/protocol/pubsub#owner", IqGrant::Get),
            ],
        );
        let Decision::Fatal(line) = decide(&partial, Some("pp@localhost"), "localhost") else {
            panic!("not fatal");
        };
        assert!(
            line.contains(
                "lacks IQ permission for http://jabber.org/protocol/pubsub#owner (set), \
                 http://jabber.org/protocol/commands (set), \
                 http://jabber.org/protocol/disco#items (get):"
            ),
            "{line}"
        );
    }
}
