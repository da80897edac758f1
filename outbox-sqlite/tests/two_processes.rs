//! Two OS processes drain one database file: every handler success is recorded exactly once and no
//! event is lost. The test re-runs its own binary as the worker processes.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use outbox_core::handlers::Registry;
use outbox_core::prelude::*;
use outbox_core::{Handler, HandlerError, NewEvent, Worker, WorkerConfig};
use outbox_sqlite::SqliteStore;
use serde_json::json;

const CHILD_DB: &str = "OUTBOX_SQLITE_CHILD_DB";
const EVENTS: usize = 2_000;

/// In a child process: drain the file named by the environment, logging each success to stdout.
#[test]
fn child_worker() {
    let Ok(path) = std::env::var(CHILD_DB) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let store = SqliteStore::open(&path).await.expect("open");
        let handler = Handler::raw("Drain", "log", |record, _ctx| async move {
            // A success is "recorded" by this line; the parent counts them across both processes.
            println!("SUCCESS {}", record.id);
            Ok::<_, HandlerError>(())
        });
        let config = WorkerConfig::default()
            .with_poll_interval(Duration::from_millis(20))
            .with_batch_size(20)
            .with_worker_id(format!("proc-{}", std::process::id()));
        let worker = Worker::builder(store.clone())
            .registry(
                Registry::builder()
                    .handler(handler)
                    .build()
                    .expect("registry"),
            )
            .config(config)
            .build()
            .expect("worker")
            .start();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while store.stats().await.expect("stats").pending > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let report = worker.shutdown().await;
        println!("CLAIMED {}", report.metrics.claimed);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_drain_one_file_without_double_successes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let events: Vec<_> = (0..EVENTS)
        .map(|n| NewEvent::new("Drain", json!({ "n": n })))
        .collect();
    let mut ids = Vec::new();
    for chunk in events.chunks(500) {
        ids.extend(
            store
                .enqueue_batch(chunk.to_vec())
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.id.to_string()),
        );
    }
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args(["child_worker", "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_DB, &path)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut successes: HashMap<String, usize> = HashMap::new();
    let mut claimed_per_process = Vec::new();
    // Read both children's output at once: a child whose stdout pipe is full stops in println!.
    let outputs: Vec<_> = children
        .into_iter()
        .map(|child| std::thread::spawn(move || child.wait_with_output()))
        .collect();
    for output in outputs {
        let out = output.join().unwrap().unwrap();
        assert!(out.status.success(), "a worker process failed");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // libtest may print "test child_worker ... " before the first line of output.
            if let Some(pos) = line.find("SUCCESS ") {
                *successes
                    .entry(line[pos + 8..].trim().to_owned())
                    .or_default() += 1;
            } else if let Some(pos) = line.find("CLAIMED ") {
                claimed_per_process.push(line[pos + 8..].trim().parse::<u64>().unwrap());
            }
        }
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.processed, stats.dead),
        (0, EVENTS as u64, 0),
        "{stats:?}"
    );
    for id in &ids {
        assert_eq!(
            successes.get(id).copied(),
            Some(1),
            "event {id} succeeded {:?} times",
            successes.get(id)
        );
    }
    assert_eq!(claimed_per_process.len(), 2);
    assert!(
        claimed_per_process.iter().all(|c| *c > 0),
        "both processes must have worked: {claimed_per_process:?}"
    );
    println!("claims per process: {claimed_per_process:?}");
}
