//! A key's next event runs as soon as its predecessor's outcome is written, not one poll interval
//! later: on a store that announces nothing (SQLite; here the memory store with wake-ups ignored),
//! the worker wakes its own claim loop when it finishes an event that has an ordering key.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use outbox_core::handlers::Registry;
use outbox_core::prelude::*;
use outbox_core::{Handler, HandlerError, NewEvent, Worker, WorkerConfig};
use outbox_testkit::MemoryStore;
use serde_json::json;

const EVENTS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_next_event_runs_without_waiting_for_the_poll_interval() {
    let store = MemoryStore::new();
    let events: Vec<_> = (0..EVENTS)
        .map(|n| NewEvent::new("Step", json!({ "n": n })).ordering_key("one-key"))
        .collect();
    store.enqueue_batch(events).await.unwrap();

    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let handler = Handler::raw("Step", "count", move |record, _ctx| {
        let counter = Arc::clone(&counter);
        async move {
            // Keyed events of one key run one after the other, in order.
            let n = record.payload["n"].as_u64().unwrap_or(u64::MAX) as usize;
            let before = counter.fetch_add(1, Ordering::SeqCst);
            assert_eq!(before, n, "events of one key ran out of order");
            Ok::<_, HandlerError>(())
        }
    });
    // A poll interval far longer than the test may take: each of the 20 events waits behind the
    // one before it, so polling alone would need 20 intervals.
    let worker = Worker::builder(store.clone())
        .registry(Registry::builder().handler(handler).build().unwrap())
        .config(
            WorkerConfig::default()
                .with_poll_interval(Duration::from_secs(600))
                // The memory store announces commits; a worker that ignores them stands for a
                // store that announces nothing, as SQLite.
                .with_wakeups(false),
        )
        .build()
        .unwrap()
        .start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.stats().await.unwrap().processed < EVENTS as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key's events waited for the poll interval: {} of {EVENTS} processed",
            seen.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = worker.shutdown().await;
    assert_eq!(report.metrics.processed, EVENTS as u64);
    assert_eq!(seen.load(Ordering::SeqCst), EVENTS);
}
