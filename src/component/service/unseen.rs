//! Connected sessions whose presence never reaches the component (no
//! roster subscription, no XEP-0356 presence): counted at start-up and at
//! every audit, and with `subscribe_unseen` their users are asked for a
//! subscription, at most once a day each (README, "Checking the set-up:
//! `pubpresence doctor`", which names the same sessions).

use super::session::Session;
use crate::wire::presence;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often one user may be asked.
pub const ASK_EVERY: Duration = Duration::from_secs(24 * 60 * 60);
/// How many JIDs the log line names.
const NAMED: usize = 5;

/// When each user (bare JID) was last asked. Shared by the sessions of one
/// process, so a reconnect does not ask again; a restart does.
#[derive(Clone, Default)]
pub struct Asked(Arc<Mutex<HashMap<String, Instant>>>);

impl Asked {
    /// The users of `users` that may be asked now; they are marked asked.
    pub fn take_due<'a>(
        &self,
        users: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) -> Vec<String> {
        let mut map = match self.0.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut due = Vec::new();
        for u in users {
            let fresh = map
                .get(u)
                .is_some_and(|t| now.duration_since(*t) < ASK_EVERY);
            if !fresh {
                map.insert(u.to_string(), now);
                due.push(u.to_string());
            }
        }
        due
    }
}

impl Session<'_> {
    /// `listed`: the sessions the server lists now (hidden users left out).
    /// Roster mode only: with presence permission every session is seen.
    pub(super) fn unseen<'a>(&mut self, listed: impl IntoIterator<Item = &'a String>, when: &str) {
        if self.privileged() {
            return;
        }
        let unseen: BTreeSet<&str> = listed
            .into_iter()
            .filter(|j| !self.tracker.knows(j))
            .map(String::as_str)
            .collect();
        self.warn_unseen(unseen, when);
    }

    /// Names `unseen` (full JIDs whose presence never came) in one warning
    /// and, with `subscribe_unseen`, asks their users for a subscription.
    pub(super) fn warn_unseen(&mut self, unseen: BTreeSet<&str>, when: &str) {
        if unseen.is_empty() {
            return;
        }
        let users: BTreeSet<&str> = unseen
            .iter()
            .filter_map(|j| j.split_once('/').map(|(b, _)| b))
            .collect();
        let named: Vec<&str> = unseen.iter().take(NAMED).copied().collect();
        let more = unseen.len().saturating_sub(NAMED);
        let asking = if self.cfg.subscribe_unseen {
            let due = self
                .cfg
                .asked
                .take_due(users.iter().copied(), Instant::now());
            for u in &due {
                self.send(presence::build(&self.cfg.jid, u, Some("subscribe"), None));
            }
            format!(
                "asked {} of them for a subscription (subscribe_unseen)",
                due.len()
            )
        } else {
            "set subscribe_unseen = true to ask them for a subscription, or see `pubpresence doctor`"
                .to_string()
        };
        tracing::warn!(
            "{when}: {} connected sessions of {} users send the component no presence (no \
             subscription, or a busy server's late answer, tracked when it comes): {}{}; {asking}",
            unseen.len(),
            users.len(),
            named.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_is_asked_once_a_day() {
        let asked = Asked::default();
        let t0 = Instant::now();
        assert_eq!(asked.take_due(["a@x", "b@x"], t0), ["a@x", "b@x"]);
        assert!(asked
            .take_due(["a@x"], t0 + Duration::from_secs(3600))
            .is_empty());
        assert_eq!(
            asked.take_due(["a@x", "c@x"], t0 + Duration::from_secs(3600)),
            ["c@x"]
        );
        assert_eq!(asked.take_due(["a@x"], t0 + ASK_EVERY), ["a@x"]);
        // Clones share the record: a reconnect's session does not ask again.
        let again = asked.clone();
        assert!(again
            .take_due(["b@x"], t0 + Duration::from_secs(60))
            .is_empty());
    }
}
