//! The client procedure (docs/protocol.md, "Client procedure") as a pure state machine: it is told what
//! arrives (status changes, live items, the items of active) and says what
//! the caller sees (service, snapshot, set, remove) and when to fetch active.

use crate::wire::status::ServiceStatus;
use crate::wire::user::{Status, UserItem};
use std::collections::{BTreeMap, HashMap};

/// What a follower of pubpresence sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The status node changed.
    Service(ServiceStatus),
    /// The whole consistent state (after the buffered live events).
    Snapshot(Vec<UserItem>),
    /// A connection appeared or changed.
    Set(UserItem),
    /// A connection went away.
    Remove { fulljid: String, name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the service to be online; live events are buffered.
    Waiting,
    /// Active is being fetched; live events are buffered.
    Fetching,
    /// In sync: live events apply at once.
    Synced,
}

#[derive(Debug)]
pub struct Follower {
    phase: Phase,
    service: Option<ServiceStatus>,
    state: BTreeMap<String, UserItem>,
    /// The last live item of each connection since the subscription, to be
    /// applied after the fetch: each item carries a connection's whole
    /// state, so the last one is what applying them all in order leaves.
    /// Its size is bounded by the connections, not by the rate of changes.
    buffer: HashMap<String, UserItem>,
    /// Bounds the buffer (connections), against a runaway server.
    max_buffer: usize,
    /// The buffer overflowed while active was being fetched: the answer is
    /// thrown away and active fetched again.
    refetch: bool,
}

/// What the caller must do after an input.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub events: Vec<WatchEvent>,
    /// Fetch the items of active now and pass them to `active_fetched`.
    pub fetch_active: bool,
}

/// Connections whose last live item is kept while active is not yet read.
const MAX_BUFFER: usize = 1_000_000;

impl Default for Follower {
    fn default() -> Self {
        Follower::new()
    }
}

impl Follower {
    pub fn new() -> Follower {
        Follower {
            phase: Phase::Waiting,
            service: None,
            state: BTreeMap::new(),
            buffer: HashMap::new(),
            max_buffer: MAX_BUFFER,
            refetch: false,
        }
    }

    pub fn is_synced(&self) -> bool {
        self.phase == Phase::Synced
    }

    pub fn service(&self) -> Option<ServiceStatus> {
        self.service
    }

    /// The current state (meaningful when synced).
    pub fn state(&self) -> &BTreeMap<String, UserItem> {
        &self.state
    }

    /// The service status, from the status node or a probe answer.
    pub fn status(&mut self, st: ServiceStatus) -> Step {
        let mut step = Step::default();
        if self.service != Some(st) {
            self.service = Some(st);
            step.events.push(WatchEvent::Service(st));
        }
        match st {
            ServiceStatus::Online => {
                if self.phase == Phase::Waiting {
                    self.phase = Phase::Fetching;
                    step.fetch_active = true;
                }
            }
            ServiceStatus::Init | ServiceStatus::Offline => {
                // Start over: active is not to be trusted until online again.
                self.phase = Phase::Waiting;
                self.buffer.clear();
                self.refetch = false;
            }
        }
        step
    }

    /// A live item arrived.
    pub fn live(&mut self, item: UserItem) -> Step {
        let mut step = Step::default();
        if self.phase == Phase::Synced {
            step.events.extend(self.apply(item));
        } else if self.buffer.len() < self.max_buffer || self.buffer.contains_key(&item.fulljid) {
            self.buffer.insert(item.fulljid.clone(), item);
        } else {
            // Too many connections changed to keep: what is buffered is
            // dropped, and a fetch in flight, which may be older than the
            // dropped items, is thrown away and asked again (docs/protocol.md,
            // "Why nothing is lost or duplicated").
            tracing::warn!(
                "more than {} connections changed while active was not yet read: \
                 reading active again",
                self.max_buffer
            );
            self.buffer.clear();
            self.refetch = self.phase == Phase::Fetching;
        }
        step
    }

    /// The items of active, as fetched after the service said online.
    pub fn active_fetched(&mut self, items: Vec<UserItem>) -> Step {
        let mut step = Step::default();
        if self.phase != Phase::Fetching {
            // The service went back to init meanwhile: this fetch is stale.
            return step;
        }
        if std::mem::take(&mut self.refetch) {
            step.fetch_active = true;
            return step;
        }
        self.state = items.into_iter().map(|i| (i.fulljid.clone(), i)).collect();
        for (_, item) in std::mem::take(&mut self.buffer) {
            self.apply(item);
        }
        self.phase = Phase::Synced;
        step.events
            .push(WatchEvent::Snapshot(self.state.values().cloned().collect()));
        step
    }

    /// The fetch failed: try again.
    pub fn fetch_failed(&mut self) -> Step {
        // The fetch asked again is newer than any overflow so far.
        self.refetch = false;
        Step {
            events: Vec::new(),
            fetch_active: self.phase == Phase::Fetching,
        }
    }

    fn apply(&mut self, item: UserItem) -> Option<WatchEvent> {
        if item.status == Status::Offline {
            self.state
                .remove(&item.fulljid)
                .map(|old| WatchEvent::Remove {
                    fulljid: old.fulljid,
                    name: old.name,
                })
        } else if self.state.get(&item.fulljid) == Some(&item) {
            None
        } else {
            self.state.insert(item.fulljid.clone(), item.clone());
            Some(WatchEvent::Set(item))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::time;

    fn it(jid: &str, status: Status) -> UserItem {
        UserItem {
            fulljid: jid.into(),
            name: jid.split('/').next().unwrap().into(),
            status,
            ip: "127.0.0.2".into(),
            since: time::parse("2026-11-24T10:00:00Z").unwrap(),
        }
    }

    #[test]
    fn buffers_until_active_is_fetched_then_replays() {
        let mut f = Follower::new();
        let s = f.status(ServiceStatus::Init);
        assert_eq!(s.events, vec![WatchEvent::Service(ServiceStatus::Init)]);
        assert!(!s.fetch_active);
        assert!(f.live(it("a@l/1", Status::Away)).events.is_empty());
        let s = f.status(ServiceStatus::Online);
        assert!(s.fetch_active);
        // Arrives while the fetch is in flight: buffered too.
        assert!(f.live(it("b@l/1", Status::Offline)).events.is_empty());
        let s = f.active_fetched(vec![it("a@l/1", Status::Online), it("b@l/1", Status::Dnd)]);
        assert_eq!(
            s.events,
            vec![WatchEvent::Snapshot(vec![it("a@l/1", Status::Away)])]
        );
        assert_eq!(
            f.live(it("a@l/1", Status::Xa)).events,
            vec![WatchEvent::Set(it("a@l/1", Status::Xa))]
        );
        assert_eq!(
            f.live(it("a@l/1", Status::Offline)).events,
            vec![WatchEvent::Remove {
                fulljid: "a@l/1".into(),
                name: "a@l".into()
            }]
        );
    }

    #[test]
    fn the_buffer_keeps_each_connection_once_and_an_overflow_fetches_again() {
        let mut f = Follower::new();
        f.max_buffer = 2;
        assert!(f.status(ServiceStatus::Online).fetch_active);
        // Many changes of few connections: kept, the last of each.
        for st in [Status::Away, Status::Dnd, Status::Xa] {
            f.live(it("a@l/1", st));
            f.live(it("b@l/1", st));
        }
        assert_eq!(f.buffer.len(), 2);
        // A third connection: too many, the fetch in flight is stale.
        f.live(it("c@l/1", Status::Online));
        let s = f.active_fetched(vec![it("a@l/1", Status::Online)]);
        assert_eq!(
            s,
            Step {
                events: vec![],
                fetch_active: true
            }
        );
        assert!(!f.is_synced());
        // The next fetch is taken, with what came after it was asked.
        f.live(it("c@l/1", Status::Away));
        let s = f.active_fetched(vec![it("a@l/1", Status::Xa), it("c@l/1", Status::Online)]);
        assert_eq!(
            s.events,
            vec![WatchEvent::Snapshot(vec![
                it("a@l/1", Status::Xa),
                it("c@l/1", Status::Away)
            ])]
        );
        // Without overflow, the last of many changes of one connection wins.
        let mut f = Follower::new();
        f.status(ServiceStatus::Online);
        f.live(it("a@l/1", Status::Offline));
        f.live(it("a@l/1", Status::Dnd));
        let s = f.active_fetched(vec![]);
        assert_eq!(
            s.events,
            vec![WatchEvent::Snapshot(vec![it("a@l/1", Status::Dnd)])]
        );
    }

    #[test]
    fn init_again_starts_over_and_stale_fetch_is_ignored() {
        let mut f = Follower::new();
        assert!(f.status(ServiceStatus::Online).fetch_active);
        f.status(ServiceStatus::Init);
        assert!(f
            .active_fetched(vec![it("a@l/1", Status::Online)])
            .events
            .is_empty());
        assert!(!f.is_synced());
        assert!(f.status(ServiceStatus::Online).fetch_active);
        let s = f.active_fetched(vec![]);
        assert_eq!(s.events, vec![WatchEvent::Snapshot(vec![])]);
        assert!(f.is_synced());
        // A repeated online (probe answer and status item) fetches nothing.
        assert!(!f.status(ServiceStatus::Online).fetch_active);
    }
}
