//! A Redis crash in the middle of a run: a private `redis-server` with append-only-file persistence
//! (`appendfsync always`, the setting the outbox-redis README gives for "nothing acknowledged is
//! lost") is killed with SIGKILL while a producer commits `MULTI` blocks and three workers deliver,
//! then restarted from its files. Nothing acknowledged is lost, nothing discarded is delivered.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outbox_core::{NewEvent, Worker};
use outbox_faults::{EVENT_TYPE, Ledger, free_port, registry, wait_for, worker_config};
use outbox_redis::RedisStore;

const TRANSACTIONS: usize = 1_500;
const PER_TRANSACTION: usize = 10;
const WORKERS: usize = 3;
const IN_FLIGHT: usize = 200;
const DOWN: Duration = Duration::from_secs(3);

struct Server {
    dir: std::path::PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); ./scripts/services.sh installs it")
            });
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown, no final flush.
    fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.crash();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_until_up(url: &str) {
    let client = redis::Client::open(url).expect("url");
    for _ in 0..100 {
        if let Ok(mut con) = client.get_multiplexed_async_connection().await {
            if redis::cmd("PING")
                .query_async::<String>(&mut con)
                .await
                .is_ok()
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the private redis-server did not come up at {url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_crash_with_aof_loses_nothing_acknowledged() {
    let dir = std::env::temp_dir().join(format!("outbox-redis-crash-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut server = Server {
        dir,
        port: free_port(),
        child: None,
    };
    server.start();
    let url = format!("redis://127.0.0.1:{}", server.port);
    wait_until_up(&url).await;
    let client = redis::Client::open(url.as_str()).expect("url");
    let store = RedisStore::builder(client)
        .await
        .expect("connect")
        .name("faults")
        .build()
        .expect("valid name");

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

    // The producer writes a user key and its events in one MULTI/EXEC; one block in seven is
    // discarded on purpose (never sent). An EXEC that fails with the server gone is in doubt.
    let producer = {
        let (store, ledger) = (store.clone(), ledger.clone());
        tokio::spawn(async move {
            let mut con = store.connection();
            for t in 0..TRANSACTIONS {
                let events: Vec<NewEvent> = (0..PER_TRANSACTION)
                    .map(|i| NewEvent::new(EVENT_TYPE, serde_json::json!({ "t": t, "i": i })))
                    .collect();
                let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
                if t % 7 == 3 {
                    ledger.rolled_back(ids);
                    continue;
                }
                let mut pipe = redis::pipe();
                pipe.atomic().set(format!("user:{t}"), 1).ignore();
                store
                    .enqueue_in_pipeline(&mut pipe, events)
                    .expect("valid events");
                match pipe.query_async::<()>(&mut con).await {
                    Ok(()) => ledger.committed(ids),
                    Err(_) => {
                        ledger.in_doubt(ids);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let third = TRANSACTIONS * PER_TRANSACTION / 3 * 6 / 7;
    assert!(
        wait_for(Duration::from_secs(120), || ledger.delivered() >= third).await,
        "the run never reached a third of its events before the crash"
    );
    server.crash();
    tokio::time::sleep(DOWN).await;
    server.start();
    wait_until_up(&url).await;
    let restarted = Instant::now();
    let persisted = |workers: &[outbox_core::WorkerHandle]| -> u64 {
        workers.iter().map(|w| w.metrics().processed).sum()
    };
    let before = persisted(&workers);
    wait_for(Duration::from_secs(60), || persisted(&workers) > before).await;
    let recovery = restarted.elapsed();

    producer.await.expect("producer");
    let mut con = store.connection();
    for id in ledger.take_in_doubt() {
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("{}:ev:{id}", store.key_prefix()))
            .query_async(&mut con)
            .await
            .expect("read after the restart");
        if exists {
            ledger.committed([id]);
        } else {
            ledger.rolled_back([id]);
        }
    }
    let committed = ledger.figures("", 0).committed as usize;
    let all_delivered =
        wait_for(Duration::from_secs(180), || ledger.delivered() >= committed).await;
    let drained_after = restarted.elapsed();
    let mut store_errors = 0;
    for worker in workers {
        store_errors += worker.shutdown().await.metrics.store_errors;
    }
    assert!(all_delivered, "not every acknowledged event was delivered");
    let bound = (WORKERS * IN_FLIGHT) as u64;
    let mut figures = ledger.figures(
        "redis crash (SIGKILL, AOF appendfsync always, 3 s down)",
        bound,
    );
    figures.recovery = Some(recovery);
    figures
        .with_notes(format!(
            "all delivered {:.1} s after the restart, {store_errors} store errors ridden out",
            drained_after.as_secs_f64()
        ))
        .check(bound);
}
