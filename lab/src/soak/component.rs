//! The component under test: one instance, or two with `[standby]`
//! (`--standby`), each a child process to kill, freeze and restart, with its
//! metrics endpoint. The faults that hit "the component" hit whichever
//! instance is active when they strike; the other must take over (README,
//! "Running two instances").

use super::parts::{gauge, in_flight, io};
use crate::process::{self, Sig};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `pubpresence run` as a child process, its log appended to one file
/// across restarts.
pub struct ComponentProc {
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl ComponentProc {
    pub fn new(bin: PathBuf, config: PathBuf, log: PathBuf) -> ComponentProc {
        ComponentProc {
            bin,
            config,
            log,
            child: None,
        }
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io("component log"))?;
        let child = Command::new(&self.bin)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env_remove("PUBPRESENCE_SECRET")
            // One line per presence received (a divergence's story).
            .env("RUST_LOG", "pubpresence=debug,info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("component log"))?)
            .stderr(log)
            .spawn()
            .map_err(io("starting pubpresence run"))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn signal(&self, sig: Sig) {
        if let Some(pid) = self.pid() {
            process::signal(pid, sig);
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::kill(&mut c);
        }
    }

    /// SIGTERM and wait (SIGKILL after 15 s); the exit status, if it exited.
    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        process::stop_async(&mut c, Duration::from_secs(15))
            .await
            .status()
    }

    /// The process ended by itself.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for ComponentProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One instance and where its metrics are.
pub struct Instance {
    pub proc: ComponentProc,
    pub metrics: String,
    pub name: String,
}

/// The instances of the component.
pub struct Instances {
    pub list: Vec<Instance>,
    /// The index of the instance last found active.
    pub current: usize,
    /// How often the active instance was found to have changed.
    pub takeovers: usize,
}

impl Instances {
    pub fn standby(&self) -> bool {
        self.list.len() > 1
    }

    fn found_active(&mut self, k: usize) {
        if k != self.current {
            self.takeovers += 1;
            self.current = k;
        }
    }

    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in &mut self.list {
            i.proc.start()?;
        }
        Ok(())
    }

    /// The instance active now, as its metrics say (`pubpresence_role`);
    /// with one instance, that one. During a takeover nobody may be: then
    /// the one last found active.
    pub async fn active(&mut self, http: &reqwest::Client) -> usize {
        if self.standby() {
            for (k, i) in self.list.iter().enumerate() {
                if gauge(http, &i.metrics, "pubpresence_role").await == Some(1) {
                    self.found_active(k);
                    break;
                }
            }
        }
        self.current
    }

    /// What keeps the instances from agreeing with the rest: one exited by
    /// itself, or (with a standby) not exactly one active; and the active
    /// one's requests still in flight, or its not being online.
    pub async fn disagreement(&mut self, http: &reqwest::Client) -> Vec<String> {
        let mut out = Vec::new();
        for i in &mut self.list {
            if i.proc.exited() {
                out.push(format!(
                    "instance {} exited by itself; its log ends:\n{}",
                    i.name,
                    i.proc.log_tail(20)
                ));
            }
        }
        if self.standby() {
            let mut roles = Vec::new();
            for i in &self.list {
                roles.push(gauge(http, &i.metrics, "pubpresence_role").await);
            }
            let active: Vec<usize> = (0..roles.len()).filter(|k| roles[*k] == Some(1)).collect();
            match active[..] {
                [k] if roles.iter().all(|r| r.is_some()) => self.found_active(k),
                _ => out.push(format!(
                    "not exactly one active instance: roles {roles:?} (1 active, 0 standby)"
                )),
            }
        }
        let metrics = &self.list[self.current].metrics;
        match in_flight(http, metrics).await {
            Some(0) => {}
            Some(n) => out.push(format!("the component has {n} requests in flight")),
            None => out.push("the component's metrics cannot be read".into()),
        }
        // Online again, too: right after a cut the component is between
        // two sessions (its backoff), every table still equal, nothing in
        // flight; the start-up that follows would then fall in the next
        // quiet stretch (a resync of every reader there).
        match gauge(http, metrics, "pubpresence_status").await {
            Some(1) | None => {}
            Some(st) => out.push(format!(
                "the component is not online (pubpresence_status {st}: 0 init, 2 offline)"
            )),
        }
        out
    }
}
