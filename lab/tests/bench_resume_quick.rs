//! The reconnect benchmark (`bench --web-resume`) in small numbers (CI):
//! 20 consumers, a state of 200 users, 10 events missed. Every consumer
//! gets to the last event both ways, and resuming reads fewer bytes than
//! starting over; no timing is asserted.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_resume_bench_reaches_the_last_event() {
    let r = pubpresence_lab::bench::resume::run(20, 200, 10)
        .await
        .expect("the quick resume benchmark runs");
    assert_eq!((r.resume.done, r.snapshot.done), (20, 20), "{r:?}");
    assert!(r.resume.bytes > 0, "{r:?}");
    assert!(
        r.resume.bytes * 5 < r.snapshot.bytes,
        "10 missed events cost less than a state of 200 users: {r:?}"
    );
    assert!(
        r.table().contains("resume / snapshot: bytes"),
        "{}",
        r.table()
    );
}
