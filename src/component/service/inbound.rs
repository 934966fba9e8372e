//! What the component does with what arrives: requests it answers
//! (docs/protocol.md, "Requests the component answers"), presences
//! (docs/protocol.md, "Component presence") and the server's XEP-0356
//! permission message. The replies are pure functions of the stanza
//! (`iq_reply`, `react`); `Session` executes what they return.

use super::audit::SESSION_CHECK;
use super::reconnect::Outcome;
use super::session::Session;
use super::RunError;
use crate::component::metrics::{ErrorKind, Seen};
use crate::component::privacy::Privacy;
use crate::component::privileges::{self, Decision};
use crate::component::small::JidStr;
use crate::component::tracker::Change;
use crate::wire::presence::{self, PresenceError, PresenceKind};
use crate::wire::privilege::Permissions;
use crate::wire::status::ServiceStatus;
use crate::wire::time::{self, Timestamp};
use crate::wire::{self, ns, Attr};
use std::collections::HashSet;
use xmpp_parsers::minidom::Element;

/// At most 100 characters of `s`, for log lines about what others sent.
pub(super) fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

/// The disco#info answer: a `component/presence` identity, disco#info and
/// ping.
pub(super) fn disco_info() -> Element {
    Element::builder("query", ns::DISCO_INFO)
        .append(
            Element::builder("identity", ns::DISCO_INFO)
                .a("category", "component")
                .a("type", "presence")
                .a("name", "pubpresence")
                .build(),
        )
        .append(
            Element::builder("feature", ns::DISCO_INFO)
                .a("var", ns::DISCO_INFO)
                .build(),
        )
        .append(
            Element::builder("feature", ns::DISCO_INFO)
                .a("var", ns::PING)
                .build(),
        )
        .build()
}

/// The component's own presence to `to`: plain available while `online`,
/// `<show>dnd</show>` before (docs/protocol.md, "Component presence").
pub(super) fn own_presence(me: &str, to: &str, online: bool) -> Element {
    presence::build(me, to, None, (!online).then_some("dnd"))
}

/// The answer to an inbound IQ (docs/protocol.md, "Requests the component
/// answers"): a ping and disco#info without `node` get a result, every
/// other `get` or `set` `service-unavailable`; answers (`result`, `error`)
/// and IQs of no known type get nothing (an answer nobody waits for any
/// more).
pub(super) fn iq_reply(el: &Element) -> Option<Element> {
    let get = match el.attr("type") {
        Some("get") => true,
        Some("set") => false,
        _ => return None,
    };
    let reply = match el.children().next() {
        Some(p) if get && p.is("ping", ns::PING) => wire::result_reply(el, None),
        Some(p) if get && p.is("query", ns::DISCO_INFO) && p.attr("node").is_none() => {
            wire::result_reply(el, Some(disco_info()))
        }
        _ => wire::error_reply(el, "cancel", "service-unavailable"),
    };
    Some(reply)
}

/// What the session knows when a presence arrives.
pub(super) struct PresenceContext<'a> {
    /// The component's JID.
    pub(super) jid: &'a str,
    /// Only connections of this domain are tracked.
    pub(super) domain: &'a str,
    pub(super) privacy: &'a Privacy,
    /// The server grants XEP-0356 presence permission: a presence says
    /// nothing of the roster.
    pub(super) privileged: bool,
    /// The status is `online`.
    pub(super) online: bool,
    pub(super) contacts: &'a HashSet<JidStr>,
}

/// A change of the contacts (users who receive our presence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Contact {
    Add(String),
    Remove(String),
}

/// A tracked connection's presence, for the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Track {
    pub(super) full: String,
    pub(super) bare: String,
    pub(super) change: Change,
    /// The XEP-0203 stamp (used while the tracker is not running yet).
    pub(super) delay: Option<Timestamp>,
}

/// What to do about one presence (see `react`).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Reaction {
    /// Unreadable: counted, logged in one line, skipped.
    Malformed {
        /// The `from` as sent (at most 100 characters), or `?`.
        from: String,
        error: PresenceError,
    },
    /// Counted as `seen`; `send` goes out in this order, then `contact`
    /// and `track` are applied.
    Read {
        seen: Seen,
        send: Vec<Element>,
        contact: Option<Contact>,
        track: Option<Track>,
    },
}

/// What a presence asks of the component (docs/protocol.md, "Component
/// presence"): `subscribe` is approved and returned, `unsubscribe`
/// answered, a probe answered to the prober's full JID; available and
/// unavailable of a full JID of `domain` (not hidden) go to the tracker,
/// and an available one from a user not yet a contact (without presence
/// permission) makes them one, greeted at once while `online`.
pub(super) fn react(el: &Element, ctx: &PresenceContext<'_>) -> Reaction {
    let p = match presence::parse(el) {
        Ok(p) => p,
        Err(error) => {
            return Reaction::Malformed {
                from: truncate(el.attr("from").unwrap_or("?")),
                error,
            }
        }
    };
    let seen = match p.kind {
        PresenceKind::Available(_) => Seen::Available,
        PresenceKind::Unavailable => Seen::Unavailable,
        _ => Seen::Other,
    };
    let bare = p.from.to_bare().to_string();
    let local = p.from.domain().as_str() == ctx.domain;
    let mut send = Vec::new();
    let mut contact = None;
    let mut track = None;
    match p.kind {
        PresenceKind::Subscribe => {
            send.push(presence::build(ctx.jid, &bare, Some("subscribed"), None));
            send.push(presence::build(ctx.jid, &bare, Some("subscribe"), None));
            send.push(own_presence(ctx.jid, &bare, ctx.online));
            contact = Some(Contact::Add(bare));
        }
        PresenceKind::Unsubscribe => {
            send.push(presence::build(ctx.jid, &bare, Some("unsubscribed"), None));
            contact = Some(Contact::Remove(bare));
        }
        PresenceKind::Probe => {
            // Their server probes its users' contacts: this user has us
            // in their roster.
            send.push(own_presence(ctx.jid, &p.from.to_string(), ctx.online));
            contact = Some(Contact::Add(bare));
        }
        PresenceKind::Subscribed | PresenceKind::Unsubscribed => {}
        PresenceKind::Error(e) => tracing::debug!(from = %p.from, "presence error: {e}"),
        PresenceKind::Available(_) | PresenceKind::Unavailable => {
            if let Ok(full) = p.from.try_as_full() {
                if local && !ctx.privacy.hidden(&bare) {
                    let change = match p.kind {
                        PresenceKind::Available(status) => Change::Available(status),
                        _ => Change::Unavailable,
                    };
                    // With presence permission a presence says nothing of
                    // the roster: only real contacts get our presence.
                    if let Change::Available(_) = change {
                        if !ctx.privileged && !ctx.contacts.contains(bare.as_str()) {
                            if ctx.online {
                                // First sign of this user since we came
                                // online: make sure they know we are.
                                send.push(own_presence(ctx.jid, &bare, true));
                            }
                            contact = Some(Contact::Add(bare.clone()));
                        }
                    }
                    let delay = match change {
                        Change::Available(_) => p.delay,
                        Change::Unavailable => None,
                    };
                    track = Some(Track {
                        full: full.to_string(),
                        bare,
                        change,
                        delay,
                    });
                }
            }
        }
    }
    Reaction::Read {
        seen,
        send,
        contact,
        track,
    }
}

impl Session<'_> {
    /// Handles one inbound stanza; `Some` ends the session.
    pub(super) fn handle_stanza(&mut self, el: Element) -> Option<Outcome> {
        match el.name() {
            "presence" => self.handle_presence(&el),
            "iq" => {
                if let Some(reply) = iq_reply(&el) {
                    self.send(reply);
                }
            }
            "message" => return self.handle_privilege(&el),
            other => tracing::debug!(name = other, "ignoring unknown element"),
        }
        None
    }

    /// The component's presence to `to`, as the status has it now.
    pub(super) fn own_presence(&self, to: &str) -> Element {
        own_presence(&self.cfg.jid, to, self.status == ServiceStatus::Online)
    }

    fn handle_presence(&mut self, el: &Element) {
        let ctx = PresenceContext {
            jid: &self.cfg.jid,
            domain: &self.cfg.domain,
            privacy: &self.cfg.privacy,
            privileged: self.privileged(),
            online: self.status == ServiceStatus::Online,
            contacts: &self.contacts,
        };
        let reaction = react(el, &ctx);
        self.apply(reaction);
        // A reader's own probe comes from its full JID; the probes a server
        // sends for its users' logins come from their bare JIDs.
        if el.attr("type") == Some("probe") && el.attr("from").is_some_and(|f| f.contains('/')) {
            self.check_nodes();
            if self.is_standby_account(el.attr("from").unwrap_or_default()) {
                self.resync();
            }
        }
        if self.pending.is_some() {
            // The tracker's key: the JID as the jid crate writes it.
            if let Some(from) = el
                .attr("from")
                .and_then(|f| xmpp_parsers::jid::Jid::new(f).ok())
            {
                self.check_pending(&from.to_string());
            }
        }
    }

    /// Executes what `react` said.
    fn apply(&mut self, reaction: Reaction) {
        let (seen, send, contact, track) = match reaction {
            Reaction::Malformed { from, error } => {
                self.cfg.telemetry.error(ErrorKind::BadStanza);
                tracing::warn!(from = %from, "ignored a presence: {error}");
                return;
            }
            Reaction::Read {
                seen,
                send,
                contact,
                track,
            } => (seen, send, contact, track),
        };
        self.cfg.telemetry.presence(seen);
        for el in send {
            self.send(el);
        }
        match contact {
            Some(Contact::Add(bare)) => {
                self.contacts.insert(JidStr::new(&bare));
            }
            Some(Contact::Remove(bare)) => {
                self.contacts.remove(bare.as_str());
            }
            None => {}
        }
        let Some(t) = track else { return };
        self.answered_late(&t.full);
        let available = matches!(t.change, Change::Available(_));
        let at = match t.delay {
            Some(stamp) if available && !self.tracker.is_running() => stamp,
            _ => time::now(),
        };
        // One line per tracked presence at debug level: what the server
        // delivered, in the order it did (docs/protocol.md, "What the component
        // publishes, and when").
        tracing::debug!(from = %t.full, change = ?t.change, "presence");
        let acts = self.tracker.presence(&t.full, &t.bare, t.change, at);
        self.execute(acts);
        if available {
            self.check_capacity();
        }
        if self.tracker.is_running() {
            let now = std::time::Instant::now();
            if available {
                self.recent.available(&t.full, now);
            } else if self.recent.unavailable(&t.full, now) {
                // Perhaps an ended session's, delivered after its
                // successor's first presence: if that one is connected, its
                // answer brings it back (see `replaced`).
                tracing::debug!(fulljid = %t.full, "departure right after a presence: probing the user");
                self.send(presence::probe(&self.cfg.jid, &t.bare));
            }
        }
    }

    /// XEP-0356: the permissions message the server sends on connect
    /// (`urn:xmpp:privilege:1` from ejabberd 23.01, `:2` from Prosody's
    /// mod_privilege and ejabberd 24.10 on). With presence permission every
    /// user's presence arrives, roster or not; `privileges::decide` says
    /// how requests must go.
    fn handle_privilege(&mut self, el: &Element) -> Option<Outcome> {
        let perms = Permissions::parse(el)?;
        let presence =
            match privileges::decide(&perms, self.cfg.privileged_as.as_deref(), &self.cfg.domain) {
                Decision::Fatal(line) => {
                    tracing::error!("{line}");
                    return Some(Outcome::Fatal(RunError::Privileges(line)));
                }
                Decision::Wrap { user, presence } => {
                    if self.conn.wrapping().user().is_none() {
                        tracing::info!(
                            "XEP-0356 IQ permission: sending requests as privileged IQs on behalf \
                         of {user}"
                        );
                    }
                    self.conn.wrapping().enable(&user, perms);
                    presence
                }
                Decision::Plain { presence } => {
                    if self.cfg.privileged_as.is_some() {
                        tracing::info!(
                        "privileged_as is not used: this server takes the component's requests \
                         as they are"
                    );
                    }
                    presence
                }
            };
        match presence {
            // The connection noted the grant as it read the message
            // (`Session::privileged`).
            Some(kind) => tracing::info!(
                "XEP-0356 presence permission ({kind}): tracking every user's sessions, with or \
                 without a roster subscription; checking for sessions that end without an \
                 unavailable presence every {SESSION_CHECK:?}"
            ),
            None => tracing::info!(
                "XEP-0356 privileges without presence permission: tracking users who have \
                 the component in their roster"
            ),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::user::Status;

    const ME: &str = "pubpresence.example.org";

    fn el(xml: &str) -> Element {
        match xml.parse() {
            Ok(e) => e,
            Err(e) => panic!("test stanza {xml}: {e}"),
        }
    }

    /// A stanza of the component stream, written without the namespace.
    fn stanza(xml: &str) -> Element {
        let (head, rest) = xml.split_at(xml.find([' ', '>', '/']).unwrap_or(xml.len()));
        el(&format!("{head} xmlns='jabber:component:accept'{rest}"))
    }

    fn iq(xml: &str) -> Option<Element> {
        iq_reply(&stanza(xml))
    }

    fn unavailable_error(id: &str) -> Element {
        stanza(&format!(
            "<iq type='error' id='{id}' from='{ME}' to='dashboard@example.org/watch-1a2b3c4d'>\
             <error type='cancel'><service-unavailable \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        ))
    }

    #[test]
    fn ping_gets_an_empty_result_addressed_back() {
        let r = iq(
            "<iq type='get' id='p1' from='dashboard@example.org/watch-1a2b3c4d' \
             to='pubpresence.example.org'><ping xmlns='urn:xmpp:ping'/></iq>",
        );
        let want = stanza(
            "<iq type='result' id='p1' from='pubpresence.example.org' \
             to='dashboard@example.org/watch-1a2b3c4d'/>",
        );
        assert_eq!(r, Some(want));
    }

    #[test]
    fn disco_info_gets_the_documented_answer() {
        let r = iq(
            "<iq type='get' id='d1' from='dashboard@example.org/watch-1a2b3c4d' \
             to='pubpresence.example.org'>\
             <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        );
        // docs/protocol.md, "Requests the component answers".
        let want = stanza(
            "<iq from='pubpresence.example.org' id='d1' to='dashboard@example.org/watch-1a2b3c4d' \
             type='result'><query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='component' name='pubpresence' type='presence'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='urn:xmpp:ping'/></query></iq>",
        );
        assert_eq!(r, Some(want));
    }

    #[test]
    fn every_other_request_is_service_unavailable() {
        for (id, payload, kind) in [
            (
                "n1",
                "<query xmlns='http://jabber.org/protocol/disco#info' node='x'/>",
                "get",
            ),
            (
                "i1",
                "<query xmlns='http://jabber.org/protocol/disco#items'/>",
                "get",
            ),
            ("v1", "<query xmlns='jabber:iq:version'/>", "get"),
            ("s1", "<ping xmlns='urn:xmpp:ping'/>", "set"),
            (
                "s2",
                "<query xmlns='http://jabber.org/protocol/disco#info'/>",
                "set",
            ),
            (
                "c1",
                "<command xmlns='http://jabber.org/protocol/commands' node='x'/>",
                "set",
            ),
            ("e1", "", "get"),
        ] {
            let r = iq(&format!(
                "<iq type='{kind}' id='{id}' from='dashboard@example.org/watch-1a2b3c4d' \
                 to='pubpresence.example.org'>{payload}</iq>"
            ));
            assert_eq!(r, Some(unavailable_error(id)), "{kind} {payload}");
        }
    }

    #[test]
    fn answers_and_untyped_iqs_get_nothing() {
        for t in [
            " type='result'",
            " type='error'",
            "",
            " type='bogus'",
            " type=''",
        ] {
            let r = iq(&format!(
                "<iq{t} id='a' from='dashboard@example.org/w' to='{ME}'>\
                 <ping xmlns='urn:xmpp:ping'/></iq>"
            ));
            assert_eq!(r, None, "{t}");
        }
    }

    #[test]
    fn a_request_without_addresses_is_answered_without_them() {
        let r = iq("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>");
        assert_eq!(r, Some(stanza("<iq type='result'/>")));
    }

    struct Ctx {
        privacy: Privacy,
        privileged: bool,
        online: bool,
        contacts: HashSet<JidStr>,
    }

    impl Ctx {
        fn new() -> Ctx {
            Ctx {
                privacy: Privacy::default(),
                privileged: false,
                online: true,
                contacts: HashSet::new(),
            }
        }

        fn react(&self, xml: &str) -> Reaction {
            let ctx = PresenceContext {
                jid: ME,
                domain: "example.org",
                privacy: &self.privacy,
                privileged: self.privileged,
                online: self.online,
                contacts: &self.contacts,
            };
            react(&stanza(xml), &ctx)
        }
    }

    fn read(r: Reaction) -> (Seen, Vec<Element>, Option<Contact>, Option<Track>) {
        match r {
            Reaction::Read {
                seen,
                send,
                contact,
                track,
            } => (seen, send, contact, track),
            Reaction::Malformed { from, error } => panic!("malformed from {from}: {error}"),
        }
    }

    fn out(xml: &str) -> Element {
        stanza(xml)
    }

    #[test]
    fn subscribe_is_approved_and_returned_to_the_bare_jid() {
        let mut c = Ctx::new();
        c.online = false;
        let (seen, send, contact, track) =
            read(c.react("<presence type='subscribe' from='alice@example.org/phone' to='pubpresence.example.org'/>"));
        assert_eq!(seen, Seen::Other);
        assert_eq!(
            send,
            vec![
                out("<presence from='pubpresence.example.org' to='alice@example.org' type='subscribed'/>"),
                out("<presence from='pubpresence.example.org' to='alice@example.org' type='subscribe'/>"),
                out("<presence from='pubpresence.example.org' to='alice@example.org'><show>dnd</show></presence>"),
            ]
        );
        assert_eq!(contact, Some(Contact::Add("alice@example.org".into())));
        assert_eq!(track, None);
        // While online the third one is plain available.
        let (_, send, _, _) =
            read(Ctx::new().react("<presence type='subscribe' from='alice@example.org'/>"));
        assert_eq!(
            send[2],
            out("<presence from='pubpresence.example.org' to='alice@example.org'/>")
        );
    }

    #[test]
    fn unsubscribe_is_answered_and_drops_the_contact() {
        let (seen, send, contact, track) =
            read(Ctx::new().react("<presence type='unsubscribe' from='alice@example.org/phone'/>"));
        assert_eq!(seen, Seen::Other);
        assert_eq!(
            send,
            vec![out(
                "<presence from='pubpresence.example.org' to='alice@example.org' type='unsubscribed'/>"
            )]
        );
        assert_eq!(contact, Some(Contact::Remove("alice@example.org".into())));
        assert_eq!(track, None);
    }

    #[test]
    fn a_probe_is_answered_to_the_full_jid_dnd_until_online() {
        let mut c = Ctx::new();
        c.online = false;
        let probe = "<presence type='probe' from='dashboard@example.org/watch-1a2b3c4d' \
                     to='pubpresence.example.org'/>";
        let (_, send, contact, track) = read(c.react(probe));
        assert_eq!(
            send,
            vec![out(
                "<presence from='pubpresence.example.org' to='dashboard@example.org/watch-1a2b3c4d'>\
                 <show>dnd</show></presence>"
            )]
        );
        assert_eq!(contact, Some(Contact::Add("dashboard@example.org".into())));
        assert_eq!(track, None);
        c.online = true;
        let (_, send, _, _) = read(c.react(probe));
        assert_eq!(
            send,
            vec![out(
                "<presence from='pubpresence.example.org' to='dashboard@example.org/watch-1a2b3c4d'/>"
            )]
        );
    }

    #[test]
    fn available_of_a_new_user_while_online_greets_and_tracks() {
        let (seen, send, contact, track) = read(
            Ctx::new()
                .react("<presence from='alice@example.org/phone'><show>away</show></presence>"),
        );
        assert_eq!(seen, Seen::Available);
        assert_eq!(
            send,
            vec![out(
                "<presence from='pubpresence.example.org' to='alice@example.org'/>"
            )]
        );
        assert_eq!(contact, Some(Contact::Add("alice@example.org".into())));
        assert_eq!(
            track,
            Some(Track {
                full: "alice@example.org/phone".into(),
                bare: "alice@example.org".into(),
                change: Change::Available(Status::Away),
                delay: None,
            })
        );
    }

    #[test]
    fn available_of_a_known_contact_or_before_online_sends_nothing() {
        let mut c = Ctx::new();
        c.contacts.insert(JidStr::new("alice@example.org"));
        let (_, send, contact, track) = read(c.react("<presence from='alice@example.org/phone'/>"));
        assert!(send.is_empty());
        assert_eq!(contact, None);
        assert!(track.is_some());
        // Not online yet: a contact all the same, greeted when online comes.
        let mut c = Ctx::new();
        c.online = false;
        let (_, send, contact, track) = read(c.react("<presence from='alice@example.org/phone'/>"));
        assert!(send.is_empty());
        assert_eq!(contact, Some(Contact::Add("alice@example.org".into())));
        assert!(track.is_some());
    }

    #[test]
    fn with_presence_permission_a_presence_makes_no_contact() {
        let mut c = Ctx::new();
        c.privileged = true;
        let (_, send, contact, track) = read(c.react("<presence from='alice@example.org/phone'/>"));
        assert!(send.is_empty());
        assert_eq!(contact, None);
        assert_eq!(
            track.map(|t| t.change),
            Some(Change::Available(Status::Online))
        );
    }

    #[test]
    fn the_delay_stamp_comes_with_available_only() {
        let c = Ctx::new();
        let (_, _, _, track) = read(c.react(
            "<presence from='alice@example.org/phone'>\
             <delay xmlns='urn:xmpp:delay' stamp='2026-01-02T03:04:05Z'/></presence>",
        ));
        let stamp = time::parse("2026-01-02T03:04:05Z");
        assert!(stamp.is_some());
        assert_eq!(track.and_then(|t| t.delay), stamp);
        let (_, _, _, track) = read(c.react(
            "<presence type='unavailable' from='alice@example.org/phone'>\
             <delay xmlns='urn:xmpp:delay' stamp='2026-01-02T03:04:05Z'/></presence>",
        ));
        assert_eq!(track.and_then(|t| t.delay), None);
    }

    #[test]
    fn unavailable_of_a_local_full_jid_is_tracked_and_sends_nothing() {
        let (seen, send, contact, track) =
            read(Ctx::new().react("<presence type='unavailable' from='alice@example.org/phone'/>"));
        assert_eq!(seen, Seen::Unavailable);
        assert!(send.is_empty());
        assert_eq!(contact, None);
        assert_eq!(
            track,
            Some(Track {
                full: "alice@example.org/phone".into(),
                bare: "alice@example.org".into(),
                change: Change::Unavailable,
                delay: None,
            })
        );
    }

    #[test]
    fn other_domains_bare_jids_and_hidden_users_are_not_tracked() {
        let mut c = Ctx::new();
        c.privacy.hide.insert("ceo@example.org".into());
        for from in [
            "bob@elsewhere.example/phone",
            "alice@example.org",
            "ceo@example.org/phone",
            "example.org",
        ] {
            for t in ["", " type='unavailable'"] {
                let (_, send, contact, track) =
                    read(c.react(&format!("<presence{t} from='{from}'/>")));
                assert!(send.is_empty(), "{from}{t}");
                assert_eq!(contact, None, "{from}{t}");
                assert_eq!(track, None, "{from}{t}");
            }
        }
    }

    #[test]
    fn subscribed_unsubscribed_and_errors_are_ignored() {
        for xml in [
            "<presence type='subscribed' from='alice@example.org'/>",
            "<presence type='unsubscribed' from='alice@example.org'/>",
            "<presence type='error' from='alice@example.org/phone'><error type='cancel'>\
             <remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>",
            "<presence type='error' from='alice@example.org/phone'/>",
        ] {
            let (seen, send, contact, track) = read(Ctx::new().react(xml));
            assert_eq!(seen, Seen::Other, "{xml}");
            assert!(send.is_empty(), "{xml}");
            assert_eq!(contact, None, "{xml}");
            assert_eq!(track, None, "{xml}");
        }
    }

    #[test]
    fn malformed_presences_are_reported_not_acted_on() {
        let long = format!("{}@example.org/r", "x".repeat(900));
        for (xml, want) in [
            ("<presence/>".to_string(), PresenceError::BadFrom),
            ("<presence from='@@/'/>".to_string(), PresenceError::BadFrom),
            (
                "<presence from='alice@example.org/phone'><show>bogus</show></presence>".into(),
                PresenceError::BadShow("bogus".into()),
            ),
            (
                "<presence type='ünknown' from='alice@example.org/phone'/>".into(),
                PresenceError::BadType("ünknown".into()),
            ),
            (
                format!(
                    "<presence from='{long}'><show>{}</show></presence>",
                    "é".repeat(500)
                ),
                PresenceError::BadShow("é".repeat(32)),
            ),
        ] {
            match Ctx::new().react(&xml) {
                Reaction::Malformed { from, error } => {
                    assert_eq!(error, want, "{}", truncate(&xml));
                    assert!(from.chars().count() <= 100, "{from}");
                }
                r => panic!("{xml}: {r:?}"),
            }
        }
        match Ctx::new().react("<presence/>") {
            Reaction::Malformed { from, .. } => assert_eq!(from, "?"),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn truncate_cuts_on_characters() {
        assert_eq!(truncate("short"), "short");
        assert_eq!(truncate(&"é".repeat(300)).chars().count(), 100);
    }

    #[test]
    fn own_presence_is_dnd_until_online() {
        assert_eq!(
            own_presence(ME, "a@example.org", false),
            out("<presence from='pubpresence.example.org' to='a@example.org'><show>dnd</show></presence>")
        );
        assert_eq!(
            own_presence(ME, "a@example.org", true),
            out("<presence from='pubpresence.example.org' to='a@example.org'/>")
        );
    }
}
