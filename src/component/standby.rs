//! Standby: several instances with the same configuration, at most one
//! active (docs/protocol.md, "Standby and takeover"; README, "Running two
//! instances"). A standby instance watches the active one through an
//! ordinary account (pings to the component's JID, the status node) and
//! takes over when it is gone; an active instance that sees a newer status
//! item of another instance steps down without publishing anything.
//!
//! `Takeover` is the pure state machine; `run` wires it to a c2s link and
//! to the component loop it is handed. The c2s connection comes from the
//! client wing's `c2s` module: it is the project's one c2s transport.

use super::metrics::{Metrics, RoleValue};
use crate::config::StandbySettings;
use crate::wire::status::{self, ServiceStatus};
use crate::wire::{ns, pubsub, Attr};
use crate::xmpp::c2s::{self, C2s, C2sOptions};
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use xmpp_parsers::minidom::Element;

/// How the component loop ended (other than by a fatal error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopEnd {
    Shutdown,
    /// Fenced off by a newer instance (`step_down`).
    SteppedDown,
    /// With `step_down` given: the server said another connection holds the
    /// component's JID (Prosody's `conflict`).
    Conflict,
    /// With `step_down` given: the connection was lost. Whether to connect
    /// again is the standby logic's call (another instance may have taken
    /// over meanwhile; reconnecting blindly would publish `init` over it).
    Lost,
}

/// What the standby logic needs of the component's configuration.
#[derive(Clone)]
pub struct Setup {
    /// The component's JID (pinged to see whether an instance holds it).
    pub jid: String,
    /// The pubsub service and its status node, watched for status items.
    pub pubsub: String,
    pub status_node: String,
    pub iq_timeout: Duration,
    /// This instance's name, as its status items carry it.
    pub instance: Option<String>,
    pub telemetry: Metrics,
    /// The `[standby]` table: the account, the server, `takeover`.
    pub settings: StandbySettings,
}

/// Role of this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Waiting: another instance is (believed) active.
    Standby,
    /// Connected as the component (or trying to).
    Active,
}

/// What the state machine asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Nothing,
    /// Connect as the component and run the start-up.
    TakeOver(&'static str),
    /// Close the component stream at once, publishing nothing.
    StepDown(String),
    /// Ping the component's JID now and keep pinging quickly: the active
    /// instance stopped cleanly and its connection is on its way out.
    PingNow,
}

/// The takeover state machine (no sockets, no clocks of its own).
#[derive(Debug)]
pub struct Takeover {
    me: String,
    takeover: Duration,
    role: Role,
    /// When the first ping that failed without a success since was sent.
    failing_since: Option<Instant>,
    /// When the newest answered ping was sent: a ping sent before it that
    /// fails was lost, not unanswered by a dead instance.
    answered_sent: Option<Instant>,
    /// While active: our own status item has come back, so any status item
    /// of another instance seen from now on is newer than ours.
    seen_own: bool,
    /// When another instance's `offline` item came: from then on the first
    /// failed ping means its connection is gone, and we take over.
    left_cleanly: Option<Instant>,
    /// The instance the status node names, for the log.
    pub active_instance: Option<String>,
}

impl Takeover {
    pub fn new(me: &str, takeover: Duration) -> Takeover {
        Takeover {
            me: me.to_string(),
            takeover,
            role: Role::Standby,
            failing_since: None,
            answered_sent: None,
            seen_own: false,
            left_cleanly: None,
            active_instance: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the active instance stopped cleanly and we wait for its
    /// connection to go (pings then go out quickly).
    pub fn waiting_for_leave(&self) -> bool {
        self.role == Role::Standby && self.left_cleanly.is_some()
    }

    /// The active instance answered a ping sent at `sent`.
    pub fn ping_ok(&mut self, sent: Instant, now: Instant) -> Decision {
        self.failing_since = None;
        self.answered_sent = self.answered_sent.max(Some(sent));
        self.leave_deadline(now)
    }

    /// The server answered a ping sent at `sent` with an error: nothing
    /// holds the component's JID (the server bounced it).
    pub fn ping_bounced(&mut self, sent: Instant, now: Instant) -> Decision {
        if self.waiting_for_leave() {
            self.become_active();
            return Decision::TakeOver("the active instance stopped cleanly");
        }
        self.ping_failed(sent, now)
    }

    /// After a clean stop, something still answers for the component, or
    /// nothing answers at all (an instance that is shutting down does not):
    /// wait for the server's bounce, but not longer than `takeover`.
    fn leave_deadline(&mut self, now: Instant) -> Decision {
        match self.left_cleanly {
            Some(since)
                if self.waiting_for_leave() && now.duration_since(since) >= self.takeover =>
            {
                self.become_active();
                Decision::TakeOver("the active instance stopped cleanly (its connection stayed)")
            }
            _ => Decision::Nothing,
        }
    }

    /// A ping sent at `sent` got no answer in time (or, outside a clean
    /// stop, an error). The active instance has been silent since `sent`:
    /// with a ping timeout of `takeover`, the first failure after a death
    /// is enough, and an answer that is only slow (a slow link) is not one.
    pub fn ping_failed(&mut self, sent: Instant, now: Instant) -> Decision {
        if self.role != Role::Standby {
            return Decision::Nothing;
        }
        if self.left_cleanly.is_some() {
            return self.leave_deadline(now);
        }
        if self.answered_sent.is_some_and(|a| sent <= a) {
            // A later ping was answered: this one was lost on the way (on
            // an ejabberd cluster, routed to the connection of an instance
            // that was just stepping down), the active one is there.
            return Decision::Nothing;
        }
        let since = *self.failing_since.get_or_insert(sent);
        if now.duration_since(since) >= self.takeover {
            self.become_active();
            return Decision::TakeOver("the active instance stopped answering");
        }
        Decision::Nothing
    }

    /// The status node's item.
    pub fn status(&mut self, st: ServiceStatus, instance: Option<&str>, now: Instant) -> Decision {
        let mine = instance == Some(self.me.as_str());
        if !mine {
            self.active_instance = instance.map(str::to_string);
        }
        match self.role {
            Role::Standby => {
                if st == ServiceStatus::Offline && !mine {
                    // Not at once: its component connection may still be
                    // open. Connecting before the server has let go of it
                    // is refused on Prosody (`conflict`), and on ejabberd
                    // 24.10+ the old connection's close then drops our
                    // XEP-0356 grant (README, "Running two instances").
                    // The server's bounce of a ping says it no longer
                    // routes to it.
                    self.left_cleanly.get_or_insert(now);
                    return Decision::PingNow;
                }
                if st != ServiceStatus::Offline && !mine {
                    self.left_cleanly = None;
                }
                Decision::Nothing
            }
            Role::Active => {
                if mine {
                    self.seen_own = true;
                    Decision::Nothing
                } else if self.seen_own && st != ServiceStatus::Offline {
                    // Published after ours: another instance took over.
                    self.become_standby();
                    Decision::StepDown(instance.unwrap_or("another instance").to_string())
                } else {
                    Decision::Nothing
                }
            }
        }
    }

    /// Connecting as the component was refused with `conflict`, or the
    /// component loop ended: another instance holds the component.
    pub fn lost_the_race(&mut self, now: Instant) {
        self.become_standby();
        // Count from now: if it stays unreachable, try again in `takeover`.
        self.failing_since = Some(now);
    }

    fn become_active(&mut self) {
        self.role = Role::Active;
        self.seen_own = false;
        self.failing_since = None;
        self.answered_sent = None;
        self.left_cleanly = None;
    }

    fn become_standby(&mut self) {
        self.role = Role::Standby;
        self.seen_own = false;
        self.failing_since = None;
        self.answered_sent = None;
        self.left_cleanly = None;
    }
}

/// What the standby link reports.
enum Link {
    Status(ServiceStatus, Option<String>),
    /// The c2s connection is (re)established and subscribed.
    Up(C2s),
    Down,
}

/// Keeps the standby account logged in and subscribed to the status node,
/// reconnecting with backoff; forwards status items.
async fn link(cfg: Setup, tx: mpsc::Sender<Link>) {
    let sb = &cfg.settings;
    let mut backoff = Duration::from_millis(250);
    loop {
        let opts = C2sOptions {
            jid: xmpp_parsers::jid::Jid::from(sb.jid.clone()),
            password: sb.password.expose().to_string(),
            server: Some(sb.server.clone()),
            bind_ip: None,
            allow_plaintext: sb.allow_plaintext,
        };
        match c2s::connect(&opts).await {
            Ok((conn, mut rx)) => {
                backoff = Duration::from_millis(250);
                let sub = pubsub::subscribe(&cfg.status_node, &conn.jid().to_string());
                let iq = Element::builder("iq", ns::CLIENT)
                    .a("type", "set")
                    .a("to", cfg.pubsub.clone())
                    .append(sub)
                    .build();
                match conn.iq(iq, cfg.iq_timeout).await {
                    Ok(_) => {}
                    // No status node yet: nobody ever ran; pings decide.
                    Err(e) => tracing::debug!("standby: subscribing to the status node: {e}"),
                }
                if tx.send(Link::Up(conn.clone())).await.is_err() {
                    return;
                }
                while let Some(el) = rx.recv().await {
                    for ev in pubsub::parse_event(&el) {
                        let pubsub::Event::Items { node, items, .. } = ev else {
                            continue;
                        };
                        if node != cfg.status_node {
                            continue;
                        }
                        for (_, payload) in items {
                            if let Some((st, inst)) =
                                payload.as_ref().and_then(status::from_element)
                            {
                                if tx.send(Link::Status(st, inst)).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
                tracing::warn!("standby: the connection of {} was lost", sb.jid);
                if tx.send(Link::Down).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(
                    "standby: logging in as {} failed: {e}; retrying in {backoff:?}",
                    sb.jid
                );
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// How a ping of the component's JID went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ping {
    Answered,
    /// An error answer: from the server, since an instance answers pings
    /// with a result (Prosody says `remote-server-timeout` for a component
    /// that is not connected, ejabberd `service-unavailable` or
    /// `remote-server-not-found`).
    Bounced,
    NoAnswer,
}

/// Pings the component's JID from the standby account.
async fn ping(conn: &C2s, component: &str, timeout: Duration) -> Ping {
    let iq = Element::builder("iq", ns::CLIENT)
        .a("type", "get")
        .a("to", component.to_string())
        .append(Element::builder("ping", ns::PING).build())
        .build();
    match conn.iq(iq, timeout).await {
        Ok(_) => Ping::Answered,
        Err(c2s::C2sError::Stanza { .. }) => Ping::Bounced,
        Err(_) => Ping::NoAnswer,
    }
}

/// While two instances were connected as the component (ejabberd accepts
/// both; a frozen instance keeps its connection), the server spread the
/// stanzas meant for the component over both connections: the presences
/// that reached the one that now leaves are lost, and no audit can see a
/// status it missed. So the leaving instance asks the active one, by a
/// probe from the standby account, to probe every user again (docs/protocol.md,
/// "Standby and takeover"). Sent once this instance's connection is gone
/// from the server's routes, which its close starts: hence the pause.
/// Prosody never accepts the second connection (`Conflict`): nothing to ask.
fn ask_for_resync(conn: &Option<C2s>, component: &str, me: &str) {
    let Some(c) = conn.clone() else {
        tracing::warn!(instance = %me, "standby: no standby connection to ask the active instance to probe every user again; its next audit repairs what it can");
        return;
    };
    let probe = Element::builder("presence", ns::CLIENT)
        .a("to", component.to_string())
        .a("type", "probe")
        .build();
    let me = me.to_string();
    tokio::spawn(async move {
        tokio::time::sleep(RESYNC_PAUSE).await;
        tracing::info!(instance = %me, "standby: asking the active instance to probe every user again (presences may have reached this instance's connection)");
        if let Err(e) = c.send(probe) {
            tracing::warn!(instance = %me, "standby: asking for a new probe of every user: {e}");
        }
    });
}

/// See `ask_for_resync`.
const RESYNC_PAUSE: Duration = Duration::from_millis(500);

const PING_EVERY: Duration = Duration::from_millis(500);
/// Ordinary pings under way at most: a ping may take all of `takeover`.
const PINGS_IN_FLIGHT: usize = 8;
/// Between pings while a cleanly stopped instance's connection goes.
const LEAVE_PING_EVERY: Duration = Duration::from_millis(20);

/// Pings the component's JID in a task of its own; the result and when it
/// was sent arrive on `results`. Returns whether a ping is under way (not
/// without a c2s connection).
fn start_ping(
    conn: &Option<C2s>,
    component: &str,
    timeout: Duration,
    results: &mpsc::Sender<(Ping, Instant)>,
) -> bool {
    let Some(c) = conn.clone() else {
        return false;
    };
    let tx = results.clone();
    let component = component.to_string();
    tokio::spawn(async move {
        let sent = Instant::now();
        let _ = tx.send((ping(&c, &component, timeout).await, sent)).await;
    });
    true
}

/// Runs the instance with standby: waits while another instance answers,
/// takes over when it does not, steps down when fenced off.
/// `component(shutdown, step_down)` runs the component while active (the
/// component loop); its error ends the run.
pub async fn run<F, Fut, E>(
    cfg: Setup,
    mut shutdown: watch::Receiver<bool>,
    mut component: F,
) -> Result<(), E>
where
    F: FnMut(watch::Receiver<bool>, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = Result<LoopEnd, E>>,
{
    let sb = cfg.settings.clone();
    let me = cfg.instance.clone().unwrap_or_else(|| "pubpresence".into());
    let mut machine = Takeover::new(&me, sb.takeover);
    let (tx, mut links) = mpsc::channel(64);
    let link_task = tokio::spawn(link(cfg.clone(), tx));
    let mut conn: Option<C2s> = None;
    let mut ticker = tokio::time::interval(PING_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (ping_tx, mut ping_rx) = mpsc::channel::<(Ping, Instant)>(128);
    // Pings under way: one every `PING_EVERY` whatever the earlier ones do,
    // so that one lost ping is followed by an answered one before its own
    // timeout (on an ejabberd cluster a ping sent as an instance steps down
    // can be routed to its closing connection: taking over for that had the
    // two instances take turns, the two-instance soak's "resynced in a quiet
    // stretch"); after a clean stop, one every `LEAVE_PING_EVERY` (a
    // stopping instance leaves them unanswered; the first bounce decides).
    let mut in_flight = 0usize;
    let mut leave_ticker = tokio::time::interval(LEAVE_PING_EVERY);
    leave_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut said_waiting: Option<Option<String>> = None;
    // A ping may take all of `takeover`: an active instance behind a slow
    // link (the soak's `lag`: 300 ms each way) answers late, and a shorter
    // timeout had the standby take over from it, and the two take turns
    // for as long as the link stayed slow. After a clean stop the quick
    // pings keep a short timeout: only the server's bounce matters there.
    let ping_timeout = sb.takeover.max(PING_EVERY);
    let leave_ping_timeout = PING_EVERY.max(sb.takeover / 4);
    tracing::info!(instance = %me, "standby: watching {} through {}", cfg.jid, sb.jid);
    cfg.telemetry.role(RoleValue::Standby);
    let result = loop {
        if machine.role() == Role::Active {
            cfg.telemetry.role(RoleValue::Active);
            // Active: run the component until it ends, fenced by the link.
            let (stop_tx, stop_rx) = watch::channel(false);
            let mut active = Box::pin(component(shutdown.clone(), stop_rx));
            let end = loop {
                tokio::select! {
                    end = &mut active => break end,
                    Some(l) = links.recv() => match l {
                        Link::Status(st, inst) => {
                            if let Decision::StepDown(other) = machine.status(st, inst.as_deref(), Instant::now()) {
                                tracing::warn!(instance = %me, "instance {other} published after us: stepping down without publishing");
                                let _ = stop_tx.send(true);
                            }
                        }
                        Link::Up(c) => conn = Some(c),
                        Link::Down => conn = None,
                    },
                }
            };
            match end {
                Err(e) => break Err(e),
                Ok(LoopEnd::Shutdown) => break Ok(()),
                Ok(end @ (LoopEnd::SteppedDown | LoopEnd::Conflict | LoopEnd::Lost)) => {
                    tracing::info!(instance = %me, "standby: another instance is active");
                    machine.lost_the_race(Instant::now());
                    cfg.telemetry.role(RoleValue::Standby);
                    said_waiting = None;
                    if end != LoopEnd::Conflict {
                        ask_for_resync(&conn, &cfg.jid, &me);
                    }
                }
            }
            continue;
        }
        tokio::select! {
            _ = shutdown.changed() => break Ok(()),
            _ = leave_ticker.tick(), if machine.waiting_for_leave() && in_flight < 64 => {
                in_flight += usize::from(start_ping(&conn, &cfg.jid, leave_ping_timeout, &ping_tx));
            }
            _ = ticker.tick(), if in_flight < PINGS_IN_FLIGHT => {
                in_flight += usize::from(start_ping(&conn, &cfg.jid, ping_timeout, &ping_tx));
            }
            Some((result, sent)) = ping_rx.recv() => {
                in_flight = in_flight.saturating_sub(1);
                let now = Instant::now();
                let ok = result == Ping::Answered;
                let d = match result {
                    Ping::Answered => machine.ping_ok(sent, now),
                    Ping::Bounced => machine.ping_bounced(sent, now),
                    Ping::NoAnswer => machine.ping_failed(sent, now),
                };
                if ok && !machine.waiting_for_leave() && said_waiting.as_ref() != Some(&machine.active_instance) {
                    said_waiting = Some(machine.active_instance.clone());
                    tracing::info!(
                        instance = %me,
                        "standby: instance {} is active; waiting",
                        machine.active_instance.as_deref().unwrap_or("(unnamed)")
                    );
                }
                if let Decision::TakeOver(why) = d {
                    tracing::warn!(instance = %me, "taking over: {why}");
                }
            }
            Some(l) = links.recv() => match l {
                Link::Status(st, inst) => match machine.status(st, inst.as_deref(), Instant::now()) {
                    Decision::TakeOver(why) => tracing::warn!(instance = %me, "taking over: {why}"),
                    Decision::PingNow => {
                        tracing::info!(instance = %me, "standby: the active instance stopped cleanly; taking over once the server has let go of its connection");
                        leave_ticker.reset_immediately();
                    }
                    _ => {}
                },
                Link::Up(c) => conn = Some(c),
                Link::Down => conn = None,
            },
        }
    };
    link_task.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, base: Instant) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn waits_while_pings_succeed_and_takes_over_after_takeover_of_failures() {
        let t0 = Instant::now();
        let mut m = Takeover::new("b", Duration::from_secs(2));
        assert_eq!(m.ping_ok(at(0, t0), at(0, t0)), Decision::Nothing);
        assert_eq!(m.ping_failed(at(0, t0), at(0, t0)), Decision::Nothing);
        assert_eq!(m.ping_failed(at(1500, t0), at(1500, t0)), Decision::Nothing);
        // A success in between resets the clock.
        m.ping_ok(at(2000, t0), at(2000, t0));
        assert_eq!(m.ping_failed(at(2500, t0), at(2500, t0)), Decision::Nothing);
        assert_eq!(m.ping_failed(at(4000, t0), at(4000, t0)), Decision::Nothing);
        assert!(matches!(
            m.ping_failed(at(4500, t0), at(4500, t0)),
            Decision::TakeOver(_)
        ));
        assert_eq!(m.role(), Role::Active);
    }

    #[test]
    fn a_lost_ping_followed_by_an_answered_one_is_no_death() {
        let t0 = Instant::now();
        let mut m = Takeover::new("b", Duration::from_secs(2));
        // Stepped down at 0 (the race lost): a ping sent at once goes to
        // our own closing connection and is lost; the next, 500 ms later,
        // is answered at 520 ms; the lost one's timeout comes at 2 s.
        m.lost_the_race(at(0, t0));
        assert_eq!(m.ping_ok(at(500, t0), at(520, t0)), Decision::Nothing);
        assert_eq!(m.ping_failed(at(0, t0), at(2000, t0)), Decision::Nothing);
        assert_eq!(m.role(), Role::Standby);
        // A death is still seen `takeover` after the first ping sent after
        // the last answer.
        assert!(matches!(
            m.ping_failed(at(1000, t0), at(3000, t0)),
            Decision::TakeOver(_)
        ));
    }

    #[test]
    fn a_slow_answer_counts_and_silence_counts_from_the_ping_sent() {
        let t0 = Instant::now();
        let mut m = Takeover::new("b", Duration::from_secs(2));
        // Answers 700 ms late, ping after ping: the active one is there.
        for k in 0..10 {
            assert_eq!(
                m.ping_ok(at(700 + 1200 * k, t0), at(700 + 1200 * k, t0)),
                Decision::Nothing
            );
        }
        assert_eq!(m.role(), Role::Standby);
        // Then a ping sent at 12.5 s is not answered within `takeover`: its
        // failure, at 14.5 s, is the proof (no second one is waited for).
        assert!(matches!(
            m.ping_failed(at(12_500, t0), at(14_500, t0)),
            Decision::TakeOver(_)
        ));
    }

    #[test]
    fn offline_of_another_instance_means_take_over_once_its_connection_is_gone() {
        let t0 = Instant::now();
        let mut m = Takeover::new("b", Duration::from_secs(2));
        assert_eq!(
            m.status(ServiceStatus::Online, Some("a"), at(0, t0)),
            Decision::Nothing
        );
        assert_eq!(m.active_instance.as_deref(), Some("a"));
        assert_eq!(
            m.status(ServiceStatus::Offline, Some("a"), at(100, t0)),
            Decision::PingNow
        );
        assert!(m.waiting_for_leave());
        // Its connection still answers: wait (not for `takeover` of failures).
        assert_eq!(m.ping_ok(at(120, t0), at(120, t0)), Decision::Nothing);
        assert_eq!(m.role(), Role::Standby);
        // A stopping instance leaves pings unanswered: still no proof.
        assert_eq!(m.ping_failed(at(130, t0), at(130, t0)), Decision::Nothing);
        assert_eq!(m.role(), Role::Standby);
        // The server's bounce means it no longer routes to it.
        assert!(matches!(
            m.ping_bounced(at(140, t0), at(140, t0)),
            Decision::TakeOver(_)
        ));
        assert_eq!(m.role(), Role::Active);
        assert!(!m.waiting_for_leave());

        // A connection that stays after the clean stop: at most `takeover`.
        let mut m = Takeover::new("b", Duration::from_secs(2));
        assert_eq!(
            m.status(ServiceStatus::Offline, Some("a"), at(0, t0)),
            Decision::PingNow
        );
        assert_eq!(m.ping_ok(at(1900, t0), at(1900, t0)), Decision::Nothing);
        assert!(matches!(
            m.ping_ok(at(2000, t0), at(2000, t0)),
            Decision::TakeOver(_)
        ));
        let mut m = Takeover::new("b", Duration::from_secs(2));
        m.status(ServiceStatus::Offline, Some("a"), at(0, t0));
        assert_eq!(m.ping_failed(at(1900, t0), at(1900, t0)), Decision::Nothing);
        assert!(matches!(
            m.ping_failed(at(2000, t0), at(2000, t0)),
            Decision::TakeOver(_)
        ));

        // Another instance came up meanwhile: back to ordinary waiting.
        let mut m = Takeover::new("b", Duration::from_secs(2));
        m.status(ServiceStatus::Offline, Some("a"), at(0, t0));
        m.status(ServiceStatus::Init, Some("c"), at(10, t0));
        assert!(!m.waiting_for_leave());
        assert_eq!(m.ping_bounced(at(20, t0), at(20, t0)), Decision::Nothing);

        // Our own offline (an earlier run of ours) is not a reason.
        let mut m = Takeover::new("b", Duration::from_secs(2));
        assert_eq!(
            m.status(ServiceStatus::Offline, Some("b"), at(0, t0)),
            Decision::Nothing
        );
        assert!(!m.waiting_for_leave());
    }

    #[test]
    fn active_steps_down_only_for_items_newer_than_its_own() {
        let t0 = Instant::now();
        let mut m = Takeover::new("b", Duration::from_millis(10));
        m.ping_failed(at(0, t0), at(0, t0));
        assert!(matches!(
            m.ping_failed(at(20, t0), at(20, t0)),
            Decision::TakeOver(_)
        ));
        // Older items of the previous instance, still arriving: ignored.
        assert_eq!(
            m.status(ServiceStatus::Online, Some("a"), at(30, t0)),
            Decision::Nothing
        );
        assert_eq!(
            m.status(ServiceStatus::Init, Some("b"), at(40, t0)),
            Decision::Nothing
        );
        // After ours came back, another instance's item is newer: fenced.
        assert_eq!(
            m.status(ServiceStatus::Init, Some("c"), at(50, t0)),
            Decision::StepDown("c".into())
        );
        assert_eq!(m.role(), Role::Standby);
        // Pings decide again from here.
        assert_eq!(m.ping_ok(at(60, t0), at(60, t0)), Decision::Nothing);
    }

    #[test]
    fn conflict_sends_back_to_standby_and_retries_after_takeover() {
        let t0 = Instant::now();
        let mut m = Takeover::new("b", Duration::from_secs(2));
        m.ping_failed(at(0, t0), at(0, t0));
        assert!(matches!(
            m.ping_failed(at(2000, t0), at(2000, t0)),
            Decision::TakeOver(_)
        ));
        m.lost_the_race(at(2100, t0));
        assert_eq!(m.role(), Role::Standby);
        assert_eq!(m.ping_failed(at(3000, t0), at(3000, t0)), Decision::Nothing);
        assert!(matches!(
            m.ping_failed(at(4200, t0), at(4200, t0)),
            Decision::TakeOver(_)
        ));
    }
}
