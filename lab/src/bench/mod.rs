//! The benchmarks (docs/benchmarks.md): the component on one Prosody
//! (`prosody`), on a two-node ejabberd cluster (`cluster`), and the web
//! feed's consumers (`web`), what consumers reconnecting at once cost with
//! and without resuming (`resume`), and how long `pubpresence doctor` takes
//! (`doctor`). This module only dispatches the command line; they share
//! `args`, `measure`, `client`, `error`, `output` and `server` (the
//! benchmarks' Prosody, which the soak starts too), and never import each
//! other. `prosody` is in parts: `rate` (one rate's load), `report` (its
//! figures), `floors` and `mirror` (what its figures are compared with).
//! `web` and `cluster` keep their parts in folders of their own: `web/`
//! holds `feed` (the feed child), `consumer`, `window` and `report`;
//! `cluster/` holds `probe` (what is counted), `component`, `windows` (the
//! measured windows) and `report`.

mod args;
mod client;
pub mod cluster;
mod doctor;
mod error;
mod floors;
mod measure;
mod mirror;
mod output;
pub mod prosody;
mod rate;
mod report;
pub mod resume;
mod server;
mod state;
pub mod web;

pub use args::{parse_secs, BenchArgs};
pub use error::BenchError;
pub use measure::{cpu_seconds, rss_kib, storage, Latency, Machine};
pub use prosody::{run, BenchOptions, Report};
pub(crate) use server::start_prosody;

/// Runs the benchmark and prints the table (stderr progress, stdout figures).
pub async fn main(args: BenchArgs) -> anyhow::Result<()> {
    if args.doctor {
        return doctor::main(args).await;
    }
    if args.ejabberd_cluster {
        return cluster::main(args).await;
    }
    if args.web_resume.is_some() {
        return resume::main(args).await;
    }
    if args.web_synthetic && args.web_consumers.is_none() && args.web_feed_child.is_none() {
        anyhow::bail!("--web-synthetic goes with --web-consumers");
    }
    if args.web_consumers.is_some() || args.web_feed_child.is_some() {
        return web::main(args).await;
    }
    // Progress on stderr; RUST_LOG wins.
    output::init_logging("pubpresence_lab::bench=info");
    let opts = args.options(Some(crate::product_binary()?));
    eprintln!(
        "pubpresence bench: {} sessions, rates {:?}/s, {:?} each; {}",
        opts.connections,
        opts.rates,
        opts.duration,
        storage(opts.memory_storage)
    );
    let report = output::unless_stopped(run(opts)).await?;
    output::print_report(args.json, &report.table(), &report.to_json());
    Ok(())
}
