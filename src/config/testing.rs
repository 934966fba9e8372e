//! Fixtures shared by the unit tests of the config rooms: a minimal
//! component file, a watch-only file, a `[standby]` table, and parse helpers
//! that fail the test with the error shown.

use super::{Config, ConfigError};

pub(super) const MINIMAL: &str = r#"
jid    = "pubpresence.example.org"
server = "127.0.0.1:5347"
secret = "s3cret"
domain = "example.org"
pubsub = "pubsub.example.org"
"#;

pub(super) const WATCH_ONLY: &str = r#"
jid    = "pubpresence.example.org"
pubsub = "pubsub.example.org"

[watch]
jid      = "dashboard@example.org"
password = "pw-hunter2"
"#;

pub(super) fn no_env(_: &str) -> Option<String> {
    None
}

pub(super) fn parse(s: &str) -> Config {
    match Config::from_toml_str(s, None) {
        Ok(c) => c,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

pub(super) fn parse_err(s: &str) -> ConfigError {
    match Config::from_toml_str(s, None) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

pub(super) const STANDBY: &str = r#"
[standby]
jid      = "pubpresence-standby@example.org"
password = "sb-hunter2"
"#;
