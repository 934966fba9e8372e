//! The tracker's actions on their way to the server: at most `IN_FLIGHT`
//! at once, the rest waiting in order, compactly.

use super::small::{name_or_bare, odd_name, IpStr, JidStr};
use super::tracker::Action;
use crate::wire::time;
use crate::wire::user::{Status, UserItem};
use std::collections::VecDeque;

/// Tracker actions (publishes, retracts, address lookups) in flight at once.
/// A cold start with 10,000 sessions otherwise sends some 30,000 requests
/// in one burst: the server answers them in order all the same, but those at
/// the back wait longer than `iq_timeout` (seen on ejabberd: 14,000 timeouts
/// in one start-up). The server handles one request at a time per
/// connection anyway, so this costs no throughput.
///
/// The rest waits in `Dispatch` as the action itself (some 100 bytes,
/// strings inline) rather than as a spawned task waiting for a permit
/// (some 2 KB each): after 10,000 logins the server was still working
/// through 10,000 live publications, which as tasks held 22 MB.
pub const IN_FLIGHT: usize = 256;

/// An action waiting in `Dispatch`, its strings inline (see
/// `small`): after a burst of logins there is one per connection, each
/// made in the middle of the burst; as `UserItem`s their three strings
/// each would be an allocation of their own.
enum Queued {
    FetchIp(JidStr, Option<Box<str>>),
    SetActive(QueuedItem),
    RetractActive(JidStr),
    PublishLive(QueuedItem),
    ReconcileDone,
}

struct QueuedItem {
    fulljid: JidStr,
    ip: IpStr,
    since: time::Timestamp,
    status: Status,
    /// When not the full JID's bare part.
    name: Option<Box<str>>,
}

impl QueuedItem {
    fn of(item: UserItem) -> QueuedItem {
        QueuedItem {
            name: odd_name(&item.fulljid, &item.name),
            fulljid: JidStr::new(&item.fulljid),
            ip: IpStr::new(&item.ip),
            since: item.since,
            status: item.status,
        }
    }

    fn item(self) -> UserItem {
        UserItem {
            name: name_or_bare(self.name.as_deref(), &self.fulljid).to_string(),
            fulljid: self.fulljid.to_string(),
            ip: self.ip.to_string(),
            since: self.since,
            status: self.status,
        }
    }
}

impl Queued {
    fn of(action: Action) -> Queued {
        match action {
            Action::FetchIp { fulljid, name } => {
                Queued::FetchIp(JidStr::new(&fulljid), odd_name(&fulljid, &name))
            }
            Action::SetActive { item } => Queued::SetActive(QueuedItem::of(item)),
            Action::RetractActive { fulljid } => Queued::RetractActive(JidStr::new(&fulljid)),
            Action::PublishLive { item } => Queued::PublishLive(QueuedItem::of(item)),
            Action::ReconcileDone => Queued::ReconcileDone,
        }
    }

    fn action(self) -> Action {
        match self {
            Queued::FetchIp(fulljid, name) => Action::FetchIp {
                name: name_or_bare(name.as_deref(), &fulljid).to_string(),
                fulljid: fulljid.to_string(),
            },
            Queued::SetActive(item) => Action::SetActive { item: item.item() },
            Queued::RetractActive(fulljid) => Action::RetractActive {
                fulljid: fulljid.to_string(),
            },
            Queued::PublishLive(item) => Action::PublishLive { item: item.item() },
            Queued::ReconcileDone => Action::ReconcileDone,
        }
    }
}

/// The tracker's actions: at most `IN_FLIGHT` running (each in a worker
/// task), the rest waiting in order.
#[derive(Default)]
pub(super) struct Dispatch {
    state: std::sync::Mutex<DispatchState>,
}

#[derive(Default)]
struct DispatchState {
    waiting: VecDeque<Queued>,
    running: usize,
}

impl Dispatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, DispatchState> {
        // A panicked worker leaves the queue itself intact.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `action`, or hands it back when a worker must be started for
    /// it (fewer than `IN_FLIGHT` running: then nothing waits either).
    pub(super) fn push(&self, action: Action) -> Option<Action> {
        let mut s = self.lock();
        if s.running < IN_FLIGHT && s.waiting.is_empty() {
            s.running += 1;
            return Some(action);
        }
        s.waiting.push_back(Queued::of(action));
        None
    }

    /// The next action for a worker that finished one; `None`: it stops.
    pub(super) fn next(&self) -> Option<Action> {
        let mut s = self.lock();
        match s.waiting.pop_front() {
            Some(queued) => Some(queued.action()),
            None => {
                s.running = s.running.saturating_sub(1);
                if s.waiting.capacity() > IN_FLIGHT {
                    // It held a burst (10,000 items at a cold start).
                    s.waiting = VecDeque::new();
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_in_flight_actions_wait_in_order_for_a_finished_worker() {
        let retract = |i: usize| Action::RetractActive {
            fulljid: format!("u{i}@l/r"),
        };
        let d = Dispatch::default();
        for i in 0..IN_FLIGHT {
            assert_eq!(d.push(retract(i)), Some(retract(i)), "worker {i} starts");
        }
        assert_eq!(d.push(retract(1000)), None, "all busy: it waits");
        assert_eq!(d.push(retract(1001)), None);
        // Workers that finish take the waiting ones, in order.
        assert_eq!(d.next(), Some(retract(1000)));
        assert_eq!(d.next(), Some(retract(1001)));
        // Nothing waits: this worker stops, so a new action starts one.
        assert_eq!(d.next(), None);
        assert_eq!(d.push(retract(2000)), Some(retract(2000)));
        assert_eq!(d.push(retract(2001)), None);
        assert_eq!(d.lock().running, IN_FLIGHT);
    }

    #[test]
    fn a_queued_action_comes_back_as_it_was() {
        let since = time::parse("2026-11-24T10:00:00Z").unwrap();
        let item = |fulljid: &str, name: &str| UserItem {
            fulljid: fulljid.into(),
            name: name.into(),
            status: Status::Away,
            ip: "2001:db8:1234:5678:9abc:def0:1234:5678".into(),
            since,
        };
        let long = format!("{}@example.org/{}", "a".repeat(40), "r".repeat(40));
        for action in [
            Action::FetchIp {
                fulljid: "a@l/r".into(),
                name: "a@l".into(),
            },
            Action::FetchIp {
                fulljid: "a@l/r".into(),
                name: "other@l".into(),
            },
            Action::SetActive {
                item: item("a@l/r", "a@l"),
            },
            Action::PublishLive {
                item: item(&long, "odd"),
            },
            Action::RetractActive {
                fulljid: long.clone(),
            },
            Action::ReconcileDone,
        ] {
            assert_eq!(Queued::of(action.clone()).action(), action);
        }
    }
}
