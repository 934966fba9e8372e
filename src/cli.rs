//! The command line: clap's definition, also the source of the man pages and
//! the shell completions (`pubpresence generate`, hidden; see packaging/).

use clap::{CommandFactory, Parser, Subcommand};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "pubpresence",
    version,
    about = "Publishes every XMPP user's presence and IP into pubsub nodes (XEP-0114 component)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Follow the presence nodes as an ordinary user (the `[watch]` table of
    /// the config): a live table, or one JSON object per line.
    Watch {
        /// The TOML config file, with a `[watch]` table.
        #[arg(long, short)]
        config: PathBuf,
        /// One JSON object per event on stdout (SPEC §6) instead of the table.
        #[arg(long)]
        json: bool,
        /// Serve the web feed on ADDR (SPEC §7: the page, /events, /state).
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
    },
    /// Simulated users changing status at random: a demo population and a
    /// load generator. Accounts NAME1..NAMEn must exist on the server.
    Simulate(SimulateArgs),
    /// The whole thing in one command: a throwaway Prosody on loopback,
    /// pubpresence, simulated users, and the watch table. Needs prosody and
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
    Bench(pubpresence::bench::BenchArgs),
    /// Write the man pages and the shell completions (bash, zsh, fish) made
    /// from this CLI definition: used to build the Debian package.
    #[command(hide = true)]
    Generate {
        /// Directory for the man pages (pubpresence.1, pubpresence-SUBCOMMAND.1).
        #[arg(long, value_name = "DIR")]
        man: Option<PathBuf>,
        /// Directory for the completions (pubpresence.bash, _pubpresence, pubpresence.fish).
        #[arg(long, value_name = "DIR")]
        completions: Option<PathBuf>,
    },
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

/// `pubpresence generate`: man pages and completions, never written by hand.
pub fn generate(man: Option<&Path>, completions: Option<&Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    let cmd = Cli::command();
    if let Some(dir) = man {
        // pubpresence.1 and pubpresence-SUBCOMMAND.1; hidden subcommands skipped.
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        clap_mangen::generate_to(cmd.clone(), dir)
            .with_context(|| format!("man pages in {}", dir.display()))?;
    }
    if let Some(dir) = completions {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        // The same command without its hidden subcommands (clap_complete lists them).
        let mut visible = clap::Command::new("pubpresence")
            .version(env!("CARGO_PKG_VERSION"))
            .args(cmd.get_arguments().cloned())
            .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        if let Some(about) = cmd.get_about() {
            visible = visible.about(about.clone());
        }
        let mut cmd = visible;
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            clap_complete::generate_to(shell, &mut cmd, "pubpresence", dir)
                .with_context(|| format!("{shell} completions in {}", dir.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn generates_man_pages_and_completions() {
        let dir = tempfile::tempdir().unwrap();
        let (man, comp) = (dir.path().join("man"), dir.path().join("comp"));
        super::generate(Some(&man), Some(&comp)).unwrap();
        let page = std::fs::read_to_string(man.join("pubpresence.1")).unwrap();
        assert!(page.contains("check\\-config"), "{page}");
        assert!(
            !page.contains("generate"),
            "the hidden subcommand stays out of the page"
        );
        assert!(man.join("pubpresence-run.1").exists());
        for f in ["pubpresence.bash", "_pubpresence", "pubpresence.fish"] {
            let text = std::fs::read_to_string(comp.join(f)).unwrap();
            assert!(text.contains("check-config"), "{f}");
            assert!(
                !text.contains("generate"),
                "{f} lists the hidden subcommand"
            );
        }
    }
}
