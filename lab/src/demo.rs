//! `pubpresence-lab demo`: the whole thing on one machine, in one command. A
//! lab Prosody on loopback, demo users and a `dashboard` account, the
//! component (in this process), simulated users connecting from several
//! loopback addresses and changing status at random, and the dashboard
//! following it all (docs/protocol.md, "Client procedure"). The caller shows the dashboard's updates.
//!
//! Stopping (the `shutdown` channel) undoes everything in order: users
//! disconnect, the component publishes `offline` and exits, the dashboard
//! unsubscribes, Prosody is stopped by its PID and its directory removed.

use super::prosody::{LabError, Prosody};
use crate::sim::{self, SimControl, SimError, SimOptions, SimUser};
use pubpresence::client::follow::WatchEvent;
use pubpresence::client::watch::{self, Target, Update, WatchError};
use pubpresence::component::service::{self, RunError, ServiceConfig};
use pubpresence::config::{Config, ConfigError};
use pubpresence::wire::status::ServiceStatus;
use pubpresence::xmpp::c2s::C2sOptions;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, watch as channel};

/// The watcher account, a member of the nodes' whitelist.
pub const DASHBOARD: &str = "dashboard";
/// Names of the demo users (then `user11`, `user12`...).
const NAMES: [&str; 16] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil",
];
/// Bounds on each step of the shutdown.
const STOP_SIM: Duration = Duration::from_secs(15);
const STOP_COMPONENT: Duration = Duration::from_secs(10);
const STOP_WATCHER: Duration = Duration::from_secs(5);
/// Time for the dashboard to receive what the last steps published.
const SETTLE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Simulated users (some with two connections).
    pub users: usize,
    /// Status changes per second, all users together.
    pub rate: f64,
    /// Seed of the simulated users' choices.
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            users: 10,
            rate: 3.0,
            seed: 1,
        }
    }
}

/// Where the demo runs, for the one who watches it.
#[derive(Debug, Clone)]
pub struct DemoInfo {
    pub dir: PathBuf,
    pub prosody_pid: Option<u32>,
    pub c2s: String,
    /// A config file with a `[watch]` table: `pubpresence watch --config`
    /// it from another terminal while the demo runs.
    pub config: PathBuf,
    pub users: Vec<String>,
    pub connections: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("demo config")]
    Config(#[from] ConfigError),
    #[error("writing {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("the component stopped")]
    Component(#[from] RunError),
    #[error("the dashboard stopped")]
    Watch(#[from] WatchError),
    #[error("simulated users")]
    Sim(#[from] SimError),
    #[error("the demo's {0} task failed: {1}")]
    Task(&'static str, String),
}

/// The demo users: names from a list, every third one with two connections.
pub fn demo_users(n: usize) -> Vec<SimUser> {
    (0..n)
        .map(|i| {
            let name = NAMES
                .get(i)
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("user{}", i + 1));
            let resources = match i % 3 {
                0 => vec!["desk", "phone"],
                1 => vec!["laptop"],
                _ => vec!["phone"],
            };
            SimUser {
                password: name.clone(),
                name,
                resources: resources.into_iter().map(String::from).collect(),
            }
        })
        .collect()
}

/// Runs the demo until `shutdown` turns true (or its sender is dropped),
/// sending the dashboard's updates to `out`; then stops everything it
/// started. `on_ready` is told where the demo runs once Prosody is up.
pub async fn run(
    opts: DemoOptions,
    out: mpsc::Sender<Update>,
    on_ready: impl FnOnce(&DemoInfo) + Send,
    shutdown: channel::Receiver<bool>,
) -> Result<(), DemoError> {
    if !opts.rate.is_finite() || opts.rate < 0.0 {
        return Err(SimError::Rate(opts.rate).into());
    }
    let users = demo_users(opts.users);
    let prosody = {
        let users = users.clone();
        blocking(move || -> Result<Prosody, LabError> {
            let p = Prosody::start()?;
            p.register(DASHBOARD, DASHBOARD)?;
            for u in &users {
                p.register(&u.name, &u.password)?;
            }
            Ok(p)
        })
        .await??
    };
    let outcome = serve(&prosody, users, opts, out, on_ready, shutdown).await;
    // Prosody's stop sleeps (SIGTERM, then up to 5 s): off the runtime.
    // Dropping it removes its directory too.
    blocking(move || drop(prosody)).await?;
    outcome
}

/// Everything but Prosody: the component, the dashboard and the users.
async fn serve(
    prosody: &Prosody,
    users: Vec<SimUser>,
    opts: DemoOptions,
    out: mpsc::Sender<Update>,
    on_ready: impl FnOnce(&DemoInfo) + Send,
    mut shutdown: channel::Receiver<bool>,
) -> Result<(), DemoError> {
    let dashboard = format!("{DASHBOARD}@{}", prosody.domain);
    let config = prosody.dir.path().join("demo.toml");
    let text = format!(
        "{}\n[watch]\njid = \"{dashboard}\"\npassword = \"{DASHBOARD}\"\nserver = \"{}\"\nallow_plaintext = true\n",
        prosody.config_toml(&[&dashboard]),
        prosody.c2s_addr(),
    );
    std::fs::write(&config, text).map_err(|e| DemoError::Write(config.clone(), e))?;
    // The demo's file is the whole truth: no PUBPRESENCE_* variable of the
    // caller's environment overrides it.
    let no_env = |_: &str| None;
    let cfg = Config::load(&config)?;
    let component = ServiceConfig::from_settings(&cfg.component(&no_env)?);
    let watch_settings = cfg.watch(&no_env)?;

    let sim_opts = SimOptions {
        server: prosody.c2s_addr().to_string(),
        domain: prosody.domain.clone(),
        component: prosody.component_jid.clone(),
        users,
        rate: opts.rate,
        disconnect_share: 0.1,
        changes_per_connection: None,
        duration: None,
        // 127.0.0.1 is the dashboard's.
        first_ip: Ipv4Addr::new(127, 0, 0, 2),
        allow_plaintext: true,
        seed: opts.seed,
        login_concurrency: 8,
        subscribe: true,
    };
    on_ready(&DemoInfo {
        dir: prosody.dir.path().to_path_buf(),
        prosody_pid: prosody.pid(),
        c2s: prosody.c2s_addr().to_string(),
        config: config.clone(),
        users: sim_opts
            .users
            .iter()
            .map(|u| format!("{}@{}", u.name, prosody.domain))
            .collect(),
        connections: sim_opts.connections(),
    });

    // The component.
    let (component_stop, component_rx) = channel::channel(false);
    let mut component_task = tokio::spawn(service::run(component, component_rx));

    // The dashboard; its updates pass through here so that the simulated
    // users start once the component is online (a subscription request to
    // a component that is not connected yet would bounce, and that user
    // would never be seen).
    let (watcher_stop, watcher_rx) = channel::channel(false);
    let (updates_tx, mut updates) = mpsc::channel(256);
    let login = C2sOptions {
        bind_ip: Some(super::loopback(1)),
        ..watch::login_options(&watch_settings)
    };
    let mut watcher_task = tokio::spawn(watch::run(
        login,
        Target::from_settings(&watch_settings),
        updates_tx,
        watcher_rx,
    ));

    let (sim_control, sim_rx) = channel::channel(SimControl::Run);
    let mut sim_task: Option<tokio::task::JoinHandle<Result<sim::SimReport, SimError>>> = None;
    let mut pending_sim = Some((sim_opts, sim_rx));

    let outcome: Result<(), DemoError> = loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break Ok(());
                }
            }
            r = &mut component_task => {
                break match r {
                    Ok(Ok(())) => Err(DemoError::Task("component", "exited".into())),
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => Err(DemoError::Task("component", e.to_string())),
                };
            }
            r = &mut watcher_task => {
                break match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => Err(DemoError::Task("dashboard", e.to_string())),
                };
            }
            Some(u) = updates.recv() => {
                let online = matches!(
                    u,
                    Update::Event { event: WatchEvent::Service(ServiceStatus::Online), .. }
                );
                if online {
                    if let Some((o, rx)) = pending_sim.take() {
                        sim_task = Some(tokio::spawn(sim::run(o, rx, None)));
                    }
                }
                if out.send(u).await.is_err() {
                    break Ok(());
                }
            }
        }
    };

    // Shut down in order, each step bounded; keep showing the dashboard's
    // updates meanwhile (users leaving, the service going offline).
    let _ = sim_control.send(SimControl::Stop);
    if let Some(t) = sim_task {
        let r = relay_until(t, STOP_SIM, &mut updates, &out).await;
        if let Some(Ok(Err(e))) = r {
            tracing::warn!("simulated users: {e}");
        }
        // Let the component publish the users' departures before it goes.
        settle(&mut updates, &out).await;
    }
    let _ = component_stop.send(true);
    if !component_task.is_finished() {
        let _ = relay_until(&mut component_task, STOP_COMPONENT, &mut updates, &out).await;
    }
    component_task.abort();
    settle(&mut updates, &out).await;
    let _ = watcher_stop.send(true);
    if !watcher_task.is_finished() {
        let _ = relay_until(&mut watcher_task, STOP_WATCHER, &mut updates, &out).await;
    }
    watcher_task.abort();
    while let Ok(u) = updates.try_recv() {
        let _ = out.send(u).await;
    }
    outcome
}

/// Forwards updates for a moment: what the last step published.
async fn settle(updates: &mut mpsc::Receiver<Update>, out: &mpsc::Sender<Update>) {
    let pause = Box::pin(tokio::time::sleep(SETTLE));
    let _ = relay_until(pause, SETTLE * 2, updates, out).await;
}

/// Awaits `fut` for at most `limit`, forwarding updates meanwhile.
async fn relay_until<F: std::future::Future + Unpin>(
    mut fut: F,
    limit: Duration,
    updates: &mut mpsc::Receiver<Update>,
    out: &mpsc::Sender<Update>,
) -> Option<F::Output> {
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = &mut fut => return Some(r),
            _ = &mut deadline => return None,
            Some(u) = updates.recv() => { let _ = out.send(u).await; }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DemoError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DemoError::Task("lab", e.to_string()))
}
