//! Clause C11: poison rows are set aside one by one, and every store gives hostile input the same
//! verdict before the database sees it.

use std::time::Duration;

use outbox_core::{
    EventStatus, Handler, HandlerError, NewEvent, Registry, Store, StoreError, StoreExt, Worker,
};
use serde_json::json;

use super::support::{Calls, fast_config, fetch, wait_status, wait_until};
use crate::ensure;
use crate::harness::{ClauseResult, Failure, StoreFactory, Verdict, namespace};

const WAIT: Duration = Duration::from_secs(30);

/// C11: a stored event that does not decode is set aside on its own — the rest of its claim batch
/// (and the later events of its ordering key) flow, no claim fails — listed with its reason, and
/// re-queued after a fix.
pub async fn c11_poison_rows<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c11poison")).await?;
    let mut good = Vec::new();
    for n in 0..20 {
        good.push(
            store
                .enqueue(NewEvent::new("c11.Poison", json!({ "n": n })))
                .await?
                .id,
        );
    }
    let poison = store
        .enqueue(NewEvent::new("c11.Poison", json!({"n": "poison"})).ordering_key("c11-key"))
        .await?
        .id;
    let behind = store
        .enqueue(NewEvent::new("c11.Poison", json!({"n": "behind"})).ordering_key("c11-key"))
        .await?
        .id;
    for n in 20..40 {
        good.push(
            store
                .enqueue(NewEvent::new("c11.Poison", json!({ "n": n })))
                .await?
                .id,
        );
    }
    if !factory.damage(&store, poison).await? {
        return Ok(Verdict::NotApplicable(
            "the factory cannot damage stored events".into(),
        ));
    }
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        Handler::raw("c11.Poison", "count", move |record, _ctx| {
            calls.record(record.id, "count");
            async { Ok::<_, HandlerError>(()) }
        })
    };
    let registry = Registry::builder()
        .handler(handler)
        .build()
        .map_err(|e| Failure::new(e.to_string()))?;
    let worker = Worker::builder(store.clone())
        .registry(registry.clone())
        .config(fast_config().with_batch_size(50).with_max_in_flight(100))
        .build()
        .map_err(|e| Failure::new(e.to_string()))?
        .start();
    let flowed = wait_until(WAIT, "every good event is processed", || async {
        for id in good.iter().chain([&behind]) {
            if fetch(&store, *id).await?.status != EventStatus::Processed {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await;
    let metrics = worker.metrics();
    worker.shutdown().await;
    flowed?;
    ensure!(
        metrics.store_errors == 0,
        "claims failed because of the poison row ({} store errors): it must be set aside instead",
        metrics.store_errors
    );
    ensure!(
        calls.get(poison, "count") == 0,
        "the undecodable event reached a handler"
    );
    let listed = store.corrupt_events(10).await?;
    ensure!(
        listed.len() == 1 && listed[0].id == poison.to_string(),
        "corrupt_events must list exactly the damaged event, got {listed:?}"
    );
    ensure!(
        !listed[0].reason.trim().is_empty(),
        "the set-aside event must carry its decode error: {listed:?}"
    );
    let stats = store.stats().await?;
    ensure!(
        stats.corrupt == 1 && stats.pending == 0,
        "stats must count one corrupt and no pending event: {stats:?}"
    );
    match store.get(poison).await {
        Err(StoreError::Corrupt { .. }) => {}
        other => {
            return Err(Failure::new(format!(
                "get() of a set-aside event must answer StoreError::Corrupt, got {other:?}"
            )));
        }
    }

    // After a fix, it is re-queued and delivered.
    ensure!(
        factory.repair(&store, poison).await?,
        "the factory could not repair the damaged event"
    );
    ensure!(
        store.requeue_corrupt(&poison.to_string()).await?,
        "requeue_corrupt refused the set-aside event"
    );
    ensure!(
        !store.requeue_corrupt(&poison.to_string()).await?,
        "requeue_corrupt must refuse an event that is not set aside"
    );
    ensure!(
        !store.requeue_corrupt("not-an-id").await?,
        "requeue_corrupt must refuse an unknown id"
    );
    let worker = Worker::builder(store.clone())
        .registry(registry)
        .config(fast_config())
        .build()
        .map_err(|e| Failure::new(e.to_string()))?
        .start();
    let fixed = wait_status(&store, poison, EventStatus::Processed, WAIT).await;
    worker.shutdown().await;
    fixed?;
    ensure!(
        store.corrupt_events(10).await?.is_empty() && store.stats().await?.corrupt == 0,
        "a re-queued, processed event is still listed as corrupt"
    );
    Ok(Verdict::Passed)
}

/// C11: the same hostile inputs get the same verdict on every store — refused with
/// `InvalidRequest` before anything is written, on the plain and the transactional enqueue alike.
pub async fn c11_input_limits<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c11limits")).await?;
    let ok = || NewEvent::new("c11.Limits", json!({"n": 1}));
    let refused = [
        (
            "NUL in the event type",
            NewEvent::new("c11\0Limits", json!({})),
        ),
        (
            "NUL in a payload string",
            NewEvent::new("c11.Limits", json!({"name": "a\u{0}b"})),
        ),
        (
            "NUL in a payload key",
            NewEvent::new("c11.Limits", json!({"na\u{0}me": 1})),
        ),
        ("NUL in the ordering key", ok().ordering_key("k\0")),
        ("NUL in the idempotency key", ok().idempotency_key("k\0")),
        ("NUL in the correlation id", ok().correlation_id("c\0")),
        (
            "an event type of 10,000 characters",
            NewEvent::new("T".repeat(10_000), json!({})),
        ),
        (
            "an idempotency key of 100 KB",
            ok().idempotency_key("k".repeat(100_000)),
        ),
        (
            "an ordering key of 256 bytes",
            ok().ordering_key("k".repeat(256)),
        ),
        (
            "a correlation id of 256 bytes",
            ok().correlation_id("c".repeat(256)),
        ),
        (
            "a payload of 2 MiB",
            NewEvent::new("c11.Limits", json!({"blob": "x".repeat(2 << 20)})),
        ),
    ];
    for (what, event) in &refused {
        match store.enqueue(event.clone()).await {
            Err(StoreError::InvalidRequest { .. }) => {}
            other => {
                return Err(Failure::new(format!(
                    "{what} must be refused with InvalidRequest, got {other:?}"
                )));
            }
        }
        if let Some(mut tx) = factory.begin(&store).await? {
            let verdict = tx.enqueue(event.clone()).await;
            tx.rollback().await?;
            ensure!(
                matches!(verdict, Err(StoreError::InvalidRequest { .. })),
                "{what} must be refused inside a transaction too, got {verdict:?}"
            );
        }
    }
    // The largest accepted values are accepted everywhere.
    let largest = NewEvent::new("T".repeat(255), json!({"blob": "x".repeat(1_000_000)}))
        .ordering_key("k".repeat(255))
        .idempotency_key("i".repeat(255))
        .correlation_id("c".repeat(255));
    let stored = store.enqueue(largest.clone()).await?;
    let record = fetch(&store, stored.id).await?;
    ensure!(
        record.event_type == largest.event_type
            && record.payload == largest.payload
            && record.idempotency_key == largest.idempotency_key,
        "the largest accepted event did not round-trip"
    );
    // A batch with one refused event stores none of them.
    let valid = ok();
    let batch = store
        .enqueue_batch(vec![valid.clone(), refused[1].1.clone()])
        .await;
    ensure!(
        matches!(batch, Err(StoreError::InvalidRequest { .. })),
        "a batch with a refused event must be refused: {batch:?}"
    );
    ensure!(
        store.get(valid.id).await?.is_none(),
        "a refused batch stored part of its events"
    );
    ensure!(
        store.stats().await?.pending == 1,
        "refused events were stored"
    );
    Ok(Verdict::Passed)
}
