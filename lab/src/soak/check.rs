//! The soak's checker, without sockets: the truth (what the simulated users
//! really did), tables of connections as each party sees them, and the
//! comparisons that count divergences.

use crate::sim::SimEvent;
use pubpresence::wire::time;
use pubpresence::wire::user::{Status, UserItem};
use std::collections::BTreeMap;
use std::time::Instant;

/// One connection as a party sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub status: String,
    pub ip: String,
    /// RFC 3339 to the second; empty where the party does not know it
    /// (the truth).
    pub since: String,
}

/// Connections by full JID.
pub type Table = BTreeMap<String, Row>;

impl Row {
    pub fn of_item(i: &UserItem) -> Row {
        Row {
            status: i.status.as_str().to_string(),
            ip: i.ip.clone(),
            since: time::format(&i.since),
        }
    }

    /// A user object of `watch --json`, `/state` or `/events`.
    pub fn of_json(v: &serde_json::Value) -> Option<(String, Row)> {
        let s = |k: &str| v[k].as_str().map(str::to_string);
        Some((
            s("fulljid")?,
            Row {
                status: s("status")?,
                ip: s("ip")?,
                since: s("since")?,
            },
        ))
    }
}

/// A table from the `users` array of a snapshot or of `/state`.
pub fn table_of_json(users: &serde_json::Value) -> Option<Table> {
    users.as_array()?.iter().map(Row::of_json).collect()
}

/// Something a simulated connection did.
#[derive(Debug, Clone, PartialEq)]
pub struct Act {
    pub at: Instant,
    pub fulljid: String,
    /// `offline`: it left (or the server ended it).
    pub status: String,
}

/// What the simulated users really did, from their events: each one's
/// current status and address, and every act in order.
#[derive(Debug, Default)]
pub struct Truth {
    now: BTreeMap<String, (String, String)>,
    acts: Vec<Act>,
}

impl Truth {
    pub fn apply(&mut self, ev: &SimEvent) {
        let (fulljid, status, ip, at) = match ev {
            SimEvent::Connected { fulljid, ip } => {
                (fulljid, Status::Online, Some(ip), Instant::now())
            }
            SimEvent::Change {
                fulljid,
                status,
                ip,
                at,
            } => (fulljid, *status, Some(ip), *at),
            SimEvent::Lost { fulljid, at } => (fulljid, Status::Offline, None, *at),
            _ => return,
        };
        let status = status.as_str().to_string();
        if status == Status::Offline.as_str() {
            self.now.remove(fulljid);
        } else if let Some(ip) = ip {
            self.now
                .insert(fulljid.clone(), (status.clone(), ip.to_string()));
        }
        self.acts.push(Act {
            at,
            fulljid: fulljid.clone(),
            status,
        });
    }

    /// Every connection of a simulation that was stopped (its connections
    /// closed without a change each): gone.
    pub fn drop_prefix(&mut self, prefix: &str) {
        let at = Instant::now();
        let gone: Vec<String> = self
            .now
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        for fulljid in gone {
            self.now.remove(&fulljid);
            self.acts.push(Act {
                at,
                fulljid,
                status: Status::Offline.as_str().into(),
            });
        }
    }

    /// The connections now (no `since`: the users do not know when the
    /// server saw them).
    pub fn table(&self) -> Table {
        self.now
            .iter()
            .map(|(j, (status, ip))| {
                (
                    j.clone(),
                    Row {
                        status: status.clone(),
                        ip: ip.clone(),
                        since: String::new(),
                    },
                )
            })
            .collect()
    }

    /// Acts made in `[from, to)`.
    pub fn acts_between(&self, from: Instant, to: Instant) -> Vec<Act> {
        self.acts
            .iter()
            .filter(|a| a.at >= from && a.at < to)
            .cloned()
            .collect()
    }

    pub fn acts(&self) -> usize {
        self.acts.len()
    }
}

/// The differences between two tables, one line each (empty: equal).
/// `since` is compared only where both sides know it.
pub fn diff(a_name: &str, a: &Table, b_name: &str, b: &Table) -> Vec<String> {
    let mut out = Vec::new();
    for (j, ra) in a {
        match b.get(j) {
            None => out.push(format!("{j}: {a_name} has {}, {b_name} lacks it", show(ra))),
            Some(rb) => {
                let since_differs =
                    !ra.since.is_empty() && !rb.since.is_empty() && ra.since != rb.since;
                if ra.status != rb.status || ra.ip != rb.ip || since_differs {
                    out.push(format!(
                        "{j}: {a_name} has {}, {b_name} has {}",
                        show(ra),
                        show(rb)
                    ));
                }
            }
        }
    }
    for (j, rb) in b {
        if !a.contains_key(j) {
            out.push(format!("{j}: {b_name} has {}, {a_name} lacks it", show(rb)));
        }
    }
    out
}

fn show(r: &Row) -> String {
    if r.since.is_empty() {
        format!("{} from {}", r.status, r.ip)
    } else {
        format!("{} from {} since {}", r.status, r.ip, r.since)
    }
}

/// `since` must never move backwards for a connection that stayed: one on
/// both tables that did not leave in between (`acts` between the two).
pub fn since_backwards(before: &Table, after: &Table, acts: &[Act]) -> Vec<String> {
    let offline = Status::Offline.as_str();
    before
        .iter()
        .filter_map(|(j, rb)| {
            let ra = after.get(j)?;
            let stayed = !acts.iter().any(|a| a.fulljid == *j && a.status == offline);
            // RFC 3339 UTC to the second: the strings order as the times.
            (stayed && ra.since < rb.since).then(|| {
                format!(
                    "{j}: since moved backwards from {} to {} while it stayed connected",
                    rb.since, ra.since
                )
            })
        })
        .collect()
}

/// One live event a consumer saw: a connection's new status (`offline`
/// for a `remove`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub fulljid: String,
    pub status: String,
}

/// Outside an outage, every connection's live events are exactly what it
/// did, in order: nothing lost, nothing twice, nothing made up.
pub fn live_matches(acts: &[Act], seen: &[Seen]) -> Vec<String> {
    let mut did: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for a in acts {
        did.entry(&a.fulljid).or_default().push(&a.status);
    }
    let mut said: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in seen {
        said.entry(&s.fulljid).or_default().push(&s.status);
    }
    let mut out = Vec::new();
    let jids: std::collections::BTreeSet<&str> = did.keys().chain(said.keys()).copied().collect();
    for j in jids {
        let d = did.get(j).cloned().unwrap_or_default();
        let s = said.get(j).cloned().unwrap_or_default();
        if d != s {
            out.push(format!("{j}: did {d:?}, live said {s:?}"));
        }
    }
    out
}

/// p50, p99 and max of some durations in seconds (nearest rank).
pub fn percentiles(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Some((rank(0.50), rank(0.99), v[v.len() - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    fn row(status: &str, ip: &str, since: &str) -> Row {
        Row {
            status: status.into(),
            ip: ip.into(),
            since: since.into(),
        }
    }

    fn change(j: &str, status: Status, at: Instant) -> SimEvent {
        SimEvent::Change {
            fulljid: j.into(),
            status,
            ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)),
            at,
        }
    }

    #[test]
    fn truth_follows_the_users() {
        let t0 = Instant::now();
        let mut t = Truth::default();
        t.apply(&SimEvent::Connected {
            fulljid: "a@l/1".into(),
            ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)),
        });
        t.apply(&change("a@l/1", Status::Away, t0 + Duration::from_secs(1)));
        t.apply(&change(
            "b@l/1",
            Status::Online,
            t0 + Duration::from_secs(2),
        ));
        t.apply(&SimEvent::Lost {
            fulljid: "b@l/1".into(),
            at: t0 + Duration::from_secs(3),
        });
        t.apply(&change(
            "burst1@l/1",
            Status::Online,
            t0 + Duration::from_secs(3),
        ));
        t.drop_prefix("burst");
        let want: Table = [("a@l/1".to_string(), row("away", "127.0.0.9", ""))].into();
        assert_eq!(t.table(), want);
        let between = t.acts_between(t0 + Duration::from_secs(1), t0 + Duration::from_secs(3));
        let statuses: Vec<&str> = between.iter().map(|a| a.status.as_str()).collect();
        assert_eq!(statuses, ["away", "online"]);
        assert_eq!(t.acts(), 6);
    }

    #[test]
    fn diff_names_each_difference_and_since_only_where_known() {
        let a: Table = [
            ("x".to_string(), row("away", "127.0.0.2", "")),
            ("y".to_string(), row("online", "127.0.0.3", "")),
        ]
        .into();
        let mut b: Table = [
            (
                "x".to_string(),
                row("away", "127.0.0.2", "2026-01-01T00:00:00Z"),
            ),
            (
                "y".to_string(),
                row("online", "127.0.0.3", "2026-01-01T00:00:00Z"),
            ),
        ]
        .into();
        assert!(diff("truth", &a, "active", &b).is_empty());
        b.insert("z".into(), row("dnd", "127.0.0.4", "2026-01-01T00:00:00Z"));
        b.insert("x".into(), row("xa", "127.0.0.2", "2026-01-01T00:00:00Z"));
        assert_eq!(
            diff("truth", &a, "active", &b),
            [
                "x: truth has away from 127.0.0.2, active has xa from 127.0.0.2 since 2026-01-01T00:00:00Z",
                "z: active has dnd from 127.0.0.4 since 2026-01-01T00:00:00Z, truth lacks it",
            ]
        );
        let mut c = b.clone();
        c.insert(
            "y".into(),
            row("online", "127.0.0.3", "2026-01-01T00:00:01Z"),
        );
        assert_eq!(diff("active", &b, "state", &c).len(), 1);
    }

    #[test]
    fn since_may_not_move_backwards_for_a_connection_that_stayed() {
        let t0 = Instant::now();
        let before: Table = [
            ("x".to_string(), row("away", "i", "2026-01-01T00:00:05Z")),
            ("y".to_string(), row("away", "i", "2026-01-01T00:00:05Z")),
        ]
        .into();
        let after: Table = [
            ("x".to_string(), row("away", "i", "2026-01-01T00:00:04Z")),
            ("y".to_string(), row("online", "i", "2026-01-01T00:00:01Z")),
        ]
        .into();
        // y left and came back: its since may be anything.
        let acts = vec![Act {
            at: t0,
            fulljid: "y".into(),
            status: "offline".into(),
        }];
        let out = since_backwards(&before, &after, &acts);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].starts_with("x: since moved backwards"), "{out:?}");
    }

    #[test]
    fn live_events_must_be_exactly_what_each_connection_did() {
        let t0 = Instant::now();
        let act = |j: &str, s: &str| Act {
            at: t0,
            fulljid: j.into(),
            status: s.into(),
        };
        let seen = |j: &str, s: &str| Seen {
            fulljid: j.into(),
            status: s.into(),
        };
        let acts = [act("a", "away"), act("b", "dnd"), act("a", "offline")];
        // Interleaved differently across connections: fine.
        let ok = [seen("b", "dnd"), seen("a", "away"), seen("a", "offline")];
        assert!(live_matches(&acts, &ok).is_empty());
        let twice = [
            seen("a", "away"),
            seen("a", "away"),
            seen("b", "dnd"),
            seen("a", "offline"),
        ];
        assert_eq!(
            live_matches(&acts, &twice),
            [r#"a: did ["away", "offline"], live said ["away", "away", "offline"]"#]
        );
        let lost = [seen("a", "away"), seen("a", "offline")];
        assert_eq!(
            live_matches(&acts, &lost),
            [r#"b: did ["dnd"], live said []"#]
        );
        let reordered = [seen("a", "offline"), seen("a", "away"), seen("b", "dnd")];
        assert_eq!(live_matches(&acts, &reordered).len(), 1);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentiles(vec![]), None);
        assert_eq!(percentiles(vec![3.0]), Some((3.0, 3.0, 3.0)));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentiles(v), Some((50.0, 99.0, 100.0)));
    }
}
