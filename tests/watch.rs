//! End-to-end tests of the reference client: the follower (docs/protocol.md, "Client procedure")
//! (`pubpresence::client::watch::follow`) against a real Prosody and the
//! real component, with simulated users (`pubpresence_lab::sim`)
//! changing status all along, and the `pubpresence-lab demo` command itself.
//!
//! "Exact" below means: once the users stop changing, the follower's state,
//! the items of active and the server's own sessions (XEP-0133, as admin)
//! are the same connections, with the same IPs, and the statuses the
//! simulated users last set.

mod common;

use common::pp::{iq_set, Pubpresence, User, Watcher, LIVE, STATUS};
use common::{loopback, user_sessions, Lab, Server};
use pubpresence::client::board::Board;
use pubpresence::client::follow::WatchEvent;
use pubpresence::client::watch::{self, Target, Update, WatchError};
use pubpresence::config::Nodes;
use pubpresence::wire::status::ServiceStatus;
use pubpresence::wire::user::{Status, UserItem};
use pubpresence::xmpp::c2s::{self, C2s, C2sOptions};
use pubpresence_lab::process::{self, Sig};
use pubpresence_lab::sim::{self, SimControl, SimEvent, SimOptions};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch as channel};

/// Bound on any single wait below.
const T: Duration = Duration::from_secs(30);
const DASHBOARD: &str = "dashboard";
/// Reads active and the status node (a member, like the dashboard).
const CHECKER: &str = "checker";

// ---------------------------------------------------------------------------
// Set-up

/// Prosody with the dashboard, the checker and `n` simulated users
/// (`{prefix}1..`, password = name) registered, the component running and
/// online, and the checker connected.
async fn setup(
    p: Server,
    prefix: &str,
    n: usize,
) -> (Server, String, Pubpresence, Watcher, Vec<String>) {
    p.register(DASHBOARD, DASHBOARD);
    p.register(CHECKER, CHECKER);
    let users: Vec<String> = (1..=n).map(|i| format!("{prefix}{i}")).collect();
    for u in &users {
        p.register(u, u);
    }
    let config = p.config_toml(&[
        &format!("{DASHBOARD}@{}", p.domain()),
        &format!("{CHECKER}@{}", p.domain()),
    ]);
    let pp = Pubpresence::start(&config);
    let checker = Watcher::connect(&p, CHECKER).await;
    wait_online(&pp, &checker).await;
    (p, config, pp, checker, users)
}

/// Polls the status node until it says online (the nodes may not exist yet).
async fn wait_online(pp: &Pubpresence, w: &Watcher) {
    w.until_online(pp).await;
}

async fn admin(p: &Server) -> C2s {
    let (admin, _rx) = common::admin_login(p, "check").await;
    admin
}

fn signal(pid: u32, sig: Sig) {
    assert!(process::signal(pid, sig), "kill -{sig:?} {pid}");
}

// ---------------------------------------------------------------------------
// Simulated users, with what they did

/// What the simulated users did: the last status each connection set.
#[derive(Default, Debug)]
struct SimLog {
    last: BTreeMap<String, (Status, String)>,
    ready: bool,
    held: bool,
    done: bool,
    changes: usize,
    errors: Vec<String>,
}

impl SimLog {
    /// Full JID -> (status, ip) of the connections that should be up.
    fn expected(&self) -> BTreeMap<String, (Status, String)> {
        self.last
            .iter()
            .filter(|(_, (s, _))| *s != Status::Offline)
            .map(|(j, v)| (j.clone(), v.clone()))
            .collect()
    }
}

struct Sim {
    control: channel::Sender<SimControl>,
    log: Arc<Mutex<SimLog>>,
    changed: channel::Receiver<u64>,
    task: tokio::task::JoinHandle<Result<sim::SimReport, sim::SimError>>,
}

impl Sim {
    /// Starts `users` (one connection each) in `mode`.
    fn start(
        p: &Server,
        users: &[String],
        mode: SimControl,
        tune: impl FnOnce(&mut SimOptions),
    ) -> Sim {
        let mut opts = SimOptions::numbered(
            p.c2s_addr().to_string(),
            p.domain().to_string(),
            p.component_jid().to_string(),
            "",
            0,
            1,
        );
        opts.users = users
            .iter()
            .map(|u| sim::SimUser {
                name: u.clone(),
                password: u.clone(),
                resources: vec!["r".into()],
            })
            .collect();
        tune(&mut opts);
        let (control, rx) = channel::channel(mode);
        let (tx, mut events) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(SimLog::default()));
        let (changed_tx, changed) = channel::channel(0u64);
        let l = log.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Some(ev) = events.recv().await {
                {
                    let mut log = l.lock().unwrap();
                    match ev {
                        SimEvent::Connected { fulljid, ip } => {
                            log.last.insert(fulljid, (Status::Online, ip.to_string()));
                        }
                        SimEvent::Change {
                            fulljid,
                            status,
                            ip,
                            ..
                        } => {
                            log.changes += 1;
                            log.last.insert(fulljid, (status, ip.to_string()));
                        }
                        SimEvent::Lost { fulljid, .. } => {
                            let ip = log.last.get(&fulljid).map(|l| l.1.clone());
                            log.last
                                .insert(fulljid, (Status::Offline, ip.unwrap_or_default()));
                        }
                        SimEvent::Ready { .. } => log.ready = true,
                        SimEvent::Held => log.held = true,
                        SimEvent::Done => log.done = true,
                        SimEvent::Error { fulljid, error } => {
                            log.errors.push(format!("{fulljid}: {error}"))
                        }
                    }
                }
                n += 1;
                let _ = changed_tx.send(n);
            }
        });
        let task = tokio::spawn(sim::run(opts, rx, Some(tx)));
        Sim {
            control,
            log,
            changed,
            task,
        }
    }

    async fn wait(&mut self, what: &str, cond: impl Fn(&SimLog) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            if cond(&self.log.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(deadline, self.changed.changed())
                .await
                .is_err()
            {
                panic!(
                    "simulated users: timed out waiting for {what}: {:?}",
                    self.log
                );
            }
        }
    }

    /// Stops changing and waits until every connection is idle.
    async fn hold(&mut self) {
        self.log.lock().unwrap().held = false;
        self.control.send(SimControl::Hold).expect("sim running");
        self.wait("held", |l| l.held).await;
    }

    fn run(&self) {
        self.control.send(SimControl::Run).expect("sim running");
    }

    async fn stop(self) -> sim::SimReport {
        let _ = self.control.send(SimControl::Stop);
        tokio::time::timeout(T, self.task)
            .await
            .expect("sim stops in time")
            .expect("sim task")
            .expect("sim ran")
    }
}

// ---------------------------------------------------------------------------
// The follower under test: the library's `watch::follow`, as the dashboard

struct Follower {
    board: Arc<Mutex<Board>>,
    events: Arc<Mutex<Vec<WatchEvent>>>,
    /// With `start_runner`: "connected" and "lost", in order.
    links: Arc<Mutex<Vec<&'static str>>>,
    changed: channel::Receiver<u64>,
    task: tokio::task::JoinHandle<Result<(), WatchError>>,
}

fn target(p: &Server) -> Target {
    Target {
        component: p.component_jid().to_string(),
        pubsub: p.pubsub_jid().to_string(),
        nodes: Nodes::default(),
        probe_timeout: Duration::from_secs(2),
        iq_timeout: Duration::from_secs(10),
    }
}

impl Follower {
    /// `watch::follow` on one connection of the dashboard.
    async fn start(p: &Server) -> Follower {
        let (c2s, inbound) = c2s::connect_as(
            &format!("{DASHBOARD}@{}/follow", p.domain()),
            DASHBOARD,
            p.c2s_addr(),
            loopback(1),
        )
        .await
        .expect("dashboard login");
        let (tx, mut out) = mpsc::channel(1024);
        let task = tokio::spawn(watch::follow(c2s, inbound, target(p), tx));
        let (updates, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut seq = 0;
            while let Some(event) = out.recv().await {
                seq += 1;
                if updates.send(Update::Event { seq, event }).await.is_err() {
                    break;
                }
            }
        });
        Follower::collect(task, rx)
    }

    /// `watch::run`: the dashboard's login, reconnects included.
    fn start_runner(p: &Server) -> (Follower, channel::Sender<bool>) {
        let login = C2sOptions {
            jid: format!("{DASHBOARD}@{}", p.domain()).parse().expect("jid"),
            password: DASHBOARD.into(),
            server: Some(p.c2s_addr().to_string()),
            bind_ip: Some(loopback(1)),
            allow_plaintext: true,
        };
        let (stop, stop_rx) = channel::channel(false);
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(watch::run(login, target(p), tx, stop_rx));
        (Follower::collect(task, rx), stop)
    }

    fn collect(
        task: tokio::task::JoinHandle<Result<(), WatchError>>,
        mut rx: mpsc::Receiver<Update>,
    ) -> Follower {
        let board = Arc::new(Mutex::new(Board::default()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let links = Arc::new(Mutex::new(Vec::new()));
        let (changed_tx, changed) = channel::channel(0u64);
        let (b, e, l) = (board.clone(), events.clone(), links.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while let Some(u) = rx.recv().await {
                b.lock().unwrap().update(&u);
                match u {
                    Update::Event { seq, event } => {
                        // Numbered from 1 without a gap, reconnects or not.
                        let mut e = e.lock().unwrap();
                        assert_eq!(seq, e.len() as u64 + 1, "event numbers");
                        e.push(event)
                    }
                    Update::Connected(_) => l.lock().unwrap().push("connected"),
                    Update::Lost { .. } => l.lock().unwrap().push("lost"),
                }
                n += 1;
                let _ = changed_tx.send(n);
            }
        });
        Follower {
            board,
            events,
            links,
            changed,
            task,
        }
    }

    fn board(&self) -> Board {
        self.board.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<WatchEvent> {
        self.events.lock().unwrap().clone()
    }

    async fn wait(&mut self, what: &str, cond: impl Fn(&[WatchEvent]) -> bool) {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            if cond(&self.events.lock().unwrap()) {
                return;
            }
            assert!(
                !self.task.is_finished(),
                "the follower ended: {:?}",
                self.events()
            );
            if tokio::time::timeout_at(deadline, self.changed.changed())
                .await
                .is_err()
            {
                panic!(
                    "follower: timed out waiting for {what}; events: {}",
                    summary(&self.events())
                );
            }
        }
    }
}

/// The events in short: `service:init snapshot(3) set remove ...`.
fn summary(events: &[WatchEvent]) -> String {
    events
        .iter()
        .map(|e| match e {
            WatchEvent::Service(s) => format!("service:{}", s.as_str()),
            WatchEvent::Snapshot(u) => format!("snapshot({})", u.len()),
            other => watch::kind(other).to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn snapshots(events: &[WatchEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, WatchEvent::Snapshot(_)))
        .count()
}

fn services(events: &[WatchEvent]) -> Vec<ServiceStatus> {
    events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Service(s) => Some(*s),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The exact comparison

/// Waits until the follower's state, active and the server's sessions agree
/// with each other and with what the simulated users did; asserts each
/// equality with its difference when they do not within the bound.
async fn assert_converges(
    p: &Server,
    admin: &C2s,
    checker: &Watcher,
    follower: &Follower,
    sim: &Sim,
    users: &[String],
) -> usize {
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let board = follower.board();
        let active = checker.active().await;
        let sessions = user_sessions(admin, p.domain(), &names).await;
        let expected = sim.log.lock().unwrap().expected();
        let state: BTreeMap<String, (Status, String)> = board
            .users
            .values()
            .map(|u| (u.fulljid.clone(), (u.status, u.ip.clone())))
            .collect();
        let active_ips: BTreeMap<String, String> = active
            .iter()
            .map(|(k, v)| (k.clone(), v.ip.clone()))
            .collect();
        let expected_ips: BTreeMap<String, String> = expected
            .iter()
            .map(|(k, (_, ip))| (k.clone(), ip.clone()))
            .collect();
        let agree = board.synced
            && board.users == active
            && active_ips == sessions
            && sessions == expected_ips
            && state == expected;
        if agree {
            return state.len();
        }
        if tokio::time::Instant::now() > deadline {
            assert!(
                board.synced,
                "the follower is not in sync: {:?}",
                board.service
            );
            assert_eq!(
                board.users, active,
                "the follower's state = the items of active"
            );
            assert_eq!(active_ips, sessions, "active = the server's sessions");
            assert_eq!(
                sessions, expected_ips,
                "the server's sessions = the simulated users' connections"
            );
            assert_eq!(state, expected, "statuses = those the users set last");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the follower's state equals the items of active.
async fn assert_board_is_active(f: &Follower, checker: &Watcher) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let active = checker.active().await;
        let board = f.board();
        if board.users == active {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            assert_eq!(board.users, active, "the follower's state = active");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the simulated users: the server never dropped one of them. (A
/// login that had to be retried on a loaded machine is no failure: the
/// states above were compared with what really happened.)
async fn assert_sim_healthy(sim: Sim) {
    let errors = sim.log.lock().unwrap().errors.clone();
    let report = sim.stop().await;
    let lost: Vec<&String> = errors
        .iter()
        .filter(|e| e.contains("closed the connection"))
        .collect();
    assert!(lost.is_empty(), "{report}: {lost:?}");
    if !errors.is_empty() {
        eprintln!("simulated users: {report}: {errors:?}");
    }
}

/// Waits until active holds exactly the `users`' connections (all subscribed).
async fn wait_active(checker: &Watcher, n: usize) -> BTreeMap<String, UserItem> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let active = checker.active().await;
        if active.len() == n {
            return active;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "active has {} items, not {n}",
            active.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// The tests

/// The reference client, test 1: a follower started while the component is in `init`
/// (frozen there with SIGSTOP so that "while" is certain) ends with exactly
/// the server's sessions once the service is online; the users change
/// status during the whole start-up.
async fn follower_started_during_init_converges_exactly(server: Server) {
    let (p, config, mut pp, mut checker, users) = setup(server, "init", 20).await;
    let admin = admin(&p).await;
    let mut sim = Sim::start(&p, &users, SimControl::Hold, |o| {
        o.rate = 40.0;
        o.disconnect_share = 0.15;
    });
    sim.wait("all logged in", |l| l.ready).await;
    wait_active(&checker, users.len()).await;
    sim.run();
    checker.subscribe(STATUS).await;

    // Restart the component and catch it in init. Start-up is quick, so the
    // SIGSTOP may come too late: then let it go and try again.
    let mut caught = false;
    for attempt in 1..=10 {
        assert!(pp.terminate().success(), "clean exit on SIGTERM");
        checker.wait_status(ServiceStatus::Offline).await;
        checker.clear();
        pp = Pubpresence::start(&config);
        checker.wait_status(ServiceStatus::Init).await;
        signal(pp.pid(), Sig::Stop);
        // A publish of online already on its way would land meanwhile.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if checker.status().await == Some(ServiceStatus::Init) {
            eprintln!("caught the component in init at attempt {attempt}");
            caught = true;
            break;
        }
        signal(pp.pid(), Sig::Cont);
        wait_online(&pp, &checker).await;
    }
    assert!(caught, "never caught the component in init");

    let mut f = Follower::start(&p).await;
    f.wait("service init", |e| !services(e).is_empty()).await;
    assert_eq!(
        services(&f.events()),
        vec![ServiceStatus::Init],
        "the follower starts while the service is in init"
    );
    // Changes go on while the component is frozen in its start-up...
    let before = sim.log.lock().unwrap().changes;
    sim.wait("changes during init", |l| l.changes >= before + 20)
        .await;
    assert_eq!(snapshots(&f.events()), 0, "no snapshot before online");
    signal(pp.pid(), Sig::Cont);
    // ... and while it finishes it.
    f.wait("a snapshot", |e| snapshots(e) == 1).await;
    let events = f.events();
    assert_eq!(
        services(&events),
        vec![ServiceStatus::Init, ServiceStatus::Online]
    );
    let online_at = events
        .iter()
        .position(|e| *e == WatchEvent::Service(ServiceStatus::Online));
    let snapshot_at = events
        .iter()
        .position(|e| matches!(e, WatchEvent::Snapshot(_)));
    assert!(online_at < snapshot_at, "{}", summary(&events));

    let after = sim.log.lock().unwrap().changes;
    sim.wait("changes after online", |l| l.changes >= after + 20)
        .await;
    sim.hold().await;
    let n = assert_converges(&p, &admin, &checker, &f, &sim, &users).await;
    assert!(n > 0, "some users are connected at the end");
    assert_eq!(snapshots(&f.events()), 1, "one start-up, one snapshot");
    assert_sim_healthy(sim).await;
    drop(pp);
}

/// The reference client, test 2: a follower started long after start-up, then 30 users ×
/// 30 random changes (statuses, disconnects, reconnects): at the end the
/// follower's state = active's items = the server's sessions.
async fn thirty_users_thirty_changes_each_end_exactly(server: Server) {
    let (p, _config, pp, checker, users) = setup(server, "u", 30).await;
    let admin = admin(&p).await;
    let mut sim = Sim::start(&p, &users, SimControl::Hold, |o| {
        o.rate = 150.0;
        o.disconnect_share = 0.15;
        o.changes_per_connection = Some(30);
    });
    sim.wait("all logged in", |l| l.ready).await;
    wait_active(&checker, users.len()).await;
    // "Long after": the component's start-up is long done.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut f = Follower::start(&p).await;
    f.wait("a snapshot", |e| snapshots(e) == 1).await;
    assert_eq!(
        services(&f.events()),
        vec![ServiceStatus::Online],
        "online from the start"
    );
    // The snapshot is active (read again: nobody changes now, but the
    // component may still be answering the users' first presences).
    assert_board_is_active(&f, &checker).await;

    sim.run();
    sim.wait("30 × 30 changes", |l| l.done).await;
    sim.hold().await;
    assert_eq!(sim.log.lock().unwrap().changes, 30 * 30);
    assert_converges(&p, &admin, &checker, &f, &sim, &users).await;
    assert_eq!(snapshots(&f.events()), 1, "no start-over without a restart");
    assert_sim_healthy(sim).await;
    drop(pp);
}

/// The reference client, test 3: the component restarted under a running follower, once
/// cleanly (offline, init, online) and once killed (init, online): each
/// time the follower starts over by itself and converges again.
async fn component_restarts_under_a_running_follower(server: Server) {
    let (p, config, mut pp, checker, users) = setup(server, "r", 10).await;
    let admin = admin(&p).await;
    let mut sim = Sim::start(&p, &users, SimControl::Hold, |o| {
        o.rate = 20.0;
        o.disconnect_share = 0.1;
    });
    sim.wait("all logged in", |l| l.ready).await;
    wait_active(&checker, users.len()).await;
    sim.run();
    let mut f = Follower::start(&p).await;
    f.wait("a snapshot", |e| snapshots(e) == 1).await;

    // Clean restart: offline, then init, then online and a new snapshot.
    assert!(pp.terminate().success());
    f.wait("service offline", |e| {
        services(e).last() == Some(&ServiceStatus::Offline)
    })
    .await;
    pp = Pubpresence::start(&config);
    f.wait("a second snapshot", |e| snapshots(e) == 2).await;
    let events = f.events();
    assert_eq!(
        services(&events),
        [
            ServiceStatus::Online,
            ServiceStatus::Offline,
            ServiceStatus::Init,
            ServiceStatus::Online
        ],
        "{}",
        summary(&events)
    );
    sim.hold().await;
    assert_converges(&p, &admin, &checker, &f, &sim, &users).await;
    sim.run();

    // Killed: status still says online; the new instance says init first.
    pp.kill();
    pp = Pubpresence::start(&config);
    f.wait("a third snapshot", |e| snapshots(e) == 3).await;
    let events = f.events();
    assert_eq!(
        &services(&events)[4..],
        [ServiceStatus::Init, ServiceStatus::Online],
        "{}",
        summary(&events)
    );
    sim.hold().await;
    assert_converges(&p, &admin, &checker, &f, &sim, &users).await;
    assert!(!f.task.is_finished(), "the same follower all along");
    assert_sim_healthy(sim).await;
    drop(pp);
}

/// `watch::run` (the CLI's loop) through a restart of the server itself:
/// every session dies, the runner logs in again with backoff, starts the
/// procedure over and converges, and the users it sees are the server's.
async fn runner_reconnects_after_a_server_restart(server: Server) {
    let (mut p, _config, pp, checker, users) = setup(server, "s", 8).await;
    let mut sim = Sim::start(&p, &users, SimControl::Hold, |o| {
        o.rate = 20.0;
        o.disconnect_share = 0.1;
    });
    sim.wait("all logged in", |l| l.ready).await;
    wait_active(&checker, users.len()).await;
    sim.run();
    let (mut f, stop) = Follower::start_runner(&p);
    f.wait("a snapshot", |e| snapshots(e) == 1).await;
    drop(checker);

    p.restart();
    f.wait("a snapshot after the restart", |e| snapshots(e) == 2)
        .await;
    // Lost, then refused while the server was down (each a "lost"), then
    // logged in again: once.
    let links = f.links.lock().unwrap().clone();
    assert_eq!(links.first(), Some(&"connected"), "{links:?}");
    assert_eq!(links.last(), Some(&"connected"), "{links:?}");
    assert_eq!(
        links.iter().filter(|l| **l == "connected").count(),
        2,
        "{links:?}"
    );
    // Every simulated user noticed and comes back at its next change.
    sim.wait("every connection lost once", |l| {
        l.errors
            .iter()
            .filter(|e| e.contains("closed the connection"))
            .count()
            >= users.len()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.hold().await;
    let checker = Watcher::connect(&p, CHECKER).await;
    let admin = admin(&p).await;
    assert_converges(&p, &admin, &checker, &f, &sim, &users).await;

    // A clean stop of the runner ends it with Ok.
    stop.send(true).expect("runner alive");
    let r = tokio::time::timeout(T, f.task).await.expect("runner stops");
    assert!(matches!(r, Ok(Ok(()))), "{r:?}");
    sim.stop().await;
    drop(pp);
}

/// The live node deleted behind everyone's back (`pubpresence-lab soak`
/// found both halves): the follower hears the deletion, follows again from
/// the start since its subscription went with the node, its probe has the
/// component find the node gone at once, and it counts nothing before the
/// rebuilt live takes its subscription. It used to keep the dead
/// subscription and go stale; then, once that was mended, to fetch active on
/// the status node's word while live did not exist yet, and miss the changes
/// after its snapshot.
async fn runner_follows_again_after_live_is_deleted(server: Server) {
    let (p, _config, pp, checker, users) = setup(server, "n", 2).await;
    let mut conns = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let c = User::connect(&p, u, "r", loopback(140 + i as u8)).await;
        c.subscribe_to(p.component_jid());
        conns.push(c);
    }
    wait_active(&checker, users.len()).await;
    let (mut f, stop) = Follower::start_runner(&p);
    f.wait("a snapshot", |e| snapshots(e) == 1).await;
    let admin = admin(&p).await;
    admin
        .iq(
            iq_set(p.pubsub_jid(), pubpresence::wire::pubsub::delete(LIVE)),
            T,
        )
        .await
        .expect("the admin deletes live");
    // Nobody changes: the component hears of the deletion from the
    // follower's probe (its subscription to live finds no node), not at its
    // next write or audit (5 min away).
    f.wait("a snapshot after the deletion", |e| snapshots(e) == 2)
        .await;
    assert!(
        pp.log_text().contains("was deleted behind our back"),
        "{}",
        pp.log_text()
    );
    // At once after the snapshot: a change the follower must hear on live.
    conns[1].show(Some("dnd"));
    let who = conns[1].jid.clone();
    f.wait("the change after the new snapshot", |e| {
        let after = e
            .iter()
            .rposition(|e| matches!(e, WatchEvent::Snapshot(_)))
            .unwrap_or(0);
        e[after..]
            .iter()
            .any(|e| matches!(e, WatchEvent::Set(u) if u.fulljid == who && u.status == Status::Dnd))
    })
    .await;
    assert_board_is_active(&f, &checker).await;
    let links = f.links.lock().unwrap().clone();
    assert_eq!(links, ["connected", "lost", "connected"], "one reconnect");
    stop.send(true).expect("runner alive");
    let r = tokio::time::timeout(T, f.task).await.expect("runner stops");
    assert!(matches!(r, Ok(Ok(()))), "{r:?}");
    drop(pp);
}

/// `pubpresence-lab simulate`: the load generator's CLI logs its users in from
/// their own loopback addresses, subscribes them to the component, changes
/// their statuses, stops after `--duration` and reports what it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_command_drives_users() {
    let (p, _config, pp, mut checker, _users) = setup(Server::prosody(), "sim", 3).await;
    checker.subscribe(common::pp::LIVE).await;
    let lab = pubpresence_lab::lab_binary().unwrap_or_else(|e| panic!("{e}"));
    let out = tokio::process::Command::new(lab)
        .args(["simulate", "--server"])
        .arg(p.c2s_addr().to_string())
        .args(["--domain", p.domain(), "--component", p.component_jid()])
        .args(["--users", "3", "--resources", "2", "--rate", "12"])
        .args([
            "--duration",
            "3s",
            "--first-ip",
            "127.0.0.50",
            "--seed",
            "7",
        ])
        .arg("--allow-plaintext")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(T, out)
        .await
        .expect("simulate stops by itself")
        .expect("run simulate");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("simulated 6 connections for "),
        "{stdout}"
    );
    let changes: u64 = stdout
        .split(": ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count of changes in {stdout:?}"));
    assert!(changes > 5, "{stdout}");
    // The component saw every connection, each from its own address.
    checker
        .wait_until("six connections on live", T, |s| {
            s.live
                .iter()
                .map(|i| (i.fulljid.clone(), i.ip.clone()))
                .filter(|(_, ip)| !ip.is_empty())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                >= 6
        })
        .await;
    let seen: BTreeMap<String, String> = checker
        .seen()
        .live
        .iter()
        .filter(|i| !i.ip.is_empty())
        .map(|i| (i.fulljid.clone(), i.ip.clone()))
        .collect();
    let want: BTreeMap<String, String> = [
        ("sim1@localhost/desk", "127.0.0.50"),
        ("sim1@localhost/phone", "127.0.0.51"),
        ("sim2@localhost/desk", "127.0.0.52"),
        ("sim2@localhost/phone", "127.0.0.53"),
        ("sim3@localhost/desk", "127.0.0.54"),
        ("sim3@localhost/phone", "127.0.0.55"),
    ]
    .into_iter()
    .map(|(j, ip)| (j.to_string(), ip.to_string()))
    .collect();
    assert_eq!(seen, want);
    // Everyone logged out at the end.
    let deadline = tokio::time::Instant::now() + T;
    while !checker.active().await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "active empties");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(pp);
}

// ---------------------------------------------------------------------------
// The demo command

/// Where the demo says its Prosody runs: (pid, directory).
fn demo_prosody(stderr: &str) -> (u32, std::path::PathBuf) {
    let line = stderr
        .lines()
        .find(|l| l.contains("Prosody (pid "))
        .unwrap_or_else(|| panic!("the demo names its Prosody:\n{stderr}"));
    let pid = line
        .split("(pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a pid in {line:?}"));
    let dir = line
        .rsplit(" in ")
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("a directory in {line:?}"));
    (pid, dir)
}

/// The JSON lines of the demo: every line an object with `event` and `at`.
fn demo_events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v["event"].is_string() && v["at"].is_string(), "{l}");
            v
        })
        .collect()
}

/// Names of demo users seen in snapshot or set events, with their IPs.
fn demo_users_seen(events: &[serde_json::Value]) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    for e in events {
        let items: Vec<&serde_json::Value> = match e["event"].as_str() {
            Some("snapshot") => e["users"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            Some("set") => vec![e],
            _ => vec![],
        };
        for i in items {
            if let (Some(jid), Some(ip)) = (i["fulljid"].as_str(), i["ip"].as_str()) {
                seen.insert(jid.to_string(), ip.to_string());
            }
        }
    }
    seen
}

fn assert_cleaned_up(pid: u32, dir: &std::path::Path) {
    assert!(!dir.exists(), "the demo removed {}", dir.display());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the demo's Prosody (pid {pid}) is gone"
    );
}

fn assert_shows_users(stdout: &str) {
    let events = demo_events(stdout);
    let seen = demo_users_seen(&events);
    assert!(
        seen.len() >= 5,
        "the demo shows its users: {seen:?}\n{stdout}"
    );
    for (jid, ip) in &seen {
        assert!(jid.contains("@localhost/"), "{jid}");
        // Empty for a moment when a connection ends before the component
        // has learned its address (a demo user may disconnect at once).
        assert!(
            ip.is_empty() || ip.starts_with("127.0."),
            "{jid} from a loopback address: {ip}"
        );
    }
    let distinct_ips: std::collections::BTreeSet<&String> =
        seen.values().filter(|ip| !ip.is_empty()).collect();
    assert!(
        distinct_ips.len() >= 5,
        "several loopback addresses: {seen:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "service" && e["status"] == "online"),
        "{stdout}"
    );
}

/// `pubpresence-lab demo` (what scripts/demo.sh runs) runs for a few seconds, shows its
/// users, stops by itself (`--duration`) or on SIGINT (Ctrl-C), and leaves
/// nothing behind.
#[test]
fn demo_runs_shows_users_and_cleans_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let lab = pubpresence_lab::lab_binary().unwrap_or_else(|e| panic!("{e}"));
    let run = |args: &[&str]| {
        Command::new(&lab)
            .arg("demo")
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("start the demo")
    };
    let wait = |child: &mut std::process::Child, limit: Duration| {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the demo did not stop within {limit:?}; stderr:\n{}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();

    // --duration: stops by itself.
    let mut child = run(&["--duration", "6", "--json"]);
    let status = wait(&mut child, Duration::from_secs(60));
    let (stdout, stderr) = (read(&out), read(&err));
    assert!(status.success(), "demo exit {status}; stderr:\n{stderr}");
    assert_shows_users(&stdout);
    let events = demo_events(&stdout);
    assert_eq!(
        events
            .last()
            .map(|e| (e["event"].clone(), e["status"].clone())),
        Some(("service".into(), "offline".into())),
        "the component said offline last"
    );
    let (pid, prosody_dir) = demo_prosody(&stderr);
    assert_cleaned_up(pid, &prosody_dir);

    // Ctrl-C (SIGINT): stops everything it started.
    let mut child = run(&["--json"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Only whole lines: the demo may be writing the last one.
    let whole = |s: String| s[..s.rfind('\n').map_or(0, |i| i + 1)].to_string();
    while demo_users_seen(&demo_events(&whole(read(&out)))).len() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "no users shown; stderr:\n{}",
            read(&err)
        );
        assert!(child.try_wait().expect("wait").is_none(), "{}", read(&err));
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(child.id(), Sig::Int);
    let status = wait(&mut child, Duration::from_secs(60));
    let stderr = read(&err);
    assert!(
        status.success(),
        "demo exit {status} on SIGINT; stderr:\n{stderr}"
    );
    assert_shows_users(&read(&out));
    let (pid, prosody_dir) = demo_prosody(&stderr);
    assert_cleaned_up(pid, &prosody_dir);
}

// The client suite on both servers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_started_during_init_converges_exactly_on_prosody() {
    follower_started_during_init_converges_exactly(Server::prosody()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_started_during_init_converges_exactly_on_ejabberd() {
    follower_started_during_init_converges_exactly(Server::ejabberd()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_users_thirty_changes_each_end_exactly_on_prosody() {
    thirty_users_thirty_changes_each_end_exactly(Server::prosody()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_users_thirty_changes_each_end_exactly_on_ejabberd() {
    thirty_users_thirty_changes_each_end_exactly(Server::ejabberd()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_restarts_under_a_running_follower_on_prosody() {
    component_restarts_under_a_running_follower(Server::prosody()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_restarts_under_a_running_follower_on_ejabberd() {
    component_restarts_under_a_running_follower(Server::ejabberd()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_reconnects_after_a_server_restart_on_prosody() {
    runner_reconnects_after_a_server_restart(Server::prosody()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_reconnects_after_a_server_restart_on_ejabberd() {
    runner_reconnects_after_a_server_restart(Server::ejabberd()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_follows_again_after_live_is_deleted_on_prosody() {
    runner_follows_again_after_live_is_deleted(Server::prosody()).await;
}

// Not on ejabberd: there only the owner (the component) may delete its
// nodes, and the server's admin is refused ("Owner privileges required").
