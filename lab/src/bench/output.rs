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
