//! The per-connection state machine: what active holds, what must be
//! written next, in which order. Pure: no sockets, no clocks, no tasks. The
//! service feeds it events and executes the actions it returns.
//!
//! Rules (SPEC §5): one connection's changes are applied strictly in order,
//! each as "write active, once confirmed publish live"; different
//! connections proceed independently; a presence that changes nothing is
//! dropped; during start-up presences only update the desired state, which
//! reconciliation then writes as a difference against what active holds.

use crate::wire::time::Timestamp;
use crate::wire::user::{Status, UserItem};
use std::collections::{HashMap, HashSet, VecDeque};

/// What the service must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Learn the connection's IP (user-stats), then call `ip_learned`.
    FetchIp { fulljid: String, name: String },
    /// Publish `item` on active (item id = full JID), then call `done`.
    SetActive { item: UserItem },
    /// Retract the item `fulljid` from active, then call `done`.
    RetractActive { fulljid: String },
    /// Publish `item` on live, then call `done`.
    PublishLive { item: UserItem },
    /// Every difference found at reconciliation has been written.
    ReconcileDone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Online { status: Status, since: Timestamp },
    Offline { since: Timestamp },
}

impl Target {
    fn status(&self) -> Option<Status> {
        match self {
            Target::Online { status, .. } => Some(*status),
            Target::Offline { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Idle,
    FetchingIp(Target),
    WritingActive(Target, Option<UserItem>),
    WritingLive(Target),
}

#[derive(Debug)]
struct Conn {
    name: String,
    ip: Option<String>,
    /// What active holds for this connection, as confirmed by the server.
    active: Option<UserItem>,
    queue: VecDeque<(Target, bool)>,
    stage: Stage,
    /// Whether the op in flight is reconciliation work.
    stage_reconcile: bool,
}

impl Conn {
    fn new(name: &str) -> Conn {
        Conn {
            name: name.to_string(),
            ip: None,
            active: None,
            queue: VecDeque::new(),
            stage: Stage::Idle,
            stage_reconcile: false,
        }
    }

    /// The state this connection will be in once everything queued is written.
    fn last_status(&self) -> Option<Status> {
        if let Some((t, _)) = self.queue.back() {
            return t.status();
        }
        match &self.stage {
            Stage::FetchingIp(t) | Stage::WritingActive(t, _) | Stage::WritingLive(t) => t.status(),
            Stage::Idle => self.active.as_ref().map(|a| a.status),
        }
    }

    fn removable(&self) -> bool {
        self.stage == Stage::Idle && self.queue.is_empty() && self.active.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Starting,
    Running,
}

/// Presence as far as the tracker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Available(Status),
    Unavailable,
}

/// What an audit found and must do.
#[derive(Debug, Default)]
pub struct Audit {
    pub actions: Vec<Action>,
    /// Sessions listed by the server that nobody tracks: probe their users.
    pub probe: Vec<String>,
    /// Items retracted because their session is gone.
    pub removed: usize,
    /// Tracked sessions republished because active had lost their item.
    pub repaired: Vec<String>,
}

#[derive(Debug)]
pub struct Tracker {
    mode: Mode,
    conns: HashMap<String, Conn>,
    reconciling: HashSet<String>,
    reconcile_reported: bool,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

impl Tracker {
    /// A tracker in start-up mode: presences are recorded, nothing written.
    pub fn new() -> Tracker {
        Tracker {
            mode: Mode::Starting,
            conns: HashMap::new(),
            reconciling: HashSet::new(),
            reconcile_reported: false,
        }
    }

    pub fn is_running(&self) -> bool {
        self.mode == Mode::Running
    }

    /// Connections tracked right now (available, or with work pending).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Full JIDs whose last known state is available.
    pub fn available(&self) -> Vec<String> {
        self.conns
            .iter()
            .filter(|(_, c)| c.last_status().is_some())
            .map(|(j, _)| j.clone())
            .collect()
    }

    /// Whether any presence of `fulljid` has been seen (and it is not gone).
    pub fn knows(&self, fulljid: &str) -> bool {
        self.conns.contains_key(fulljid)
    }

    /// What active holds for `fulljid`, as confirmed.
    pub fn active_item(&self, fulljid: &str) -> Option<&UserItem> {
        self.conns.get(fulljid).and_then(|c| c.active.as_ref())
    }

    /// A presence of connection `fulljid` (of user `name`) seen at `at`.
    pub fn presence(
        &mut self,
        fulljid: &str,
        name: &str,
        change: Change,
        at: Timestamp,
    ) -> Vec<Action> {
        let conn = self
            .conns
            .entry(fulljid.to_string())
            .or_insert_with(|| Conn::new(name));
        let target = match change {
            Change::Available(status) => Target::Online { status, since: at },
            Change::Unavailable => Target::Offline { since: at },
        };
        if self.mode == Mode::Starting {
            // Only the latest state matters until reconciliation.
            match conn.queue.back() {
                Some((t, _)) if t.status() == target.status() => {}
                _ => {
                    conn.queue.clear();
                    conn.queue.push_back((target, false));
                }
            }
            return Vec::new();
        }
        if conn.last_status() == target.status() {
            // A duplicate (the server may deliver one presence twice).
            if conn.removable() {
                self.conns.remove(fulljid);
            }
            return Vec::new();
        }
        conn.queue.push_back((target, false));
        self.pump(fulljid)
    }

    /// Start-up is over: `active_items` is what active holds, `ips` the
    /// addresses the server reported (full JID → ip). Writes the difference.
    pub fn reconcile(
        &mut self,
        active_items: Vec<UserItem>,
        ips: &HashMap<String, String>,
        at: Timestamp,
    ) -> Vec<Action> {
        self.mode = Mode::Running;
        self.reconcile_reported = false;
        for item in active_items {
            let conn = self
                .conns
                .entry(item.fulljid.clone())
                .or_insert_with(|| Conn::new(&item.name));
            conn.active = Some(item);
        }
        let mut actions = Vec::new();
        let jids: Vec<String> = self.conns.keys().cloned().collect();
        for jid in jids {
            let Some(conn) = self.conns.get_mut(&jid) else {
                continue;
            };
            if conn.ip.is_none() {
                conn.ip = ips.get(&jid).cloned();
            }
            let desired = conn.queue.pop_back().map(|(t, _)| t);
            conn.queue.clear();
            let target = match (desired, &conn.active) {
                (Some(Target::Online { status, since }), Some(a))
                    if a.status == status && Some(&a.ip) == conn.ip.as_ref() =>
                {
                    // Unchanged since an earlier run: keep the item and its since.
                    let _ = since;
                    None
                }
                (Some(t @ Target::Online { .. }), _) => Some(t),
                (_, Some(_)) => Some(Target::Offline { since: at }),
                (_, None) => None,
            };
            match target {
                Some(t) => {
                    conn.queue.push_back((t, true));
                    self.reconciling.insert(jid.clone());
                    actions.extend(self.pump(&jid));
                }
                None => {
                    if conn.removable() {
                        self.conns.remove(&jid);
                    }
                }
            }
        }
        actions.extend(self.check_reconciled());
        actions
    }

    /// An audit (SPEC §8): `on_active` is what active holds now, `listed`
    /// the server's sessions listed after that fetch. Fixes only the
    /// difference: items of sessions that are gone are retracted (with
    /// `offline` on live), items missing for tracked sessions republished.
    /// Listed sessions nobody tracks are returned, to be probed.
    pub fn audit(
        &mut self,
        on_active: &HashMap<String, UserItem>,
        listed: &HashSet<String>,
        at: Timestamp,
    ) -> Audit {
        let mut out = Audit::default();
        if self.mode != Mode::Running {
            return out;
        }
        for (jid, item) in on_active {
            if listed.contains(jid) {
                continue;
            }
            let conn = self
                .conns
                .entry(jid.clone())
                .or_insert_with(|| Conn::new(&item.name));
            if conn.stage != Stage::Idle || !conn.queue.is_empty() {
                continue; // busy: the next audit looks again
            }
            // Adopt what the server holds, then let it go like any departure.
            conn.active = Some(item.clone());
            conn.queue.push_back((Target::Offline { since: at }, false));
            out.removed += 1;
            out.actions.extend(self.pump(jid));
        }
        for (jid, conn) in self.conns.iter_mut() {
            let idle = conn.stage == Stage::Idle && conn.queue.is_empty();
            if !idle || on_active.contains_key(jid) || !listed.contains(jid) {
                continue;
            }
            if let Some(item) = conn.active.take() {
                // We believed it was there; the server lost it.
                conn.queue.push_back((
                    Target::Online {
                        status: item.status,
                        since: item.since,
                    },
                    false,
                ));
                out.repaired.push(jid.clone());
            }
        }
        for jid in out.repaired.clone() {
            out.actions.extend(self.pump(&jid));
        }
        out.probe = listed
            .iter()
            .filter(|j| !on_active.contains_key(*j) && !self.conns.contains_key(*j))
            .cloned()
            .collect();
        out
    }

    /// The IP of `fulljid` is known ("" when the server would not say).
    pub fn ip_learned(&mut self, fulljid: &str, ip: String) -> Vec<Action> {
        let Some(conn) = self.conns.get_mut(fulljid) else {
            return Vec::new();
        };
        conn.ip = Some(ip);
        if let Stage::FetchingIp(t) = conn.stage {
            conn.stage = Stage::Idle;
            conn.queue.push_front((t, conn.stage_reconcile));
        }
        // The write may turn out unnecessary (same as active): that can be
        // the last reconciliation step.
        let mut actions = self.pump(fulljid);
        actions.extend(self.check_reconciled());
        actions
    }

    /// The write in flight for `fulljid` finished (`ok` = server confirmed).
    pub fn done(&mut self, fulljid: &str, ok: bool) -> Vec<Action> {
        let Some(conn) = self.conns.get_mut(fulljid) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        match std::mem::replace(&mut conn.stage, Stage::Idle) {
            Stage::WritingActive(t, item) if ok => {
                let live = match (&t, item) {
                    (Target::Online { .. }, Some(item)) => {
                        conn.active = Some(item.clone());
                        item
                    }
                    (_, _) => {
                        let gone = conn.active.take();
                        // The session is over: a later one with the same
                        // full JID is a new connection with its own address.
                        let old_ip = conn.ip.take();
                        UserItem {
                            fulljid: fulljid.to_string(),
                            name: conn.name.clone(),
                            status: Status::Offline,
                            ip: gone.map(|g| g.ip).or(old_ip).unwrap_or_default(),
                            since: match t {
                                Target::Offline { since } | Target::Online { since, .. } => since,
                            },
                        }
                    }
                };
                conn.stage = Stage::WritingLive(t);
                actions.push(Action::PublishLive { item: live });
                return actions;
            }
            Stage::WritingActive(..)
            | Stage::WritingLive(_)
            | Stage::FetchingIp(_)
            | Stage::Idle => {
                // Live written, or a failed write (logged by the service):
                // go on with the next change either way.
            }
        }
        actions.extend(self.finish_op(fulljid));
        actions
    }

    fn finish_op(&mut self, fulljid: &str) -> Vec<Action> {
        if let Some(conn) = self.conns.get_mut(fulljid) {
            if conn.stage_reconcile {
                conn.stage_reconcile = false;
                self.reconciling.remove(fulljid);
            }
        }
        let mut actions = self.pump(fulljid);
        actions.extend(self.check_reconciled());
        actions
    }

    fn check_reconciled(&mut self) -> Vec<Action> {
        if self.mode == Mode::Running && self.reconciling.is_empty() && !self.reconcile_reported {
            self.reconcile_reported = true;
            return vec![Action::ReconcileDone];
        }
        Vec::new()
    }

    /// Starts the next queued change of `fulljid` if it is idle.
    fn pump(&mut self, fulljid: &str) -> Vec<Action> {
        let mut actions = Vec::new();
        loop {
            let Some(conn) = self.conns.get_mut(fulljid) else {
                return actions;
            };
            if conn.stage != Stage::Idle {
                return actions;
            }
            let Some((target, reconcile)) = conn.queue.pop_front() else {
                if conn.removable() {
                    self.conns.remove(fulljid);
                }
                return actions;
            };
            conn.stage_reconcile = reconcile;
            match target {
                Target::Online { status, since } => {
                    let Some(ip) = conn.ip.clone() else {
                        conn.stage = Stage::FetchingIp(target);
                        actions.push(Action::FetchIp {
                            fulljid: fulljid.to_string(),
                            name: conn.name.clone(),
                        });
                        return actions;
                    };
                    let item = UserItem {
                        fulljid: fulljid.to_string(),
                        name: conn.name.clone(),
                        status,
                        ip,
                        since,
                    };
                    if conn.active.as_ref().is_some_and(|a| a.same_state(&item)) {
                        // Nothing would change on active.
                        if reconcile {
                            conn.stage_reconcile = false;
                            self.reconciling.remove(fulljid);
                        }
                        continue;
                    }
                    conn.stage = Stage::WritingActive(target, Some(item.clone()));
                    actions.push(Action::SetActive { item });
                    return actions;
                }
                Target::Offline { .. } => {
                    if conn.active.is_none() {
                        conn.ip = None;
                        if reconcile {
                            conn.stage_reconcile = false;
                            self.reconciling.remove(fulljid);
                        }
                        continue;
                    }
                    conn.stage = Stage::WritingActive(target, None);
                    actions.push(Action::RetractActive {
                        fulljid: fulljid.to_string(),
                    });
                    return actions;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::time;

    fn t(s: &str) -> Timestamp {
        time::parse(&format!("2026-11-24T10:00:{s}Z")).unwrap()
    }

    fn item(jid: &str, status: Status, ip: &str, since: Timestamp) -> UserItem {
        UserItem {
            fulljid: jid.into(),
            name: jid.split('/').next().unwrap().into(),
            status,
            ip: ip.into(),
            since,
        }
    }

    fn running() -> Tracker {
        let mut tr = Tracker::new();
        assert_eq!(
            tr.reconcile(vec![], &HashMap::new(), t("00")),
            vec![Action::ReconcileDone]
        );
        tr
    }

    const A: &str = "alice@l/desk";

    #[test]
    fn new_connection_learns_ip_then_active_then_live() {
        let mut tr = running();
        let acts = tr.presence(A, "alice@l", Change::Available(Status::Online), t("01"));
        assert_eq!(
            acts,
            vec![Action::FetchIp {
                fulljid: A.into(),
                name: "alice@l".into()
            }]
        );
        let it = item(A, Status::Online, "127.0.0.2", t("01"));
        assert_eq!(
            tr.ip_learned(A, "127.0.0.2".into()),
            vec![Action::SetActive { item: it.clone() }]
        );
        assert_eq!(
            tr.done(A, true),
            vec![Action::PublishLive { item: it.clone() }]
        );
        assert_eq!(tr.done(A, true), vec![]);
        assert_eq!(tr.active_item(A), Some(&it));
        // A status change: no second user-stats; active then live.
        let away = item(A, Status::Away, "127.0.0.2", t("05"));
        assert_eq!(
            tr.presence(A, "alice@l", Change::Available(Status::Away), t("05")),
            vec![Action::SetActive { item: away.clone() }]
        );
        assert_eq!(tr.done(A, true), vec![Action::PublishLive { item: away }]);
        assert_eq!(tr.done(A, true), vec![]);
    }

    #[test]
    fn changes_of_one_connection_wait_for_each_other() {
        let mut tr = running();
        tr.presence(A, "alice@l", Change::Available(Status::Online), t("01"));
        // Quick offline while the IP is still being fetched: queued, not lost.
        assert_eq!(
            tr.presence(A, "alice@l", Change::Unavailable, t("02")),
            vec![]
        );
        let it = item(A, Status::Online, "::1", t("01"));
        assert_eq!(
            tr.ip_learned(A, "::1".into()),
            vec![Action::SetActive { item: it.clone() }]
        );
        assert_eq!(tr.done(A, true), vec![Action::PublishLive { item: it }]);
        assert_eq!(
            tr.done(A, true),
            vec![Action::RetractActive { fulljid: A.into() }]
        );
        let off = item(A, Status::Offline, "::1", t("02"));
        assert_eq!(tr.done(A, true), vec![Action::PublishLive { item: off }]);
        assert_eq!(tr.done(A, true), vec![]);
        assert!(tr.is_empty(), "a connection gone from active is forgotten");
    }

    #[test]
    fn a_reconnect_with_the_same_full_jid_learns_its_address_again() {
        let mut tr = running();
        tr.presence(A, "alice@l", Change::Available(Status::Online), t("01"));
        tr.ip_learned(A, "127.0.0.2".into());
        // Gone and back before the first write is even confirmed.
        tr.presence(A, "alice@l", Change::Unavailable, t("02"));
        tr.presence(A, "alice@l", Change::Available(Status::Online), t("03"));
        tr.done(A, true); // active
        tr.done(A, true); // live
        tr.done(A, true); // retract
        assert_eq!(
            tr.done(A, true), // live offline
            vec![Action::FetchIp {
                fulljid: A.into(),
                name: "alice@l".into()
            }]
        );
    }

    #[test]
    fn duplicates_are_dropped_and_other_connections_proceed() {
        let mut tr = running();
        tr.presence(A, "alice@l", Change::Available(Status::Dnd), t("01"));
        assert_eq!(
            tr.presence(A, "alice@l", Change::Available(Status::Dnd), t("02")),
            vec![]
        );
        let b = "bob@l/x";
        assert_eq!(
            tr.presence(b, "bob@l", Change::Available(Status::Xa), t("02")),
            vec![Action::FetchIp {
                fulljid: b.into(),
                name: "bob@l".into()
            }]
        );
        // An unavailable for a connection never seen changes nothing.
        assert_eq!(
            tr.presence("carol@l/z", "carol@l", Change::Unavailable, t("03")),
            vec![]
        );
        assert_eq!(tr.len(), 2);
    }

    #[test]
    fn failed_active_write_publishes_no_live_and_goes_on() {
        let mut tr = running();
        tr.presence(A, "alice@l", Change::Available(Status::Online), t("01"));
        tr.ip_learned(A, "127.0.0.2".into());
        tr.presence(A, "alice@l", Change::Available(Status::Away), t("02"));
        let away = item(A, Status::Away, "127.0.0.2", t("02"));
        assert_eq!(tr.done(A, false), vec![Action::SetActive { item: away }]);
    }

    #[test]
    fn reconcile_ends_when_a_learned_ip_shows_nothing_changed() {
        // ejabberd's listing has no addresses: the IP is learned after
        // reconciliation started, and then the item turns out unchanged.
        let mut tr = Tracker::new();
        let kept = item(A, Status::Online, "127.0.0.2", t("00"));
        tr.presence(A, "alice@l", Change::Available(Status::Online), t("05"));
        let acts = tr.reconcile(vec![kept.clone()], &HashMap::new(), t("06"));
        assert_eq!(
            acts,
            vec![Action::FetchIp {
                fulljid: A.into(),
                name: "alice@l".into()
            }]
        );
        assert_eq!(
            tr.ip_learned(A, "127.0.0.2".into()),
            vec![Action::ReconcileDone]
        );
        assert_eq!(tr.active_item(A), Some(&kept), "kept as it was");
    }

    #[test]
    fn audit_fixes_only_the_difference() {
        let mut tr = running();
        // Tracked and on active: alice. Tracked, lost from active: bob.
        for (j, ip) in [(A, "127.0.0.2"), ("bob@l/x", "127.0.0.3")] {
            tr.presence(
                j,
                j.split('/').next().unwrap(),
                Change::Available(Status::Online),
                t("01"),
            );
            tr.ip_learned(j, ip.into());
            tr.done(j, true);
            tr.done(j, true);
        }
        let alice = tr.active_item(A).cloned().unwrap();
        let ghost = item("ghost@l/g", Status::Away, "192.0.2.1", t("00"));
        let on_active: HashMap<String, UserItem> =
            [(A.to_string(), alice), (ghost.fulljid.clone(), ghost)]
                .into_iter()
                .collect();
        let listed: HashSet<String> = [A, "bob@l/x", "carol@l/new"]
            .into_iter()
            .map(String::from)
            .collect();
        let mut audit = tr.audit(&on_active, &listed, t("30"));
        audit.actions.sort_by_key(|a| format!("{a:?}"));
        assert_eq!(
            audit.actions,
            vec![
                Action::RetractActive {
                    fulljid: "ghost@l/g".into()
                },
                Action::SetActive {
                    item: item("bob@l/x", Status::Online, "127.0.0.3", t("01"))
                },
            ]
        );
        assert_eq!(audit.removed, 1);
        assert_eq!(audit.repaired, vec!["bob@l/x".to_string()]);
        assert_eq!(audit.probe, vec!["carol@l/new".to_string()]);
        let off = tr.done("ghost@l/g", true);
        assert!(
            matches!(&off[..], [Action::PublishLive { item }] if item.status == Status::Offline)
        );
        // Nothing to fix: nothing done.
        let mut tr2 = running();
        let a = tr2.audit(&HashMap::new(), &HashSet::new(), t("40"));
        assert!(a.actions.is_empty() && a.probe.is_empty() && a.removed == 0);
    }

    #[test]
    fn startup_records_then_reconciles_the_difference() {
        let mut tr = Tracker::new();
        let kept = item("k@l/r", Status::Away, "127.0.0.5", t("00"));
        let stale = item("s@l/r", Status::Online, "127.0.0.6", t("00"));
        let changed = item("c@l/r", Status::Online, "127.0.0.7", t("00"));
        // Presences during start-up write nothing.
        assert!(tr
            .presence("k@l/r", "k@l", Change::Available(Status::Away), t("10"))
            .is_empty());
        assert!(tr
            .presence("c@l/r", "c@l", Change::Available(Status::Online), t("10"))
            .is_empty());
        assert!(tr
            .presence("c@l/r", "c@l", Change::Available(Status::Xa), t("11"))
            .is_empty());
        assert!(tr
            .presence("n@l/r", "n@l", Change::Available(Status::Chat), t("12"))
            .is_empty());
        let ips: HashMap<String, String> = [
            ("k@l/r", "127.0.0.5"),
            ("c@l/r", "127.0.0.7"),
            ("n@l/r", "127.0.0.8"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let mut acts = tr.reconcile(vec![kept.clone(), stale.clone(), changed], &ips, t("20"));
        acts.sort_by_key(|a| format!("{a:?}"));
        assert_eq!(
            acts,
            vec![
                Action::RetractActive {
                    fulljid: "s@l/r".into()
                },
                Action::SetActive {
                    item: item("c@l/r", Status::Xa, "127.0.0.7", t("11"))
                },
                Action::SetActive {
                    item: item("n@l/r", Status::Chat, "127.0.0.8", t("12"))
                },
            ]
        );
        assert_eq!(
            tr.active_item("k@l/r"),
            Some(&kept),
            "unchanged item kept with its since"
        );
        assert!(
            matches!(tr.done("s@l/r", true)[..], [Action::PublishLive { ref item }] if item.status == Status::Offline)
        );
        assert!(tr.done("s@l/r", true).is_empty());
        assert_eq!(tr.done("c@l/r", true).len(), 1);
        assert!(tr.done("c@l/r", true).is_empty());
        // A change arriving mid-reconcile queues behind the reconcile write.
        assert!(tr
            .presence("n@l/r", "n@l", Change::Unavailable, t("21"))
            .is_empty());
        assert_eq!(tr.done("n@l/r", true).len(), 1);
        assert_eq!(
            tr.done("n@l/r", true),
            vec![
                Action::ReconcileDone,
                Action::RetractActive {
                    fulljid: "n@l/r".into()
                }
            ]
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
        );
    }
}
