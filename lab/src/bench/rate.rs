//! One rate of the Prosody bench (`prosody`): load users changing status at
//! that rate for the window, what the watcher read of it, and the latency
//! and CPU figures. Two kinds of phase share the load's set-up and teardown:
//! `phase` (the component running, plus the one-hop latency floor) and
//! `mirror_phase` (the component stopped, its writes done by a plain
//! client: `mirror`).

use super::client::{client_iq, client_iq_id, ACTIVE, IQ_TIMEOUT, LIVE};
use super::error::BenchError;
use super::measure::{cpu_seconds, Latency};
use super::mirror;
use super::report::{MirrorPoint, RatePoint};
use crate::sim::{self, SimControl, SimError, SimEvent, SimOptions, SimReport};
use crate::Prosody;
use crate::{lock, passed};
use pubpresence::minidom::Element;
use pubpresence::wire::pubsub;
use pubpresence::wire::user::{Status, UserItem};
use pubpresence::xmpp::c2s::C2s;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The latency floor's two nodes: a client publishing to active and then
/// to live, as the component does.
pub(super) const FLOOR: &str = "bench/floor";
pub(super) const FLOOR_ACTIVE: &str = "bench/floor-active-latency";
/// Connections per load account. Few: every presence change of a resource
/// is also sent to the account's other resources, so 60 resources per
/// account would make the server send 60 stanzas per change.
const LOAD_RESOURCES: usize = 4;
/// Changes per second of one load connection (the rest is more connections).
const PER_CONNECTION_RATE: f64 = 4.0;

/// What the watcher read, with when.
#[derive(Debug, Clone)]
pub(super) enum Seen {
    Live(Instant, UserItem),
    Floor(Instant, String),
}

pub(super) type Log<T> = Arc<Mutex<Vec<T>>>;

/// The sim's events as its reader logged them, and how many times it said
/// that every connection is held, counted as they come (a window waits on
/// that count).
#[derive(Clone)]
pub(crate) struct SimLog {
    events: Log<SimEvent>,
    held: watch::Sender<u64>,
}

impl Default for SimLog {
    fn default() -> SimLog {
        SimLog {
            events: Arc::default(),
            held: watch::Sender::new(0),
        }
    }
}

impl SimLog {
    pub(crate) fn push(&self, ev: SimEvent) {
        if matches!(ev, SimEvent::Held) {
            self.held.send_modify(|n| *n += 1);
        }
        lock(&self.events).push(ev);
    }

    /// The changes logged since `start`.
    fn changes_since(&self, start: Instant) -> Vec<Change> {
        changes_since(&lock(&self.events), start)
    }

    /// How many times the sim said every connection is held.
    fn helds(&self) -> u64 {
        *self.held.borrow()
    }

    /// Waits until the sim says held once more than `from` times.
    async fn held_after(&self, from: u64, what: &str, limit: Duration) -> Result<(), BenchError> {
        if passed(&self.held, from, limit).await {
            Ok(())
        } else {
            Err(BenchError::Timeout(what.to_string()))
        }
    }
}

/// A change sent: the connection's full JID, its new status, when.
type Change = (String, Status, Instant);

/// What every phase runs against.
pub(super) struct Rig<'a> {
    pub prosody: &'a Prosody,
    /// Publishes the latency floor's items, or the mirror's writes.
    pub admin: &'a C2s,
    /// What the watcher reads (`spawn_watcher_reader`).
    pub seen: &'a Log<Seen>,
    pub server_pid: u32,
    /// The measured window.
    pub duration: Duration,
    /// Floor publishes per second.
    pub floor_rate: f64,
}

/// Load accounts for a rate (`LOAD_RESOURCES` connections each).
pub(super) fn load_accounts(rate: f64) -> usize {
    load_connections(rate).div_ceil(LOAD_RESOURCES)
}

/// Load connections for a rate: each changes about 4 times a second.
fn load_connections(rate: f64) -> usize {
    ((rate / PER_CONNECTION_RATE).ceil() as usize).clamp(LOAD_RESOURCES, 2000)
}

/// One steady-rate phase with the component running: load users changing
/// status, the floor publisher, CPU of the server and the component over
/// the window.
pub(super) async fn phase(
    rig: &Rig<'_>,
    component_pid: u32,
    index: usize,
    rate: f64,
) -> Result<RatePoint, BenchError> {
    let load = Load::start(rig.prosody, index, rate, spawn_sim_reader).await?;
    let open = load.open(Cpus {
        server: rig.server_pid,
        component: Some(component_pid),
    });
    let floor_sent = latency_floor(rig, index, open.start).await;
    let done = load.close(open, rig.seen, &floor_sent).await;

    let (lat, floor_lat) = matched(&lock(rig.seen), done.start, &done.changes, &floor_sent);
    let latency = Latency::of(lat);
    let floor = Latency::of(floor_lat);
    Ok(RatePoint {
        target_rate: rate,
        load_connections: done.connections,
        achieved_rate: done.achieved_rate(),
        changes: done.changes.len(),
        received: latency.samples,
        p99_over_floor: if floor.p99_ms > 0.0 {
            latency.p99_ms / floor.p99_ms
        } else {
            0.0
        },
        latency,
        floor_sent: floor_sent.len(),
        floor,
        cpu_window_s: done.cpu_window_s,
        server_cpu_s: done.server_cpu_s,
        component_cpu_s: done.component_cpu_s,
        cpu_ratio: if done.server_cpu_s > 0.0 {
            done.component_cpu_s / done.server_cpu_s
        } else {
            0.0
        },
        mirror: None,
        p99_over_mirror: 0.0,
    })
}

/// The mirror pass of a rate, the component stopped: the same churn (same
/// seed as `phase` with this index) with its writes done by a plain client
/// (`mirror`) as the changes come, the server's CPU over the window.
pub(super) async fn mirror_phase(
    rig: &Rig<'_>,
    index: usize,
    rate: f64,
) -> Result<MirrorPoint, BenchError> {
    let nodes = mirror::Nodes {
        pubsub: rig.prosody.pubsub_jid.clone(),
        active: ACTIVE,
        live: LIVE,
    };
    let admin = rig.admin.clone();
    let reader = move |rx, log| mirror::spawn_mirroring_reader(rx, log, admin, nodes);
    let load = Load::start(rig.prosody, index, rate, reader).await?;
    let open = load.open(Cpus {
        server: rig.server_pid,
        component: None,
    });
    // The mirror publishes as the changes come; nothing else to send.
    tokio::time::sleep(rig.duration).await;
    let no_floor = HashMap::new();
    let done = load.close(open, rig.seen, &no_floor).await;

    let (lat, _) = matched(&lock(rig.seen), done.start, &done.changes, &no_floor);
    Ok(MirrorPoint {
        achieved_rate: done.achieved_rate(),
        changes: done.changes.len(),
        latency: Latency::of(lat),
        cpu_window_s: done.cpu_window_s,
        server_cpu_s: done.server_cpu_s,
    })
}

/// The processes whose CPU a window reads.
#[derive(Clone, Copy)]
struct Cpus {
    server: u32,
    /// None: the mirror pass, the component stopped.
    component: Option<u32>,
}

impl Cpus {
    fn read(self) -> (Option<f64>, Option<f64>) {
        (
            cpu_seconds(self.server),
            self.component.and_then(cpu_seconds),
        )
    }
}

/// A rate's load connections, logged in and held.
struct Load {
    ctl: watch::Sender<SimControl>,
    task: JoinHandle<Result<SimReport, SimError>>,
    events: SimLog,
    connections: usize,
}

/// An open window: the load running since `start`.
struct Open {
    start: Instant,
    cpus: Cpus,
    cpu0: (Option<f64>, Option<f64>),
    /// `Held` events logged before the window.
    helds: u64,
}

/// A closed window: the changes sent in it, the CPU spent.
struct Done {
    start: Instant,
    /// From the window's start to the load held.
    window: Duration,
    changes: Vec<Change>,
    connections: usize,
    /// Up to the CPU read at the end: the window plus the drain.
    cpu_window_s: f64,
    server_cpu_s: f64,
    component_cpu_s: f64,
}

impl Done {
    /// Changes sent per second over the window.
    fn achieved_rate(&self) -> f64 {
        self.changes.len() as f64 / self.window.as_secs_f64()
    }
}

impl Load {
    /// Logs in the load connections for `rate`, their events read by
    /// `reader`, and waits until they are ready and their logins' live
    /// events have passed. The seed is `7 + index`: a phase and the mirror
    /// pass of the same index replay the same churn.
    async fn start(
        prosody: &Prosody,
        index: usize,
        rate: f64,
        reader: impl FnOnce(mpsc::UnboundedReceiver<SimEvent>, SimLog),
    ) -> Result<Load, BenchError> {
        let mut o = SimOptions::for_prosody(prosody, "load", load_accounts(rate), LOAD_RESOURCES);
        o.subscribe = !prosody.options().privileged;
        let connections = o.connections();
        o.rate = rate;
        o.disconnect_share = 0.0;
        o.first_ip = Ipv4Addr::new(127, 1, 0, 1);
        o.seed = 7 + index as u64;
        o.login_concurrency = 32;
        tracing::info!("{rate} changes/s: logging in {connections} load connections");
        let (ctl, rx) = watch::channel(SimControl::Hold);
        let events = SimLog::default();
        let (tx, erx) = mpsc::unbounded_channel();
        reader(erx, events.clone());
        let task = tokio::spawn(sim::run(o, rx, Some(tx)));
        // `Held` comes once every connection is logged in and idle.
        let ready = events
            .held_after(0, "load users logged in", Duration::from_secs(60))
            .await;
        if let Err(e) = ready {
            let _ = ctl.send(SimControl::Stop);
            let _ = task.await;
            return Err(e);
        }
        // Their logins' live events pass before the window opens.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok(Load {
            ctl,
            task,
            events,
            connections,
        })
    }

    /// Opens the window: CPU read, then the users set changing.
    fn open(&self, cpus: Cpus) -> Open {
        let helds = self.events.helds();
        let cpu0 = cpus.read();
        let start = Instant::now();
        let _ = self.ctl.send(SimControl::Run);
        Open {
            start,
            cpus,
            cpu0,
            helds,
        }
    }

    /// Holds the users, lets what was sent arrive (`drain`), closes the CPU
    /// window and stops the load.
    async fn close(
        self,
        open: Open,
        seen: &Log<Seen>,
        floor_sent: &HashMap<String, Instant>,
    ) -> Done {
        let start = open.start;
        let _ = self.ctl.send(SimControl::Hold);
        let window = start.elapsed();
        // A connection says it is held after its last change, so once the
        // sim says `Held` again every change of the window is in the log.
        // Read before that, the last change could be missing, and the drain
        // would not wait for its notification.
        let held = self
            .events
            .held_after(open.helds, "load users held", Duration::from_secs(10))
            .await;
        if let Err(e) = held {
            tracing::warn!("{e}; the window's last changes may be counted as lost");
        }
        let sent_changes = self.events.changes_since(start);
        drain(seen, start, &sent_changes, floor_sent).await;
        let cpu1 = open.cpus.read();
        let cpu_window_s = start.elapsed().as_secs_f64();
        let changes = self.events.changes_since(start);
        let _ = self.ctl.send(SimControl::Stop);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
        let d = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        };
        Done {
            start,
            window,
            changes,
            connections: self.connections,
            cpu_window_s,
            server_cpu_s: d(open.cpu0.0, cpu1.0),
            component_cpu_s: d(open.cpu0.1, cpu1.1),
        }
    }
}

/// The one-hop latency floor, until the window's end: admin publishes
/// items equivalent to the component's to the floor's nodes, `floor_rate`
/// a second. Returns each item's id with when it was sent.
async fn latency_floor(rig: &Rig<'_>, index: usize, start: Instant) -> HashMap<String, Instant> {
    let prosody = rig.prosody;
    let mut floor_sent: HashMap<String, Instant> = HashMap::new();
    let interval = Duration::from_secs_f64(1.0 / rig.floor_rate.max(0.1));
    let mut tick = tokio::time::interval(interval);
    let mut seq = 0u64;
    while start.elapsed() < rig.duration {
        tick.tick().await;
        seq += 1;
        let id = format!("f{index}-{seq}");
        let item = UserItem {
            fulljid: format!("floor@{}/bench", prosody.domain),
            name: format!("floor@{}", prosody.domain),
            status: if seq % 2 == 0 {
                Status::Away
            } else {
                Status::Online
            },
            ip: "127.0.0.1".into(),
            since: chrono::Utc::now(),
        };
        // Fire and forget, but with an id: an IQ needs one.
        let el = client_iq_id(
            &format!("bench-{id}"),
            "set",
            &prosody.pubsub_jid,
            pubsub::publish(FLOOR, Some(&id), item.to_element()),
        );
        // As the component does: the item on an active-like node, and once
        // the server confirmed it, on the live-like node the watcher follows.
        let on_active = client_iq(
            "set",
            &prosody.pubsub_jid,
            pubsub::publish(
                FLOOR_ACTIVE,
                Some(&format!("floor{}", seq % 100)),
                item.to_element(),
            ),
        );
        let at = Instant::now();
        let a = rig.admin.clone();
        tokio::spawn(async move {
            if a.iq(on_active, IQ_TIMEOUT).await.is_ok() {
                let _ = a.send(el);
            }
        });
        floor_sent.insert(id, at);
    }
    floor_sent
}

/// The changes the sim logged since `start`.
fn changes_since(events: &[SimEvent], start: Instant) -> Vec<Change> {
    events
        .iter()
        .filter_map(|e| match e {
            SimEvent::Change {
                fulljid,
                status,
                at,
                ..
            } if *at >= start => Some((fulljid.clone(), *status, *at)),
            _ => None,
        })
        .collect()
}

/// Lets what was sent arrive (bounded): until every change and floor item
/// has its notification, or nothing arrives for 5 s, or 30 s.
async fn drain(
    seen: &Log<Seen>,
    start: Instant,
    sent_changes: &[Change],
    floor_sent: &HashMap<String, Instant>,
) {
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (usize::MAX, Instant::now());
    loop {
        let (total, done) = {
            let l = lock(seen);
            let (lat, fl) = matched(&l, start, sent_changes, floor_sent);
            (
                l.len(),
                lat.len() >= sent_changes.len() && fl.len() >= floor_sent.len(),
            )
        };
        if done || Instant::now() > drain_deadline {
            break;
        }
        if total != last.0 {
            last = (total, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Latencies (ms) of the changes and of the floor items that arrived: each
/// change is matched to the next live item of that connection with its
/// status, received after it.
fn matched(
    seen: &[Seen],
    start: Instant,
    changes: &[Change],
    floor_sent: &HashMap<String, Instant>,
) -> (Vec<f64>, Vec<f64>) {
    let mut live: HashMap<&str, Vec<(Instant, Status)>> = HashMap::new();
    let mut floor_recv: HashMap<&str, Instant> = HashMap::new();
    for s in seen {
        match s {
            Seen::Live(t, u) if *t >= start => live
                .entry(u.fulljid.as_str())
                .or_default()
                .push((*t, u.status)),
            Seen::Floor(t, id) => {
                floor_recv.entry(id.as_str()).or_insert(*t);
            }
            _ => {}
        }
    }
    let mut by_conn: HashMap<&str, Vec<(Status, Instant)>> = HashMap::new();
    for (j, s, at) in changes {
        by_conn.entry(j.as_str()).or_default().push((*s, *at));
    }
    let mut lat = Vec::new();
    for (j, list) in &by_conn {
        let got = live.get(j).map(Vec::as_slice).unwrap_or(&[]);
        let mut k = 0;
        for (s, at) in list {
            while k < got.len() && !(got[k].1 == *s && got[k].0 >= *at) {
                k += 1;
            }
            if k < got.len() {
                lat.push((got[k].0 - *at).as_secs_f64() * 1000.0);
                k += 1;
            } else {
                // Usually a change sent at the window's very end.
                tracing::debug!(
                    "change not seen on live: {j} {} sent {:?} into the window",
                    s.as_str(),
                    *at - start
                );
            }
        }
    }
    let floor_lat = floor_sent
        .iter()
        .filter_map(|(id, at)| {
            floor_recv
                .get(id.as_str())
                .map(|t| t.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    (lat, floor_lat)
}

/// Reads the watcher's stanzas into `log`, stamped on arrival.
pub(super) fn spawn_watcher_reader(mut inbound: mpsc::Receiver<Element>, log: Log<Seen>) {
    tokio::spawn(async move {
        while let Some(el) = inbound.recv().await {
            let now = Instant::now();
            for ev in pubsub::parse_event(&el) {
                if let pubsub::Event::Items { node, items, .. } = ev {
                    let mut l = lock(&log);
                    for (id, payload) in items {
                        if node == LIVE {
                            if let Some(u) = payload.as_ref().and_then(UserItem::from_element) {
                                l.push(Seen::Live(now, u));
                            }
                        } else if node == FLOOR {
                            l.push(Seen::Floor(now, id));
                        }
                    }
                }
            }
        }
    });
}

/// Drains the sim's events into `log`.
pub(super) fn spawn_sim_reader(mut rx: mpsc::UnboundedReceiver<SimEvent>, log: SimLog) {
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            log.push(ev);
        }
    });
}
