//! Start-up's wait for the probe answers (docs/protocol.md, "What the
//! component publishes, and when", step 5), and what comes after it for the
//! sessions on active whose answer is late.
//!
//! On Prosody a round trip behind the probes proves every answer is in. On
//! ejabberd nothing does: each session answers from its own process, after
//! the ping. There the wait is bounded by `probe_timeout`, and a listed
//! session that is on active but has not answered by then is most likely
//! late (a busy server), not gone: the server lists it, and it answered
//! before. Taking it off active and putting it back when its answer comes
//! would show consumers an `offline` and an `online` that never happened.
//! So its item stays as it is (`Late`) until its answer comes, or, if none
//! has come within `iq_timeout` of the probes, it is taken off active then:
//! a user who removed the component from their roster while it was down
//! never answers.
//!
//! On Prosody, the sessions that the listing shows exactly as active has
//! them are not waited for at all (`Deferred`): late from the start, their
//! users probed once online.

use super::session::{Done, Session};
use super::startup::{round_trip, Discovery};
use super::ServiceConfig;
use crate::component::publisher::OnlineSession;
use crate::component::tracker::Change;
use crate::wire::user::UserItem;
use crate::wire::{presence, time};
use crate::xmpp::paging;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

/// Start-up waiting for probe answers where no barrier proves they all
/// arrived (ejabberd answers the barrier before the probes). Users without a
/// subscription never answer, so waiting for every listed session would
/// always cost the whole `probe_timeout` (2 s of every takeover, seen on
/// ejabberd). Sessions already on active are known to answer: once they
/// all have, the wait ends as soon as answers stop coming for `SETTLE`,
/// and never later than `probe_timeout`. Those of them still silent then
/// are kept on active for a while (`Late`).
pub(super) struct Waiting {
    pub(super) discovery: Discovery,
    /// Listed sessions not answered yet, and those of them on active.
    pub(super) unanswered: HashSet<String>,
    pub(super) on_active: HashSet<String>,
    pub(super) started: tokio::time::Instant,
    pub(super) deadline: tokio::time::Instant,
    /// When the last answer came.
    pub(super) progress: tokio::time::Instant,
}

/// How long the answers may pause before a settled wait ends.
const SETTLE: Duration = Duration::from_millis(250);

/// How long the round trip behind the probes sent once online is waited
/// for on a server that answers in order. It comes after the presence of
/// every probed session, which grows with the server as a fetch of active
/// does: at 100,000 sessions on Prosody 13, the answers to 10,000 users'
/// probes took longer than `iq_timeout`, and cut off there, 43,440 live
/// sessions went off active (docs/benchmarks.md, "Past the open-file limit:
/// sessions held inside Prosody"). Nothing waits on it but the removal of
/// the silent ones. (The start-up's own round trip keeps `iq_timeout`: the
/// `online` waits on it, and without it the start-up probes again and
/// waits for the answers.)
fn barrier_wait(cfg: &ServiceConfig) -> Duration {
    paging::answer_wait(cfg.iq_timeout).max(cfg.probe_timeout)
}

impl Waiting {
    pub(super) fn wake_at(&self) -> tokio::time::Instant {
        if self.on_active.is_empty() {
            self.deadline.min(self.progress + SETTLE)
        } else {
            self.deadline
        }
    }
}

/// Listed sessions on active whose probe answer had not come when the
/// start-up's wait ended: their items stay until `deadline` (see the module
/// comment). Or sessions whose users are probed once online (`Deferred`):
/// no deadline until then.
pub(super) struct Late {
    pub(super) jids: HashSet<String>,
    pub(super) deadline: Option<tokio::time::Instant>,
    pub(super) started: tokio::time::Instant,
    /// Users to probe once `online` is confirmed.
    pub(super) probe_when_online: Vec<String>,
}

impl Late {
    /// `fulljid` answered at `now`: true when it was the last of them. While
    /// answers keep coming the server is working through them, so the
    /// others' time runs at least `pause` past this one.
    fn answered(&mut self, fulljid: &str, now: tokio::time::Instant, pause: Duration) -> bool {
        if !self.jids.remove(fulljid) {
            return false;
        }
        if self.jids.is_empty() {
            return true;
        }
        if let Some(deadline) = &mut self.deadline {
            *deadline = (*deadline).max(now + pause);
        }
        false
    }
}

/// Listed sessions that the listing shows exactly as active has them (same
/// status, same address; active as saved at the last clean stop, or as
/// fetched), on a server that lists each session's show and answers in
/// order (Prosody). The start-up does not probe their users nor wait for
/// them: the items stay as they are (`Late`), and the users are probed once
/// `online` is confirmed, so that the server answers the status publish
/// before those probes. An answer
/// that repeats its item writes nothing, and a session that has not
/// answered when a round trip behind the probes returns (its user removed
/// the component from the roster while it was down) is taken off active
/// then (docs/protocol.md, "What the component publishes, and when", step
/// 5).
pub(super) struct Deferred {
    pub(super) jids: HashSet<String>,
    pub(super) users: Vec<String>,
}

/// The users all of whose listed sessions are on `active` exactly as listed
/// (hidden users too: their answers count for nothing), and those sessions
/// (hidden ones left out). Nothing when no such session is there.
pub(super) fn unchanged_on<'a>(
    cfg: &ServiceConfig,
    sessions: &'a [OnlineSession],
    active: &[UserItem],
) -> (HashSet<&'a str>, HashSet<String>) {
    let on_active: HashMap<&str, &UserItem> =
        active.iter().map(|i| (i.fulljid.as_str(), i)).collect();
    let same = |s: &OnlineSession| {
        on_active.get(s.fulljid.as_str()).is_some_and(|item| {
            s.status == Some(item.status)
                && s.ip.as_deref().map(|ip| cfg.privacy.ip(ip)).as_deref() == Some(item.ip.as_str())
        })
    };
    let mut users: HashSet<&str> = sessions.iter().map(|s| s.bare.as_str()).collect();
    for s in sessions {
        if !cfg.privacy.hidden(&s.bare) && !same(s) {
            users.remove(s.bare.as_str());
        }
    }
    let jids = sessions
        .iter()
        .filter(|s| users.contains(s.bare.as_str()) && !cfg.privacy.hidden(&s.bare))
        .map(|s| s.fulljid.clone())
        .collect::<HashSet<String>>();
    if jids.is_empty() {
        return (HashSet::new(), jids);
    }
    (users, jids)
}

impl Session<'_> {
    /// Discovery is done: reconcile at once when every answer is in,
    /// otherwise wait (bounded) for the listed sessions' presences.
    pub(super) fn discovered(&mut self, mut d: Discovery) {
        let confirming = d.confirming.take();
        let unanswered: HashSet<String> = self.untracked(&d.listed);
        if d.answered || unanswered.is_empty() {
            match confirming {
                Some(c) => self.confirm_later(d, c),
                None => self.reconcile(d, &HashSet::new()),
            }
        } else {
            // Without the barrier's proof nothing says that the others'
            // answers are in: the sessions not waited for are probed now and
            // waited for as everyone's (unprobed, they would not answer and
            // their items would go as late).
            if let Some(c) = confirming {
                tracing::info!(
                    "no proof that the probe answers are in: probing now the {} users whose {} \
                     listed sessions are as active has them",
                    c.users.len(),
                    c.jids.len()
                );
                for u in &c.users {
                    self.send(presence::probe(&self.cfg.jid, u));
                }
            }
            tracing::info!(
                "waiting up to {:?} for the presence of {} listed sessions",
                self.cfg.probe_timeout,
                unanswered.len()
            );
            let now = tokio::time::Instant::now();
            // With presence permission ejabberd answers no probe for
            // users without a subscription, on active or not: then
            // only the pause in answers ends the wait.
            let on_active = if self.privileged() {
                HashSet::new()
            } else {
                d.active
                    .iter()
                    .filter(|i| unanswered.contains(&i.fulljid))
                    .map(|i| i.fulljid.clone())
                    .collect()
            };
            self.pending = Some(Waiting {
                unanswered,
                on_active,
                discovery: d,
                started: now,
                deadline: now + self.cfg.probe_timeout,
                progress: now,
            });
        }
    }

    /// A presence from `from` arrived while waiting: once every listed
    /// session answered, stop waiting (see `Waiting` for the rest).
    pub(super) fn check_pending(&mut self, from: &str) {
        let Some(w) = &mut self.pending else {
            return;
        };
        if !self.tracker.knows(from) || !w.unanswered.remove(from) {
            return;
        }
        w.on_active.remove(from);
        w.progress = tokio::time::Instant::now();
        if w.unanswered.is_empty() {
            if let Some(w) = self.pending.take() {
                self.reconcile(w.discovery, &HashSet::new());
            }
        }
    }

    /// The wait for answers ran out: reconcile with what came. Sessions on
    /// active that did not answer keep their items for now (`Late`).
    pub(super) fn waited(&mut self) {
        let Some(w) = self.pending.take() else {
            return;
        };
        let waited = w.started.elapsed();
        // (With presence permission every session is tracked all the same,
        // and `on_active` is empty: `reconcile` says how they are published.)
        if !self.privileged() {
            let gone = w.unanswered.len().saturating_sub(w.on_active.len());
            if gone > 0 {
                tracing::info!(
                    "{gone} listed sessions sent no presence within {waited:?}: not tracked"
                );
            }
        }
        // With presence permission (granted after the wait began) the silent
        // sessions are published as `unknown` and tracked: none is late.
        let late = if self.privileged() {
            HashSet::new()
        } else {
            w.on_active
        };
        self.reconcile(w.discovery, &late);
        if !late.is_empty() {
            let wait = self.cfg.iq_timeout.max(self.cfg.probe_timeout);
            tracing::info!(
                "{} listed sessions on active have not answered within {waited:?}: their items \
                 stay until they answer, at most {wait:?} after the probes",
                late.len(),
            );
            self.late = Some(Late {
                jids: late,
                deadline: Some(w.started + wait),
                started: w.started,
                probe_when_online: Vec::new(),
            });
        }
    }

    /// Reconciles with the sessions listed as active has them kept as they
    /// are (`Late`) until their users are probed once online (`probe_late`).
    fn confirm_later(&mut self, d: Discovery, c: Deferred) {
        tracing::info!(
            "{} listed sessions of {} users are as active has them: not waiting for them, \
             probing them once online",
            c.jids.len(),
            c.users.len()
        );
        let late: HashSet<String> = c
            .jids
            .into_iter()
            .filter(|j| !self.tracker.knows(j))
            .collect();
        self.reconcile(d, &late);
        if !late.is_empty() {
            self.late = Some(Late {
                jids: late,
                deadline: None,
                started: tokio::time::Instant::now(),
                probe_when_online: c.users,
            });
        }
    }

    /// Online is confirmed: probe the users of the sessions kept as they
    /// were, with a round trip behind the probes; its answer
    /// (`Done::Confirmed`) proves that who has not answered will not. The
    /// time limit stands in case it never comes.
    pub(super) fn probe_late(&mut self) {
        let Some(l) = &mut self.late else { return };
        if l.probe_when_online.is_empty() {
            return;
        }
        let users = std::mem::take(&mut l.probe_when_online);
        let wait = barrier_wait(self.cfg);
        let now = tokio::time::Instant::now();
        l.started = now;
        l.deadline = Some(now + wait);
        tracing::info!(
            "probing the {} users whose {} sessions are kept as active had them",
            users.len(),
            l.jids.len()
        );
        for u in &users {
            self.send(presence::probe(&self.cfg.jid, u));
        }
        let conn = self.conn.clone();
        let domain = self.cfg.domain.clone();
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            let proven = round_trip(&conn, &domain, wait)
                .await
                .inspect_err(|e| tracing::debug!("the barrier behind the late probes: {e}"))
                .is_ok();
            let _ = tx.send(Done::Confirmed(proven));
        });
    }

    /// A presence of `fulljid` was read: it is late no more.
    pub(super) fn answered_late(&mut self, fulljid: &str) {
        let now = tokio::time::Instant::now();
        if let Some(l) = &mut self.late {
            if l.answered(fulljid, now, self.cfg.iq_timeout) {
                tracing::info!(
                    "every listed session on active answered, the last {:?} after the probes",
                    l.started.elapsed()
                );
                self.late = None;
            }
        }
    }

    /// The late sessions' time is up: those still silent are taken off
    /// active, with `offline` on live, as any session that ended.
    pub(super) fn late_expired(&mut self) {
        let Some(l) = self.late.take() else {
            return;
        };
        let silent: BTreeSet<String> = l
            .jids
            .into_iter()
            .filter(|j| self.tracker.active(j).is_some())
            .collect();
        if silent.is_empty() {
            return;
        }
        tracing::info!(
            "{} listed sessions on active sent no presence within {:?}: taken off active",
            silent.len(),
            l.started.elapsed()
        );
        // Named as any session that sends nothing, with the fix.
        self.warn_unseen(silent.iter().map(String::as_str).collect(), "start-up");
        let now = time::now();
        for jid in &silent {
            if let Some((bare, _)) = jid.split_once('/') {
                let acts = self.tracker.presence(jid, bare, Change::Unavailable, now);
                self.execute(acts);
            }
        }
    }

    /// The listed sessions the tracker has seen no presence of.
    pub(super) fn untracked<C: FromIterator<String>>(&self, listed: &[String]) -> C {
        listed
            .iter()
            .filter(|j| !self.tracker.knows(j))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::service::config::tests::sample;
    use crate::config::IpMode;
    use crate::wire::user::Status;

    fn session(fulljid: &str, status: Option<Status>, ip: Option<&str>) -> OnlineSession {
        OnlineSession {
            fulljid: fulljid.into(),
            bare: fulljid.split('/').next().unwrap_or(fulljid).into(),
            ip: ip.map(Into::into),
            status,
        }
    }

    fn item(fulljid: &str, status: Status, ip: &str) -> UserItem {
        UserItem {
            fulljid: fulljid.into(),
            name: fulljid.split('/').next().unwrap_or(fulljid).into(),
            status,
            ip: ip.into(),
            since: time::now(),
        }
    }

    /// Each late answer pushes the others' deadline to at least `pause`
    /// past it, never earlier; the last one ends the wait.
    #[test]
    fn late_answers_keep_the_others_waiting_while_they_come() {
        let t0 = tokio::time::Instant::now();
        let pause = Duration::from_secs(10);
        let mut late = Late {
            jids: ["a@x/1", "a@x/2", "b@x/1"].map(String::from).into(),
            deadline: Some(t0 + Duration::from_secs(75)),
            started: t0,
            probe_when_online: Vec::new(),
        };
        assert!(!late.answered("a@x/1", t0 + Duration::from_secs(5), pause));
        assert_eq!(late.deadline, Some(t0 + Duration::from_secs(75)));
        assert!(!late.answered("a@x/2", t0 + Duration::from_secs(70), pause));
        assert_eq!(late.deadline, Some(t0 + Duration::from_secs(80)));
        // Not one of them: nothing changes.
        assert!(!late.answered("c@x/1", t0 + Duration::from_secs(79), pause));
        assert_eq!(late.deadline, Some(t0 + Duration::from_secs(80)));
        assert!(late.answered("b@x/1", t0 + Duration::from_secs(79), pause));
        assert!(late.jids.is_empty());
    }

    fn sorted<'a>(set: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        let mut v: Vec<&str> = set.into_iter().collect();
        v.sort();
        v
    }

    /// Only users whose every session is on the copy as listed are left
    /// unwaited-for; hidden users go with them, their sessions not.
    #[test]
    fn unchanged_users_are_those_listed_exactly_as_the_copy_has_them() {
        let mut cfg = sample();
        cfg.privacy.hide.insert("h@example.org".into());
        let copy = vec![
            item("a@example.org/1", Status::Online, "127.0.0.2"),
            item("a@example.org/2", Status::Away, "127.0.0.3"),
            item("b@example.org/1", Status::Online, "127.0.0.4"),
            item("c@example.org/1", Status::Online, "127.0.0.5"),
            item("d@example.org/1", Status::Dnd, "127.0.0.6"),
        ];
        let sessions = vec![
            session("a@example.org/1", Some(Status::Online), Some("127.0.0.2")),
            session("a@example.org/2", Some(Status::Away), Some("127.0.0.3")),
            // Another status, another address, not on the copy, no status.
            session("b@example.org/1", Some(Status::Xa), Some("127.0.0.4")),
            session("c@example.org/1", Some(Status::Online), Some("127.0.0.9")),
            session("d@example.org/1", Some(Status::Dnd), Some("127.0.0.6")),
            session("d@example.org/2", Some(Status::Dnd), Some("127.0.0.6")),
            session("e@example.org/1", None, Some("127.0.0.7")),
            session("h@example.org/1", Some(Status::Online), Some("127.0.0.8")),
        ];
        let (users, jids) = unchanged_on(&cfg, &sessions, &copy);
        assert_eq!(sorted(users), vec!["a@example.org", "h@example.org"]);
        assert_eq!(
            sorted(jids.iter().map(String::as_str)),
            vec!["a@example.org/1", "a@example.org/2"]
        );

        // The copy holds addresses as published: masked here.
        cfg.privacy.ip = IpMode::Masked;
        let masked = vec![item("a@example.org/1", Status::Online, "127.0.0.0")];
        let listed = vec![session(
            "a@example.org/1",
            Some(Status::Online),
            Some("127.0.0.2"),
        )];
        let (users, _) = unchanged_on(&cfg, &listed, &masked);
        assert_eq!(sorted(users), vec!["a@example.org"]);

        // Hidden users alone: nothing to confirm later.
        let hidden = vec![session(
            "h@example.org/1",
            Some(Status::Online),
            Some("127.0.0.8"),
        )];
        let (users, jids) = unchanged_on(&cfg, &hidden, &copy);
        assert!(users.is_empty() && jids.is_empty());
    }
}
