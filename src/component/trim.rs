//! Handing freed heap back to the system after bursts of work.

use std::time::{Duration, Instant};

/// When to hand freed heap back after a burst of work (a login storm, a
/// reconnect wave), as start-up does once online: glibc keeps what the
/// burst's stanzas, requests and tasks freed, and RSS would stay near the
/// burst's peak for as long as the process runs. Counting costs an
/// increment per event; the check runs on a slow tick: once `AFTER` events
/// were handled since the last trim and a whole tick passed without any,
/// trim, never more often than `EVERY`. Steady traffic leaves no quiet
/// tick; a trickle takes minutes to add up to `AFTER` events; a backlog
/// the server works through in spurts is trimmed every `EVERY` or so.
pub(super) struct Trim {
    /// Events (stanzas, results) since the last trim.
    events: u32,
    /// `events` at the previous tick.
    seen: u32,
    last: Instant,
}

impl Trim {
    pub(super) const TICK: Duration = Duration::from_millis(250);
    const AFTER: u32 = 500;
    const EVERY: Duration = Duration::from_secs(2);

    pub(super) fn new() -> Trim {
        Trim {
            events: 0,
            seen: 0,
            last: Instant::now(),
        }
    }

    pub(super) fn event(&mut self) {
        self.events = self.events.saturating_add(1);
    }

    /// Whether to trim now (then counted as done).
    pub(super) fn tick(&mut self) -> bool {
        let quiet = self.events == self.seen;
        self.seen = self.events;
        let due = quiet && self.events >= Self::AFTER && self.last.elapsed() >= Self::EVERY;
        if due {
            self.trimmed();
        }
        due
    }

    /// A trim happened.
    pub(super) fn trimmed(&mut self) {
        self.events = 0;
        self.seen = 0;
        self.last = Instant::now();
    }
}

/// Hands the heap's free pages back to the system. Start-up parses the
/// whole listing and the whole of active at once (megabytes of XML with
/// 10,000 sessions); glibc keeps what that freed, so RSS would report the
/// start-up's peak for the life of the process. Only glibc has
/// `malloc_trim`; elsewhere this does nothing.
pub(super) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator in use
    // (the system allocator); it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_a_burst_when_quiet() {
        // Long enough since the last trim.
        let long_ago = Instant::now()
            .checked_sub(Trim::EVERY)
            .unwrap_or_else(Instant::now);
        let mut trim = Trim::new();
        trim.last = long_ago;
        for _ in 0..Trim::AFTER {
            trim.event();
        }
        assert!(!trim.tick(), "busy during the last tick");
        assert!(trim.tick(), "a quiet tick after the burst");
        assert!(!trim.tick(), "once");
        for _ in 0..Trim::AFTER {
            trim.event();
        }
        trim.tick();
        assert!(!trim.tick(), "not again so soon");
        // A trickle never adds up within a tick.
        let mut trickle = Trim::new();
        trickle.last = long_ago;
        trickle.event();
        trickle.tick();
        assert!(!trickle.tick());
    }
}
