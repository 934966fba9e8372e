//! Which unavailable presences may belong to an earlier session of the same
//! full JID (docs/protocol.md, "What the component publishes, and when").
//!
//! A client that reconnects with the resource it had (a mobile client after
//! a network change, a session replaced by its successor) starts a new
//! session under the same full JID. ejabberd can deliver the old session's
//! unavailable after the new session's first presence (seen on 23.01: about
//! 80 ms late, while the old session ran its closing hooks). Nothing in the
//! stanzas tells the two sessions apart, so the component applies the
//! unavailable as always (retract, `offline` on live) and then probes the
//! user: a session still connected under that full JID answers, and comes
//! back as a new connection. A session that really went away does not.
//!
//! Probing after every unavailable would cost the server an answer from
//! each of the user's other sessions per departure; only an unavailable that
//! follows an available of the same full JID within [`WINDOW`] can be late in
//! this way, so only those are probed. Pure: the caller passes the clock.

use super::small::JidStr;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long after an available an unavailable of the same full JID is
/// suspect. Generous against the delay seen (tens of milliseconds), short
/// enough that a user who changes status and later logs out is not probed.
pub const WINDOW: Duration = Duration::from_secs(2);

/// Full JIDs whose latest available arrived within [`WINDOW`].
#[derive(Debug, Default)]
pub struct Recent {
    /// Full JID -> when its latest available arrived.
    last: HashMap<JidStr, Instant>,
    /// The same arrivals in order, to forget them once older than `WINDOW`.
    order: VecDeque<(Instant, JidStr)>,
}

impl Recent {
    /// An available presence of `fulljid` arrived at `now`.
    pub fn available(&mut self, fulljid: &str, now: Instant) {
        self.forget_older(now);
        let key = JidStr::new(fulljid);
        self.last.insert(key.clone(), now);
        self.order.push_back((now, key));
    }

    /// An unavailable of `fulljid` arrived at `now`: whether it followed an
    /// available within the window (probe the user).
    pub fn unavailable(&mut self, fulljid: &str, now: Instant) -> bool {
        self.forget_older(now);
        self.last
            .remove(fulljid)
            .is_some_and(|at| now.saturating_duration_since(at) <= WINDOW)
    }

    /// Arrivals remembered (for tests and for memory accounting).
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    fn forget_older(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) <= WINDOW {
                break;
            }
            if let Some((at, key)) = self.order.pop_front() {
                // A later available of the same JID keeps its entry.
                if self.last.get(key.as_str()) == Some(&at) {
                    self.last.remove(key.as_str());
                }
            }
        }
        if self.order.is_empty() && self.order.capacity() > 64 {
            // After a burst: give the buffer back.
            self.order = VecDeque::new();
            self.last.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "alice@example.org/phone";

    #[test]
    fn an_unavailable_right_after_an_available_is_suspect_once() {
        let t0 = Instant::now();
        let mut r = Recent::default();
        r.available(A, t0);
        assert!(r.unavailable(A, t0 + Duration::from_millis(80)));
        // The same departure seen again is not probed twice.
        assert!(!r.unavailable(A, t0 + Duration::from_millis(90)));
        assert!(r.is_empty());
    }

    #[test]
    fn an_unavailable_long_after_the_last_available_is_not() {
        let t0 = Instant::now();
        let mut r = Recent::default();
        r.available(A, t0);
        assert!(!r.unavailable(A, t0 + WINDOW + Duration::from_millis(1)));
        // Never seen available: nothing to suspect.
        assert!(!r.unavailable("bob@example.org/desk", t0));
    }

    #[test]
    fn old_arrivals_are_forgotten_but_a_later_one_of_the_same_jid_stays() {
        let t0 = Instant::now();
        let mut r = Recent::default();
        r.available(A, t0);
        r.available("bob@example.org/desk", t0);
        r.available(A, t0 + Duration::from_secs(1));
        // At t0 + 2.5 s the first two are older than the window; A's second
        // arrival is not.
        r.available("carol@example.org/x", t0 + Duration::from_millis(2500));
        assert_eq!(r.len(), 2);
        assert!(r.unavailable(A, t0 + Duration::from_millis(2600)));
        assert!(!r.unavailable("bob@example.org/desk", t0 + Duration::from_millis(2600)));
    }
}
