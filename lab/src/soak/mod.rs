//! `pubpresence-lab soak` (docs/reliability.md): a real Prosody (or a
//! two-node ejabberd cluster, `server`), the component, simulated users churning and consumers (the reference client
//! and the web feed, one consumer of `/events` cut at every fault), for a
//! given time, with faults injected at random from a seeded generator
//! (`faults`). After every fault, once the users are held still, the checker
//! (`check`) compares active with the truth and with each consumer, and
//! between faults every connection's live events with what it did. The
//! parts it drives are in `parts`, the loop in `run`.

pub mod check;
mod component;
pub mod faults;
pub mod lag;
mod parts;
mod run;
mod server;

pub use faults::FaultKind;
pub use run::run;

use std::collections::BTreeMap;
use std::time::Duration;

/// `pubpresence-lab soak`: the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// How long to inject faults ("2m", "30m"; a plain number is seconds).
    #[arg(long, default_value = "2m", value_parser = crate::bench::parse_secs)]
    pub duration: Duration,
    /// Seed of the faults and of the users' choices (default: from the clock;
    /// printed, to replay a run).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Simulated users (two connections each).
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// Status changes per second, all connections together, while churning.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Only these kinds of fault (comma-separated; default: every kind).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub faults: Vec<FaultKind>,
    /// Also print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// A two-node ejabberd cluster instead of Prosody (the users on both
    /// nodes, the component connected to each).
    #[arg(long)]
    pub ejabberd_cluster: bool,
    /// Two instances of the component with `[standby]`: the faults meant
    /// for the component hit the active one, and the other must take over.
    #[arg(long)]
    pub standby: bool,
}

/// What one soak found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub seed: u64,
    pub server: String,
    pub seconds: f64,
    pub connections: usize,
    /// Instances of the component (2 with `--standby`).
    pub instances: usize,
    /// With `--standby`: how often the other instance was found active.
    pub takeovers: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// Comparisons made (each table against another, each quiet stretch's
    /// live events, each `since`).
    pub checks: usize,
    pub divergences: Vec<String>,
    /// Seconds from the end of a fault to the checker's agreement, by kind:
    /// p50, p99, max. It includes the users' changes after the fault (0-3 s;
    /// 6-8 s after a server restart, for them to log in again).
    pub converge: BTreeMap<String, [f64; 3]>,
    /// The same from the moment the users were held still.
    pub settle: BTreeMap<String, [f64; 3]>,
    /// Live events compared with what the connections did.
    pub live_events: usize,
    pub acts: usize,
    /// The `/events` consumer's reconnections: resumed / new snapshot.
    pub sse_resumed: usize,
    pub sse_reset: usize,
    /// KiB: at the first check, at the end, the highest seen.
    pub component_rss: [u64; 3],
    pub watch_rss: [u64; 3],
    /// Every fault, in order: seconds from the start, what.
    pub history: Vec<(f64, String)>,
}

impl Report {
    pub fn table(&self) -> String {
        let mut s = format!(
            "pubpresence soak: {} for {:.0} s, seed {}, {} connections{}\n",
            self.server,
            self.seconds,
            self.seed,
            self.connections,
            if self.instances > 1 {
                ", two instances (standby)"
            } else {
                ""
            }
        );
        let total: usize = self.faults.values().sum();
        s += &format!("  faults injected: {total}\n");
        s += "    kind            count   agreed after the fault's end (p50 / p99 / max)   after the users were still\n";
        let fig = |m: &BTreeMap<String, [f64; 3]>, k: &str| match m.get(k) {
            Some([p50, p99, max]) => format!("{p50:.2} / {p99:.2} / {max:.2} s"),
            None => "-".into(),
        };
        for (k, n) in &self.faults {
            s += &format!(
                "    {k:<15} {n:>5}   {:<46}   {}\n",
                fig(&self.converge, k),
                fig(&self.settle, k)
            );
        }
        s += &format!(
            "  checks: {} ({} live events against {} acts of the users)\n",
            self.checks, self.live_events, self.acts
        );
        s += &format!(
            "  /events consumer: {} resumed, {} new snapshots\n",
            self.sse_resumed, self.sse_reset
        );
        let [c0, c1, c2] = self.component_rss;
        let [w0, w1, w2] = self.watch_rss;
        s += &format!("  memory (RSS KiB, first check / end / max): component {c0} / {c1} / {c2}, watch {w0} / {w1} / {w2}\n");
        if self.instances > 1 {
            s += &format!("  the active instance changed {} times\n", self.takeovers);
        }
        s += &format!("  divergences: {}\n", self.divergences.len());
        for d in &self.divergences {
            s += &format!("    {d}\n");
        }
        s
    }
}

/// Runs the soak, prints the report; fails when anything diverged.
pub async fn main(args: SoakArgs) -> anyhow::Result<()> {
    pubpresence::logging::init(None, "pubpresence_lab::soak=info");
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000)
            .unwrap_or(1)
    });
    // Ctrl-C or SIGTERM: the run is dropped, and with it every process
    // and server it started (each ends on drop).
    let mut stop = pubpresence::signals::stop_channel(None);
    let report = tokio::select! {
        r = run(&args, seed) => r?,
        _ = stop.wait_for(|s| *s) => anyhow::bail!("stopped by a signal; everything it started is gone"),
    };
    // As the benchmarks print: with --json the table goes to stderr.
    if args.json {
        eprint!("{}", report.table());
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    if !report.divergences.is_empty() {
        eprintln!("pubpresence soak: seed {seed}; the faults, in order:");
        for (t, f) in &report.history {
            eprintln!("  {t:>7.1} s  {f}");
        }
        anyhow::bail!(
            "{} divergences (seed {seed}: `pubpresence-lab soak --seed {seed}` replays the faults)",
            report.divergences.len()
        );
    }
    Ok(())
}
