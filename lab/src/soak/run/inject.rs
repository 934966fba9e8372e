//! The faults done: what each kind does to the component, the server or
//! the users (drawn by `faults::Plan`).

use super::{lock, parts, passed, start_sim, Soak};
use crate::process::Sig;
use crate::sim::SimControl;
use crate::soak::faults::{Fault, FaultKind};
use crate::soak::lag::Impair;
use std::time::{Duration, Instant};

impl Soak {
    /// Injects the fault (the users churning all along) and returns when
    /// it ended.
    pub(super) async fn inject(&mut self, f: &Fault) -> anyhow::Result<Instant> {
        let t = self.t();
        let mut what = f.to_string();
        if self.component.standby() {
            let k = self.component.active(&self.http).await;
            what += &format!(" [{} active]", self.component.list[k].name);
        }
        self.report.history.push((t, what.clone()));
        *self.report.faults.entry(f.kind.name().into()).or_default() += 1;
        tracing::info!("{t:.1} s: {what}");
        let _ = self.sse_cut.send(f.consumer_away);
        self.churn();
        // The instance active now takes what is meant for the component.
        let k = self.component.active(&self.http).await;
        match f.kind {
            FaultKind::Kill9 => {
                self.component.list[k].proc.kill9();
                tokio::time::sleep(f.hold).await;
                self.component.list[k].proc.start()?;
            }
            FaultKind::Freeze => {
                self.component.list[k].proc.signal(Sig::Stop);
                tokio::time::sleep(f.hold).await;
                self.component.list[k].proc.signal(Sig::Cont);
            }
            FaultKind::Restart => {
                self.terminate(k, "restart").await;
                tokio::time::sleep(f.hold).await;
                self.component.list[k].proc.start()?;
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
            FaultKind::Lag => {
                self.lag.set(Impair {
                    delay: f.delay,
                    loss: f64::from(f.loss_per_mille) / 1000.0,
                });
                // Lifted once the check after it agreed (`Soak::fault`): the
                // parties must also agree through a slow link.
                tokio::time::sleep(f.hold).await;
            }
            FaultKind::Cut => {
                // Both legs: the component's own connection (to the relay)
                // and the relay's to the server.
                let ports: Vec<String> = self
                    .server
                    .component_ports()
                    .iter()
                    .chain(&self.lag.ports())
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
}
