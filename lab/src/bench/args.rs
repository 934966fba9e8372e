//! `pubpresence-lab bench`: the command line, shared by the three benchmarks.

use super::prosody::BenchOptions;
use std::path::PathBuf;
use std::time::Duration;

/// `pubpresence-lab bench`: the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Small numbers for CI (100 sessions, 50 and 200 changes/s, 2 s each).
    #[arg(long)]
    pub quick: bool,
    /// Sessions connected during the start-up and memory figures
    /// (default: 1000; 100 with --quick).
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// Steady change rates, comma-separated (default: 200,1000; 50,200 with --quick).
    #[arg(long, value_delimiter = ',', value_name = "RATES")]
    pub rates: Option<Vec<f64>>,
    /// Measured window of each rate ("5s"; default 5 s, 2 s with --quick).
    #[arg(long, value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// The rates are a sweep for the sustained-rate knee (p99 <= 100 ms):
    /// it stops once pubpresence and its floor are both past it (default
    /// rates 25,50,75,100,150,200,300,400,500,700,1000,1500: with SQLite on
    /// disk the server's commits put the knee low).
    #[arg(long)]
    pub knee: bool,
    /// Also print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Run the component in this process instead of a child `pubpresence run`.
    #[arg(long)]
    pub in_process: bool,
    /// Start Prosody with `network_settings = { nagle = false }` (TCP_NODELAY).
    #[arg(long)]
    pub tcp_nodelay: bool,
    /// Prosody's pubsub with `storage = "memory"` (default: SQLite).
    #[arg(long)]
    pub memory_storage: bool,
    /// Prosody grants the component XEP-0356 presence permission
    /// (mod_privilege) and no user has it in the roster (default: roster
    /// subscriptions).
    #[arg(long)]
    pub privileged: bool,
    /// The --connections base sessions are held inside the server, without
    /// sockets (lab/prosody-plugins/mod_lab_held_sessions.lua; with
    /// --ejabberd-cluster lab/ejabberd-modules/mod_lab_held_sessions.erl,
    /// roster mode): past the open-file limit, which stops real connections
    /// short of it.
    #[arg(long)]
    pub held_sessions: bool,
    /// Prosody's Lua garbage collector in generational mode (`gc = { mode =
    /// "generational" }`) instead of its incremental default (its effect is
    /// not measured apart: docs/benchmarks.md).
    #[arg(long)]
    pub generational_gc: bool,
    /// Only the tracking of --connections sessions, the two restarts and
    /// the restart floor: no start-up with active empty, no start-up
    /// floor, no rate phases (the first two cost about what the tracking
    /// does at 100,000 items on Prosody's SQLite store).
    #[arg(long)]
    pub restarts_only: bool,
    /// Instead: how long `pubpresence doctor` takes on a healthy Prosody with
    /// --connections sessions connected (default 10000; 100 with --quick).
    #[arg(long)]
    pub doctor: bool,
    /// Instead: start-up and the cost of one audit on a two-node ejabberd
    /// cluster with privileged presence (lab/src/bench/cluster.rs; --connections
    /// defaults to 10000, --duration is the background window, 30 s).
    #[arg(long)]
    pub ejabberd_cluster: bool,
    /// With --ejabberd-cluster: every user has the component in its roster
    /// (subscription both) instead of XEP-0356 privileged presence.
    #[arg(long, requires = "ejabberd_cluster")]
    pub roster: bool,
    /// With --ejabberd-cluster: mod_pubsub stores in SQL (`db_type: sql`,
    /// one SQLite file for both nodes, `max_items_node: unlimited`) instead
    /// of Mnesia. Needs `apt-get install sqlite3 erlang-p1-sqlite3`.
    #[arg(long, requires = "ejabberd_cluster")]
    pub pubsub_sql: bool,
    /// Instead: N consumers of the web feed's /events (default 1000) at
    /// --rates (one rate, default 1000/s) for --duration (lab/src/bench/web.rs).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "1000")]
    pub web_consumers: Option<usize>,
    /// With --web-consumers: the feed makes the changes itself at the rate,
    /// with no Prosody, component or simulated users on the machine's CPUs
    /// (the feed's own share of the path, from a change reaching the client
    /// to the last consumer).
    #[arg(long)]
    pub web_synthetic: bool,
    /// Instead: N consumers of /events (default 1000) reconnecting at once,
    /// resuming with Last-Event-ID and then starting over with the state, on
    /// a synthetic state of --connections users (default 10000; 100 with
    /// --quick) (lab/src/bench/resume.rs).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "1000")]
    pub web_resume: Option<usize>,
    /// With --web-resume: events that came while the consumers were away
    /// (default 100).
    #[arg(long, value_name = "K")]
    pub missed: Option<usize>,
    /// The feed side of --web-consumers, run as a child process (internal).
    #[arg(long, value_name = "CONFIG", hide = true)]
    pub web_feed_child: Option<PathBuf>,
}

/// The knee sweep's rates unless `--rates` says otherwise.
const KNEE_RATES: [f64; 12] = [
    25.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0, 700.0, 1000.0, 1500.0,
];

/// A positive duration: "5s", "2m" (humantime) or a plain number of seconds.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.trim().parse::<f64>() {
        if secs.is_finite() && secs > 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s.trim()).map_err(|e| format!("not a duration ({e}): {s}"))
}

impl BenchArgs {
    /// The options these arguments describe; `exe` runs the component.
    pub fn options(&self, exe: Option<PathBuf>) -> BenchOptions {
        let mut o = if self.quick {
            BenchOptions::quick()
        } else {
            BenchOptions::full()
        };
        if let Some(n) = self.connections {
            o.connections = n;
        }
        if self.knee {
            o.knee = true;
            o.rates = KNEE_RATES.to_vec();
        }
        if let Some(r) = &self.rates {
            o.rates = r.clone();
        }
        if let Some(d) = self.duration {
            o.duration = d;
        }
        o.component_bin = if self.in_process { None } else { exe };
        o.tcp_nodelay = self.tcp_nodelay;
        o.memory_storage = self.memory_storage;
        o.privileged = self.privileged;
        o.held_sessions = self.held_sessions;
        o.generational_gc = self.generational_gc;
        o.restarts_only = self.restarts_only;
        o
    }
}
