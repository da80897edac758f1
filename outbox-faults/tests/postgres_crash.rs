//! A PostgreSQL crash in the middle of a run: a private cluster (`scripts/pg-private.sh`, on its own
//! port) is stopped with `-m immediate` while a producer commits and three workers deliver, stays
//! down for 5 s, and restarts. Nothing committed is lost, nothing rolled back is delivered.

use std::process::Command;
use std::time::{Duration, Instant};

use outbox_core::prelude::*;
use outbox_core::{NewEvent, Worker};
use outbox_faults::{
    EVENT_TYPE, Ledger, free_port, registry, scripts_dir, wait_for, worker_config,
};
use outbox_postgres::PgStore;
use sqlx::postgres::PgPoolOptions;

const TRANSACTIONS: usize = 1_500;
const PER_TRANSACTION: usize = 10;
const WORKERS: usize = 3;
const IN_FLIGHT: usize = 200;
const DOWN: Duration = Duration::from_secs(5);

struct Cluster {
    dir: std::path::PathBuf,
    port: u16,
}

impl Cluster {
    fn run(&self, command: &str) {
        let status = Command::new(scripts_dir().join("pg-private.sh"))
            .arg(command)
            .arg(&self.dir)
            .arg(self.port.to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run scripts/pg-private.sh: {e}"));
        assert!(
            status.success(),
            "scripts/pg-private.sh {command} failed (is PostgreSQL installed? ./scripts/services.sh installs it); see {}/server.log",
            self.dir.display()
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(scripts_dir().join("pg-private.sh"))
            .arg("stop")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_crash_loses_nothing_and_delivers_nothing_rolled_back() {
    let dir = std::env::temp_dir().join(format!("outbox-pg-crash-{}", uuid::Uuid::now_v7()));
    let cluster = Cluster {
        dir,
        port: free_port(),
    };
    cluster.run("init");
    cluster.run("start");
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&url)
        .await
        .expect("the private cluster answers");
    let store = PgStore::builder(pool.clone())
        .schema("faults")
        .build()
        .expect("valid names");
    store.migrate().await.expect("migrate");

    let ledger = Ledger::default();
    let workers: Vec<_> = (0..WORKERS)
        .map(|n| {
            Worker::builder(store.clone())
                .registry(registry(&ledger))
                .config(worker_config(n, IN_FLIGHT))
                .build()
                .expect("worker")
                .start()
        })
        .collect();

    // The producer commits batches of events; one transaction in seven is rolled back on purpose.
    // A commit that fails because the server went away is "in doubt", resolved afterwards.
    let producer = {
        let (store, pool, ledger) = (store.clone(), pool.clone(), ledger.clone());
        tokio::spawn(async move {
            for t in 0..TRANSACTIONS {
                let events: Vec<NewEvent> = (0..PER_TRANSACTION)
                    .map(|i| NewEvent::new(EVENT_TYPE, serde_json::json!({ "t": t, "i": i })))
                    .collect();
                let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
                let outcome = async {
                    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
                    store
                        .enqueue_batch_in(&mut tx, events)
                        .await
                        .map_err(|e| e.to_string())?;
                    if t % 7 == 3 {
                        tx.rollback().await.map_err(|e| e.to_string())?;
                        return Ok(false);
                    }
                    tx.commit()
                        .await
                        .map(|()| true)
                        .map_err(|e| format!("commit: {e}"))
                }
                .await;
                match outcome {
                    Ok(true) => ledger.committed(ids),
                    Ok(false) => ledger.rolled_back(ids),
                    Err(e) if e.starts_with("commit") => ledger.in_doubt(ids),
                    // Failed before the commit: nothing was written.
                    Err(_) => {
                        ledger.rolled_back(ids);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // Crash once a third of the events are delivered.
    let third = TRANSACTIONS * PER_TRANSACTION / 3 * 6 / 7;
    assert!(
        wait_for(Duration::from_secs(120), || ledger.delivered() >= third).await,
        "the run never reached a third of its events before the crash"
    );
    cluster.run("crash");
    tokio::time::sleep(DOWN).await;
    cluster.run("start");
    let restarted = Instant::now();
    // Recovery: until the workers persist outcomes again.
    let persisted = |workers: &[outbox_core::WorkerHandle]| -> u64 {
        workers.iter().map(|w| w.metrics().processed).sum()
    };
    let before = persisted(&workers);
    wait_for(Duration::from_secs(60), || persisted(&workers) > before).await;
    let recovery = restarted.elapsed();

    producer.await.expect("producer");
    // Commits in doubt: committed if the event exists.
    for id in ledger.take_in_doubt() {
        let stored = sqlx::query("SELECT 1 FROM faults.outbox_events WHERE id = $1")
            .bind(id)
            .fetch_optional(&pool)
            .await
            .expect("read after the restart");
        if stored.is_some() {
            ledger.committed([id]);
        } else {
            ledger.rolled_back([id]);
        }
    }
    let committed = ledger.figures("", 0).committed as usize;
    let all_delivered =
        wait_for(Duration::from_secs(180), || ledger.delivered() >= committed).await;
    let drained_after = restarted.elapsed();
    let mut metrics = Vec::new();
    for worker in workers {
        metrics.push(worker.shutdown().await.metrics);
    }
    let store_errors: u64 = metrics.iter().map(|m| m.store_errors).sum();
    assert!(all_delivered, "not every committed event was delivered");
    let bound = (WORKERS * IN_FLIGHT) as u64;
    let mut figures = ledger.figures("postgres crash (pg_ctl stop -m immediate, 5 s down)", bound);
    figures.recovery = Some(recovery);
    figures
        .with_notes(format!(
            "all delivered {:.1} s after the restart, {store_errors} store errors ridden out",
            drained_after.as_secs_f64()
        ))
        .check(bound);
    let stored_rolled_back: i64 =
        sqlx::query_scalar("SELECT count(*) FROM faults.outbox_events WHERE id = ANY($1)")
            .bind(ledger.rolled_back_ids())
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(
        stored_rolled_back, 0,
        "rolled-back events exist in the store"
    );
    pool.close().await;
    drop(cluster);
}
