//! `pubpresence-lab`: the lab's commands, apart from the shipped binary.
//! `demo` (what `scripts/demo.sh` runs), `simulate` (simulated users for a
//! real server), `bench` (docs/benchmarks.md) and `soak` (docs/reliability.md). The component itself runs
//! in-process (demo) or as the `pubpresence` binary beside this one (bench).

use clap::{Parser, Subcommand};
use pubpresence::client::terminal::show;
use pubpresence::config::process_env;
use pubpresence::logging;
use pubpresence::signals::stop_channel;
use pubpresence_lab::demo::{self, DemoInfo, DemoOptions};
use pubpresence_lab::sim::{self, SimControl, SimOptions};
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(
    name = "pubpresence-lab",
    version,
    about = "pubpresence's lab: the demo, simulated users and the benchmarks (not shipped)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulated users changing status at random: a demo population and a
    /// load generator. Accounts NAME1..NAMEn must exist on the server.
    Simulate(SimulateArgs),
    /// The whole thing in one command: a throwaway Prosody on loopback,
    /// pubpresence, simulated users, the watch table and the web feed. Needs prosody and
    /// lua-dbi-sqlite3 (`apt-get install prosody lua-dbi-sqlite3`).
    Demo {
        /// JSON lines instead of the table.
        #[arg(long)]
        json: bool,
        /// Stop by itself after this long ("30s", "2m"; a plain number is seconds).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Simulated users.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
        users: u16,
        /// Status changes per second, all users together.
        #[arg(long, default_value_t = 3.0)]
        rate: f64,
    },
    /// Benchmark against a throwaway Prosody on loopback: latency, CPU, start-up, memory.
    Bench(pubpresence_lab::bench::BenchArgs),
    /// Random faults against a throwaway Prosody, the component and its
    /// consumers, with a checker (docs/reliability.md). Needs root for `ss -K`.
    Soak(pubpresence_lab::soak::SoakArgs),
}

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// The server's c2s listener, HOST:PORT.
    #[arg(long)]
    pub server: String,
    /// The users' domain.
    #[arg(long)]
    pub domain: String,
    /// The component's JID: each user asks it for a subscription once.
    #[arg(long)]
    pub component: String,
    /// Number of users: accounts PREFIX1..PREFIXn.
    #[arg(long, default_value_t = 10)]
    pub users: usize,
    /// Account name prefix.
    #[arg(long, default_value = "sim")]
    pub prefix: String,
    /// Password of every account (default: the account's own name). Env
    /// PUBPRESENCE_SIM_PASSWORD wins.
    #[arg(long)]
    pub password: Option<String>,
    /// Connections per user (resources desk, phone, laptop, tablet, r5...).
    #[arg(long, default_value_t = 1)]
    pub resources: usize,
    /// Status changes per second, all connections together (0: connect only).
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Share of changes that disconnect (the next change reconnects).
    #[arg(long, default_value_t = 0.1)]
    pub disconnect_share: f64,
    /// Each connection stops changing after N changes.
    #[arg(long, value_name = "N")]
    pub changes: Option<u32>,
    /// Stop after this long ("30s", "2m"; a plain number is seconds);
    /// default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Source address of the first connection; the others count up from it
    /// (must be a loopback address).
    #[arg(long, default_value = "127.0.0.2")]
    pub first_ip: Ipv4Addr,
    /// Seed of the random choices (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Log in without TLS when the server offers none.
    #[arg(long)]
    pub allow_plaintext: bool,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 32)]
    pub login_concurrency: usize,
}

/// "30s", "2m", "1h 5m" (humantime) or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.trim().parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(format!("not a duration: {s}"))
        };
    }
    humantime::parse_duration(s.trim()).map_err(|e| format!("not a duration ({e}): {s}"))
}

async fn simulate_cmd(a: SimulateArgs) -> anyhow::Result<()> {
    logging::init(None, "info");
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
        subscribe: true,
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
    logging::init(None, "warn");
    let opts = DemoOptions {
        users: users.into(),
        rate,
        ..DemoOptions::default()
    };
    let (tx, rx) = mpsc::channel(256);
    let stop = stop_channel(duration);
    // The hint names the shipped binary beside this one: scripts/demo.sh
    // builds both into target/release.
    let exe = pubpresence_lab::product_binary()
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
    // The web feed of what the dashboard follows (docs/protocol.md, "Web feed"), on loopback.
    let feed = pubpresence::client::web::Feed::new(None);
    let port = pubpresence_lab::free_ports(1)?[0];
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            match cli.command {
                Command::Simulate(args) => simulate_cmd(args).await,
                Command::Demo {
                    json,
                    duration,
                    users,
                    rate,
                } => demo_cmd(json, duration, users, rate).await,
                Command::Bench(args) => pubpresence_lab::bench::main(args).await,
                Command::Soak(args) => pubpresence_lab::soak::main(args).await,
            }
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("pubpresence-lab: {}", msg.join(": "));
            ExitCode::FAILURE
        }
    }
}
