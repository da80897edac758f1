//! A `#[handler(transactional)]` function, registered at link time, run by a worker on SQLite:
//! its write, a follow-up event it enqueues, and its success commit in one transaction.

use std::time::Duration;

use outbox_core::handlers::Registry;
use outbox_core::prelude::*;
use outbox_core::{
    Event, HandlerContext, HandlerError, NewEvent, Outcome, State, StoreExt, Worker, WorkerConfig,
    handler,
};
use outbox_sqlite::{SqliteStore, SqliteTx};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Event)]
#[outbox(name = "sqlite_test.OrderPaid")]
struct OrderPaid {
    order: u32,
}

#[handler(transactional)]
async fn record_payment(
    event: OrderPaid,
    tx: &mut SqliteTx,
    store: State<SqliteStore>,
    ctx: HandlerContext,
) -> Result<serde_json::Value, HandlerError> {
    sqlx::query("INSERT INTO payments (order_id, event_id) VALUES (?1, ?2)")
        .bind(event.order)
        .bind(ctx.event_id.to_string())
        .execute(&mut **tx)
        .await?;
    // A follow-up event, committed with the write and the success, or not at all.
    store
        .enqueue_in(
            tx,
            NewEvent::new(
                "sqlite_test.ReceiptRequested",
                serde_json::json!({ "order": event.order }),
            ),
        )
        .await?;
    if event.order == 13 && ctx.attempt == 1 {
        return Err(HandlerError::retry("the first attempt of order 13 fails"));
    }
    Ok(serde_json::json!({ "order": event.order }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_handler_declared_with_the_macro_commits_its_writes_with_its_success() {
    let dir = tempfile::tempdir().expect("a directory");
    let store = SqliteStore::open(dir.path().join("tx.db"))
        .await
        .expect("a store");
    sqlx::query("CREATE TABLE payments (order_id INTEGER NOT NULL, event_id TEXT NOT NULL)")
        .execute(store.pool())
        .await
        .expect("the payments table");
    let mut ids = Vec::new();
    for order in [12, 13] {
        let event = NewEvent::from_event(&OrderPaid { order }).expect("an event");
        ids.push(store.enqueue(event).await.expect("enqueue").id);
    }
    let registry = Registry::builder()
        .with_registered_for(&["sqlite_test.OrderPaid"])
        .build()
        .expect("a registry");
    let worker = Worker::builder(store.clone())
        .registry(registry)
        .state(store.clone())
        .config(WorkerConfig::default().with_poll_interval(Duration::from_millis(20)))
        .build()
        .expect("a worker")
        .start();
    for (id, order) in ids.iter().zip([12_u32, 13]) {
        let outcome = store
            .wait_for(*id, Duration::from_secs(20))
            .await
            .expect("the event");
        let Outcome::Processed(record) = &outcome else {
            panic!("order {order} not processed: {outcome:?}");
        };
        let state = &record.handler_results["record_payment"];
        assert_eq!(state.output, Some(serde_json::json!({ "order": order })));
        assert_eq!(state.attempts, if order == 13 { 2 } else { 1 });
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE order_id = ?1")
            .bind(order)
            .fetch_one(store.pool())
            .await
            .expect("count");
        assert_eq!(
            rows, 1,
            "order {order}: one payment row, the failed attempt's rolled back"
        );
    }
    // One follow-up per order: the failed attempt's enqueue rolled back with its write.
    let follow_ups: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox_events WHERE event_type = 'sqlite_test.ReceiptRequested'",
    )
    .fetch_one(store.pool())
    .await
    .expect("count");
    assert_eq!(follow_ups, 2);
    worker.shutdown().await;
}
