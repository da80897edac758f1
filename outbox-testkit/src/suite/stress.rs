//! Heavy scenarios: many workers on one store (P8), ordering keys under concurrency (C5), and bad
//! input (huge, unicode and invalid events).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outbox_core::handlers::Registry;
use outbox_core::prelude::*;
use outbox_core::{EventStatus, Handler, HandlerError, NewEvent, StoreError, StoreExt, Worker};
use serde_json::json;

use super::support::{Calls, fast_config, fetch, wait_drained, wait_status};
use crate::ensure;
use crate::harness::{ClauseResult, Failure, StoreFactory, Verdict, namespace};

/// P8: at least 4 workers share 5,000 events of 3 types with 2–3 handlers each, some failing
/// transiently: every event ends processed, every handler success is recorded exactly once.
pub async fn p8_many_workers_stress<F: StoreFactory>(factory: &F) -> ClauseResult {
    const EVENTS: usize = 5_000;
    const WORKERS: usize = 4;
    let store = factory.create(&namespace("p8")).await?;
    let calls = Calls::default();
    let successes = Calls::default();
    let plan: [(&str, &[&str]); 3] = [
        ("p8.Alpha", &["a1", "a2"]),
        ("p8.Beta", &["b1", "b2", "b3"]),
        ("p8.Gamma", &["g1", "g2", "g3"]),
    ];
    let mut builder = Registry::builder();
    for (event_type, handlers) in plan {
        for name in handlers {
            let calls = calls.clone();
            let successes = successes.clone();
            let name_owned = (*name).to_owned();
            builder = builder.handler(Handler::raw(event_type, *name, move |record, _ctx| {
                let n = calls.record(record.id, &name_owned);
                // Deterministic transient failures: the first attempt fails for 1 in 10 events.
                let flaky = record.payload["n"].as_u64().unwrap_or(0) % 10 == 3;
                let ok = !(flaky && n == 1);
                if ok {
                    successes.record(record.id, &name_owned);
                }
                async move {
                    tokio::task::yield_now().await;
                    if ok {
                        Ok(())
                    } else {
                        Err(HandlerError::retry("flaky first attempt"))
                    }
                }
            }));
        }
    }
    let registry = builder.build().map_err(|e| Failure::new(e.to_string()))?;
    let events: Vec<NewEvent> = (0..EVENTS)
        .map(|n| NewEvent::new(plan[n % 3].0, json!({ "n": n })))
        .collect();
    let mut ids = Vec::with_capacity(EVENTS);
    for chunk in events.chunks(500) {
        ids.extend(
            store
                .enqueue_batch(chunk.to_vec())
                .await?
                .into_iter()
                .map(|e| e.id),
        );
    }
    let config = fast_config()
        .with_batch_size(50)
        .with_max_in_flight(100)
        .with_lease(Duration::from_secs(60));
    let mut workers = Vec::new();
    for n in 0..WORKERS {
        let worker = Worker::builder(store.clone())
            .registry(registry.clone())
            .config(config.clone().with_worker_id(format!("stress-{n}")))
            .build()
            .map_err(|e| Failure::new(e.to_string()))?;
        workers.push(worker.start());
    }
    let drained = wait_drained(&store, Duration::from_secs(240)).await;
    let mut claimed_per_worker = Vec::new();
    for worker in workers {
        claimed_per_worker.push(worker.shutdown().await.metrics.claimed);
    }
    drained?;
    let stats = store.stats().await?;
    ensure!(
        stats.processed == EVENTS as u64 && stats.dead == 0,
        "expected {EVENTS} processed and 0 dead: {stats:?}"
    );
    let success_counts = successes.snapshot();
    for (i, id) in ids.iter().enumerate() {
        let record = fetch(&store, *id).await?;
        ensure!(
            record.status == EventStatus::Processed,
            "event {id} ended {:?}",
            record.status
        );
        let (_, handlers) = plan[i % 3];
        ensure!(
            record.handler_results.len() == handlers.len(),
            "event {id}: results {:?}",
            record.handler_results
        );
        for name in handlers {
            let runs = success_counts
                .get(&(*id, (*name).to_owned()))
                .copied()
                .unwrap_or(0);
            ensure!(
                runs == 1,
                "handler {name} succeeded {runs} times for event {id}: {record:?}"
            );
            ensure!(
                record.handler_results[*name].succeeded_at.is_some(),
                "success of {name} not recorded for {id}"
            );
        }
    }
    let busy = claimed_per_worker.iter().filter(|c| **c > 0).count();
    ensure!(
        busy >= 2,
        "work was not shared: claims per worker {claimed_per_worker:?}"
    );
    Ok(Verdict::Passed)
}

/// C5 under concurrency: 4 workers, 12 keys of 15 events each plus unkeyed events; each key's
/// events are handled one at a time in creation order.
pub async fn c5_ordering_under_concurrency<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c5conc")).await?;
    let log: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let in_flight: Arc<Mutex<HashMap<String, bool>>> = Arc::default();
    let overlap = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handler = {
        let log = Arc::clone(&log);
        let in_flight = Arc::clone(&in_flight);
        let overlap = Arc::clone(&overlap);
        Handler::raw("c5.Seq", "sequence", move |record, _ctx| {
            let log = Arc::clone(&log);
            let in_flight = Arc::clone(&in_flight);
            let overlap = Arc::clone(&overlap);
            async move {
                let key = record.ordering_key.clone().unwrap_or_default();
                let keyed = !key.is_empty();
                if keyed {
                    let mut map = in_flight
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if map.insert(key.clone(), true) == Some(true) {
                        overlap.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(u64::from(
                    record.id.as_bytes()[15] % 4,
                )))
                .await;
                if keyed {
                    log.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(key.clone())
                        .or_default()
                        .push(record.payload["seq"].as_u64().unwrap_or(u64::MAX));
                    in_flight
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(key, false);
                }
                Ok::<_, HandlerError>(())
            }
        })
    };
    let registry = Registry::builder()
        .handler(handler)
        .build()
        .map_err(|e| Failure::new(e.to_string()))?;
    let mut batch = Vec::new();
    for seq in 0..15u64 {
        for key in 0..12 {
            batch.push(
                NewEvent::new("c5.Seq", json!({ "seq": seq })).ordering_key(format!("key-{key}")),
            );
        }
        batch.push(NewEvent::new("c5.Seq", json!({ "seq": seq })));
    }
    store.enqueue_batch(batch).await?;
    let mut workers = Vec::new();
    for n in 0..4 {
        workers.push(
            Worker::builder(store.clone())
                .registry(registry.clone())
                .config(fast_config().with_worker_id(format!("order-{n}")))
                .build()
                .map_err(|e| Failure::new(e.to_string()))?
                .start(),
        );
    }
    let drained = wait_drained(&store, Duration::from_secs(120)).await;
    for worker in workers {
        worker.shutdown().await;
    }
    drained?;
    ensure!(
        !overlap.load(std::sync::atomic::Ordering::SeqCst),
        "two events of one key were handled at the same time"
    );
    let log = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    ensure!(
        log.len() == 12,
        "expected 12 keys handled, got {}",
        log.len()
    );
    for (key, seqs) in &log {
        let want: Vec<u64> = (0..15).collect();
        ensure!(
            *seqs == want,
            "key {key} was handled out of order: {seqs:?}"
        );
    }
    Ok(Verdict::Passed)
}

/// Bad input: large (just under the default limit) and unicode payloads round-trip exactly;
/// invalid events are refused with a clear error and store nothing.
pub async fn bad_input_payloads_and_names<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("badinput")).await?;
    let huge = "x".repeat(1_000_000);
    let unicode = "Grüße, мир, 世界, مرحبا, 👋🏽 — \"quotes\" \\ back\\slash \n\t";
    let cases = [
        ("huge", json!({ "blob": huge })),
        (
            "unicode",
            json!({ "text": unicode, "nested": {"list": [1, 2.5, null, true, "🚀"]} }),
        ),
        ("empty", json!({})),
        ("scalar", json!("just a string")),
    ];
    let mut ids = Vec::new();
    for (name, payload) in &cases {
        let event = NewEvent::new("bad.Payload", payload.clone())
            .correlation_id(format!("corr-{name}-ß"))
            .ordering_key(format!("key-{name}-🔑"));
        ids.push((store.enqueue(event).await?.id, payload.clone()));
    }
    for (id, payload) in &ids {
        let record = fetch(&store, *id).await?;
        ensure!(
            record.payload == *payload,
            "payload of {id} did not round-trip"
        );
        ensure!(
            record
                .correlation_id
                .as_deref()
                .is_some_and(|c| c.ends_with("-ß")),
            "correlation id mangled"
        );
    }
    let seen = Calls::default();
    let handler = {
        let seen = seen.clone();
        let expected: HashMap<uuid::Uuid, serde_json::Value> = ids.iter().cloned().collect();
        Handler::raw("bad.Payload", "check", move |record, _ctx| {
            let exact = expected.get(&record.id) == Some(&record.payload);
            if exact {
                seen.record(record.id, "check");
            }
            async move {
                if exact {
                    Ok(())
                } else {
                    Err(HandlerError::permanent("payload changed in transit"))
                }
            }
        })
    };
    let registry = Registry::builder()
        .handler(handler)
        .build()
        .map_err(|e| Failure::new(e.to_string()))?;
    let worker = Worker::builder(store.clone())
        .registry(registry)
        .config(fast_config())
        .build()
        .map_err(|e| Failure::new(e.to_string()))?
        .start();
    for (id, _) in &ids {
        wait_status(&store, *id, EventStatus::Processed, Duration::from_secs(20)).await?;
        ensure!(
            seen.get(*id, "check") == 1,
            "handler did not see the exact payload of {id}"
        );
    }
    worker.shutdown().await;

    let before = store.stats().await?.pending;
    for (what, event) in [
        ("empty event type", NewEvent::new("", json!({}))),
        (
            "empty ordering key",
            NewEvent::new("bad.Keys", json!({})).ordering_key(""),
        ),
        (
            "empty idempotency key",
            NewEvent::new("bad.Keys", json!({})).idempotency_key(""),
        ),
    ] {
        match store.enqueue(event).await {
            Err(StoreError::InvalidRequest { .. }) => {}
            other => {
                return Err(Failure::new(format!(
                    "{what} must be refused with InvalidRequest, got {other:?}"
                )));
            }
        }
    }
    let valid = NewEvent::new("bad.Batch", json!({}));
    let batch = store
        .enqueue_batch(vec![valid.clone(), NewEvent::new("", json!({}))])
        .await;
    ensure!(
        matches!(batch, Err(StoreError::InvalidRequest { .. })),
        "a batch with an invalid event must be refused: {batch:?}"
    );
    ensure!(
        store.get(valid.id).await?.is_none(),
        "a refused batch stored part of its events"
    );
    ensure!(
        store.stats().await?.pending == before,
        "refused events were stored"
    );
    Ok(Verdict::Passed)
}
