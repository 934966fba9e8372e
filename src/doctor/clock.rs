//! The server's clock against this machine's (XEP-0202): `since` comes from
//! this machine, and a client compares it with its own clock
//! (docs/protocol.md, "Items").

use super::fixes;
use super::report::Check;
use super::Ctx;
use crate::wire::time;
use chrono::Utc;
use std::time::Duration;

pub const CLOCK: &str = "clock";

/// Apart by this much: a warning.
const WARN: Duration = Duration::from_secs(2);
/// Apart by this much: `since` is wrong by more than users forgive.
const FAIL: Duration = Duration::from_secs(30);

/// Check 10.
pub async fn clock(ctx: &Ctx<'_>) -> Check {
    let domain = ctx.s.domain.to_string();
    let sent = Utc::now();
    let answer = ctx
        .conn
        .iq_with_timeout(
            "get",
            &domain,
            time::entity_time_query(),
            Duration::from_secs(5),
        )
        .await;
    let received = Utc::now();
    let Some(server) = answer.ok().as_ref().and_then(time::parse_entity_time) else {
        return Check::warn(
            CLOCK,
            format!("{domain} does not tell its time (XEP-0202): the clock is not checked"),
        )
        .with_fix(fixes::time(&ctx.software));
    };
    verdict(sent, received, server)
}

/// The offset of the server's clock, read at the middle of the round trip.
fn verdict(sent: time::Timestamp, received: time::Timestamp, server: time::Timestamp) -> Check {
    let mid = sent + (received - sent) / 2;
    let skew = (server - mid).num_milliseconds();
    let abs = Duration::from_millis(skew.unsigned_abs());
    let line = format!(
        "the server's clock is {} ms {} this machine's",
        skew.abs(),
        if skew >= 0 { "ahead of" } else { "behind" }
    );
    let fix = vec![
        "keep both clocks in sync with NTP (systemd-timesyncd, chrony): `since` is this \
         machine's time"
            .to_string(),
    ];
    if abs >= FAIL {
        Check::fail(CLOCK, line).with_fix(fix)
    } else if abs >= WARN {
        Check::warn(CLOCK, line).with_fix(fix)
    } else {
        Check::ok(CLOCK, line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;

    #[test]
    fn skew_is_read_at_the_middle_of_the_round_trip() {
        let t0 = time::parse("2026-12-03T10:00:00Z").unwrap();
        let t1 = t0 + chrono::Duration::milliseconds(200);
        let c = verdict(t0, t1, t0 + chrono::Duration::milliseconds(100));
        assert_eq!(c.result, Verdict::Ok);
        assert_eq!(
            c.summary,
            "the server's clock is 0 ms ahead of this machine's"
        );
        let c = verdict(t0, t1, t0 - chrono::Duration::seconds(5));
        assert_eq!(c.result, Verdict::Warn);
        assert_eq!(
            c.summary,
            "the server's clock is 5100 ms behind this machine's"
        );
        let c = verdict(t0, t1, t0 + chrono::Duration::seconds(40));
        assert_eq!(c.result, Verdict::Fail);
    }
}
