//! Sessions held inside the lab's Prosody or ejabberd, without sockets
//! (`prosody-plugins/mod_lab_held_sessions.lua`, loaded with
//! [`crate::ProsodyOptions::held_sessions`];
//! `ejabberd-modules/mod_lab_held_sessions.erl`, loaded with
//! [`crate::ejabberd::EjabberdOptions::held_sessions`]): how a benchmark goes past the
//! open-file limit, which stops real connections short of 20,000 here
//! (docs/benchmarks.md, "Past the open-file limit: sessions held inside
//! Prosody").
//!
//! The server treats them as logged-in clients: it lists them with their
//! addresses, broadcasts their presence and answers probes for them. What
//! they cannot do is change: they stay online until the server stops.

use pubpresence::minidom::Element;
use pubpresence::wire::{ns, Attr};
use pubpresence::xmpp::c2s::C2s;
use std::net::Ipv4Addr;
use std::time::Duration;

const NS: &str = "urn:pubpresence:lab:held-sessions";

/// What the server is asked to hold: users `{prefix}1..`, `resources`
/// sessions each (`r1`, `r2`, ...), `sessions` in all; the k-th session's
/// address is [`crate::sim::address`]`(first, k)`.
#[derive(Debug, Clone)]
pub struct HeldSessions {
    pub prefix: String,
    pub sessions: usize,
    pub resources: usize,
    pub first: Ipv4Addr,
    /// The JID each user has in its roster with subscription `from` (the
    /// component, unless it has XEP-0356 presence permission).
    pub contact: Option<String>,
    /// At most this many new sessions a second (none: as fast as the
    /// server makes them, which leaves it little time for anything else).
    pub rate: Option<u32>,
}

impl HeldSessions {
    fn users(&self) -> usize {
        self.sessions.div_ceil(self.resources.max(1))
    }

    /// The full JID and address of session `k` on `domain`.
    pub fn session(&self, domain: &str, k: usize) -> (String, Option<Ipv4Addr>) {
        let r = self.resources.max(1);
        (
            format!("{}{}@{domain}/r{}", self.prefix, k / r + 1, k % r + 1),
            crate::sim::address(self.first, k),
        )
    }

    fn request(&self, domain: &str) -> Element {
        let mut ask = Element::builder("sessions", NS)
            .a("prefix", self.prefix.as_str())
            .a("users", self.users().to_string())
            .a("resources", self.resources.max(1).to_string())
            .a("sessions", self.sessions.to_string())
            .a("first", self.first.to_string());
        if let Some(c) = &self.contact {
            ask = ask.a("contact", c.as_str());
        }
        if let Some(r) = self.rate {
            ask = ask.a("rate", r.to_string());
        }
        Element::builder("iq", ns::CLIENT)
            .a("type", "set")
            .a("to", domain)
            .append(ask.build())
            .build()
    }
}

/// Asks the server, as `admin`, to hold `what`; returns once every session
/// has sent its presence (the component may still be publishing them).
pub async fn hold(
    admin: &C2s,
    domain: &str,
    what: &HeldSessions,
    limit: Duration,
) -> Result<(), String> {
    admin
        .iq(what.request(domain), limit)
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "holding {} sessions in the server (is the lab's mod_lab_held_sessions \
                 loaded? ProsodyOptions::held_sessions, EjabberdOptions::held_sessions): {e}",
                what.sessions
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_numbered_as_the_module_numbers_them() {
        let h = HeldSessions {
            prefix: "base".into(),
            sessions: 25,
            resources: 10,
            first: Ipv4Addr::new(127, 0, 0, 2),
            contact: Some("pubpresence.localhost".into()),
            rate: Some(1000),
        };
        assert_eq!(h.users(), 3);
        assert_eq!(
            h.session("localhost", 0),
            (
                "base1@localhost/r1".to_string(),
                Some(Ipv4Addr::new(127, 0, 0, 2))
            )
        );
        assert_eq!(
            h.session("localhost", 24),
            (
                "base3@localhost/r5".to_string(),
                Some(Ipv4Addr::new(127, 0, 0, 26))
            )
        );
        let r = h.request("localhost");
        let ask = r.get_child("sessions", NS).expect("the request");
        assert_eq!(r.attr("to"), Some("localhost"));
        assert_eq!(ask.attr("users"), Some("3"));
        assert_eq!(ask.attr("sessions"), Some("25"));
        assert_eq!(ask.attr("first"), Some("127.0.0.2"));
        assert_eq!(ask.attr("contact"), Some("pubpresence.localhost"));
        assert_eq!(ask.attr("rate"), Some("1000"));
    }
}
