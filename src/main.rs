//! The `pubpresence` binary: a thin CLI over the library.

mod cli;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command, SimulateArgs};
use pubpresence::client::board::Board;
use pubpresence::client::sim::{self, SimControl, SimOptions};
use pubpresence::client::watch::{self, Target, Update};
use pubpresence::client::web::{self, Feed};
use pubpresence::component::service::{self, ServiceConfig};
use pubpresence::config::{process_env, ComponentSettings, Config};
use pubpresence::lab::demo::{self, DemoInfo, DemoOptions};
use pubpresence::wire::time;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::mpsc;

fn init_logging(level: Option<&str>) {
    init_logging_default(level, "info");
}

/// `watch` and `demo` draw on the terminal: their default is quieter.
fn init_logging_default(level: Option<&str>, default: &str) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG wins over the config file's `log`.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or(default)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn service_config(s: &ComponentSettings) -> ServiceConfig {
    ServiceConfig::from_settings(s)
}

async fn run(config: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&config)?;
    let settings = cfg.component(&process_env)?;
    init_logging(cfg.log.as_deref());
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received");
        let _ = tx.send(true);
    });
    service::run(service_config(&settings), rx)
        .await
        .context("pubpresence stopped")?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A channel that turns true on SIGTERM/SIGINT (and after `duration`).
fn stop_channel(duration: Option<Duration>) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        match duration {
            Some(d) => {
                tokio::select! {
                    _ = wait_for_signal() => tracing::info!("signal received"),
                    _ = tokio::time::sleep(d) => tracing::info!("duration reached"),
                }
            }
            None => {
                wait_for_signal().await;
                tracing::info!("signal received");
            }
        }
        let _ = tx.send(true);
        // Keep the sender (and so the channel) alive for those who wait.
        std::future::pending::<()>().await;
    });
    rx
}

async fn watch_cmd(config: PathBuf, json: bool, http: Option<String>) -> anyhow::Result<()> {
    let cfg = Config::load(&config)?;
    let settings = cfg.watch(&process_env)?;
    init_logging_default(cfg.log.as_deref(), "warn");
    let settings = match http {
        Some(addr) => settings.with_http(&addr)?,
        None => settings,
    };
    let feed = match settings.http {
        Some(addr) => {
            let feed = Feed::new(settings.http_token.clone());
            let bound = feed
                .serve(addr)
                .await
                .with_context(|| format!("web feed: cannot listen on {addr}"))?;
            eprintln!("pubpresence watch: web feed on http://{bound}/");
            Some((feed, bound))
        }
        None => None,
    };
    let (tx, rx) = mpsc::channel(256);
    let stop = stop_channel(None);
    let mut title = format!(
        "pubpresence watch: {} on {}",
        settings.component, settings.pubsub
    );
    if let Some((_, bound)) = &feed {
        title.push_str(&format!(" · web feed http://{bound}/"));
    }
    let runner = tokio::spawn(watch::run(
        watch::login_options(&settings),
        Target::from_settings(&settings),
        tx,
        stop,
    ));
    let rx = match feed {
        Some((feed, _)) => web::tee(feed, rx),
        None => rx,
    };
    show(rx, json, &title).await;
    // `show` ends when the runner ends (or stdout is gone: then stop it).
    runner.abort();
    match runner.await {
        Ok(r) => r.map_err(anyhow::Error::from),
        Err(e) if e.is_cancelled() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Shows updates until the channel closes: JSON lines (flushed one by one)
/// or the table, redrawn in place on a terminal, at most 5 times a second.
/// Returns early when stdout is gone (a closed pipe).
async fn show(mut rx: mpsc::Receiver<Update>, json: bool, title: &str) -> Board {
    let tty = std::io::stdout().is_terminal();
    let mut board = Board::default();
    let mut dirty = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            u = rx.recv() => {
                let Some(u) = u else { break };
                if let (true, Update::Event(ev)) = (json, &u) {
                    let line = watch::to_json(ev, &time::now()).to_string();
                    if print_flush(&format!("{line}\n")).is_err() {
                        return board;
                    }
                }
                board.update(&u);
                dirty = true;
            }
            _ = tick.tick(), if dirty && !json => {
                dirty = false;
                if draw(&board, title, tty).is_err() {
                    return board;
                }
            }
        }
    }
    if dirty && !json {
        let _ = draw(&board, title, tty);
    }
    board
}

fn draw(board: &Board, title: &str, tty: bool) -> std::io::Result<()> {
    let table = board.render(title);
    if tty {
        // Home, each line cleared to its end, then the rest of the screen:
        // redrawn in place without the flicker of a full clear.
        let mut s = String::from("\x1b[H");
        for line in table.lines() {
            s.push_str(line);
            s.push_str("\x1b[K\n");
        }
        s.push_str("\x1b[J");
        print_flush(&s)
    } else {
        print_flush(&format!("{table}\n"))
    }
}

fn print_flush(s: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()
}

async fn simulate_cmd(a: SimulateArgs) -> anyhow::Result<()> {
    init_logging(None);
    if !a.first_ip.is_loopback() {
        anyhow::bail!(
            "--first-ip {}: simulated users connect from loopback addresses only",
            a.first_ip
        );
    }
    let password = process_env("PUBPRESENCE_SIM_PASSWORD").or(a.password);
    let mut users = sim::numbered_users(&a.prefix, a.users, a.resources);
    if let Some(p) = &password {
        for u in &mut users {
            u.password = p.clone();
        }
    }
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let opts = SimOptions {
        server: a.server,
        domain: a.domain,
        component: a.component,
        users,
        rate: a.rate,
        disconnect_share: a.disconnect_share,
        changes_per_connection: a.changes,
        duration: a.duration,
        first_ip: a.first_ip,
        allow_plaintext: a.allow_plaintext,
        seed,
        login_concurrency: a.login_concurrency,
    };
    let (control, rx) = tokio::sync::watch::channel(SimControl::Run);
    let mut stop = stop_channel(None);
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        let _ = control.send(SimControl::Stop);
        std::future::pending::<()>().await;
    });
    let report = sim::run(opts, rx, None).await?;
    println!("simulated {report}");
    Ok(())
}

async fn demo_cmd(
    json: bool,
    duration: Option<Duration>,
    users: u16,
    rate: f64,
) -> anyhow::Result<()> {
    init_logging_default(None, "warn");
    let opts = DemoOptions {
        users: users.into(),
        rate,
        ..DemoOptions::default()
    };
    let (tx, rx) = mpsc::channel(256);
    let stop = stop_channel(duration);
    // The hint names this very binary: scripts/demo.sh runs it from target/.
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "pubpresence".into());
    let on_ready = move |i: &DemoInfo| {
        eprintln!(
            "pubpresence demo: Prosody (pid {}) on {} in {}\n  {} users, {} connections: {}\n  \
             watch it from another terminal: {exe} watch --config {}\n  Ctrl-C stops everything and removes the directory",
            i.prosody_pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            i.c2s,
            i.dir.display(),
            i.users.len(),
            i.connections,
            i.users.join(" "),
            i.config.display(),
        );
    };
    // The web feed of what the dashboard follows (SPEC §7), on loopback.
    let feed = pubpresence::client::web::Feed::new(None);
    let port = pubpresence::lab::free_ports(1)?[0];
    let addr = feed
        .serve(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await?;
    eprintln!("pubpresence demo: web feed on http://{addr}/ (open it in a browser)");
    let rx = pubpresence::client::web::tee(feed, rx);
    let demo = tokio::spawn(demo::run(opts, tx, on_ready, stop));
    let title = format!("pubpresence demo (Ctrl-C to stop) - http://{addr}/");
    show(rx, json, &title).await;
    match demo.await {
        Ok(r) => {
            r?;
            eprintln!("pubpresence demo: stopped; everything it started is gone");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The component's runtime: one thread. Its work is a chain of small steps
/// (a stanza in, the tracker, an IQ out) that handed over between threads
/// cost more in wake-ups than the steps themselves (`pubpresence bench`,
/// perf: a third of its CPU in the scheduler's task switches).
fn runtime_one_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { file } => Config::load(&file)
            .and_then(|cfg| {
                cfg.check(&process_env)?;
                Ok(cfg.describe(&process_env))
            })
            .map(|text| print!("{text}"))
            .map_err(anyhow::Error::from),
        Command::Run { config } => runtime_one_thread().and_then(|rt| rt.block_on(run(config))),
        Command::Watch { config, json, http } => {
            runtime().and_then(|rt| rt.block_on(watch_cmd(config, json, http)))
        }
        Command::Simulate(args) => runtime().and_then(|rt| rt.block_on(simulate_cmd(args))),
        Command::Demo {
            json,
            duration,
            users,
            rate,
        } => runtime().and_then(|rt| rt.block_on(demo_cmd(json, duration, users, rate))),
        Command::Bench(args) => {
            runtime().and_then(|rt| rt.block_on(pubpresence::bench::main(args)))
        }
        Command::Generate { man, completions } => {
            cli::generate(man.as_deref(), completions.as_deref())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain joined, never the config's contents.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("pubpresence: {}", msg.join(": "));
            ExitCode::FAILURE
        }
    }
}
