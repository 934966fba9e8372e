//! The `<user/>` payload published on live and active (docs/protocol.md, "Items").

use super::ns;
use super::time::{self, Timestamp};
use super::Attr;
use std::fmt;
use xmpp_parsers::minidom::Element;

/// A connection's status as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Online,
    Chat,
    Away,
    Xa,
    Dnd,
    /// Only on live: the connection went away.
    Offline,
    /// Connected, show not known yet (beyond the design document): a
    /// session older than the component that the server will not describe
    /// (ejabberd under XEP-0356 replays nothing and answers no probe). Its
    /// first presence replaces it. Never a guess passed off as a status.
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Chat => "chat",
            Status::Away => "away",
            Status::Xa => "xa",
            Status::Dnd => "dnd",
            Status::Offline => "offline",
            Status::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "online" => Status::Online,
            "chat" => Status::Chat,
            "away" => Status::Away,
            "xa" => Status::Xa,
            "dnd" => Status::Dnd,
            "offline" => Status::Offline,
            "unknown" => Status::Unknown,
            _ => return None,
        })
    }

    /// The status of an available presence with this `<show/>` (none: online).
    pub fn from_show(show: Option<&str>) -> Option<Status> {
        match show.map(str::trim) {
            None | Some("") => Some(Status::Online),
            Some("chat") => Some(Status::Chat),
            Some("away") => Some(Status::Away),
            Some("xa") => Some(Status::Xa),
            Some("dnd") => Some(Status::Dnd),
            Some(_) => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One connection as published: `<user xmlns='urn:pubpresence:0' .../>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserItem {
    pub fulljid: String,
    pub name: String,
    pub status: Status,
    pub ip: String,
    pub since: Timestamp,
}

impl UserItem {
    pub fn to_element(&self) -> Element {
        Element::builder("user", ns::USER)
            .a("status", self.status.as_str())
            .a("ip", self.ip.as_str())
            .a("name", self.name.as_str())
            .a("fulljid", self.fulljid.as_str())
            .a("since", time::format(&self.since))
            .build()
    }

    /// Reads a `<user/>` element. Accepts the namespace-less element of the
    /// original design too (clients matching on the name keep working).
    pub fn from_element(el: &Element) -> Option<UserItem> {
        if el.name() != "user" {
            return None;
        }
        Some(UserItem {
            fulljid: el.attr("fulljid")?.to_string(),
            name: el.attr("name")?.to_string(),
            status: Status::parse(el.attr("status")?)?,
            ip: el.attr("ip").unwrap_or_default().to_string(),
            since: el
                .attr("since")
                .and_then(time::parse)
                .unwrap_or(chrono::DateTime::UNIX_EPOCH),
        })
    }

    /// Same connection, status and address: republishing would change nothing
    /// a client cares about (`since` is kept from the first sighting).
    pub fn same_state(&self, other: &UserItem) -> bool {
        self.fulljid == other.fulljid
            && self.name == other.name
            && self.status == other.status
            && self.ip == other.ip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_exactly_as_spec() {
        let item = UserItem {
            fulljid: "alice@example.org/desk".into(),
            name: "alice@example.org".into(),
            status: Status::Online,
            ip: "192.0.2.7".into(),
            since: time::parse("2026-11-24T09:15:02Z").unwrap(),
        };
        let xml = String::from(&item.to_element());
        assert_eq!(
            xml,
            "<user xmlns='urn:pubpresence:0' fulljid='alice@example.org/desk' ip='192.0.2.7' \
             name='alice@example.org' since='2026-11-24T09:15:02Z' status='online'/>"
        );
        let back = UserItem::from_element(&item.to_element()).unwrap();
        assert_eq!(back, item);
    }

    #[test]
    fn show_values() {
        assert_eq!(Status::from_show(None), Some(Status::Online));
        assert_eq!(Status::from_show(Some("dnd")), Some(Status::Dnd));
        assert_eq!(Status::from_show(Some("bogus")), None);
    }

    #[test]
    fn refuses_incomplete_items() {
        let el: Element = "<user xmlns='urn:pubpresence:0' status='online' name='a@b'/>"
            .parse()
            .unwrap();
        assert!(UserItem::from_element(&el).is_none());
        let el: Element =
            "<user xmlns='urn:pubpresence:0' status='weird' name='a@b' fulljid='a@b/c'/>"
                .parse()
                .unwrap();
        assert!(UserItem::from_element(&el).is_none());
    }
}
