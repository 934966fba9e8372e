//! How a benchmark prints: progress on stderr, figures on stdout.

/// Progress on stderr at `default` level; RUST_LOG wins.
pub(crate) fn init_logging(default: &str) {
    pubpresence::logging::init(None, default);
}

/// Prints a benchmark's figures: the table on stdout, or with `json` the
/// table for a human on stderr and the figures as one JSON object on stdout.
pub(crate) fn print_report(json: bool, table: &str, value: &serde_json::Value) {
    if json {
        eprint!("{table}");
        println!("{value}");
    } else {
        print!("{table}");
    }
}

/// Runs a benchmark until it ends or a stop signal (Ctrl-C, SIGTERM) comes.
/// Stopped, the run is dropped, and with it every server and component it
/// started (each ends on drop), as the soak does.
pub(crate) async fn unless_stopped<T, E: Into<anyhow::Error>>(
    run: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    let mut stop = pubpresence::signals::stop_channel(None);
    tokio::select! {
        r = run => r.map_err(Into::into),
        _ = stop.wait_for(|s| *s) => {
            anyhow::bail!("stopped by a signal; everything it started is gone")
        }
    }
}
