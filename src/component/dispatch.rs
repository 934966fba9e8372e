//! The tracker's actions on their way to the server: at most `IN_FLIGHT`
//! at once, fewer while the server answers slowly, the rest waiting in
//! order, compactly.

use super::small::{name_or_bare, odd_name, IpStr, JidStr};
use super::tracker::Action;
use crate::wire::time;
use crate::wire::user::{Status, UserItem};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

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

/// The fewest actions in flight while the server answers slowly.
///
/// A server answers one connection's requests in order, so a request waits
/// for all those sent before it: with 256 in flight and a server that
/// publishes 25 items a second (Prosody on SQLite with 40,000 items on
/// active: each publish also trims the node, a scan of all its items;
/// docs/benchmarks.md, "Past the open-file limit: sessions held inside
/// Prosody"), the last one waits 10 s, `iq_timeout`. Fewer in flight cost nothing there: the
/// server is busy all the same. So an action answered later than a quarter
/// of `iq_timeout` halves the window, and a window's worth of actions
/// answered within an eighth widens it by one again (TCP's additive
/// increase, multiplicative decrease).
pub const MIN_IN_FLIGHT: usize = 16;

/// How often, while writes go unanswered, one of them is logged: the rest
/// are counted into the next line. At 100,000 sessions a server busy for
/// half a minute (a fetch of active) left some 400 writes unanswered at
/// once, a line each (docs/benchmarks.md, "Past the open-file limit:
/// sessions held inside Prosody").
pub const UNANSWERED_EVERY: Duration = Duration::from_secs(10);

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

struct DispatchState {
    waiting: VecDeque<Queued>,
    running: usize,
    /// How many may run now: `MIN_IN_FLIGHT..=IN_FLIGHT`.
    window: usize,
    /// When the window was last halved.
    cut_at: Option<Instant>,
    /// Timely answers since the window last changed.
    timely: usize,
    /// When an unanswered write was last logged, and how many more went
    /// unanswered since (see `UNANSWERED_EVERY`).
    unanswered: Option<(Instant, usize)>,
}

impl Default for DispatchState {
    fn default() -> DispatchState {
        DispatchState {
            waiting: VecDeque::new(),
            running: 0,
            window: IN_FLIGHT,
            cut_at: None,
            timely: 0,
            unanswered: None,
        }
    }
}

impl Dispatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, DispatchState> {
        // A panicked worker leaves the queue itself intact.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `action`, or hands back the action a new worker must start
    /// with (fewer than the window running): `action` itself when nothing
    /// waits, else the first that waits, `action` queued behind it.
    pub(super) fn push(&self, action: Action) -> Option<Action> {
        let mut s = self.lock();
        if s.running < s.window {
            s.running += 1;
            if s.waiting.is_empty() {
                return Some(action);
            }
            s.waiting.push_back(Queued::of(action));
            return s.waiting.pop_front().map(Queued::action);
        }
        s.waiting.push_back(Queued::of(action));
        None
    }

    /// A write got no answer within `iq_timeout` (taken as done: the
    /// server applies it late). `Some(n)`: log it, saying that `n` more
    /// went unanswered since the last such line; `None`: counted, to be
    /// said with the next line or when answers come in time again.
    pub(super) fn unanswered(&self, now: Instant) -> Option<usize> {
        let mut s = self.lock();
        match &mut s.unanswered {
            Some((said_at, more)) if now.duration_since(*said_at) < UNANSWERED_EVERY => {
                *more += 1;
                None
            }
            stretch => {
                let more = stretch.map_or(0, |(_, more)| more);
                *stretch = Some((now, 0));
                Some(more)
            }
        }
    }

    /// A worker's action was answered `took` after it was sent (see
    /// `MIN_IN_FLIGHT`). One slow stretch halves the window once per
    /// `took`: the answers behind the first slow one were sent before the
    /// cut, and are as slow.
    pub(super) fn answered(&self, took: Duration, iq_timeout: Duration, now: Instant) {
        let mut s = self.lock();
        if took > iq_timeout / 4 {
            if !s.cut_at.is_some_and(|at| now.duration_since(at) < took) {
                let window = (s.window / 2).max(MIN_IN_FLIGHT);
                if window < s.window {
                    tracing::info!(
                        "the server answers {:.1} s late: {window} requests in flight, not {}",
                        took.as_secs_f64(),
                        s.window
                    );
                }
                s.window = window;
                s.cut_at = Some(now);
                s.timely = 0;
            }
            return;
        }
        // Answered in time again: the unanswered writes not yet said are.
        if let Some((_, more)) = s.unanswered.take().filter(|(_, more)| *more > 0) {
            tracing::warn!(
                "{more} more writes got no answer within {iq_timeout:?} (the server was busy); \
                 taken as done"
            );
        }
        if took <= iq_timeout / 8 && s.window < IN_FLIGHT {
            s.timely += 1;
            if s.timely >= s.window {
                s.window += 1;
                s.timely = 0;
            }
        }
    }

    /// The next action for a worker that finished one; `None`: it stops
    /// (nothing waits, or more run than the window allows now).
    pub(super) fn next(&self) -> Option<Action> {
        let mut s = self.lock();
        if s.running > s.window {
            s.running -= 1;
            return None;
        }
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
    fn late_answers_narrow_the_window_and_timely_ones_widen_it_again() {
        let retract = |i: usize| Action::RetractActive {
            fulljid: format!("u{i}@l/r"),
        };
        let iq_timeout = Duration::from_secs(10);
        let t0 = Instant::now();
        let d = Dispatch::default();
        for i in 0..IN_FLIGHT {
            assert!(d.push(retract(i)).is_some());
        }
        for i in 0..4 {
            assert_eq!(d.push(retract(1000 + i)), None);
        }
        // An answer 3 s late halves the window; those answered late just
        // after it (sent before the cut) do not halve it again.
        let late = Duration::from_secs(3);
        d.answered(late, iq_timeout, t0);
        assert_eq!(d.lock().window, IN_FLIGHT / 2);
        d.answered(late, iq_timeout, t0 + Duration::from_secs(1));
        assert_eq!(d.lock().window, IN_FLIGHT / 2);
        // Workers beyond the window stop, the queue waits for the others.
        assert_eq!(d.next(), None);
        assert_eq!(d.lock().running, IN_FLIGHT - 1);
        assert_eq!(d.lock().waiting.len(), 4);
        // Still late a stretch later: halved again, never below the floor.
        for k in 1..10 {
            d.answered(late, iq_timeout, t0 + late * (k + 1));
        }
        assert_eq!(d.lock().window, MIN_IN_FLIGHT);
        // Answers between an eighth and a quarter change nothing.
        d.answered(Duration::from_secs(2), iq_timeout, t0 + late * 20);
        assert_eq!(d.lock().window, MIN_IN_FLIGHT);
        // A window's worth of timely answers widens it by one.
        for _ in 0..MIN_IN_FLIGHT - 1 {
            d.answered(Duration::from_millis(50), iq_timeout, t0 + late * 20);
        }
        assert_eq!(d.lock().window, MIN_IN_FLIGHT);
        d.answered(Duration::from_millis(50), iq_timeout, t0 + late * 20);
        assert_eq!(d.lock().window, MIN_IN_FLIGHT + 1);
        // Once fewer run than the window, a new action starts a worker
        // with the first that waits, in order.
        d.lock().running = MIN_IN_FLIGHT;
        assert_eq!(d.push(retract(2000)), Some(retract(1000)));
        assert_eq!(d.push(retract(2001)), None);
        assert_eq!(d.next(), Some(retract(1001)));
    }

    #[test]
    fn unanswered_writes_are_logged_once_per_stretch_and_counted_into_the_next_line() {
        let iq_timeout = Duration::from_secs(10);
        let t0 = Instant::now();
        let d = Dispatch::default();
        assert_eq!(d.unanswered(t0), Some(0), "the first is said");
        for k in 1..=399 {
            assert_eq!(d.unanswered(t0 + Duration::from_millis(k)), None);
        }
        // Still unanswered a stretch later: said again, with the count.
        assert_eq!(d.unanswered(t0 + UNANSWERED_EVERY), Some(399));
        assert_eq!(d.unanswered(t0 + UNANSWERED_EVERY), None);
        // A late answer is no end of the stretch; a timely one is, and
        // what was counted is said then (one line), the count cleared.
        d.answered(iq_timeout, iq_timeout, t0 + UNANSWERED_EVERY);
        assert_eq!(d.lock().unanswered, Some((t0 + UNANSWERED_EVERY, 1)));
        d.answered(Duration::from_millis(5), iq_timeout, t0 + UNANSWERED_EVERY);
        assert_eq!(d.lock().unanswered, None);
        assert_eq!(
            d.unanswered(t0 + UNANSWERED_EVERY),
            Some(0),
            "a new stretch"
        );
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
