//! Worker processes killed with SIGKILL in a loop while a producer commits (one transaction in
//! seven rolled back on purpose): three `fault-worker` processes on the shared PostgreSQL, one killed
//! and restarted every 700 ms for the whole production. Their handlers record every success as a
//! committed row, so duplicates are counted across processes.

use std::process::Stdio;
use std::time::{Duration, Instant};

use outbox_core::NewEvent;
use outbox_core::prelude::*;
use outbox_faults::{EVENT_TYPE, HANDLERS, TRANSACTIONAL_HANDLER};
use outbox_postgres::PgStore;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

const TRANSACTIONS: usize = 700;
const PER_TRANSACTION: usize = 10;
const WORKERS: usize = 3;
/// The fault-worker's in-flight events per process.
const IN_FLIGHT: u64 = 100;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/outbox_test".to_owned())
}

async fn spawn_worker(schema: &str, n: usize) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fault-worker"))
        .args([database_url().as_str(), schema, &n.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("fault-worker starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    assert!(
        matches!(ready, Ok(Ok(Some(ref l))) if l == "ready"),
        "fault-worker did not start: {ready:?}"
    );
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_in_a_loop_lose_nothing() {
    let url = database_url();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at DATABASE_URL ({e}); start it with ./scripts/services.sh")
        });
    let schema = format!(
        "faults_kill_{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    let store = PgStore::builder(pool.clone())
        .schema(&schema)
        .build()
        .expect("names");
    store.migrate().await.expect("migrate");
    sqlx::query(&format!(
        "CREATE TABLE \"{schema}\".runs (event_id uuid NOT NULL, handler text NOT NULL)"
    ))
    .execute(&pool)
    .await
    .expect("runs table");

    let mut workers = Vec::new();
    for n in 0..WORKERS {
        workers.push(spawn_worker(&schema, n).await);
    }
    let mut committed: Vec<uuid::Uuid> = Vec::new();
    let mut rolled_back: Vec<uuid::Uuid> = Vec::new();
    let mut kills = 0u64;
    let mut next_kill = Instant::now() + Duration::from_millis(700);
    let started = Instant::now();
    for t in 0..TRANSACTIONS {
        let events: Vec<NewEvent> = (0..PER_TRANSACTION)
            .map(|i| NewEvent::new(EVENT_TYPE, serde_json::json!({ "t": t, "i": i })))
            .collect();
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
        let mut tx = pool.begin().await.expect("begin");
        store
            .enqueue_batch_in(&mut tx, events)
            .await
            .expect("enqueue");
        if t % 7 == 3 {
            tx.rollback().await.expect("rollback");
            rolled_back.extend(ids);
        } else {
            tx.commit().await.expect("commit");
            committed.extend(ids);
        }
        if Instant::now() >= next_kill {
            let victim = kills as usize % WORKERS;
            let _ = workers[victim].start_kill(); // SIGKILL
            let _ = workers[victim].wait().await;
            workers[victim] = spawn_worker(&schema, victim).await;
            kills += 1;
            next_kill = Instant::now() + Duration::from_millis(700);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let produced_in = started.elapsed();

    let count_delivered = || {
        let (pool, schema, committed) = (pool.clone(), schema.clone(), committed.clone());
        async move {
            sqlx::query_scalar::<_, i64>(&format!(
                "SELECT count(*) FROM (SELECT event_id FROM \"{schema}\".runs WHERE event_id = ANY($1)
                 GROUP BY event_id HAVING count(DISTINCT handler) = {}) d",
                HANDLERS.len() + 1
            ))
            .bind(committed)
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut delivered = 0;
    while Instant::now() < deadline {
        delivered = count_delivered().await;
        if delivered == committed.len() as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained_after = started.elapsed();
    for worker in &mut workers {
        if let Some(pid) = worker.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for worker in &mut workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), worker.wait()).await;
    }
    let runs = format!("\"{schema}\".runs");
    let rolled_back_delivered: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {runs} WHERE event_id = ANY($1)"
    ))
    .bind(&rolled_back)
    .fetch_one(&pool)
    .await
    .expect("count");
    let duplicates: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) - count(DISTINCT (event_id, handler)) FROM {runs}"
    ))
    .fetch_one(&pool)
    .await
    .expect("count");
    // The transactional handler's row commits with its success: never twice.
    let ledger_duplicates: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) - count(DISTINCT event_id) FROM {runs} WHERE handler = $1"
    ))
    .bind(TRANSACTIONAL_HANDLER)
    .fetch_one(&pool)
    .await
    .expect("count");
    let bound = kills * IN_FLIGHT;
    println!(
        "FIGURES sigkill loop ({WORKERS} worker processes, one SIGKILLed every 700 ms): committed {}, \
         rolled back {}, lost {}, rolled-back delivered {rolled_back_delivered}, duplicate handler runs \
         {duplicates} (bound {bound} = {kills} kills × {IN_FLIGHT} in flight), duplicate runs of the \
         transactional handler {ledger_duplicates}, production {:.1} s, all \
         delivered after {:.1} s",
        committed.len(),
        rolled_back.len(),
        committed.len() as i64 - delivered,
        produced_in.as_secs_f64(),
        drained_after.as_secs_f64()
    );
    assert!(kills >= 5, "only {kills} kills happened");
    assert_eq!(
        ledger_duplicates, 0,
        "the transactional handler's row was written twice for some event"
    );
    assert_eq!(
        delivered,
        committed.len() as i64,
        "committed events were lost"
    );
    assert_eq!(
        rolled_back_delivered, 0,
        "rolled-back events were delivered"
    );
    assert!(
        duplicates as u64 <= bound,
        "{duplicates} duplicates, bound {bound}"
    );
    let _ = sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&pool)
        .await;
}
