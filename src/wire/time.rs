//! Timestamps as pubpresence writes them: RFC 3339, UTC, to the second.

use chrono::{DateTime, SecondsFormat, Utc};

pub type Timestamp = DateTime<Utc>;

/// Now, truncated to the second (what is published).
pub fn now() -> Timestamp {
    let n = Utc::now();
    DateTime::from_timestamp(n.timestamp(), 0).unwrap_or(n)
}

pub fn format(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses an RFC 3339 / XEP-0082 timestamp, normalised to UTC seconds.
pub fn parse(s: &str) -> Option<Timestamp> {
    let t = DateTime::parse_from_rfc3339(s.trim())
        .ok()?
        .with_timezone(&Utc);
    DateTime::from_timestamp(t.timestamp(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_normalise() {
        let t = parse("2026-11-24T10:15:02.123+01:00").unwrap();
        assert_eq!(format(&t), "2026-11-24T09:15:02Z");
        assert!(parse("yesterday").is_none());
    }
}
