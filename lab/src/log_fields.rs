//! `key=value` fields of the component's log lines (tracing's format), for
//! the benchmarks and the tests that read what the component logged.

use std::collections::BTreeMap;

/// `key=value` fields of a log line.
pub fn fields(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// The field `key` of a log line, as a number.
pub fn field_usize(line: &str, key: &str) -> Option<usize> {
    fields(line).get(key).and_then(|v| v.parse().ok())
}
