//! The cluster bench's measured windows on a running component: a start-up
//! (from the spawn to `online`, then what active holds), and the first audit
//! due after it with the windows measured next to it (the equal window, the
//! background).

use super::component::{
    field_usize, fields, tail, Component, LogWatch, AUDIT_LINE, FROM_COPY_LINE, ONLINE_LINE,
};
use super::probe::{sample, Probe};
use super::report::{Audit, Cost, Startup};
use super::SESSION_CHECK_S;
use crate::bench::client::{client_iq, read_status};
use crate::bench::error::{setup, BenchError};
use crate::bench::measure::rss_kib;
use pubpresence::wire::pubsub;
use pubpresence::wire::status::ServiceStatus;
use pubpresence::wire::user::{Status, UserItem};
use pubpresence::xmpp::c2s::C2s;
use std::path::Path;
use std::time::{Duration, Instant};

const ACTIVE: &str = "presence/active";
const IQ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long before the audit is due its window opens.
const PRE_AUDIT: Duration = Duration::from_secs(1);

/// Items on active: all, with an IP, `unknown`.
async fn active_counts(c: &C2s, pubsub_jid: &str) -> Result<(usize, usize, usize), BenchError> {
    let r = c
        .iq(
            client_iq("get", pubsub_jid, pubsub::items(ACTIVE)),
            IQ_TIMEOUT,
        )
        .await?;
    let items: Vec<UserItem> = pubsub::parse_items(&r)
        .into_iter()
        .filter_map(|(_, p)| p.as_ref().and_then(UserItem::from_element))
        .collect();
    Ok((
        items.len(),
        items.iter().filter(|i| !i.ip.is_empty()).count(),
        items.iter().filter(|i| i.status == Status::Unknown).count(),
    ))
}

/// What `start_up` hands on: the figures, when it was spawned, its log as
/// read so far, audits seen meanwhile.
type Started = (Startup, Instant, LogWatch, Vec<String>);

/// Spawns the component and measures until `online`.
pub(super) async fn start_up(
    bin: &Path,
    config: &Path,
    log_path: &Path,
    probe: &Probe,
    watcher: &C2s,
    pubsub_jid: &str,
    limit: Duration,
) -> Result<(Started, Component), BenchError> {
    let s0 = sample(None, probe)?;
    let spawned = Instant::now();
    let mut comp = Component::start(bin, config, log_path)?;
    let mut log = LogWatch::new(log_path);
    let mut audits = Vec::new();
    let (mut warnings, mut unanswered, mut kept) = (0, 0, 0);
    let mut from_copy = false;
    let (_, line) = comp
        .wait_line(
            &mut log,
            "online",
            limit,
            |l| l.contains(ONLINE_LINE),
            |l| {
                if l.contains(AUDIT_LINE) {
                    audits.push(l.to_string());
                }
                if let Some(n) = addresses_kept(l) {
                    kept = n;
                }
                from_copy |= l.contains(FROM_COPY_LINE);
                if l.contains(" WARN ") {
                    warnings += 1;
                    if l.contains("publishing") && l.contains("no answer within") {
                        unanswered += 1;
                    }
                }
            },
        )
        .await?;
    let s1 = sample(Some(comp.pid()), probe)?;
    let mut cost = Cost::between(&s0, &s1);
    // From the spawn, not from the sample before it.
    cost.window_s = s1.at.saturating_duration_since(spawned).as_secs_f64();
    let seconds = cost.window_s;
    // `online` is on the status node (the line follows its publish).
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_status(watcher, pubsub_jid).await != Some(ServiceStatus::Online) {
        if Instant::now() > deadline {
            return Err(BenchError::Component(format!(
                "logged online but the status node does not say so\n{}",
                tail(log_path, 20)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss = rss_kib(comp.pid()).unwrap_or(0);
    let (items, with_ip, unknown) = active_counts(watcher, pubsub_jid).await?;
    Ok((
        (
            Startup {
                seconds,
                cost,
                tracked: field_usize(&line, "connections").unwrap_or(0),
                active_items: items,
                active_with_ip: with_ip,
                active_unknown: unknown,
                rss_kib: rss,
                warnings,
                unanswered_publishes: unanswered,
                addresses_kept: kept,
                active_from_copy: from_copy,
            },
            spawned,
            log,
            audits,
        ),
        comp,
    ))
}

/// The first audit due after `online` (at `spawned` + k × `t_audit`), then
/// the background.
pub(super) async fn measure_audit(
    comp: &mut Component,
    log: &mut LogWatch,
    probe: &Probe,
    spawned: Instant,
    t_audit: u64,
    background: Duration,
    unplanned: &mut Vec<String>,
) -> Result<Audit, BenchError> {
    let period = Duration::from_secs(t_audit);
    // A tick before online is skipped by the component: the next one counts.
    let mut due = spawned + period;
    while due < Instant::now() + PRE_AUDIT + Duration::from_millis(500) {
        due += period;
    }
    tracing::info!(
        "waiting {:.1} s for the audit",
        due.saturating_duration_since(Instant::now()).as_secs_f64()
    );
    // Audits before the window (none expected) are noted.
    let open = due - PRE_AUDIT;
    while Instant::now() < open {
        for l in log.new_lines() {
            if l.contains(AUDIT_LINE) {
                unplanned.push(l);
            }
        }
        if comp.exited() {
            return Err(BenchError::Component(format!(
                "exited before the audit\n{}",
                tail(&comp.log, 30)
            )));
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            open.min(Instant::now() + Duration::from_millis(200)),
        ))
        .await;
    }
    for l in log.new_lines() {
        if l.contains(AUDIT_LINE) {
            unplanned.push(l);
        }
    }
    let pid = comp.pid();
    let a0 = sample(Some(pid), probe)?;
    let (_, line) = comp
        .wait_line(
            log,
            "the audit's log line",
            period + Duration::from_secs(120),
            |l| l.contains(AUDIT_LINE),
            |_| {},
        )
        .await?;
    let a1 = sample(Some(pid), probe)?;
    let window = Cost::between(&a0, &a1);
    let seconds_after_due = a1.at.saturating_duration_since(due).as_secs_f64();
    tracing::info!("audit: {line}");

    // An equal window a whole number of check periods later.
    let check = Duration::from_secs_f64(SESSION_CHECK_S);
    let mut e_start = a0.at + 2 * check;
    while e_start < a1.at + Duration::from_millis(500) {
        e_start += check;
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(e_start)).await;
    let e0 = sample(Some(pid), probe)?;
    tokio::time::sleep(a1.at - a0.at).await;
    let e1 = sample(Some(pid), probe)?;
    let equal = Cost::between(&e0, &e1);

    // The background: no audit until the next one is due.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b0 = sample(Some(pid), probe)?;
    if Instant::now() + background > due + period {
        return Err(setup(format!(
            "the background window ({background:?}) would reach the next audit"
        )));
    }
    tokio::time::sleep(background).await;
    let b1 = sample(Some(pid), probe)?;
    for l in log.new_lines() {
        if l.contains(AUDIT_LINE) {
            unplanned.push(l);
        }
    }
    let bg = Cost::between(&b0, &b1);
    let same = bg.scaled_to(window.window_s);
    let net = window.minus(&equal);
    let per_check_bytes = bg.read_bytes * SESSION_CHECK_S / bg.window_s.max(1e-9);
    let f = fields(&line);
    let get = |k: &str| f.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(Audit {
        audit_interval_s: t_audit,
        checked: get("checked"),
        on_active: get("on_active"),
        added: get("added"),
        probed: get("probed"),
        removed: get("removed"),
        line: line
            .find(AUDIT_LINE)
            .map(|at| line[at..].to_string())
            .unwrap_or(line.clone()),
        seconds_after_due,
        window,
        check_in_window: equal.read_bytes > per_check_bytes / 2.0,
        equal_window: equal,
        net,
        background: bg,
        background_same_length: same,
        without_component: Cost::default(),
        per_session_check: Cost::default(),
        unplanned_audits: unplanned.clone(),
    })
}

/// The `kept` field of the component's start-up line "addresses kept from
/// active for N sessions ...".
fn addresses_kept(line: &str) -> Option<usize> {
    if !line.contains("addresses kept from active") {
        return None;
    }
    crate::log_fields::field_usize(line, "kept")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kept_addresses_are_read_from_the_log_line() {
        let line = "2026-12-06T14:00:00Z  INFO pubpresence: addresses kept from active for \
                    10001 sessions whose presence is unchanged since before the last clean stop \
                    (not asked with user-stats) kept=10001";
        assert_eq!(super::addresses_kept(line), Some(10001));
        assert_eq!(super::addresses_kept("online: active is up to date"), None);
        assert_eq!(super::addresses_kept("online: kept=3"), None);
    }
}
