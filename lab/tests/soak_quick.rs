//! The soak's short run (CI; docs/reliability.md): about two minutes of
//! random faults from a fixed seed against a real Prosody, the component and
//! its consumers. Every kind of fault comes at least once (the generator
//! draws from a shuffled bag of every kind), and the checker must find
//! nothing: active = the server's sessions with the users' statuses, each
//! consumer = active, `since` never backwards, and between faults every
//! connection's live events exactly what it did.

use pubpresence_lab::soak::{self, FaultKind, SoakArgs};
use std::time::Duration;

/// Runs it; the report and its table, once nothing diverged.
async fn run_clean(args: &SoakArgs, seed: u64) -> (soak::Report, String) {
    let r = soak::run(args, seed).await.expect("the soak runs");
    let table = r.table();
    eprintln!("{table}");
    assert!(
        r.divergences.is_empty(),
        "{table}\nhistory: {:#?}",
        r.history
    );
    (r, table)
}

/// A soak on Prosody: `secs` of faults from `seed`, 10 changes a second.
fn on_prosody(
    secs: u64,
    seed: u64,
    users: usize,
    faults: Vec<FaultKind>,
    standby: bool,
) -> SoakArgs {
    SoakArgs {
        duration: Duration::from_secs(secs),
        seed: Some(seed),
        users,
        rate: 10.0,
        faults,
        json: false,
        ejabberd_cluster: false,
        standby,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_minutes_of_random_faults_and_nothing_diverges() {
    // Every kind at least once: nine on Prosody, each with its quiet
    // stretch and check (8-15 s together).
    let args = on_prosody(120, 1, 20, Vec::new(), false);
    let (r, table) = run_clean(&args, 1).await;
    for k in FaultKind::ALL.into_iter().filter(|k| k.applies(false)) {
        assert!(
            r.faults.get(k.name()).is_some_and(|n| *n > 0),
            "no {} fault: {table}",
            k.name()
        );
        assert!(r.converge.contains_key(k.name()), "{table}");
    }
    // The checks really ran: live events compared between faults, and the
    // consumer of /events resumed after each cut.
    assert!(r.checks > 50 && r.live_events > 50, "{table}");
    assert!(r.sse_resumed >= 8 && r.sse_reset == 0, "{table}");
    assert!(r.component_rss[0] > 0 && r.watch_rss[1] > 0, "{table}");
}

/// The same with two instances (`[standby]`): the faults meant for the
/// component hit the active instance; the other takes over, or the struck
/// one comes back, and the checker must still find nothing. Exactly one
/// instance is active at every agreement (a check of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_faults_with_a_standby_and_nothing_diverges() {
    let kinds = vec![
        FaultKind::Kill9,
        FaultKind::Freeze,
        FaultKind::Restart,
        FaultKind::Cut,
    ];
    let args = on_prosody(60, 2, 10, kinds.clone(), true);
    let (r, table) = run_clean(&args, 2).await;
    assert_eq!(r.instances, 2, "{table}");
    for k in kinds {
        assert!(
            r.converge.contains_key(k.name()),
            "no agreed {}: {table}",
            k.name()
        );
    }
    assert!(r.takeovers >= 1, "the standby never took over: {table}");
}
