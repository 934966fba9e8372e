//! Logging on stderr, for the `pubpresence` binary and the lab's: `RUST_LOG`
//! wins over the level the caller passes (the config file's `log`), which
//! wins over its default.

/// Sets up the global subscriber once; a second call does nothing.
pub fn init(level: Option<&str>, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or(default)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
