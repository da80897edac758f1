//! Shutdown returns within its grace plus a documented bound (P7) even when a handler blocks its
//! thread, which no abort can stop: the handler is abandoned and the report says so.

use std::time::{Duration, Instant};

use outbox_core::handlers::Registry;
use outbox_core::prelude::*;
use outbox_core::{
    EventStatus, Handler, HandlerError, NewEvent, ShutdownReport, StoreExt, Worker, WorkerConfig,
};
use outbox_testkit::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_blocking_its_thread_does_not_hold_shutdown() {
    let store = MemoryStore::in_namespace("shutdown_bound").expect("a store");
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    let started_tx = std::sync::Mutex::new(started_tx);
    let blocking = Handler::raw("Blocking", "blocking", move |_r, _c| {
        let _ = started_tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(());
        async {
            // Blocks the runtime thread: an abort cannot reach it.
            std::thread::sleep(Duration::from_secs(6));
            Ok::<_, HandlerError>(())
        }
    });
    let grace = Duration::from_millis(500);
    let worker = Worker::builder(store.clone())
        .registry(
            Registry::builder()
                .handler(blocking)
                .build()
                .expect("registry"),
        )
        .config(
            WorkerConfig::default()
                .with_lease(Duration::from_secs(5))
                .with_poll_interval(Duration::from_millis(20))
                .with_shutdown_grace(grace),
        )
        .build()
        .expect("worker")
        .start();
    let id = store
        .enqueue(NewEvent::new("Blocking", serde_json::json!({})))
        .await
        .expect("enqueue")
        .id;
    tokio::task::spawn_blocking(move || started.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("the handler started");
    let asked = Instant::now();
    let report = worker.shutdown().await;
    let took = asked.elapsed();
    let bound = grace + ShutdownReport::ABORT_WAIT + Duration::from_millis(500);
    println!("shutdown with a handler blocking 6 s, grace {grace:?}: returned after {took:?}");
    assert!(took < bound, "shutdown took {took:?}, more than {bound:?}");
    assert_eq!(report.abandoned, 1, "{report:?}");
    assert!(report.aborted_after_grace);
    // The abandoned event is not lost: it is still pending, redelivered after its lease.
    let record = store.get(id).await.expect("get").expect("stored");
    assert_eq!(record.status, EventStatus::Pending);
}
