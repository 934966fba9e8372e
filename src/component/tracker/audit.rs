//! The tracker's side of an audit (README, "Audit: active heals itself";
//! docs/protocol.md, "What the component publishes, and when"): active as
//! fetched and the server's sessions as listed, against what the tracker
//! knows; only the difference is written.

use super::{Action, Conn, Mode, Target, Tracker};
use crate::wire::time::Timestamp;
use crate::wire::user::UserItem;
use std::collections::{HashMap, HashSet};

/// What an audit found and must do.
#[derive(Debug, Default)]
pub struct Audit {
    pub actions: Vec<Action>,
    /// Sessions listed by the server that nobody tracks: probe their users.
    pub probe: Vec<String>,
    /// Items retracted because their session is gone.
    pub removed: usize,
    /// Tracked sessions republished because active had lost their item, or
    /// held another status, address or name for it.
    pub repaired: Vec<String>,
    /// Of `repaired`, those whose item was there with another state.
    pub replaced: usize,
    /// Connections left alone because a change of theirs was under way:
    /// another audit must look at them once it is done.
    pub busy: usize,
}

impl Tracker {
    /// An audit's fetch of active is being asked for now. A write to active
    /// that ends between now and `audit` may or may not show in what the
    /// fetch returns: `audit` leaves those connections alone, where it
    /// would otherwise publish again what was just written (a duplicate
    /// live event) or retract again what was just retracted.
    pub fn audit_begins(&mut self) {
        self.written_during_audit = Some(HashSet::new());
    }

    /// The audit's fetch or listing failed: nothing to compare.
    pub fn audit_abandoned(&mut self) {
        self.written_during_audit = None;
    }

    /// An audit: `on_active` is what active holds now, `listed` the
    /// server's sessions listed after that fetch. Fixes only the
    /// difference: items of sessions that are gone are retracted (with
    /// `offline` on live); items missing for tracked sessions, or holding
    /// another status, address or name than the one written, are published
    /// again (active, then live, with their `since`). Listed sessions
    /// nobody tracks are returned, to be probed.
    pub fn audit(
        &mut self,
        on_active: &HashMap<String, UserItem>,
        listed: &HashSet<String>,
        at: Timestamp,
    ) -> Audit {
        let written = self.written_during_audit.take().unwrap_or_default();
        let mut out = Audit::default();
        if self.mode != Mode::Running {
            return out;
        }
        // Before this audit's own actions: was every connection at rest?
        let all_idle = self.conns.values().all(Conn::idle);
        for (jid, item) in on_active {
            if listed.contains(jid) {
                continue;
            }
            if written.contains(jid.as_str()) {
                // Its item changed after the fetch: look again.
                out.busy += 1;
                continue;
            }
            let Some(conn) = self.conn_or_new(jid, &item.name) else {
                continue;
            };
            if !conn.idle() {
                out.busy += 1; // the caller audits again soon
                continue;
            }
            // Adopt what the server holds, then let it go like any departure.
            conn.set_active(Some(item));
            conn.more()
                .queue
                .push_back((Target::Offline { since: at }, false));
            out.removed += 1;
            out.actions.extend(self.pump(jid));
        }
        for (jid, conn) in self.conns.iter_mut() {
            let fetched = on_active.get(&**jid);
            if !conn.idle() || written.contains(jid) {
                // Not on active yet (its address or first write under way),
                // or written since the fetch, and no longer listed: its
                // departure may have reached another connection of ours (a
                // cluster node, an instance that stepped down) and will
                // never come here. Look again once it is written, as for a
                // busy item above.
                if fetched.is_none() && !listed.contains(&**jid) {
                    out.busy += 1;
                }
                continue;
            }
            if !listed.contains(&**jid) {
                continue;
            }
            let Some(known) = &conn.active else {
                continue;
            };
            let (status, since) = (known.status, known.since);
            match fetched {
                // What was written is there.
                Some(item) if known.same_state(item) => continue,
                // Someone else's write, or ours lost after a timeout
                // taken as done: the server's version is replaced.
                Some(item) => {
                    conn.set_active(Some(item));
                    out.replaced += 1;
                }
                // We believed it was there; the server lost it.
                None => {
                    conn.set_active(None);
                }
            }
            conn.more()
                .queue
                .push_back((Target::Online { status, since }, false));
            out.repaired.push(jid.to_string());
        }
        for jid in out.repaired.clone() {
            out.actions.extend(self.pump(&jid));
        }
        out.probe = listed
            .iter()
            .filter(|j| !on_active.contains_key(*j) && !self.conns.contains_key(j.as_str()))
            .cloned()
            .collect();
        // The tracker knows active exactly again when it saw all of it with
        // nothing under way, and every item there is one it tracks (an
        // untracked listed session's item is only probed). What this
        // audit writes sets the doubt again if it fails.
        if all_idle
            && written.is_empty()
            && on_active
                .keys()
                .all(|j| self.conns.contains_key(j.as_str()))
        {
            self.doubt = false;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{item, running, t, A};
    use super::*;
    use crate::component::tracker::Change;
    use crate::wire::user::Status;

    /// A's first write (active, then live) confirmed: returns the item.
    fn written(tr: &mut Tracker, jid: &str, ip: &str) -> UserItem {
        let bare = jid.split('/').next().unwrap_or(jid);
        tr.presence(jid, bare, Change::Available(Status::Online), t("01"));
        tr.ip_learned(jid, ip.into());
        tr.done(jid, true);
        tr.done(jid, true);
        tr.active(jid).unwrap()
    }

    fn map(items: &[&UserItem]) -> HashMap<String, UserItem> {
        items
            .iter()
            .map(|i| (i.fulljid.clone(), (*i).clone()))
            .collect()
    }

    fn set(jids: &[&str]) -> HashSet<String> {
        jids.iter().map(|j| j.to_string()).collect()
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
        let alice = tr.active(A).unwrap();
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

    /// A's write to active and to live confirmed, then an audit that finds
    /// A's item on active and A's session no longer listed.
    fn written_then_audited_unlisted(tr: &mut Tracker, at: Timestamp) -> Audit {
        tr.done(A, true);
        tr.done(A, true);
        let item = tr.active(A).unwrap();
        let on_active: HashMap<String, UserItem> = [(A.to_string(), item)].into_iter().collect();
        tr.audit(&on_active, &HashSet::new(), at)
    }

    #[test]
    fn audit_counts_a_new_connection_the_server_no_longer_lists_as_busy() {
        // Its presence came, its address is being asked for, and its
        // departure went to another connection (the two-node ejabberd soak
        // with two instances: it stayed on active for good).
        let mut tr = running();
        let acts = tr.presence(A, "alice@l", Change::Available(Status::Online), t("01"));
        assert!(matches!(&acts[..], [Action::FetchIp { .. }]), "{acts:?}");
        let audit = tr.audit(&HashMap::new(), &HashSet::new(), t("02"));
        assert!(audit.actions.is_empty(), "{:?}", audit.actions);
        assert_eq!((audit.removed, audit.busy), (0, 1));
        // Published without an address (user-stats did not list it): the
        // audit that looks again retracts it.
        tr.ip_learned(A, String::new());
        let again = written_then_audited_unlisted(&mut tr, t("03"));
        assert_eq!((again.removed, again.busy), (1, 0));
        assert_eq!(
            again.actions,
            vec![Action::RetractActive { fulljid: A.into() }]
        );
        // A listed new connection under way is no reason to look again.
        let mut tr = running();
        tr.presence(A, "alice@l", Change::Available(Status::Online), t("01"));
        let listed: HashSet<String> = [A.to_string()].into_iter().collect();
        assert_eq!(tr.audit(&HashMap::new(), &listed, t("02")).busy, 0);
    }

    #[test]
    fn audit_leaves_a_busy_connection_alone_and_says_so() {
        let mut tr = running();
        tr.presence(A, "alice@l", Change::Available(Status::Online), t("01"));
        tr.ip_learned(A, "127.0.0.2".into());
        tr.done(A, true);
        tr.done(A, true);
        let alice = tr.active(A).unwrap();
        // A change under way (its write unanswered), and the session gone
        // from the listing: not touched now, but counted.
        tr.presence(A, "alice@l", Change::Available(Status::Dnd), t("02"));
        let on_active: HashMap<String, UserItem> = [(A.to_string(), alice)].into_iter().collect();
        let audit = tr.audit(&on_active, &HashSet::new(), t("03"));
        assert!(audit.actions.is_empty(), "{:?}", audit.actions);
        assert_eq!((audit.removed, audit.busy), (0, 1));
        // Once the write is done, the next audit retracts it.
        let again = written_then_audited_unlisted(&mut tr, t("04"));
        assert_eq!((again.removed, again.busy), (1, 0));
        assert_eq!(
            again.actions,
            vec![Action::RetractActive { fulljid: A.into() }]
        );
    }

    #[test]
    fn a_write_that_ends_during_the_audit_is_not_done_again() {
        // A new connection written after the fetch was asked for: the fetch
        // does not have it, the listing does.
        let arrives_during = |begins: bool| {
            let mut tr = running();
            tr.presence(A, "alice@l", Change::Available(Status::Online), t("01"));
            tr.ip_learned(A, "127.0.0.2".into());
            if begins {
                tr.audit_begins();
            }
            tr.done(A, true);
            tr.done(A, true);
            tr.audit(&HashMap::new(), &set(&[A]), t("02"))
        };
        let a = arrives_during(true);
        assert!(a.actions.is_empty(), "{:?}", a.actions);
        assert!(a.repaired.is_empty());
        assert_eq!(a.busy, 0);
        // Without the mark, the same audit writes it again (the duplicate
        // live event this guards against).
        let a = arrives_during(false);
        assert_eq!(a.repaired, vec![A.to_string()]);
        // A departure retracted after the fetch: its item is in the fetch,
        // its session not in the listing. Not retracted twice; looked at again.
        let mut tr = running();
        let alice = written(&mut tr, A, "127.0.0.2");
        tr.audit_begins();
        tr.presence(A, "alice@l", Change::Unavailable, t("02"));
        tr.done(A, true);
        tr.done(A, true);
        let a = tr.audit(&map(&[&alice]), &HashSet::new(), t("03"));
        assert!(a.actions.is_empty(), "{:?}", a.actions);
        assert_eq!((a.removed, a.busy), (0, 1));
        // The mark is for one audit only.
        let a = tr.audit(&map(&[&alice]), &HashSet::new(), t("04"));
        assert_eq!(a.removed, 1);
        assert_eq!(a.actions, vec![Action::RetractActive { fulljid: A.into() }]);
    }

    #[test]
    fn an_item_holding_another_state_is_written_again_with_its_since() {
        let mut tr = running();
        let alice = written(&mut tr, A, "127.0.0.2");
        // A write of ours lost after a timeout, or someone else's write.
        for stale in [
            UserItem {
                status: Status::Away,
                ..alice.clone()
            },
            UserItem {
                ip: "192.0.2.9".into(),
                since: t("00"),
                ..alice.clone()
            },
            UserItem {
                name: "mallory@l".into(),
                ..alice.clone()
            },
        ] {
            let a = tr.audit(&map(&[&stale]), &set(&[A]), t("30"));
            assert_eq!((a.repaired, a.replaced), (vec![A.to_string()], 1));
            assert_eq!(
                a.actions,
                vec![Action::SetActive {
                    item: alice.clone()
                }]
            );
            assert_eq!(
                tr.done(A, true),
                vec![Action::PublishLive {
                    item: alice.clone()
                }]
            );
            assert!(tr.done(A, true).is_empty());
            assert_eq!(tr.active(A), Some(alice.clone()));
        }
        // Another `since` alone is no difference.
        let older = UserItem {
            since: t("00"),
            ..alice.clone()
        };
        let a = tr.audit(&map(&[&older]), &set(&[A]), t("31"));
        assert!(a.actions.is_empty() && a.repaired.is_empty(), "{a:?}");
    }

    #[test]
    fn an_audit_that_saw_everything_at_rest_clears_the_doubt() {
        let mut tr = running();
        let alice = written(&mut tr, A, "127.0.0.2");
        // Bob's first write is refused: active may or may not hold it.
        tr.presence(
            "bob@l/x",
            "bob@l",
            Change::Available(Status::Online),
            t("02"),
        );
        tr.ip_learned("bob@l/x", "127.0.0.3".into());
        tr.done("bob@l/x", false);
        assert_eq!(tr.exact_copy(), None);
        // A change under way: no clearing.
        tr.presence(A, "alice@l", Change::Available(Status::Dnd), t("03"));
        tr.audit_begins();
        let a = tr.audit(&map(&[&alice]), &set(&[A, "bob@l/x"]), t("04"));
        assert_eq!(a.probe, vec!["bob@l/x".to_string()]);
        assert_eq!(tr.exact_copy(), None);
        tr.done(A, true);
        tr.done(A, true);
        let alice = tr.active(A).unwrap();
        // An item on active the tracker does not hold: no clearing either.
        let bob = item("bob@l/x", Status::Online, "127.0.0.3", t("02"));
        tr.audit_begins();
        let a = tr.audit(&map(&[&alice, &bob]), &set(&[A, "bob@l/x"]), t("05"));
        assert!(a.actions.is_empty(), "{:?}", a.actions);
        assert_eq!(tr.exact_copy(), None);
        // Everything at rest and every item known: exact again.
        tr.audit_begins();
        let a = tr.audit(&map(&[&alice]), &set(&[A, "bob@l/x"]), t("06"));
        assert!(a.actions.is_empty(), "{:?}", a.actions);
        assert_eq!(tr.exact_copy(), Some(vec![alice]));
    }
}
