//! The soak's loop: churn a while, hold the users still and check; inject a
//! fault while they churn, hold them still and check again, timing how long
//! the parties took to agree.

mod inject;
mod setup;

pub use setup::run;

use super::check::{self, Table, Truth};
use super::component::{ComponentProc, Instance, Instances};
use super::faults::{FaultKind, Plan};
use super::lag::{Impair, Lag};
use super::parts::{self, Admin, WatchProc};
use super::server::Server;
use super::{Report, SoakArgs};
use crate::sim::{self, SimControl, SimEvent, SimOptions};
use crate::{lock, passed};
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

struct Soak {
    started: Instant,
    server: Server,
    /// The relays between the component and the server (`lag`).
    lag: Lag,
    component: Instances,
    watch: WatchProc,
    admin: Admin,
    /// A whitelist member: reads active.
    reader: Admin,
    http: reqwest::Client,
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
        // (With a standby: exactly one instance active, too.)
        out.extend(self.component.disagreement(&self.http).await);
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
        let c = at(self.component.list[self.component.current].proc.pid());
        let w = at(self.watch.pid());
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

    /// SIGTERM to instance `k` of the component, which must exit 0.
    async fn terminate(&mut self, k: usize, context: &str) {
        let i = &mut self.component.list[k];
        let status = i.proc.terminate().await;
        if !status.is_some_and(|s| s.success()) {
            let name = i.name.clone();
            self.diverged(
                context,
                vec![format!(
                    "instance {name} did not exit cleanly on SIGTERM: {status:?}"
                )],
            );
        }
    }

    async fn fault(&mut self, plan: &mut Plan) -> anyhow::Result<()> {
        let f = plan.next_fault();
        let ended = self.inject(&f).await?;
        let context = f.to_string();
        if !self.hold().await {
            self.diverged(&context, vec!["the users did not get still".into()]);
        }
        let agreed = self.converge(CONVERGE).await;
        self.lag.set(Impair::default());
        match agreed {
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
