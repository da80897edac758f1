//! A rolling deploy: version 1 runs alone, version 2 starts beside it (the handler `notify` moved
//! to another module, a new event type `OrderShipped`), version 1 stops, while a producer enqueues
//! both types. Every event ends processed by a handler that ran (none lost, none marked processed by
//! a version that does not know it), results recorded by version 1 are continued by version 2, and
//! no event is claimed more than a handful of times.

use std::process::Stdio;
use std::time::{Duration, Instant};

use outbox_core::prelude::*;
use outbox_core::{EventStatus, NewEvent, StoreExt};
use outbox_postgres::PgStore;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/outbox_test".to_owned())
}

async fn start(binary: &str, schema: &str) -> Child {
    let mut child = Command::new(binary)
        .args([database_url().as_str(), schema])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the application starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
    assert!(
        matches!(ready, Ok(Ok(Some(ref l))) if l == "ready"),
        "{binary} did not start: {ready:?}"
    );
    child
}

async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within 30 s")
        .expect("exit status");
    assert!(status.success(), "exited with {status}");
}

/// Enqueues for `duration`: `OrderPlaced` always, `OrderShipped` too when `shipped`.
async fn produce(
    store: &PgStore,
    duration: Duration,
    shipped: bool,
    next: &mut u64,
    ids: &mut Vec<(uuid::Uuid, &'static str)>,
) {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        let order = *next;
        *next += 1;
        let placed = store
            .enqueue(NewEvent::new(
                "OrderPlaced",
                serde_json::json!({ "order": order }),
            ))
            .await
            .expect("enqueue");
        ids.push((placed.id, "OrderPlaced"));
        if shipped {
            let sent = store
                .enqueue(NewEvent::new(
                    "OrderShipped",
                    serde_json::json!({ "order": order }),
                ))
                .await
                .expect("enqueue");
            ids.push((sent.id, "OrderShipped"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_deploy_loses_nothing_and_loops_nowhere() {
    let pool = sqlx::PgPool::connect(&database_url())
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at DATABASE_URL ({e}); start it with ./scripts/services.sh")
        });
    let schema = format!(
        "deploy_{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    let store = PgStore::builder(pool.clone())
        .schema(&schema)
        .build()
        .expect("names");
    store.migrate().await.expect("migrate");

    let mut ids = Vec::new();
    let mut next = 0;
    let mut v1 = start(env!("CARGO_BIN_EXE_v1"), &schema).await;
    produce(
        &store,
        Duration::from_millis(1500),
        false,
        &mut next,
        &mut ids,
    )
    .await;
    let mut v2 = start(env!("CARGO_BIN_EXE_v2"), &schema).await;
    produce(&store, Duration::from_secs(3), true, &mut next, &mut ids).await;
    stop(&mut v1).await;
    produce(&store, Duration::from_secs(1), true, &mut next, &mut ids).await;

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stats = store.stats().await.expect("stats");
        if stats.pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "events still pending: {stats:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(&mut v2).await;

    let runs: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(&format!(
        "SELECT event_id, handler, version FROM {}",
        rolling_deploy::runs_table(&schema)
    ))
    .fetch_all(&pool)
    .await
    .expect("runs");
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.dead, 0, "events went dead: {stats:?}");
    let mut max_claims = 0;
    let (mut placed_by_v1, mut placed_by_v2, mut shipped_seen_by_v1, mut continued) = (0, 0, 0, 0);
    for (id, event_type) in &ids {
        let record = store.get(*id).await.expect("get").expect("event exists");
        assert_eq!(record.status, EventStatus::Processed, "{record:?}");
        max_claims = max_claims.max(record.attempts);
        let handler = if *event_type == "OrderPlaced" {
            "notify"
        } else {
            "ship_notice"
        };
        let names: Vec<&String> = record.handler_results.keys().collect();
        assert_eq!(names, [handler], "results under a stable name: {record:?}");
        assert!(
            record.handler_results[handler].succeeded_at.is_some(),
            "{record:?}"
        );
        let ran: Vec<&str> = runs
            .iter()
            .filter(|(e, h, _)| e == id && h == handler)
            .map(|(_, _, v)| v.as_str())
            .collect();
        assert!(
            !ran.is_empty(),
            "{event_type} {id} processed without its handler running"
        );
        if *event_type == "OrderPlaced"
            && ran[0] == "v2"
            && record.handler_results[handler].attempts > 1
        {
            continued += 1;
        }
        match (*event_type, ran[0]) {
            ("OrderPlaced", "v1") => placed_by_v1 += 1,
            ("OrderPlaced", _) => placed_by_v2 += 1,
            (_, version) => assert_eq!(version, "v2", "OrderShipped handled by {version}"),
        }
        if *event_type == "OrderShipped" && record.attempts > 1 {
            shipped_seen_by_v1 += 1;
        }
    }
    println!(
        "rolling deploy: {} events, OrderPlaced handled by v1 {placed_by_v1} / v2 {placed_by_v2}, \
         {shipped_seen_by_v1} OrderShipped events claimed by v1 first, at most {max_claims} claims per event, \
         {continued} OrderPlaced events failed by v1 and finished by v2 under the same name",
        ids.len()
    );
    assert!(
        placed_by_v1 > 0 && placed_by_v2 > 0,
        "both versions must have run"
    );
    assert!(max_claims <= 6, "an event was claimed {max_claims} times");
    let _ = sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&pool)
        .await;
}
