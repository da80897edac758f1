//! A transactional handler whose timeout fires while its transaction commits succeeded: the
//! event's outcome must not overwrite the committed success with the timeout, or the handler
//! would run (and write) again.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use outbox_core::handlers::Registry;
use outbox_core::{Handler, HandlerError, NewEvent, Outcome, StoreExt, Worker, WorkerConfig};
use outbox_sqlite::SqliteTx;
use outbox_testkit::StoreFactory;
use outbox_testkit::broken::{BrokenTransactions, TransactionFlaw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_during_the_commit_keeps_the_committed_success() {
    let factory = support::SqliteFactory::new();
    let inner = factory.create("slowcommit").await.expect("a store");
    let effects = support::sqlite_effects(&inner).await.expect("effects");
    let store = BrokenTransactions::new(
        inner.clone(),
        TransactionFlaw::SlowCommit(Duration::from_millis(800)),
    );
    let runs = Arc::new(AtomicU32::new(0));
    let effects = Arc::new(effects);
    let handler = {
        let (runs, effects) = (Arc::clone(&runs), Arc::clone(&effects));
        Handler::transactional(
            "slow.Commit",
            "apply",
            move |record, tx: &mut SqliteTx, _ctx| {
                runs.fetch_add(1, Ordering::SeqCst);
                let effects = Arc::clone(&effects);
                Box::pin(async move {
                    outbox_testkit::suite::EffectTable::write(&*effects, tx, record.id, false)
                        .await
                        .map_err(|e| HandlerError::retry(e.to_string()))?;
                    Ok::<_, HandlerError>(())
                })
            },
        )
        // Fires while the commit waits.
        .with_timeout(Duration::from_millis(300))
    };
    let worker = Worker::builder(store.clone())
        .registry(
            Registry::builder()
                .handler(handler)
                .build()
                .expect("registry"),
        )
        .config(
            WorkerConfig::default()
                .with_poll_interval(Duration::from_millis(20))
                .with_retry(
                    outbox_core::RetryPolicy::default()
                        .with_initial_delay(Duration::from_millis(20))
                        .with_jitter(0.0),
                ),
        )
        .build()
        .expect("a worker")
        .start();
    let id = inner
        .enqueue(NewEvent::new("slow.Commit", serde_json::json!({})))
        .await
        .expect("enqueue")
        .id;
    let outcome = inner
        .wait_for(id, Duration::from_secs(20))
        .await
        .expect("the event");
    let Outcome::Processed(record) = &outcome else {
        panic!("not processed: {outcome:?}");
    };
    // Let a wrong redelivery happen, if it would.
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.shutdown().await;
    let rows = outbox_testkit::suite::EffectTable::count(&*effects, id)
        .await
        .expect("count");
    assert_eq!(rows, 1, "the committed write was made again");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran again");
    assert!(record.handler_results["apply"].succeeded_at.is_some());
}
