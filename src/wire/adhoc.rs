//! XEP-0050 ad-hoc commands as used for XEP-0133 administration: user-stats
//! (a user's connections and their IP addresses) and the online-users list.

use super::user::Status;
use super::Attr;
use super::{forms, ns};
use std::net::{IpAddr, SocketAddr};
use xmpp_parsers::minidom::Element;

const ADMIN_FORM_TYPE: &str = "http://jabber.org/protocol/admin";

/// `<command action='execute'/>`: first step of a command.
pub fn execute(node: &str) -> Element {
    Element::builder("command", ns::COMMANDS)
        .a("node", node)
        .a("action", "execute")
        .build()
}

/// `<command action='complete'>` with a submitted admin form.
pub fn submit(node: &str, sessionid: Option<&str>, fields: &[(&str, Vec<String>)]) -> Element {
    let mut b = Element::builder("command", ns::COMMANDS)
        .a("node", node)
        .a("action", "complete");
    if let Some(s) = sessionid {
        b = b.a("sessionid", s);
    }
    b.append(forms::build("submit", Some(ADMIN_FORM_TYPE), fields))
        .build()
}

/// The user-stats submission for `accountjid`.
pub fn user_stats_submit(sessionid: Option<&str>, accountjid: &str) -> Element {
    submit(
        ns::USER_STATS,
        sessionid,
        &[("accountjid", vec![accountjid.to_string()])],
    )
}

/// The online-users-list submission: all users, with details (Prosody then
/// lists every session with its address: one request for the whole server).
pub fn online_users_submit(sessionid: Option<&str>) -> Element {
    submit(
        ns::ONLINE_USERS_LIST,
        sessionid,
        &[
            ("max_items", vec!["all".to_string()]),
            ("details", vec!["1".to_string()]),
        ],
    )
}

/// What a command answered: its session id, status and form, if any.
#[derive(Debug, Clone)]
pub struct CommandReply<'a> {
    pub sessionid: Option<&'a str>,
    pub status: Option<&'a str>,
    pub form: Option<&'a Element>,
}

/// Finds the `<command/>` in an IQ result.
pub fn reply(iq: &Element) -> Option<CommandReply<'_>> {
    let cmd = iq.children().find(|c| c.is("command", ns::COMMANDS))?;
    Some(CommandReply {
        sessionid: cmd.attr("sessionid"),
        status: cmd.attr("status"),
        form: forms::find(cmd),
    })
}

/// One connection as user-stats reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub resource: String,
    /// Normalised address (no port, no brackets), or empty if unknown.
    pub ip: String,
}

/// Reads a user-stats result form: `onlineresources` and `ipaddresses` are
/// parallel lists (n-th address belongs to the n-th resource). Prosody sends
/// bare addresses, ejabberd `ip:port` (and `type='form'`): both are read.
pub fn parse_user_stats(form: &Element) -> Vec<Session> {
    let resources = forms::values(form, "onlineresources");
    let ips = forms::values(form, "ipaddresses");
    let with_port = form.attr("type") == Some("form");
    resources
        .into_iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .map(|(i, resource)| Session {
            resource,
            ip: ips
                .get(i)
                .map(|v| normalise_ip(v, with_port))
                .unwrap_or_default(),
        })
        .collect()
}

/// Bare JIDs from a get-online-users-list result (detail lines skipped).
pub fn parse_online_users(form: &Element) -> Vec<String> {
    parse_online_sessions(form)
        .into_iter()
        .map(|(user, _)| user)
        .collect()
}

/// One user of a detailed online-users list and its sessions.
pub type OnlineUser = (String, Vec<ListedSession>);

/// One session of a detailed online-users list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSession {
    pub resource: String,
    /// The show of the session's current presence, when the line states one
    /// the component would publish (`available` is `online`); None for a
    /// session without presence (`unavailable`) or anything else.
    pub status: Option<Status>,
    pub ip: Option<String>,
}

/// Reads a get-online-users-list result with details. Prosody writes each
/// user's bare JID followed by one line per session,
/// ` - RESOURCE: SHOW(PRIORITY), IP: [ADDRESS]`; those lines are human text,
/// so anything unexpected leaves the address or the status unknown rather
/// than guessed.
pub fn parse_online_sessions(form: &Element) -> Vec<OnlineUser> {
    let mut out: Vec<OnlineUser> = Vec::new();
    for line in forms::values(form, "onlineuserjids") {
        if let Some(detail) = line.strip_prefix(" - ") {
            let Some((_, sessions)) = out.last_mut() else {
                continue;
            };
            let (head, ip) = match detail.rsplit_once(", IP: [") {
                Some((head, rest)) => (
                    head,
                    rest.strip_suffix(']')
                        .map(|a| normalise_ip(a, false))
                        .filter(|a| !a.is_empty()),
                ),
                None => (detail, None),
            };
            let (resource, status) = match head.rsplit_once(": ") {
                Some((r, show)) => (r, listed_status(show)),
                None => (head, None),
            };
            sessions.push(ListedSession {
                resource: resource.to_string(),
                status,
                ip,
            });
        } else {
            let user = line.trim();
            if !user.is_empty() {
                out.push((user.to_string(), Vec::new()));
            }
        }
    }
    out
}

/// `SHOW(PRIORITY)` of a listing line: Prosody writes `available` for a
/// presence without `<show/>`, `unavailable` for a session that sent none,
/// and the `<show/>` text otherwise.
fn listed_status(show_priority: &str) -> Option<Status> {
    let (show, priority) = show_priority.strip_suffix(')')?.rsplit_once('(')?;
    if priority.is_empty() {
        return None;
    }
    match show {
        "available" => Some(Status::Online),
        "" | "unavailable" => None,
        other => Status::from_show(Some(other)),
    }
}

/// An address as a server reports it, normalised to what is published: port
/// stripped, IPv6 without brackets, IPv4-mapped IPv6 written as IPv4.
/// `with_port` says the server appends `:port` (ejabberd), which matters only
/// for IPv6 written without brackets. Unreadable input gives "".
pub fn normalise_ip(raw: &str, with_port: bool) -> String {
    let raw = raw.trim();
    let ip = if let Ok(sa) = raw.parse::<SocketAddr>() {
        Some(sa.ip())
    } else if !with_port {
        raw.parse::<IpAddr>()
            .ok()
            .or_else(|| strip_port(raw))
            .or_else(|| raw.split('%').next().and_then(|r| r.parse().ok()))
    } else {
        strip_port(raw).or_else(|| raw.parse::<IpAddr>().ok())
    };
    match ip {
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        Some(v4) => v4.to_string(),
        None => String::new(),
    }
}

fn strip_port(raw: &str) -> Option<IpAddr> {
    let (host, port) = raw.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.split('%').next()?;
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn prosody_user_stats() {
        let f = form(
            "<x xmlns='jabber:x:data' type='result'>\
             <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/admin</value></field>\
             <field var='ipaddresses' type='text-multi'><value>127.0.0.3</value><value>127.0.0.2</value></field>\
             <field var='onlineresources' type='text-multi'><value>phone</value><value>desk</value></field>\
             <field var='rostersize'><value>0</value></field></x>",
        );
        assert_eq!(
            parse_user_stats(&f),
            vec![
                Session {
                    resource: "phone".into(),
                    ip: "127.0.0.3".into()
                },
                Session {
                    resource: "desk".into(),
                    ip: "127.0.0.2".into()
                },
            ]
        );
    }

    #[test]
    fn ejabberd_user_stats_with_ports() {
        let f = form(
            "<x xmlns='jabber:x:data' type='form'>\
             <field var='onlineresources'><value>a</value><value>b</value><value>c</value></field>\
             <field var='ipaddresses'><value>127.0.0.2:44583</value><value>::1:4458</value><value>::ffff:10.1.2.3:5</value></field></x>",
        );
        let s = parse_user_stats(&f);
        assert_eq!(s[0].ip, "127.0.0.2");
        assert_eq!(s[1].ip, "::1");
        assert_eq!(s[2].ip, "10.1.2.3");
    }

    #[test]
    fn address_forms() {
        assert_eq!(normalise_ip("::1", false), "::1");
        assert_eq!(normalise_ip("[2001:db8::5]:5222", false), "2001:db8::5");
        assert_eq!(normalise_ip("2001:DB8:0::5", false), "2001:db8::5");
        assert_eq!(normalise_ip("192.0.2.7:1234", false), "192.0.2.7");
        assert_eq!(normalise_ip("fe80::1%eth0", false), "fe80::1");
        assert_eq!(normalise_ip("garbage", false), "");
        assert_eq!(normalise_ip("", true), "");
    }

    #[test]
    fn missing_ip_values_are_empty() {
        let f = form(
            "<x xmlns='jabber:x:data' type='result'>\
             <field var='onlineresources'><value>a</value><value>b</value></field>\
             <field var='ipaddresses'><value>127.0.0.9</value></field></x>",
        );
        let s = parse_user_stats(&f);
        assert_eq!(
            s[1],
            Session {
                resource: "b".into(),
                ip: "".into()
            }
        );
    }

    fn listed(resource: &str, status: Option<Status>, ip: Option<&str>) -> ListedSession {
        ListedSession {
            resource: resource.into(),
            status,
            ip: ip.map(Into::into),
        }
    }

    #[test]
    fn online_sessions_with_details() {
        let f = form(
            "<x xmlns='jabber:x:data' type='result'><field var='onlineuserjids'>\
             <value>alice@localhost</value><value> - phone: away(0), IP: [127.0.0.3]</value>\
             <value> - desk: online(5), IP: [::1]</value>\
             <value>bob@localhost</value><value> - a: b: xa(0), IP: [garbage]</value>\
             <value>dave@localhost</value><value> - r1: available(-1), IP: [127.0.0.4]</value>\
             <value> - r2: unavailable(-), IP: [127.0.0.5]</value>\
             <value> - r3: [invalid!](0)</value>\
             <value> - r4: dnd(0), IP: [127.0.0.6]</value>\
             <value>carol@localhost</value></field></x>",
        );
        let s = parse_online_sessions(&f);
        assert_eq!(
            s,
            vec![
                (
                    "alice@localhost".to_string(),
                    vec![
                        listed("phone", Some(Status::Away), Some("127.0.0.3")),
                        listed("desk", None, Some("::1")),
                    ]
                ),
                (
                    "bob@localhost".to_string(),
                    vec![listed("a: b", Some(Status::Xa), None)]
                ),
                (
                    "dave@localhost".to_string(),
                    vec![
                        listed("r1", Some(Status::Online), Some("127.0.0.4")),
                        listed("r2", None, Some("127.0.0.5")),
                        listed("r3", None, None),
                        listed("r4", Some(Status::Dnd), Some("127.0.0.6")),
                    ]
                ),
                ("carol@localhost".to_string(), vec![]),
            ]
        );
        assert_eq!(
            parse_online_users(&f),
            vec![
                "alice@localhost",
                "bob@localhost",
                "dave@localhost",
                "carol@localhost"
            ]
        );
    }

    #[test]
    fn online_users() {
        let f = form(
            "<x xmlns='jabber:x:data' type='result'><field var='onlineuserjids'>\
             <value>alice@localhost</value><value>bob@localhost</value></field></x>",
        );
        assert_eq!(
            parse_online_users(&f),
            vec!["alice@localhost", "bob@localhost"]
        );
    }
}
