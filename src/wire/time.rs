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

/// XEP-0202: the request for an entity's time.
pub fn entity_time_query() -> xmpp_parsers::minidom::Element {
    xmpp_parsers::minidom::Element::builder("time", super::ns::TIME).build()
}

/// The `<utc/>` of an XEP-0202 answer (the IQ), to the millisecond.
pub fn parse_entity_time(iq: &xmpp_parsers::minidom::Element) -> Option<Timestamp> {
    let utc = iq
        .get_child("time", super::ns::TIME)?
        .get_child("utc", super::ns::TIME)?;
    DateTime::parse_from_rfc3339(utc.text().trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
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

    #[test]
    fn entity_time_keeps_milliseconds() {
        let iq: xmpp_parsers::minidom::Element = "<iq xmlns='jabber:client' type='result'><time \
             xmlns='urn:xmpp:time'><tzo>+01:00</tzo><utc>2026-12-03T10:15:02.250Z</utc></time></iq>"
            .parse()
            .unwrap();
        let t = parse_entity_time(&iq).unwrap();
        assert_eq!(t.timestamp_millis() % 1000, 250);
        let bad: xmpp_parsers::minidom::Element =
            "<iq xmlns='jabber:client' type='result'/>".parse().unwrap();
        assert!(parse_entity_time(&bad).is_none());
    }
}
