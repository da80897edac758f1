//! A worker with fewer slots than a claim batch keeps claiming while a slow handler holds one
//! of them (a slow event must not stop the others).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use outbox_core::handlers::Registry;
use outbox_core::prelude::*;
use outbox_core::{EventStatus, Handler, HandlerError, NewEvent, StoreExt, Worker, WorkerConfig};
use outbox_testkit::MemoryStore;

#[tokio::test]
async fn a_slow_handler_does_not_stop_a_small_worker_from_claiming() {
    let store = MemoryStore::in_namespace("slots").expect("a store");
    let quick_done = Arc::new(AtomicU32::new(0));
    let slow = Handler::raw("Slow", "slow", |_r, _c| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok::<_, HandlerError>(())
    });
    let quick = {
        let quick_done = Arc::clone(&quick_done);
        Handler::raw("Quick", "quick", move |_r, _c| {
            let quick_done = Arc::clone(&quick_done);
            async move {
                quick_done.fetch_add(1, Ordering::SeqCst);
                Ok::<_, HandlerError>(())
            }
        })
    };
    let registry = Registry::builder()
        .handler(slow)
        .handler(quick)
        .build()
        .expect("a registry");
    let worker = Worker::builder(store.clone())
        .registry(registry)
        .config(
            WorkerConfig::default()
                .with_batch_size(32)
                .with_max_in_flight(4)
                .with_poll_interval(Duration::from_millis(20)),
        )
        .build()
        .expect("a worker")
        .start();
    let slow_id = store
        .enqueue(NewEvent::new("Slow", serde_json::json!({})))
        .await
        .expect("enqueue")
        .id;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut quick_ids = Vec::new();
    for _ in 0..3 {
        quick_ids.push(
            store
                .enqueue(NewEvent::new("Quick", serde_json::json!({})))
                .await
                .expect("enqueue")
                .id,
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while quick_done.load(Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the quick events were not run while the slow one held a slot ({} of 3 ran)",
            quick_done.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in quick_ids {
        let record = store.get(id).await.expect("get").expect("the event");
        assert_eq!(record.status, EventStatus::Processed);
    }
    let slow = store.get(slow_id).await.expect("get").expect("the event");
    assert_eq!(
        slow.status,
        EventStatus::Pending,
        "the slow event is still running"
    );
    worker.abort();
}
