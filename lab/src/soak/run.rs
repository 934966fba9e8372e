//! The soak's loop: churn a while, hold the users still and check; inject a
//! fault while they churn, hold them still and check again, timing how long
//! the parties took to agree.

use super::check::{self, Table, Truth};
use super::faults::{Fault, FaultKind, Plan};
use super::parts::{self, lock, Admin, ComponentProc, WatchProc};
use super::server::Server;
use super::{Report, SoakArgs};
use crate::process::Sig;
use crate::sim::{self, SimControl, SimEvent, SimOptions};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The web feed's token in the soak's watch config.
const TOKEN: &str = "soak-token-4f1c9a";
/// How long the parties may take to agree after a fault.
const CONVERGE: Duration = Duration::from_secs(90);
/// How long the users may take to be still once told to hold.
const HOLD: Duration = Duration::from_secs(120);

/// A running simulation and the counters its events move.
struct Sim {
    control: watch::Sender<SimControl>,
    task: tokio::task::JoinHandle<()>,
}

/// Counts of `Held` and `Ready` events, to wait on.
#[derive(Clone)]
struct Signals {
    held: watch::Sender<u64>,
    ready: watch::Sender<u64>,
}

fn start_sim(opts: SimOptions, truth: Arc<Mutex<Truth>>, signals: Signals, run: SimControl) -> Sim {
    let (control, rx) = watch::channel(run);
    let (tx, mut events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                SimEvent::Held => signals.held.send_modify(|n| *n += 1),
                SimEvent::Ready { .. } => signals.ready.send_modify(|n| *n += 1),
                other => lock(&truth).apply(&other),
            }
        }
    });
    let task = tokio::spawn(async move {
        if let Err(e) = sim::run(opts, rx, Some(tx)).await {
            tracing::error!("simulated users: {e}");
        }
    });
    Sim { control, task }
}

/// Waits until `counter` passes `from`.
async fn passed(counter: &watch::Sender<u64>, from: u64, limit: Duration) -> bool {
    let mut rx = counter.subscribe();
    tokio::time::timeout(limit, rx.wait_for(|n| *n > from))
        .await
        .is_ok_and(|r| r.is_ok())
}

struct Soak {
    started: Instant,
    server: Server,
    component: ComponentProc,
    watch: WatchProc,
    admin: Admin,
    /// A whitelist member: reads active.
    reader: Admin,
    http: reqwest::Client,
    metrics: String,
    sse: Arc<Mutex<parts::SseState>>,
    sse_cut: watch::Sender<Duration>,
    truth: Arc<Mutex<Truth>>,
    signals: Signals,
    /// The users, one simulation per node.
    users: Vec<Sim>,
    running: bool,
    burst: Option<Sim>,
    burst_opts: SimOptions,
    bares: Vec<String>,
    report: Report,
    /// The last agreed state and when it was agreed.
    last_active: Table,
    last_check: Instant,
    /// Where the reference client's live events stood at the last check.
    live_mark: usize,
    resync_mark: usize,
    /// Seconds to agreement by kind of fault: from its end, and from the
    /// users' being still.
    converge: BTreeMap<String, Vec<f64>>,
    settle: BTreeMap<String, Vec<f64>>,
}

impl Soak {
    fn t(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn diverged(&mut self, context: &str, lines: Vec<String>) {
        let t = self.t();
        for l in lines.into_iter().take(12) {
            tracing::error!("divergence at {t:.1} s ({context}): {l}");
            self.report
                .divergences
                .push(format!("[{t:.1} s, {context}] {l}"));
        }
    }

    fn churn(&mut self) {
        if !self.running {
            for u in &self.users {
                let _ = u.control.send(SimControl::Run);
            }
            self.running = true;
        }
    }

    /// Holds the users still; false if they did not get still in time.
    async fn hold(&mut self) -> bool {
        if !self.running {
            return true;
        }
        let from = *self.signals.held.borrow();
        for u in &self.users {
            let _ = u.control.send(SimControl::Hold);
        }
        self.running = false;
        // Each simulation says Held once all its connections are idle.
        passed(&self.signals.held, from + self.users.len() as u64 - 1, HOLD).await
    }

    /// One comparison of every party: the differences (empty: agreed) and
    /// active as read.
    async fn compare(&mut self) -> (Vec<String>, Option<Table>) {
        if self.component.exited() {
            return (
                vec![format!(
                    "the component exited by itself; its log ends:\n{}",
                    self.component.log_tail(20)
                )],
                None,
            );
        }
        let pubsub = self.server.pubsub_jid().to_string();
        let component = self.server.component_jid().to_string();
        let Some(active) = self.reader.active(&pubsub, &component).await else {
            return (vec!["active cannot be read".into()], None);
        };
        let truth = lock(&self.truth).table();
        let mut out = check::diff("truth", &truth, "active", &active);
        // Tables can agree while a change is still being written (a session
        // that came and went during a fault, its address still looked up):
        // agreement also needs the component to have nothing in flight.
        match parts::in_flight(&self.http, &self.metrics).await {
            Some(0) => {}
            Some(n) => out.push(format!("the component has {n} requests in flight")),
            None => out.push("the component's metrics cannot be read".into()),
        }
        let (reference, ref_seq) = {
            let r = lock(&self.watch.state);
            (r.table.clone(), r.last_seq)
        };
        match parts::get_state(&self.http, &self.watch.base, TOKEN).await {
            None => out.push("the web feed's /state cannot be read".into()),
            Some(s) => {
                if s.service != "online" || !s.synced {
                    out.push(format!("/state: service {} synced {}", s.service, s.synced));
                }
                out.extend(check::diff("active", &active, "/state", &s.table));
                if s.seq != ref_seq {
                    out.push(format!(
                        "/state is at event {} but watch --json's last line at {ref_seq}",
                        s.seq
                    ));
                }
            }
        }
        out.extend(check::diff("active", &active, "watch --json", &reference));
        let sse = lock(&self.sse).table.clone();
        out.extend(check::diff("active", &active, "/events", &sse));
        if out.is_empty() {
            // Last, as it costs a command per user: the server's own
            // sessions are the users' (addresses included).
            let domain = self.server.domain().to_string();
            match self.admin.sessions(&domain, &self.bares).await {
                None => out.push("the server's sessions cannot be read".into()),
                Some(sessions) => {
                    let mut addresses = truth.clone();
                    for row in addresses.values_mut() {
                        row.status.clear();
                    }
                    out.extend(check::diff(
                        "the users",
                        &addresses,
                        "the server",
                        &sessions,
                    ));
                }
            }
        }
        (out, Some(active))
    }

    /// Compares until every party agrees or `limit` passes; the time taken,
    /// or the differences at the end.
    async fn converge(&mut self, limit: Duration) -> Result<(Duration, Table), Vec<String>> {
        let from = Instant::now();
        loop {
            let (diffs, active) = self.compare().await;
            if diffs.is_empty() {
                if let Some(a) = active {
                    return Ok((from.elapsed(), a));
                }
            }
            if from.elapsed() > limit {
                return Err(diffs);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn sample_memory(&mut self, first: bool) {
        let at = |pid: Option<u32>| pid.and_then(crate::bench::rss_kib).unwrap_or(0);
        let (c, w) = (at(self.component.pid()), at(self.watch.pid()));
        for (slot, v) in [
            (&mut self.report.component_rss, c),
            (&mut self.report.watch_rss, w),
        ] {
            if first {
                slot[0] = v;
            }
            if v > 0 {
                slot[1] = v;
            }
            slot[2] = slot[2].max(v);
        }
    }

    /// The checks once agreed: `since` against the last agreed state, and
    /// (after a quiet stretch) the live events against the acts.
    fn agreed(&mut self, active: Table, context: &str, quiet_from: Option<Instant>) {
        let now = Instant::now();
        let acts = lock(&self.truth).acts_between(self.last_check, now);
        let back = check::since_backwards(&self.last_active, &active, &acts);
        self.report.checks += 7;
        self.diverged(context, back);
        let (live, resyncs) = {
            let s = lock(&self.watch.state);
            (
                s.live[self.live_mark.min(s.live.len())..].to_vec(),
                s.resyncs,
            )
        };
        if let Some(from) = quiet_from {
            let quiet_acts = lock(&self.truth).acts_between(from, now);
            self.report.checks += 1;
            self.report.live_events += live.len();
            let mut lines = check::live_matches(&quiet_acts, &live);
            if resyncs != self.resync_mark {
                lines.push(format!(
                    "the reference client resynced {} times in a quiet stretch",
                    resyncs - self.resync_mark
                ));
            }
            self.diverged(context, lines);
        }
        self.live_mark += live.len();
        self.resync_mark = resyncs;
        self.last_active = active;
        self.last_check = now;
        self.sample_memory(false);
    }

    /// Churn a quiet while, hold still, check everything.
    async fn quiet(&mut self, plan: &mut Plan) {
        let from = Instant::now();
        self.churn();
        tokio::time::sleep(plan.quiet()).await;
        if !self.hold().await {
            self.diverged("quiet", vec!["the users did not get still".into()]);
        }
        match self.converge(Duration::from_secs(20)).await {
            Ok((_, active)) => self.agreed(active, "quiet", Some(from)),
            Err(d) => {
                self.diverged("quiet: no agreement without any fault", d);
                self.resync();
            }
        }
    }

    /// After a failed agreement: the next stretch starts from what is now.
    fn resync(&mut self) {
        let s = lock(&self.watch.state);
        self.live_mark = s.live.len();
        self.resync_mark = s.resyncs;
        drop(s);
        self.last_check = Instant::now();
    }

    /// SIGTERM to the component, which must exit 0.
    async fn terminate(&mut self, context: &str) {
        let status = self.component.terminate().await;
        if !status.is_some_and(|s| s.success()) {
            self.diverged(
                context,
                vec![format!(
                    "the component did not exit cleanly on SIGTERM: {status:?}"
                )],
            );
        }
    }

    /// Injects the fault (the users churning all along) and returns when
    /// it ended.
    async fn inject(&mut self, f: &Fault) -> anyhow::Result<Instant> {
        let t = self.t();
        self.report.history.push((t, f.to_string()));
        *self.report.faults.entry(f.kind.name().into()).or_default() += 1;
        tracing::info!("{t:.1} s: {f}");
        let _ = self.sse_cut.send(f.consumer_away);
        self.churn();
        match f.kind {
            FaultKind::Kill9 => {
                self.component.kill9();
                tokio::time::sleep(f.hold).await;
                self.component.start()?;
            }
            FaultKind::Freeze => {
                self.component.signal(Sig::Stop);
                tokio::time::sleep(f.hold).await;
                self.component.signal(Sig::Cont);
            }
            FaultKind::Restart => {
                self.terminate("restart").await;
                tokio::time::sleep(f.hold).await;
                self.component.start()?;
            }
            FaultKind::ServerRestart => {
                let server = &mut self.server;
                tokio::task::block_in_place(|| server.restart())?;
            }
            FaultKind::NodeKill => {
                let server = &mut self.server;
                tokio::task::block_in_place(|| server.kill_last_node())?;
                tokio::time::sleep(f.hold).await;
                let server = &mut self.server;
                tokio::task::block_in_place(|| server.start_last_node())?;
            }
            FaultKind::Cut => {
                let ports: Vec<String> = self
                    .server
                    .component_ports()
                    .iter()
                    .map(|p| format!("dport = :{p}"))
                    .collect();
                let out = tokio::process::Command::new("ss")
                    .args(["-K", "-tn", "state", "established"])
                    .arg(format!("( {} )", ports.join(" or ")))
                    .output()
                    .await;
                match out {
                    Ok(o) if o.status.success() => {}
                    Ok(o) => anyhow::bail!(
                        "ss -K failed ({}): cutting a connection needs root and a kernel with CONFIG_INET_DIAG_DESTROY",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                    Err(e) => anyhow::bail!("ss (iproute2) cannot run: {e}"),
                }
            }
            FaultKind::LoginBurst => match self.burst.take() {
                Some(b) => {
                    let _ = b.control.send(SimControl::Stop);
                    let _ = b.task.await;
                    lock(&self.truth).drop_prefix("burst");
                }
                None => {
                    let from = *self.signals.ready.borrow();
                    let b = start_sim(
                        self.burst_opts.clone(),
                        self.truth.clone(),
                        self.signals.clone(),
                        SimControl::Run,
                    );
                    self.burst = Some(b);
                    if !passed(&self.signals.ready, from, Duration::from_secs(60)).await {
                        self.diverged("login-burst", vec!["the burst did not log in".into()]);
                    }
                }
            },
            FaultKind::Hostile => {
                let component = self.server.component_jid().to_string();
                let reader = lock(&self.watch.jid).clone();
                let sent = self.admin.hostile(&component, reader.as_deref()).await;
                tracing::info!("{sent} hostile stanzas sent");
            }
            FaultKind::NodeDeleted => {
                let node = if f.live_node {
                    parts::LIVE
                } else {
                    parts::ACTIVE
                };
                let pubsub = self.server.pubsub_jid().to_string();
                if let Err(e) = self.admin.delete_node(&pubsub, node).await {
                    tracing::warn!("deleting {node} failed: {e}");
                }
            }
        }
        let ended = Instant::now();
        tokio::time::sleep(f.churn_after).await;
        Ok(ended)
    }

    async fn fault(&mut self, plan: &mut Plan) -> anyhow::Result<()> {
        let f = plan.next_fault();
        let ended = self.inject(&f).await?;
        let context = f.to_string();
        if !self.hold().await {
            self.diverged(&context, vec!["the users did not get still".into()]);
        }
        match self.converge(CONVERGE).await {
            Ok((settled, active)) => {
                let kind = f.kind.name().to_string();
                self.converge
                    .entry(kind.clone())
                    .or_default()
                    .push(ended.elapsed().as_secs_f64());
                self.settle
                    .entry(kind)
                    .or_default()
                    .push(settled.as_secs_f64());
                self.agreed(active, &context, None);
            }
            Err(d) => {
                self.diverged(&format!("{context}: no agreement in {CONVERGE:?}"), d);
                self.resync();
            }
        }
        Ok(())
    }
}

/// Runs the soak on a throwaway Prosody, or a two-node ejabberd cluster.
pub async fn run(args: &SoakArgs, seed: u64) -> anyhow::Result<Report> {
    if let Some(k) = args
        .faults
        .iter()
        .find(|k| !k.applies(args.ejabberd_cluster))
    {
        anyhow::bail!(
            "--faults {}: not on {} (node-deleted is Prosody's, node-kill the cluster's)",
            k.name(),
            if args.ejabberd_cluster {
                "the ejabberd cluster"
            } else {
                "Prosody"
            }
        );
    }
    let bin = crate::product_binary()?;
    let users = args.users.max(1);
    let burst_users = (users / 2).max(4);
    let mut names = vec!["dashboard".to_string(), "checker".to_string()];
    names.extend((1..=users).map(|i| format!("sim{i}")));
    names.extend((1..=burst_users).map(|i| format!("burst{i}")));
    let server = Server::start(args.ejabberd_cluster, names).await?;
    let domain = server.domain().to_string();
    let component_jid = server.component_jid().to_string();
    let dir = server.dir().to_path_buf();
    let addrs = server.c2s_addrs();
    // Not the admin: on Prosody a node's own affiliation wins over the
    // server admin's owner rights, so a member admin could not delete nodes.
    let (dashboard, checker) = (format!("dashboard@{domain}"), format!("checker@{domain}"));
    // A user whose first login falls while the component is down asks it
    // for a subscription in vain (the server bounces it); the component
    // asks such users itself (README, "doctor": unseen-sessions). Without
    // it, a login burst during a kill -9 is never tracked.
    let component_toml = format!(
        "subscribe_unseen = true\n{}",
        server.config_toml(&[dashboard.as_str(), checker.as_str()])
    );
    // Its metrics say when every change it has seen is written
    // (`pubpresence_requests_in_flight`): agreement needs that too.
    let metrics_port = crate::free_ports(1)?[0];
    let config = dir.join("pubpresence.toml");
    std::fs::write(
        &config,
        format!("{component_toml}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"),
    )?;
    let watch_config = dir.join("watch.toml");
    std::fs::write(
        &watch_config,
        format!(
            "{component_toml}\n[watch]\njid = \"dashboard@{domain}\"\npassword = \"dashboard\"\n\
             server = \"{}\"\nallow_plaintext = true\nhttp_token = \"{TOKEN}\"\n",
            addrs[0]
        ),
    )?;
    let mut component = ComponentProc::new(bin.clone(), config, dir.join("component.log"));
    component.start()?;
    let watch = WatchProc::start(&bin, &watch_config, &dir).await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let (sse_cut, cut_rx) = watch::channel(Duration::ZERO);
    let sse = parts::spawn_sse(
        http.clone(),
        format!("{}/events", watch.base),
        TOKEN.into(),
        cut_rx,
    );
    let truth = Arc::new(Mutex::new(Truth::default()));
    let signals = Signals {
        held: watch::channel(0).0,
        ready: watch::channel(0).0,
    };
    // The users, spread over the nodes (user i on node i mod n), each
    // connection from its own address.
    let all = sim::numbered_users("sim", users, 2);
    let mut sims = Vec::new();
    let mut next_ip = 0usize;
    for (k, addr) in addrs.iter().enumerate() {
        let mut opts = SimOptions::numbered(
            addr.to_string(),
            domain.clone(),
            component_jid.clone(),
            "sim",
            0,
            2,
        );
        opts.users = all
            .iter()
            .enumerate()
            .filter(|(i, _)| i % addrs.len() == k)
            .map(|(_, u)| u.clone())
            .collect();
        if opts.users.is_empty() {
            continue;
        }
        opts.rate = args.rate * opts.users.len() as f64 / users as f64;
        opts.seed = seed.wrapping_add(k as u64);
        opts.first_ip = sim::address(Ipv4Addr::new(127, 0, 0, 2), next_ip)
            .ok_or_else(|| anyhow::anyhow!("too many users for 127.0.0.0/8"))?;
        next_ip += opts.connections();
        sims.push(opts);
    }
    let first_burst_ip = sim::address(Ipv4Addr::new(127, 0, 0, 2), next_ip)
        .ok_or_else(|| anyhow::anyhow!("too many users for 127.0.0.0/8"))?;
    let mut burst_opts = SimOptions::numbered(
        addrs[0].to_string(),
        domain.clone(),
        component_jid.clone(),
        "burst",
        burst_users,
        1,
    );
    burst_opts.rate = 0.0;
    burst_opts.first_ip = first_burst_ip;
    burst_opts.login_concurrency = burst_users;
    burst_opts.seed = seed;
    let connections = next_ip;
    let ready_from = *signals.ready.borrow();
    let n_sims = sims.len() as u64;
    let users_sims: Vec<Sim> = sims
        .into_iter()
        .map(|o| start_sim(o, truth.clone(), signals.clone(), SimControl::Hold))
        .collect();
    if !passed(
        &signals.ready,
        ready_from + n_sims - 1,
        Duration::from_secs(120),
    )
    .await
    {
        anyhow::bail!("the simulated users did not all log in within 2 minutes");
    }
    let mut bares: Vec<String> = (1..=users).map(|i| format!("sim{i}@{domain}")).collect();
    bares.extend((1..=burst_users).map(|i| format!("burst{i}@{domain}")));
    let label = server.label();
    let admin = Admin::new(format!("admin@{domain}/soak"), "admin", addrs[0]);
    let reader = Admin::new(format!("{checker}/soak"), "checker", addrs[0]);
    let mut soak = Soak {
        started: Instant::now(),
        server,
        component,
        watch,
        admin,
        reader,
        http,
        metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
        sse,
        sse_cut,
        truth,
        signals,
        users: users_sims,
        running: true,
        burst: None,
        burst_opts,
        bares,
        report: Report {
            seed,
            server: label,
            connections,
            ..Report::default()
        },
        last_active: Table::new(),
        last_check: Instant::now(),
        live_mark: 0,
        resync_mark: 0,
        converge: BTreeMap::new(),
        settle: BTreeMap::new(),
    };
    // Every user logged in and still: the first agreement.
    soak.running = false;
    match soak.converge(Duration::from_secs(60)).await {
        Ok((_, active)) => {
            soak.sample_memory(true);
            soak.agreed(active, "start", None);
        }
        Err(d) => {
            soak.diverged("start: no agreement", d);
            soak.resync();
        }
    }
    let cluster = args.ejabberd_cluster;
    let kinds: Vec<FaultKind> = if args.faults.is_empty() {
        FaultKind::ALL
            .into_iter()
            .filter(|k| k.applies(cluster))
            .collect()
    } else {
        args.faults.clone()
    };
    let mut plan = Plan::new(seed, &kinds);
    let end = Instant::now() + args.duration;
    let outcome = async {
        while Instant::now() < end {
            soak.quiet(&mut plan).await;
            soak.fault(&mut plan).await?;
        }
        soak.quiet(&mut plan).await;
        anyhow::Ok(())
    }
    .await;
    soak.sample_memory(false);
    soak.report.seconds = soak.t();
    soak.report.acts = lock(&soak.truth).acts();
    {
        let s = lock(&soak.sse);
        soak.report.sse_resumed = s.resumed;
        soak.report.sse_reset = s.reset;
    }
    for (k, v) in std::mem::take(&mut soak.converge) {
        if let Some((p50, p99, max)) = check::percentiles(v) {
            soak.report.converge.insert(k, [p50, p99, max]);
        }
    }
    for (k, v) in std::mem::take(&mut soak.settle) {
        if let Some((p50, p99, max)) = check::percentiles(v) {
            soak.report.settle.insert(k, [p50, p99, max]);
        }
    }
    // A clean stop at the end, too.
    for u in std::mem::take(&mut soak.users) {
        let _ = u.control.send(SimControl::Stop);
        let _ = u.task.await;
    }
    if let Some(b) = soak.burst.take() {
        let _ = b.control.send(SimControl::Stop);
        let _ = b.task.await;
    }
    soak.terminate("end").await;
    let Soak {
        mut server, report, ..
    } = soak;
    if !report.divergences.is_empty() {
        // The logs of every part, for the divergences' story.
        let kept = server.keep();
        eprintln!(
            "pubpresence soak: logs kept in {} (component.log, watch.log and the server's)",
            kept.display()
        );
    }
    let _ = tokio::task::spawn_blocking(move || drop(server)).await;
    outcome?;
    Ok(report)
}
