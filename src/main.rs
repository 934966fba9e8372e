//! The `pubpresence` binary: a thin CLI over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use pubpresence::component::service::{self, ServiceConfig};
use pubpresence::config::{process_env, ComponentSettings, Config};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pubpresence",
    version,
    about = "Publishes every XMPP user's presence and IP into pubsub nodes (XEP-0114 component)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the component (foreground; logs to stderr).
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and print the effective settings (secret masked).
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
}

fn init_logging(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG wins over the config file's `log`.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or("info")))
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
        Command::Run { config } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(run(config))),
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
