//! The `pubpresence` binary: a thin CLI over the library.

mod cli;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command};
use pubpresence::client::terminal::show;
use pubpresence::client::watch::{self, Target};
use pubpresence::client::web::{self, Feed};
use pubpresence::component::service::{self, ServiceConfig};
use pubpresence::config::{process_env, ComponentSettings, Config};
use pubpresence::{doctor, logging, signals};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::sync::mpsc;

fn service_config(s: &ComponentSettings) -> ServiceConfig {
    ServiceConfig::from_settings(s)
}

async fn run(config: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&config)?;
    let settings = cfg.component(&process_env)?;
    logging::init(cfg.log.as_deref(), "info");
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        signals::wait_for_signal().await;
        tracing::info!("signal received");
        let _ = tx.send(true);
    });
    service::run(service_config(&settings), rx)
        .await
        .context("pubpresence stopped")?;
    Ok(())
}

async fn watch_cmd(config: PathBuf, json: bool, http: Option<String>) -> anyhow::Result<()> {
    let cfg = Config::load(&config)?;
    let settings = cfg.watch(&process_env)?;
    logging::init(cfg.log.as_deref(), "warn");
    let settings = match http {
        Some(addr) => settings.with_http(&addr)?,
        None => settings,
    };
    let feed = match settings.http {
        Some(addr) => {
            let feed = Feed::with_limits(
                settings.http_token.clone(),
                web::DEFAULT_BACKLOG,
                settings.http_resume_window,
            );
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
    let stop = signals::stop_channel(None);
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

/// An error as one line: the chain joined, never the config's contents.
fn one_line(e: &anyhow::Error) -> String {
    let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    msg.join(": ")
}

/// `pubpresence doctor`: its own exit codes (0 passed, 1 a check failed, 2
/// could not run).
fn doctor_cmd(config: PathBuf, member_password_file: Option<PathBuf>, json: bool) -> ExitCode {
    let prepared = (|| -> anyhow::Result<doctor::Options> {
        let mut cfg = Config::load(&config)?;
        let component = cfg.component(&process_env)?;
        if let Some(file) = member_password_file {
            let Some(w) = cfg.watch.as_mut() else {
                anyhow::bail!(
                    "--member-password-file needs a [watch] table naming the member account (jid)"
                );
            };
            w.password = None;
            w.password_file = Some(file);
        }
        let member = match cfg.watch {
            Some(_) => Some(cfg.watch(&process_env)?),
            None => None,
        };
        logging::init(cfg.log.as_deref(), "error");
        Ok(doctor::Options { component, member })
    })();
    let outcome = prepared.and_then(|opts| {
        let rt = runtime_one_thread()?;
        rt.block_on(async {
            let mut print = |c: &doctor::Check| {
                if json {
                    println!("{}", doctor::report::json(c));
                } else {
                    print!("{}", doctor::report::text(c));
                }
            };
            doctor::run(&opts, &mut print)
                .await
                .map_err(anyhow::Error::from)
        })
    });
    match outcome {
        Ok(checks) => ExitCode::from(doctor::exit_code(&checks)),
        Err(e) => {
            eprintln!("pubpresence doctor: could not run: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// The component's runtime: one thread. Its work is a chain of small steps
/// (a stanza in, the tracker, an IQ out) that handed over between threads
/// cost more in wake-ups than the steps themselves (`pubpresence-lab bench`,
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
            .map(|text| {
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
                // The file alone cannot tell whether the server is set up
                // to match: doctor asks it (README, "Checking the set-up").
                println!(
                    "# the file is valid; check the server's side live with: pubpresence doctor --config {}",
                    file.display()
                );
            })
            .map_err(anyhow::Error::from),
        Command::Run { config } => runtime_one_thread().and_then(|rt| rt.block_on(run(config))),
        Command::Watch { config, json, http } => {
            runtime().and_then(|rt| rt.block_on(watch_cmd(config, json, http)))
        }
        Command::Doctor {
            config,
            member_password_file,
            json,
        } => return doctor_cmd(config, member_password_file, json),
        Command::Generate { man, completions } => {
            cli::generate(man.as_deref(), completions.as_deref())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pubpresence: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}
