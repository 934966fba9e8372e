//! What a follower of pubpresence knows, kept from its events, and the
//! table `pubpresence watch` draws from it.

use super::follow::WatchEvent;
use super::watch::Update;
use crate::wire::status::ServiceStatus;
use crate::wire::time::{self, Timestamp};
use crate::wire::user::UserItem;
use std::collections::{BTreeMap, BTreeSet};

/// The state built from [`WatchEvent`]s: `users` is exact (docs/protocol.md, "Client procedure") while
/// `synced`; otherwise it is the last known state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Board {
    /// The status node's last word (or the probe's).
    pub service: Option<ServiceStatus>,
    /// A snapshot came since the service was last online: `users` is current.
    pub synced: bool,
    /// Full JID -> item.
    pub users: BTreeMap<String, UserItem>,
    /// When the last event arrived.
    pub updated: Option<Timestamp>,
    /// The c2s link, as the watch runner reports it (for the header).
    pub link: Link,
    /// The `seq` of the last event taken (0 before the first).
    pub seq: u64,
}

/// The watcher's own connection to the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Link {
    #[default]
    Connecting,
    /// Logged in as this full JID.
    Up(String),
    /// Lost; the text says why and when the next attempt is.
    Down(String),
}

impl Board {
    pub fn apply(&mut self, ev: &WatchEvent) {
        self.updated = Some(time::now());
        match ev {
            WatchEvent::Service(st) => {
                self.service = Some(*st);
                if *st != ServiceStatus::Online {
                    self.synced = false;
                }
            }
            WatchEvent::Snapshot(users) => {
                self.users = users
                    .iter()
                    .map(|u| (u.fulljid.clone(), u.clone()))
                    .collect();
                self.synced = true;
            }
            WatchEvent::Set(item) => {
                self.users.insert(item.fulljid.clone(), item.clone());
            }
            WatchEvent::Remove { fulljid, .. } => {
                self.users.remove(fulljid);
            }
        }
    }

    /// Takes an update of the watch runner: an event, or news of the link
    /// (a lost link means the state is no longer followed).
    pub fn update(&mut self, u: &Update) {
        match u {
            Update::Event { seq, event } => {
                self.seq = *seq;
                self.apply(event)
            }
            Update::Connected(jid) => self.link = Link::Up(jid.clone()),
            Update::Lost { reason, retry_in } => {
                self.link = Link::Down(format!("{reason}; retrying in {retry_in:.1?}"));
                self.synced = false;
            }
        }
    }

    /// The whole state as one `snapshot` event.
    pub fn snapshot(&self) -> WatchEvent {
        WatchEvent::Snapshot(self.users.values().cloned().collect())
    }

    /// Distinct users (bare JIDs) among the connections.
    pub fn user_count(&self) -> usize {
        self.users
            .values()
            .map(|u| u.name.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The table: a header line (who watches, the service, the counts),
    /// then one row per connection sorted by user and resource.
    pub fn render(&self, title: &str) -> String {
        let service = match self.service {
            Some(st) => st.as_str(),
            None => "unknown",
        };
        let link = match &self.link {
            Link::Connecting => "connecting".to_string(),
            Link::Up(jid) => format!("as {jid}"),
            Link::Down(why) => format!("DISCONNECTED: {why}"),
        };
        let mut out = format!(
            "{title} ({link})\nservice: {service}   connections: {}   users: {}   updated: {}\n",
            self.users.len(),
            self.user_count(),
            self.updated
                .as_ref()
                .map(time::format)
                .unwrap_or_else(|| "-".into()),
        );
        if !self.synced {
            out.push_str(if self.updated.is_some() && !self.users.is_empty() {
                "(not in sync: waiting for the service to be online; last known state below)\n"
            } else {
                "(waiting for the service to be online)\n"
            });
        }
        out.push('\n');
        let rows: Vec<[String; 5]> = self
            .users
            .values()
            .map(|u| {
                let resource = u
                    .fulljid
                    .strip_prefix(u.name.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                    .or_else(|| u.fulljid.split_once('/').map(|(_, r)| r))
                    .unwrap_or("");
                [
                    u.name.clone(),
                    resource.to_string(),
                    u.status.as_str().to_string(),
                    if u.ip.is_empty() {
                        "-".into()
                    } else {
                        u.ip.clone()
                    },
                    time::format(&u.since),
                ]
            })
            .collect();
        let head = ["WHO", "RESOURCE", "STATUS", "IP", "SINCE"].map(String::from);
        let mut widths = head.clone().map(|h| h.chars().count());
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String; 5]| {
            let mut l = String::new();
            for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(c);
                } else {
                    l.push_str(&format!("{c:<w$}  "));
                }
            }
            l.push('\n');
            l
        };
        out.push_str(&line(&head));
        for r in &rows {
            out.push_str(&line(r));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::user::Status;

    fn it(jid: &str, status: Status, ip: &str) -> UserItem {
        UserItem {
            fulljid: jid.into(),
            name: jid.split('/').next().unwrap_or_default().into(),
            status,
            ip: ip.into(),
            since: time::parse("2026-11-24T09:15:02Z").unwrap_or_else(time::now),
        }
    }

    #[test]
    fn applies_events_and_draws_a_table() {
        let mut b = Board::default();
        b.apply(&WatchEvent::Service(ServiceStatus::Init));
        assert!(b
            .render("t")
            .contains("(waiting for the service to be online)"));
        b.apply(&WatchEvent::Service(ServiceStatus::Online));
        b.apply(&WatchEvent::Snapshot(vec![
            it("bob@l/phone", Status::Online, "127.0.0.3"),
            it("alice@l/desk", Status::Away, "127.0.0.2"),
        ]));
        b.apply(&WatchEvent::Set(it(
            "alice@l/desk",
            Status::Dnd,
            "127.0.0.2",
        )));
        b.apply(&WatchEvent::Set(it("alice@l/phone", Status::Online, "")));
        b.apply(&WatchEvent::Remove {
            fulljid: "bob@l/phone".into(),
            name: "bob@l".into(),
        });
        assert!(b.synced);
        assert_eq!((b.users.len(), b.user_count()), (2, 1));
        let t = b.render("pubpresence");
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[1].starts_with("service: online   connections: 2   users: 1"),
            "{t}"
        );
        assert_eq!(lines[3], "WHO      RESOURCE  STATUS  IP         SINCE");
        assert_eq!(
            lines[4],
            "alice@l  desk      dnd     127.0.0.2  2026-11-24T09:15:02Z"
        );
        assert_eq!(
            lines[5],
            "alice@l  phone     online  -          2026-11-24T09:15:02Z"
        );
        b.apply(&WatchEvent::Service(ServiceStatus::Offline));
        assert!(!b.synced);
        assert!(b.render("t").contains("not in sync"));
    }
}
