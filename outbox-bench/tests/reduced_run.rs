//! The whole benchmark at reduced sizes on every backend: it checks the final state of every
//! scenario (nothing lost, nothing double-recorded), not speed.

async fn reduced(backend: &str) {
    let mut sizes = outbox_bench::Sizes::reduced();
    sizes.scenarios.push("gauges".to_owned());
    let report = outbox_bench::run(backend, &sizes)
        .await
        .unwrap_or_else(|e| panic!("{backend} benchmark failed: {e}"));
    println!("{}", report.table());
    assert!(report.all_checks_passed(), "{}", report.table());
    // enqueue 2, drain 3 (and one deleting processed events where the store can), latency 2,
    // fan-out 1, backlog 5 (plain, scheduled, backing off, keyed with and without the key
    // hand-off), gauges 3 (lag, stats, stats by type; and again after maintenance where the server
    // does not maintain itself, not counted here).
    let deleting = usize::from(backend == "postgres");
    let counted = report
        .rows
        .iter()
        .filter(|r| !r.variant.ends_with("after maintenance"))
        .count();
    assert_eq!(
        counted,
        2 + 3 + deleting + 2 + 1 + 5 + 3,
        "{}",
        report.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reduced_run_ends_in_a_correct_state() {
    reduced("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reduced_run_ends_in_a_correct_state() {
    reduced("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reduced_run_ends_in_a_correct_state() {
    reduced("redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_reduced_run_ends_in_a_correct_state() {
    reduced("mongo").await;
}

/// The partitions scenario on the Redis Cluster: the drain with 1 and 8 partitions, each beside the
/// raw baseline, every event processed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_reduced_run_ends_in_a_correct_state() {
    let mut sizes = outbox_bench::Sizes::reduced();
    sizes.scenarios = vec!["partitions".to_owned()];
    sizes.processors = vec![1, 2];
    let report = outbox_bench::run("redis-cluster", &sizes)
        .await
        .unwrap_or_else(|e| panic!("redis-cluster benchmark failed: {e}"));
    println!("{}", report.table());
    assert!(report.all_checks_passed(), "{}", report.table());
    // Per processor count, a row with 1 partition and one with 8 (noting its gain).
    assert_eq!(report.rows.len(), 4, "{}", report.table());
    assert!(
        report
            .rows
            .iter()
            .filter(|r| r.variant.ends_with("N=8"))
            .all(|r| r.notes.contains("N=8 / N=1")),
        "{}",
        report.table()
    );
}

#[tokio::test]
async fn an_unknown_backend_is_a_clear_error() {
    let err = outbox_bench::run("oracle", &outbox_bench::Sizes::reduced())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("expected postgres, redis, redis-cluster, mongo or sqlite"),
        "{err}"
    );
}

/// The held-xmin scenario at a reduced size: every event delivered while a snapshot is held, for
/// outbox keeping and deleting processed events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_held_xmin_reduced_run_ends_in_a_correct_state() {
    let mut sizes = outbox_bench::Sizes::reduced();
    sizes.scenarios = vec!["held-xmin".to_owned()];
    let report = outbox_bench::run("postgres", &sizes)
        .await
        .unwrap_or_else(|e| panic!("postgres benchmark failed: {e}"));
    println!("{}", report.table());
    assert!(report.all_checks_passed(), "{}", report.table());
    assert_eq!(report.rows.len(), 2, "{}", report.table());
}
