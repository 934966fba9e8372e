//! The soak's short run (CI; docs/reliability.md): about two minutes of
//! random faults from a fixed seed against a real Prosody, the component and
//! its consumers. Every kind of fault comes at least once (the generator
//! draws from a shuffled bag of every kind), and the checker must find
//! nothing: active = the server's sessions with the users' statuses, each
//! consumer = active, `since` never backwards, and between faults every
//! connection's live events exactly what it did.

use pubpresence_lab::soak::{self, FaultKind, SoakArgs};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_minutes_of_random_faults_and_nothing_diverges() {
    let args = SoakArgs {
        // Every kind at least once: nine on Prosody, each with its
        // quiet stretch and check (8-15 s together).
        duration: Duration::from_secs(120),
        seed: Some(1),
        users: 20,
        rate: 10.0,
        faults: Vec::new(),
        json: false,
        ejabberd_cluster: false,
        standby: false,
    };
    let r = soak::run(&args, 1).await.expect("the soak runs");
    let table = r.table();
    eprintln!("{table}");
    assert!(
        r.divergences.is_empty(),
        "{table}\nhistory: {:#?}",
        r.history
    );
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
    let args = SoakArgs {
        duration: Duration::from_secs(60),
        seed: Some(2),
        users: 10,
        rate: 10.0,
        faults: kinds.clone(),
        json: false,
        ejabberd_cluster: false,
        standby: true,
    };
    let r = soak::run(&args, 2).await.expect("the soak runs");
    let table = r.table();
    eprintln!("{table}");
    assert!(
        r.divergences.is_empty(),
        "{table}\nhistory: {:#?}",
        r.history
    );
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
