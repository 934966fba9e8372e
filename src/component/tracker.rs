//! The per-connection state machine: what active holds, what must be
//! written next, in which order. Pure: no sockets, no clocks, no tasks. The
//! service feeds it events and executes the actions it returns.
//!
//! Rules (docs/protocol.md, "What the component publishes, and when"): one connection's changes are applied strictly in order,
//! each as "write active, once confirmed publish live"; different
//! connections proceed independently; a presence that changes nothing is
//! dropped; during start-up presences only update the desired state, which
//! reconciliation then writes as a difference against what active holds.
//!
//! Memory (at most 1 KiB per tracked connection): a connection at
//! rest (its item written, nothing queued) is one entry of the map's table
//! and nothing else: its full JID (the key, inline when short: see
//! `small`), and what active holds without repeating the JID or the name
//! (the JID's bare part). Whatever is only needed while a change is under
//! way lives in a box that is dropped once the connection is at rest again.

use super::small::{name_or_bare, odd_name, IpStr, JidStr};
use crate::wire::time::Timestamp;
use crate::wire::user::{Status, UserItem};
use std::collections::{HashMap, HashSet, VecDeque};

mod audit;
pub use audit::Audit;

/// What [`Tracker::reconcile`] decided.
#[derive(Debug)]
pub struct Reconciled {
    /// The writes (and fetches of addresses) it takes.
    pub actions: Vec<Action>,
    /// Sessions given their item's address without asking the server
    /// (`same_session`).
    pub addresses_kept: usize,
}

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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Stage {
    #[default]
    Idle,
    FetchingIp(Target),
    /// Boxed: held by every connection whose write waits (all of them
    /// after a burst of logins), and `More` is as large as its largest stage.
    WritingActive(Target, Option<Box<UserItem>>),
    WritingLive(Target),
}

/// What active holds for a connection: its item without the full JID (the
/// map's key) and, unless someone else wrote it, without the name.
#[derive(Debug, Clone)]
struct Active {
    ip: IpStr,
    since: Timestamp,
    status: Status,
    /// The name when it is not the full JID's bare part.
    name: Option<Box<str>>,
    /// The connection's address is this one (the usual case once it is
    /// written: one copy serves both).
    conns_ip: bool,
}

impl Active {
    fn of(item: &UserItem) -> Active {
        Active {
            ip: IpStr::new(&item.ip),
            since: item.since,
            status: item.status,
            name: odd_name(&item.fulljid, &item.name),
            conns_ip: false,
        }
    }

    fn name<'a>(&'a self, fulljid: &'a str) -> &'a str {
        name_or_bare(self.name.as_deref(), fulljid)
    }

    fn item(&self, fulljid: &str) -> UserItem {
        UserItem {
            fulljid: fulljid.to_string(),
            name: self.name(fulljid).to_string(),
            status: self.status,
            ip: self.ip.to_string(),
            since: self.since,
        }
    }

    /// `UserItem::same_state`, for an item of this connection.
    fn same_state(&self, item: &UserItem) -> bool {
        self.name(&item.fulljid) == item.name
            && self.status == item.status
            && self.ip.as_str() == item.ip
    }
}

#[derive(Debug)]
struct Conn {
    /// What active holds for this connection, as confirmed by the server.
    active: Option<Active>,
    /// Everything a connection at rest does not need (see `More`).
    more: Option<Box<More>>,
}

/// Held while a change is queued or under way, or while the address or the
/// name cannot be read off the key and `active`; dropped otherwise.
#[derive(Debug, Default)]
struct More {
    /// The user's name when it is not the full JID's bare part (only an
    /// item on active written by someone else can say so).
    name: Option<Box<str>>,
    /// The connection's address when known and not the one of `active`.
    ip: Option<Box<str>>,
    queue: VecDeque<(Target, bool)>,
    stage: Stage,
    /// Whether the op in flight is reconciliation work.
    stage_reconcile: bool,
}

impl Conn {
    fn new(fulljid: &str, name: &str) -> Conn {
        let more = odd_name(fulljid, name).map(|name| {
            Box::new(More {
                name: Some(name),
                ..More::default()
            })
        });
        Conn { active: None, more }
    }

    fn more(&mut self) -> &mut More {
        self.more.get_or_insert_with(Box::default)
    }

    /// Drops `more` when it holds nothing.
    fn tidy(&mut self) {
        if self.more.as_ref().is_some_and(|m| {
            m.name.is_none()
                && m.ip.is_none()
                && m.stage == Stage::Idle
                && m.queue.is_empty()
                && !m.stage_reconcile
        }) {
            self.more = None;
        }
    }

    fn name<'a>(&'a self, fulljid: &'a str) -> &'a str {
        name_or_bare(self.more.as_ref().and_then(|m| m.name.as_deref()), fulljid)
    }

    /// The item on active, whole.
    fn active_item(&self, fulljid: &str) -> Option<UserItem> {
        self.active.as_ref().map(|a| a.item(fulljid))
    }

    fn stage(&self) -> &Stage {
        match &self.more {
            Some(m) => &m.stage,
            None => &Stage::Idle,
        }
    }

    fn queue_is_empty(&self) -> bool {
        self.more.as_ref().map_or(true, |m| m.queue.is_empty())
    }

    /// Nothing queued, nothing in flight.
    fn idle(&self) -> bool {
        *self.stage() == Stage::Idle && self.queue_is_empty()
    }

    /// The connection's address, once learned.
    fn ip(&self) -> Option<&str> {
        if let Some(a) = self.active.as_ref().filter(|a| a.conns_ip) {
            return Some(a.ip.as_str());
        }
        self.more.as_ref().and_then(|m| m.ip.as_deref())
    }

    fn set_ip(&mut self, ip: Option<String>) {
        let shared = matches!((&ip, &self.active), (Some(ip), Some(a)) if a.ip.as_str() == ip);
        if let Some(a) = &mut self.active {
            a.conns_ip = shared;
        }
        if shared || (ip.is_none() && self.more.is_none()) {
            if let Some(m) = &mut self.more {
                m.ip = None;
            }
        } else {
            self.more().ip = ip.map(String::into_boxed_str);
        }
    }

    fn take_ip(&mut self) -> Option<String> {
        let ip = self.ip().map(str::to_string);
        self.set_ip(None);
        ip
    }

    /// Replaces what active holds (`item` is this connection's); the
    /// address stays what it was.
    fn set_active(&mut self, item: Option<&UserItem>) -> Option<Active> {
        let ip = self.take_ip();
        let old = std::mem::replace(&mut self.active, item.map(Active::of));
        self.set_ip(ip);
        old
    }

    /// The state this connection will be in once everything queued is written.
    fn last_status(&self) -> Option<Status> {
        if let Some(m) = &self.more {
            if let Some((t, _)) = m.queue.back() {
                return t.status();
            }
            match &m.stage {
                Stage::FetchingIp(t) | Stage::WritingActive(t, _) | Stage::WritingLive(t) => {
                    return t.status()
                }
                Stage::Idle => {}
            }
        }
        self.active.as_ref().map(|a| a.status)
    }

    fn removable(&self) -> bool {
        self.idle() && self.active.is_none()
    }
}

/// Whether a listed session whose address the server did not state (ejabberd
/// lists full JIDs only) is the one whose item is on active, so that the
/// item's address is its address (docs/protocol.md, "What the component
/// publishes, and when", step 6). Its start-up presence (`desired`, with the
/// server's XEP-0203 stamp of when the session set it as `since`) shows the
/// item's status, was set no later than the item was written, and before
/// the last clean stop stopped reading presence: so the component read that
/// presence, or a later one of the same session, and wrote the item from it.
/// A session that connected again with the same resource while the
/// component was down set its presence after the stop. Timestamps are to the
/// second, so one set in the stop's own second is asked about.
fn same_session(
    desired: Option<&Target>,
    active: Option<&Active>,
    stopped: Option<Timestamp>,
) -> bool {
    let (Some(Target::Online { status, since }), Some(a), Some(stopped)) =
        (desired, active, stopped)
    else {
        return false;
    };
    *status == a.status && !a.ip.is_empty() && *since <= a.since && *since < stopped
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

/// Items on active by full JID, remembered from one session to the next.
pub type Memory = HashMap<String, UserItem>;

#[derive(Debug)]
pub struct Tracker {
    mode: Mode,
    conns: HashMap<JidStr, Conn>,
    reconciling: HashSet<JidStr>,
    reconcile_reported: bool,
    /// A write to active failed or went unanswered: what it holds for that
    /// connection is not known for sure (`exact_copy`). An audit that saw
    /// all of active with nothing under way clears it (`audit`).
    doubt: bool,
    /// While an audit's fetch of active is out: the connections whose
    /// write to active ended since it was asked for (`audit_begins`).
    written_during_audit: Option<HashSet<JidStr>>,
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
            doubt: false,
            written_during_audit: None,
        }
    }

    pub fn is_running(&self) -> bool {
        self.mode == Mode::Running
    }

    /// Connections tracked right now (available, or with work pending).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// What active holds, as far as this tracker knows: for the next
    /// session of the same process (`Tracker::reconcile`'s `remembered`).
    pub fn on_active(&self) -> Memory {
        self.conns
            .iter()
            .filter_map(|(j, c)| c.active.as_ref().map(|a| (j.to_string(), a.item(j))))
            .collect()
    }

    /// Exactly what active holds, when this tracker knows it for sure:
    /// running, no write to active under way, none failed. For the copy
    /// saved at a clean stop (`saved`).
    pub fn exact_copy(&self) -> Option<Vec<UserItem>> {
        let writing = self.conns.values().any(|c| {
            c.more
                .as_ref()
                .is_some_and(|m| matches!(m.stage, Stage::WritingActive(..)))
        });
        if self.mode != Mode::Running || self.doubt || writing {
            return None;
        }
        Some(
            self.conns
                .iter()
                .filter_map(|(j, c)| c.active_item(j))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Full JIDs whose last known state is available.
    pub fn available(&self) -> Vec<String> {
        self.conns
            .iter()
            .filter(|(_, c)| c.last_status().is_some())
            .map(|(j, _)| j.to_string())
            .collect()
    }

    /// Whether any presence of `fulljid` has been seen (and it is not gone).
    pub fn knows(&self, fulljid: &str) -> bool {
        self.conns.contains_key(fulljid)
    }

    /// What active holds for `fulljid`, as confirmed.
    pub fn active(&self, fulljid: &str) -> Option<UserItem> {
        self.conns.get(fulljid).and_then(|c| c.active_item(fulljid))
    }

    /// The connection `fulljid` (of user `name`), created if new. Looked up
    /// before inserting: the key is allocated only for a new connection.
    fn conn_or_new(&mut self, fulljid: &str, name: &str) -> Option<&mut Conn> {
        if !self.conns.contains_key(fulljid) {
            self.conns
                .insert(JidStr::new(fulljid), Conn::new(fulljid, name));
        }
        self.conns.get_mut(fulljid)
    }

    /// Forgets a connection. A table emptied by a wave of departures gives
    /// its memory back (rehashing when a quarter is used: amortised O(1)).
    fn forget(&mut self, fulljid: &str) {
        self.conns.remove(fulljid);
        let cap = self.conns.capacity();
        if cap > 64 && self.conns.len() < cap / 4 {
            self.conns.shrink_to(self.conns.len() * 2);
        }
    }

    /// A presence of connection `fulljid` (of user `name`) seen at `at`.
    pub fn presence(
        &mut self,
        fulljid: &str,
        name: &str,
        change: Change,
        at: Timestamp,
    ) -> Vec<Action> {
        let starting = self.mode == Mode::Starting;
        let Some(conn) = self.conn_or_new(fulljid, name) else {
            return Vec::new();
        };
        let target = match change {
            Change::Available(status) => Target::Online { status, since: at },
            Change::Unavailable => Target::Offline { since: at },
        };
        if starting {
            // Only the latest state matters until reconciliation.
            let more = conn.more();
            match more.queue.back() {
                Some((t, _)) if t.status() == target.status() => {}
                _ => {
                    more.queue.clear();
                    more.queue.push_back((target, false));
                }
            }
            return Vec::new();
        }
        if conn.last_status() == target.status() {
            // A duplicate (the server may deliver one presence twice).
            if conn.removable() {
                self.forget(fulljid);
            }
            return Vec::new();
        }
        conn.more().queue.push_back((target, false));
        self.pump(fulljid)
    }

    /// Start-up is over: `active_items` is what active holds, `ips` the
    /// addresses the server reported (full JID → ip). Writes the difference.
    /// Items of `late` (listed sessions whose presence has not come yet)
    /// stay as they are: a later presence changes them as usual, and one
    /// that repeats the item is no change. `stopped`: when the last run's
    /// clean stop stopped reading presence (see `same_session`).
    pub fn reconcile(
        &mut self,
        active_items: Vec<UserItem>,
        ips: &HashMap<String, String>,
        at: Timestamp,
        remembered: &Memory,
        late: &HashSet<String>,
        stopped: Option<Timestamp>,
    ) -> Reconciled {
        self.mode = Mode::Running;
        self.reconcile_reported = false;
        let mut addresses_kept = 0;
        for item in &active_items {
            if let Some(conn) = self.conn_or_new(&item.fulljid, &item.name) {
                conn.set_active(Some(item));
            }
        }
        drop(active_items);
        let mut actions = Vec::new();
        let jids: Vec<JidStr> = self.conns.keys().cloned().collect();
        for jid in jids {
            let Some(conn) = self.conns.get_mut(&jid) else {
                continue;
            };
            if conn.ip().is_none() {
                conn.set_ip(ips.get(&*jid).cloned());
            }
            let desired = conn
                .more
                .as_mut()
                .and_then(|m| {
                    let last = m.queue.pop_back();
                    m.queue.clear();
                    last
                })
                .map(|(t, _)| t);
            if conn.ip().is_none() && same_session(desired.as_ref(), conn.active.as_ref(), stopped)
            {
                let ip = conn.active.as_ref().map(|a| a.ip.to_string());
                conn.set_ip(ip);
                addresses_kept += 1;
            }
            let target = match (desired, &conn.active) {
                (Some(Target::Online { status, since }), Some(a))
                    if a.status == status && Some(a.ip.as_str()) == conn.ip() =>
                {
                    // Unchanged since an earlier run: keep the item and its since.
                    let _ = since;
                    None
                }
                (Some(Target::Online { status, since }), None) => {
                    // Not on active (emptied behind our back) but unchanged
                    // since this process last wrote it: its since stays.
                    let since = match remembered.get(&*jid) {
                        Some(r) if r.status == status && Some(r.ip.as_str()) == conn.ip() => {
                            r.since
                        }
                        _ => since,
                    };
                    Some(Target::Online { status, since })
                }
                (Some(t @ Target::Online { .. }), _) => Some(t),
                (None, Some(_)) if late.contains(&*jid) => None,
                (_, Some(_)) => Some(Target::Offline { since: at }),
                (_, None) => None,
            };
            match target {
                Some(t) => {
                    conn.more().queue.push_back((t, true));
                    self.reconciling.insert(jid.clone());
                    actions.extend(self.pump(&jid));
                }
                None => {
                    conn.tidy();
                    if conn.removable() {
                        self.forget(&jid);
                    }
                }
            }
        }
        actions.extend(self.check_reconciled());
        Reconciled {
            actions,
            addresses_kept,
        }
    }

    /// The IP of `fulljid` is known ("" when the server would not say).
    pub fn ip_learned(&mut self, fulljid: &str, ip: String) -> Vec<Action> {
        let Some(conn) = self.conns.get_mut(fulljid) else {
            return Vec::new();
        };
        conn.set_ip(Some(ip));
        if let Some(m) = &mut conn.more {
            if let Stage::FetchingIp(t) = m.stage {
                m.stage = Stage::Idle;
                m.queue.push_front((t, m.stage_reconcile));
            }
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
        let stage = match &mut conn.more {
            Some(m) => std::mem::take(&mut m.stage),
            None => Stage::Idle,
        };
        let on_active = matches!(stage, Stage::WritingActive(..));
        let failed_on_active = on_active && !ok;
        if let (true, Some(written)) = (on_active, &mut self.written_during_audit) {
            written.insert(JidStr::new(fulljid));
        }
        match stage {
            Stage::WritingActive(t, item) if ok => {
                let live = match (&t, item) {
                    (Target::Online { .. }, Some(item)) => {
                        conn.set_active(Some(&item));
                        *item
                    }
                    (_, _) => {
                        let name = conn.name(fulljid).to_string();
                        let gone = conn.set_active(None);
                        // The session is over: a later one with the same
                        // full JID is a new connection with its own address.
                        let old_ip = conn.take_ip();
                        UserItem {
                            fulljid: fulljid.to_string(),
                            name,
                            status: Status::Offline,
                            ip: gone
                                .map(|g| g.ip.to_string())
                                .or(old_ip)
                                .unwrap_or_default(),
                            since: match t {
                                Target::Offline { since } | Target::Online { since, .. } => since,
                            },
                        }
                    }
                };
                conn.more().stage = Stage::WritingLive(t);
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
        self.doubt |= failed_on_active;
        actions.extend(self.finish_op(fulljid));
        actions
    }

    fn finish_op(&mut self, fulljid: &str) -> Vec<Action> {
        if let Some(m) = self.conns.get_mut(fulljid).and_then(|c| c.more.as_mut()) {
            if m.stage_reconcile {
                m.stage_reconcile = false;
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
            // It held every connection at start-up: give that back.
            self.reconciling.shrink_to_fit();
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
            if *conn.stage() != Stage::Idle {
                return actions;
            }
            let next = conn.more.as_mut().and_then(|m| {
                let next = m.queue.pop_front();
                if m.queue.is_empty() {
                    // Most connections wait for one change at a time: no
                    // buffer kept for the next.
                    m.queue = VecDeque::new();
                }
                next
            });
            let Some((target, reconcile)) = next else {
                conn.tidy();
                if conn.removable() {
                    self.forget(fulljid);
                }
                return actions;
            };
            conn.more().stage_reconcile = reconcile;
            match target {
                Target::Online { status, since } => {
                    let Some(ip) = conn.ip().map(str::to_string) else {
                        let name = conn.name(fulljid).to_string();
                        conn.more().stage = Stage::FetchingIp(target);
                        actions.push(Action::FetchIp {
                            fulljid: fulljid.to_string(),
                            name,
                        });
                        return actions;
                    };
                    let item = UserItem {
                        fulljid: fulljid.to_string(),
                        name: conn.name(fulljid).to_string(),
                        status,
                        ip,
                        since,
                    };
                    if conn.active.as_ref().is_some_and(|a| a.same_state(&item)) {
                        // Nothing would change on active.
                        if reconcile {
                            conn.more().stage_reconcile = false;
                            self.reconciling.remove(fulljid);
                        }
                        continue;
                    }
                    conn.more().stage = Stage::WritingActive(target, Some(Box::new(item.clone())));
                    actions.push(Action::SetActive { item });
                    return actions;
                }
                Target::Offline { .. } => {
                    if conn.active.is_none() {
                        conn.set_ip(None);
                        if reconcile {
                            conn.more().stage_reconcile = false;
                            self.reconciling.remove(fulljid);
                        }
                        continue;
                    }
                    conn.more().stage = Stage::WritingActive(target, None);
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

    pub(super) fn t(s: &str) -> Timestamp {
        time::parse(&format!("2026-11-24T10:00:{s}Z")).unwrap()
    }

    pub(super) fn item(jid: &str, status: Status, ip: &str, since: Timestamp) -> UserItem {
        UserItem {
            fulljid: jid.into(),
            name: jid.split('/').next().unwrap().into(),
            status,
            ip: ip.into(),
            since,
        }
    }

    /// Reconciles with `items` on active and the listing's `ips`, at `at`:
    /// nothing remembered from a previous session, no session late, no stop
    /// on record. The actions.
    pub(super) fn reconcile(
        tr: &mut Tracker,
        items: Vec<UserItem>,
        ips: &HashMap<String, String>,
        at: Timestamp,
    ) -> Vec<Action> {
        tr.reconcile(items, ips, at, &Memory::new(), &HashSet::new(), None)
            .actions
    }

    pub(super) fn running() -> Tracker {
        let mut tr = Tracker::new();
        assert_eq!(
            reconcile(&mut tr, vec![], &HashMap::new(), t("00")),
            vec![Action::ReconcileDone]
        );
        tr
    }

    pub(super) const A: &str = "alice@l/desk";

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
        assert_eq!(tr.active(A).as_ref(), Some(&it));
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
    fn an_unchanged_session_keeps_its_items_address_without_asking() {
        // As on ejabberd: the listing states no addresses (`ips` empty).
        let stop = Some(t("30"));
        let written = item(A, Status::Away, "127.0.0.2", t("10"));
        let no_ip = item(A, Status::Away, "", t("10"));
        let fetch = Action::FetchIp {
            fulljid: A.into(),
            name: "alice@l".into(),
        };
        // (item on active, the probe answer's status and stamp, the stop, kept)
        for (n, (on_active, status, stamp, stopped, kept)) in [
            // The presence the item was written from, or an earlier one
            // of the same state.
            (&written, Status::Away, t("10"), stop, true),
            (&written, Status::Away, t("05"), stop, true),
            // Set after the item was written: maybe a new session.
            (&written, Status::Away, t("11"), stop, false),
            // No clean stop known (a crash, a kill -9).
            (&written, Status::Away, t("10"), None, false),
            // Set in the stop's own second.
            (&written, Status::Away, t("10"), Some(t("10")), false),
            (&written, Status::Dnd, t("10"), stop, false),
            // Published without an address: asked again.
            (&no_ip, Status::Away, t("10"), stop, false),
        ]
        .into_iter()
        .enumerate()
        {
            let mut tr = Tracker::new();
            tr.presence(A, "alice@l", Change::Available(status), stamp);
            let r = tr.reconcile(
                vec![on_active.clone()],
                &HashMap::new(),
                t("40"),
                &Memory::new(),
                &HashSet::new(),
                stopped,
            );
            let acts = r.actions;
            if kept {
                assert_eq!(acts, vec![Action::ReconcileDone], "case {n}");
                assert_eq!(r.addresses_kept, 1, "case {n}");
                assert_eq!(tr.active(A).as_ref(), Some(on_active), "case {n}");
                // The address is known: the next change writes at once.
                let acts = tr.presence(A, "alice@l", Change::Available(Status::Xa), t("41"));
                assert!(
                    matches!(&acts[..], [Action::SetActive { item }] if item.ip == "127.0.0.2"),
                    "case {n}: {acts:?}"
                );
            } else {
                assert_eq!(acts, vec![fetch.clone()], "case {n}");
                assert_eq!(r.addresses_kept, 0, "case {n}");
            }
        }
    }

    #[test]
    fn the_exact_copy_is_given_only_when_nothing_is_in_doubt() {
        let starting = Tracker::new();
        assert_eq!(starting.exact_copy(), None, "before reconciliation");
        let mut tr = running();
        assert_eq!(tr.exact_copy(), Some(vec![]));
        tr.presence(A, "alice@l", Change::Available(Status::Online), t("01"));
        tr.ip_learned(A, "127.0.0.2".into());
        assert_eq!(tr.exact_copy(), None, "a write to active under way");
        let online = item(A, Status::Online, "127.0.0.2", t("01"));
        tr.done(A, true);
        assert_eq!(
            tr.exact_copy(),
            Some(vec![online.clone()]),
            "live under way"
        );
        tr.done(A, true);
        assert_eq!(tr.exact_copy(), Some(vec![online]));
        tr.presence(A, "alice@l", Change::Available(Status::Away), t("02"));
        tr.done(A, false);
        assert_eq!(tr.exact_copy(), None, "a failed write to active");
    }

    #[test]
    fn reconcile_ends_when_a_learned_ip_shows_nothing_changed() {
        // ejabberd's listing has no addresses: the IP is learned after
        // reconciliation started, and then the item turns out unchanged.
        let mut tr = Tracker::new();
        let kept = item(A, Status::Online, "127.0.0.2", t("00"));
        tr.presence(A, "alice@l", Change::Available(Status::Online), t("05"));
        let acts = reconcile(&mut tr, vec![kept.clone()], &HashMap::new(), t("06"));
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
        assert_eq!(tr.active(A).as_ref(), Some(&kept), "kept as it was");
    }

    #[test]
    fn a_late_session_keeps_its_item_until_its_presence_or_its_end() {
        // Listed, on active, its probe answer not in yet (ejabberd under
        // load): no retraction at reconciliation.
        let mut tr = Tracker::new();
        const B: &str = "bob@l/r";
        let a = item(A, Status::Away, "127.0.0.2", t("00"));
        let b = item(B, Status::Online, "127.0.0.3", t("00"));
        let late: HashSet<String> = [A.to_string(), B.to_string()].into();
        let acts = tr
            .reconcile(
                vec![a.clone(), b.clone()],
                &HashMap::new(),
                t("06"),
                &Memory::new(),
                &late,
                None,
            )
            .actions;
        assert_eq!(acts, vec![Action::ReconcileDone]);
        assert_eq!(tr.active(A).as_ref(), Some(&a));
        // Its answer repeats the item: nothing to write.
        assert!(tr
            .presence(A, "alice@l", Change::Available(Status::Away), t("07"))
            .is_empty());
        assert_eq!(tr.active(A).as_ref(), Some(&a), "since kept");
        // No answer by the deadline: taken off as a session that ended.
        assert_eq!(
            tr.presence(B, "bob@l", Change::Unavailable, t("16")),
            vec![Action::RetractActive { fulljid: B.into() }]
        );
        // Without `late` the same items are retracted at once.
        let mut tr = Tracker::new();
        let mut acts = reconcile(&mut tr, vec![a, b], &HashMap::new(), t("06"));
        acts.sort_by_key(|a| format!("{a:?}"));
        assert_eq!(
            acts,
            vec![
                Action::RetractActive { fulljid: A.into() },
                Action::RetractActive { fulljid: B.into() },
            ]
        );
    }

    #[test]
    fn a_rebuilt_active_keeps_the_remembered_since_of_what_did_not_change() {
        // Active was emptied (a node deleted behind our back): what the
        // previous session had on it decides the `since` of an unchanged
        // connection; a changed one, or one from another address, gets the
        // time of its presence.
        let mut tr = Tracker::new();
        let remembered: Memory = [
            (A, item(A, Status::Away, "127.0.0.2", t("01"))),
            ("b@l/r", item("b@l/r", Status::Online, "127.0.0.3", t("01"))),
            ("c@l/r", item("c@l/r", Status::Dnd, "127.0.0.4", t("01"))),
        ]
        .into_iter()
        .map(|(j, i)| (j.to_string(), i))
        .collect();
        for (j, st) in [
            (A, Status::Away),
            ("b@l/r", Status::Xa),
            ("c@l/r", Status::Dnd),
        ] {
            tr.presence(
                j,
                j.split('/').next().unwrap(),
                Change::Available(st),
                t("09"),
            );
        }
        let ips: HashMap<String, String> = [
            (A, "127.0.0.2"),
            ("b@l/r", "127.0.0.3"),
            ("c@l/r", "127.0.0.9"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let mut acts = tr
            .reconcile(vec![], &ips, t("10"), &remembered, &HashSet::new(), None)
            .actions;
        acts.sort_by_key(|a| format!("{a:?}"));
        assert_eq!(
            acts,
            vec![
                Action::SetActive {
                    item: item(A, Status::Away, "127.0.0.2", t("01"))
                },
                Action::SetActive {
                    item: item("b@l/r", Status::Xa, "127.0.0.3", t("09"))
                },
                Action::SetActive {
                    item: item("c@l/r", Status::Dnd, "127.0.0.9", t("09"))
                },
            ]
        );
        for j in [A, "b@l/r", "c@l/r"] {
            tr.done(j, true);
            tr.done(j, true);
        }
        assert_eq!(
            tr.on_active().get(A).map(|i| i.since),
            Some(t("01")),
            "what the next session remembers"
        );
        assert_eq!(tr.on_active().len(), 3);
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
        let mut acts = reconcile(
            &mut tr,
            vec![kept.clone(), stale.clone(), changed],
            &ips,
            t("20"),
        );
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
            tr.active("k@l/r").as_ref(),
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

    #[test]
    fn a_connection_at_rest_keeps_one_copy_of_everything() {
        // The item on active without its JID and name, a pointer, a flag.
        assert!(std::mem::size_of::<Conn>() <= 64);
        // What a connection waiting for its writes holds besides.
        assert!(std::mem::size_of::<More>() <= 104);
        let mut tr = running();
        tr.presence(A, "alice@l", Change::Available(Status::Online), t("01"));
        tr.ip_learned(A, "127.0.0.2".into());
        tr.done(A, true);
        tr.done(A, true);
        let c = &tr.conns[A];
        assert!(c.more.is_none(), "nothing under way: no box");
        assert!(
            c.active.as_ref().is_some_and(|a| a.conns_ip),
            "the address is read off the item"
        );
        // Going away: the address written on live is still known.
        tr.presence(A, "alice@l", Change::Unavailable, t("02"));
        let off = item(A, Status::Offline, "127.0.0.2", t("02"));
        assert_eq!(tr.done(A, true), vec![Action::PublishLive { item: off }]);
    }

    #[test]
    fn a_name_other_than_the_bare_jid_is_kept() {
        // An item someone else wrote on active, whose session is gone.
        let mut tr = running();
        let mut odd = item("o@l/r", Status::Away, "192.0.2.9", t("00"));
        odd.name = "other@l".into();
        let on_active: HashMap<String, UserItem> =
            [(odd.fulljid.clone(), odd.clone())].into_iter().collect();
        let audit = tr.audit(&on_active, &HashSet::new(), t("30"));
        assert_eq!(
            audit.actions,
            vec![Action::RetractActive {
                fulljid: "o@l/r".into()
            }]
        );
        let mut off = odd;
        off.status = Status::Offline;
        off.since = t("30");
        assert_eq!(
            tr.done("o@l/r", true),
            vec![Action::PublishLive { item: off }]
        );
    }
}
