//! `pubpresence-lab bench --doctor`: how long `pubpresence doctor` takes on
//! a healthy Prosody with N sessions connected, each check apart
//! (docs/benchmarks.md, "doctor").
//!
//! The sessions are made visible first (each asks the component for a
//! subscription while `pubpresence run` is up), then the component is
//! stopped and doctor runs, as an operator would run it.

use super::args::BenchArgs;
use super::error::{setup, BenchError};
use super::measure::{storage, Machine};
use super::server::{active_items, start_prosody};
use crate::process;
use crate::sim::{self, SimControl, SimOptions};
use pubpresence::xmpp::c2s;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const WATCHER: &str = "watcher";
/// Connections per simulated account.
const PER_ACCOUNT: usize = 10;

/// One check as doctor's `--json` prints it.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
struct Line {
    check: String,
    result: String,
    summary: String,
    ms: u64,
}

pub async fn main(args: BenchArgs) -> anyhow::Result<()> {
    super::output::init_logging("pubpresence_lab::bench=info");
    let n = args
        .connections
        .unwrap_or(if args.quick { 100 } else { 10_000 });
    let accounts = n.div_ceil(PER_ACCOUNT);
    let mut names = vec![WATCHER.to_string()];
    names.extend((1..=accounts).map(|i| format!("base{i}")));
    eprintln!(
        "pubpresence bench --doctor: {n} sessions; {}",
        storage(false)
    );
    let prosody = start_prosody(names, Default::default()).await?;
    let outcome = super::output::unless_stopped(run(&prosody, n)).await;
    let _ = tokio::task::spawn_blocking(move || drop(prosody)).await;
    let (table, value) = outcome?;
    super::output::print_report(args.json, &table, &value);
    Ok(())
}

async fn run(
    prosody: &crate::Prosody,
    n: usize,
) -> Result<(String, serde_json::Value), BenchError> {
    let dir = prosody.dir.path();
    let config = dir.join("doctor.toml");
    let watcher_jid = format!("{WATCHER}@{}", prosody.domain);
    std::fs::write(&config, prosody.config_toml(&[&watcher_jid])).map_err(setup)?;
    let bin = crate::product_binary().map_err(setup)?;

    // `run` up while the sessions log in, so that each subscription is
    // approved; stopped before doctor.
    let mut comp = Command::new(&bin)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("run.log")).map_err(setup)?)
        .spawn()
        .map_err(setup)?;
    let mut opts = SimOptions::sessions(prosody, "base", n, PER_ACCOUNT);
    opts.rate = 0.0;
    opts.disconnect_share = 0.0;
    opts.first_ip = Ipv4Addr::new(127, 0, 0, 2);
    opts.login_concurrency = 32;
    let (ctl, ctl_rx) = watch::channel(SimControl::Run);
    let users = tokio::spawn(sim::run(opts, ctl_rx, None));
    let tracked = wait_tracked(prosody, n).await;
    process::stop_async(&mut comp, Duration::from_secs(10)).await;
    tracked?;

    let t = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(["doctor", "--json", "--config"])
            .arg(&config)
            .output()
    })
    .await
    .map_err(setup)?
    .map_err(setup)?;
    let total = t.elapsed();
    let _ = ctl.send(SimControl::Stop);
    let _ = users.await;
    let lines: Vec<Line> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if lines.is_empty() {
        return Err(setup(format!(
            "doctor printed no check: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let machine = Machine::probe();
    let mut table = format!(
        "pubpresence doctor with {n} sessions connected ({}; {} cores, {})\n\
         exit code {}, {:.1} s in all\n\n{:<20} {:>6} {:>9}  summary\n",
        storage(false),
        machine.nproc,
        machine.model,
        out.status.code().unwrap_or(-1),
        total.as_secs_f64(),
        "check",
        "result",
        "ms"
    );
    for l in &lines {
        table.push_str(&format!(
            "{:<20} {:>6} {:>9}  {}\n",
            l.check, l.result, l.ms, l.summary
        ));
    }
    let value = serde_json::json!({
        "sessions": n,
        "storage": storage(false),
        "machine": machine,
        "exit_code": out.status.code(),
        "total_seconds": total.as_secs_f64(),
        "checks": lines,
    });
    Ok((table, value))
}

/// Waits until active holds `n` items (every session tracked).
async fn wait_tracked(prosody: &crate::Prosody, n: usize) -> Result<(), BenchError> {
    let (watcher, mut rx) = c2s::connect_as(
        &format!("{WATCHER}@{}/bench", prosody.domain),
        WATCHER,
        prosody.c2s_addr(),
        crate::loopback(1),
    )
    .await?;
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let limit = Duration::from_secs(60 + n as u64 / 10);
    let deadline = Instant::now() + limit;
    loop {
        // Every fetch of active costs the server more as it grows (seconds
        // at 10,000 items): wait twice as long as it took before the next,
        // so that polling takes at most a third of the server.
        let asked = Instant::now();
        let held = active_items(&watcher, &prosody.pubsub_jid).await;
        if held >= n {
            break;
        }
        if Instant::now() > deadline {
            watcher.close().await;
            return Err(BenchError::Timeout(format!(
                "{n} sessions on active within {limit:?}: {held}"
            )));
        }
        tokio::time::sleep(Duration::from_secs(1).max(asked.elapsed() * 2)).await;
    }
    watcher.close().await;
    Ok(())
}
