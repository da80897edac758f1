//! A `#[handler(batch = N)]` function, registered at link time, run by a worker on the memory
//! store: its events are handled in groups of at most N, each event keeping its own result and
//! output.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use outbox_core::handlers::Registry;
use outbox_core::{
    Event, HandlerError, NewEvent, Outcome, StoreExt, Worker, WorkerConfig, handler,
};
use outbox_testkit::MemoryStore;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Event)]
#[outbox(name = "core_test.Relayed")]
struct Relayed {
    n: u32,
}

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[handler(batch = 5, linger = "50ms")]
async fn relay(events: Vec<Relayed>) -> Vec<Result<serde_json::Value, HandlerError>> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    let size = events.len();
    events
        .iter()
        .map(|e| Ok(serde_json::json!({ "n": e.n, "batch": size })))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_handler_declared_with_the_macro_handles_events_in_groups() {
    let store = MemoryStore::new();
    let mut ids = Vec::new();
    for n in 0..12 {
        let event = NewEvent::from_event(&Relayed { n }).expect("an event");
        ids.push(store.enqueue(event).await.expect("enqueue").id);
    }
    let registry = Registry::builder()
        .with_registered_for(&["core_test.Relayed"])
        .build()
        .expect("a registry");
    let worker = Worker::builder(store.clone())
        .registry(registry)
        .config(WorkerConfig::default().with_poll_interval(Duration::from_millis(20)))
        .build()
        .expect("a worker")
        .start();
    for (n, id) in ids.iter().enumerate() {
        let outcome = store
            .wait_for(*id, Duration::from_secs(20))
            .await
            .expect("the event");
        let Outcome::Processed(record) = &outcome else {
            panic!("event {n} not processed: {outcome:?}");
        };
        let output = record.handler_results["relay"]
            .output
            .clone()
            .expect("an output");
        assert_eq!(output["n"], n);
        let batch = output["batch"].as_u64().unwrap_or(0);
        assert!((1..=5).contains(&batch), "batch of {batch}");
    }
    worker.shutdown().await;
    let calls = CALLS.load(Ordering::SeqCst);
    assert!(
        (3..12).contains(&calls),
        "12 events in batches of at most 5 take 3 to 11 calls, not {calls}"
    );
}
