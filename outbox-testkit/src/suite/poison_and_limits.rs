//! Clause C11: poison rows are set aside one by one, and every store gives hostile input the same
//! verdict before the database sees it.

use std::time::Duration;

use outbox_core::handlers::Registry;
use outbox_core::prelude::*;
use outbox_core::{EventStatus, Handler, HandlerError, NewEvent, StoreError, StoreExt, Worker};
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
        // A factory that damages single fields can damage events: then this clause applies.
        let probe = store
            .enqueue(NewEvent::new("c11.Probe", json!({})))
            .await?
            .id;
        for &what in crate::harness::Damage::ALL {
            ensure!(
                !factory.damage_field(&store, probe, what).await?,
                "the factory damages an event's {what:?} (damage_field) but damage() returned \
                 false: implement damage() too, or this clause does not run"
            );
        }
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

    // One dead letter that does not decode never hides the others from `dead_letters`.
    let mut dead = Vec::new();
    for n in 0..3 {
        dead.push(
            store
                .enqueue(NewEvent::new("c11.Dead", json!({ "n": n })))
                .await?
                .id,
        );
    }
    let claimed = store
        .claim(&super::support::claim(3, Duration::from_secs(30)))
        .await?;
    ensure!(claimed.len() == 3, "claimed {} of 3 events", claimed.len());
    for c in &claimed {
        store
            .complete(
                &c.lease,
                outbox_core::store::Completion {
                    status: EventStatus::Dead,
                    handler_results: outbox_core::model::HandlerResults::new(),
                    attempts: c.record.attempts,
                    retry_delay: None,
                },
            )
            .await?;
    }
    ensure!(
        factory.damage(&store, dead[1]).await?,
        "the factory could not damage a dead letter"
    );
    let listed: Vec<_> = store
        .dead_letters(10)
        .await
        .map_err(|e| {
            Failure::new(format!(
                "one undecodable dead letter failed the listing: {e}"
            ))
        })?
        .iter()
        .map(|r| r.id)
        .collect();
    ensure!(
        listed.contains(&dead[0]) && listed.contains(&dead[2]) && !listed.contains(&dead[1]),
        "dead_letters must list the decodable dead letters beside a damaged one: {listed:?}"
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
        ("an empty correlation id", ok().correlation_id("")),
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
    // Nesting: one level past the limit is refused everywhere; far deeper is refused without
    // crashing (the check must not recurse); the deepest accepted payload reads back identical.
    // Built by moving each level into the next (`json!` would serialize the inner value again).
    let nested = |depth: usize| {
        (0..depth).fold(json!("leaf"), |v, n| {
            if n % 2 == 0 {
                serde_json::Value::Array(vec![v])
            } else {
                serde_json::Value::Object([("k".to_owned(), v)].into_iter().collect())
            }
        })
    };
    for depth in [outbox_core::kit::storable::MAX_JSON_DEPTH + 1, 10_000] {
        let verdict = store
            .enqueue(NewEvent::new("c11.Limits", nested(depth)))
            .await;
        ensure!(
            matches!(verdict, Err(StoreError::InvalidRequest { .. })),
            "a payload nested {depth} levels must be refused with InvalidRequest, got {verdict:?}"
        );
        if let Some(mut tx) = factory.begin(&store).await? {
            let verdict = tx.enqueue(NewEvent::new("c11.Limits", nested(depth))).await;
            tx.rollback().await?;
            ensure!(
                matches!(verdict, Err(StoreError::InvalidRequest { .. })),
                "a payload nested {depth} levels must be refused inside a transaction too, got \
                 {verdict:?}"
            );
        }
    }
    let deepest = nested(outbox_core::kit::storable::MAX_JSON_DEPTH);
    let stored = store
        .enqueue(NewEvent::new("c11.Deep", deepest.clone()))
        .await?;
    let record = fetch(&store, stored.id).await?;
    ensure!(
        *record.payload == deepest,
        "a payload nested {} levels (the limit) did not read back identical: {}",
        outbox_core::kit::storable::MAX_JSON_DEPTH,
        record.payload
    );
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
    // Every limit at its boundary, counted in bytes (multi-byte characters included): the longest
    // value is accepted and reads back identical, one byte more is refused — the same verdict
    // on every store, through `enqueue` and `enqueue_batch`.
    let limits = outbox_core::Limits::default();
    let text = |bytes: usize| format!("{}{}", "é".repeat(bytes / 2), "x".repeat(bytes % 2));
    type Set = fn(NewEvent, String) -> NewEvent;
    let fields: [(&str, usize, Set); 5] = [
        ("event_type", limits.max_event_type_bytes, |e, v| {
            let mut e = e;
            e.event_type = v;
            e
        }),
        ("ordering_key", limits.max_key_bytes, |e, v| {
            e.ordering_key(v)
        }),
        ("idempotency_key", limits.max_key_bytes, |e, v| {
            e.idempotency_key(v)
        }),
        ("correlation_id", limits.max_key_bytes, |e, v| {
            e.correlation_id(v)
        }),
        ("traceparent", limits.max_key_bytes, |e, v| e.traceparent(v)),
    ];
    for (field, max, set) in fields {
        let longest = set(NewEvent::new("c11.Edge", json!({})), text(max));
        let stored = store.enqueue(longest.clone()).await.map_err(|e| {
            Failure::new(format!(
                "a {field} of exactly {max} bytes must be accepted: {e}"
            ))
        })?;
        let back = fetch(&store, stored.id).await?;
        ensure!(
            back.event_type == longest.event_type
                && back.ordering_key == longest.ordering_key
                && back.idempotency_key == longest.idempotency_key
                && back.correlation_id == longest.correlation_id
                && back.traceparent == longest.traceparent,
            "a {field} of {max} bytes did not read back identical: {back:?}"
        );
        for (what, value) in [
            (format!("{} bytes", max + 1), text(max + 1)),
            ("empty".to_owned(), String::new()),
        ] {
            let event = set(NewEvent::new("c11.Edge", json!({})), value);
            let valid = ok();
            for (form, verdict) in [
                ("enqueue", store.enqueue(event.clone()).await.map(drop)),
                (
                    "enqueue_batch",
                    store
                        .enqueue_batch(vec![valid.clone(), event])
                        .await
                        .map(drop),
                ),
            ] {
                ensure!(
                    matches!(verdict, Err(StoreError::InvalidRequest { .. })),
                    "{form}: a {field} of {what} must be refused with InvalidRequest, got \
                     {verdict:?}"
                );
            }
            ensure!(
                store.get(valid.id).await?.is_none(),
                "a batch refused for a {field} of {what} stored its valid event"
            );
        }
    }
    let blank = store.enqueue(NewEvent::new("  ", json!({}))).await;
    ensure!(
        matches!(blank, Err(StoreError::InvalidRequest { .. })),
        "a blank event type must be refused with InvalidRequest, got {blank:?}"
    );
    // The payload: exactly the limit of compact JSON is accepted, one byte more refused.
    let sized = |bytes: usize| json!({ "blob": "x".repeat(bytes - r#"{"blob":""}"#.len()) });
    let exact = sized(limits.max_payload_bytes);
    let stored = store
        .enqueue(NewEvent::new("c11.Edge", exact.clone()))
        .await
        .map_err(|e| {
            Failure::new(format!(
                "a payload of exactly {} bytes must be accepted: {e}",
                limits.max_payload_bytes
            ))
        })?;
    ensure!(
        fetch(&store, stored.id).await?.payload == exact,
        "a payload of the largest size did not read back identical"
    );
    let over = store
        .enqueue(NewEvent::new(
            "c11.Edge",
            sized(limits.max_payload_bytes + 1),
        ))
        .await;
    ensure!(
        matches!(over, Err(StoreError::InvalidRequest { .. })),
        "a payload one byte over the limit must be refused with InvalidRequest, got {over:?}"
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
    // Stored: the deepest payload, the largest event, the five longest fields, the largest payload.
    let pending = store.stats().await?.pending;
    ensure!(
        pending == 2 + 5 + 1,
        "refused events were stored: {pending} pending, 8 accepted"
    );
    Ok(Verdict::Passed)
}

/// C11, outcomes: whatever a handler returns is made storable by core before the store sees it —
/// NUL characters, a 20 MB error, a retry delay of `Duration::MAX`, an output nested 200 levels
/// or of 20 MB, NUL in an output and in a log line — on every store alike. Each such event ends
/// recorded (processed, dead or backing off) within its attempts, and 40 healthy events completed
/// in the same batches each run exactly once.
pub async fn c11_unstorable_outcomes<F: StoreFactory>(factory: &F) -> ClauseResult {
    use outbox_core::kit::storable::{CUT_MARK, MAX_RETRY_DELAY};
    let store = factory.create(&namespace("c11out")).await?;
    let calls = Calls::default();
    let deep = || (0..200).fold(json!(1), |v, _| serde_json::Value::Array(vec![v]));
    let twenty_mb = || "x".repeat(20 << 20);
    let bad = |kind: &'static str| {
        let calls = calls.clone();
        Handler::raw(format!("c11out.{kind}"), kind, move |record, ctx| {
            calls.record(record.id, kind);
            async move {
                match kind {
                    "nul_error" => Err(HandlerError::retry("bad\0error")),
                    "huge_error" => Err(HandlerError::permanent(twenty_mb())),
                    "forever" => Err(HandlerError::retry_after("later", Duration::MAX)),
                    "deep_output" => Ok(Some(deep())),
                    "big_output" => Ok(Some(json!(twenty_mb()))),
                    "nul_output" => Ok(Some(json!({"id\u{0}": "a\u{0}b"}))),
                    _ => {
                        ctx.info("line with \0 NUL");
                        Ok(None)
                    }
                }
            }
        })
    };
    let kinds = [
        "nul_error",
        "huge_error",
        "forever",
        "deep_output",
        "big_output",
        "nul_output",
        "nul_log",
    ];
    let healthy = {
        let calls = calls.clone();
        Handler::raw("c11out.Healthy", "healthy", move |record, _ctx| {
            calls.record(record.id, "healthy");
            async { Ok::<_, HandlerError>(json!({"ok": true})) }
        })
    };
    let mut handlers: Vec<Handler> = kinds.iter().map(|k| bad(k)).collect();
    handlers.push(healthy);
    let registry = handlers
        .into_iter()
        .fold(
            Registry::builder(),
            outbox_core::handlers::RegistryBuilder::handler,
        )
        .build()
        .map_err(|e| Failure::new(format!("registry: {e}")))?;

    let mut events: Vec<NewEvent> = (0..40)
        .map(|n| NewEvent::new("c11out.Healthy", json!({ "n": n })))
        .collect();
    events.extend(
        kinds
            .iter()
            .map(|k| NewEvent::new(format!("c11out.{k}"), json!({}))),
    );
    let ids: Vec<_> = store
        .enqueue_batch(events)
        .await?
        .iter()
        .map(|e| e.id)
        .collect();
    let (healthy_ids, bad_ids) = ids.split_at(40);
    let max_attempts = 2;
    let worker = Worker::builder(store.clone())
        .registry(registry)
        .config(
            fast_config()
                .with_batch_size(64)
                .with_max_in_flight(64)
                .with_retry(
                    outbox_core::RetryPolicy::default()
                        .with_max_attempts(max_attempts)
                        .with_initial_delay(Duration::from_millis(30))
                        .with_max_delay(Duration::from_millis(100))
                        .with_jitter(0.0),
                ),
        )
        .build()
        .map_err(|e| Failure::new(format!("worker: {e}")))?
        .start();
    for id in healthy_ids {
        wait_status(&store, *id, EventStatus::Processed, WAIT).await?;
    }
    let expect = [
        EventStatus::Dead,
        EventStatus::Dead,
        EventStatus::Pending,
        EventStatus::Dead,
        EventStatus::Dead,
        EventStatus::Processed,
        EventStatus::Processed,
    ];
    for ((kind, id), status) in kinds.iter().zip(bad_ids).zip(expect) {
        if status == EventStatus::Pending {
            wait_until(WAIT, "the retry_after(MAX) outcome is recorded", || async {
                Ok(fetch(&store, *id)
                    .await?
                    .handler_results
                    .contains_key(*kind))
            })
            .await?;
        } else {
            wait_status(&store, *id, status, WAIT)
                .await
                .map_err(|e| Failure::new(format!("{kind}: {e}")))?;
        }
    }
    // Long enough for any looping outcome to show (retries wait 30-100 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.shutdown().await;

    for id in healthy_ids {
        let runs = calls.get(*id, "healthy");
        ensure!(
            runs == 1,
            "a healthy event beside unstorable outcomes ran {runs} times"
        );
        let record = fetch(&store, *id).await?;
        ensure!(
            record.handler_results["healthy"].output == Some(json!({"ok": true})),
            "a healthy event's output was lost: {:?}",
            record.handler_results
        );
    }
    for (kind, id) in kinds.iter().zip(bad_ids) {
        let runs = calls.get(*id, kind);
        ensure!(
            runs >= 1 && runs <= max_attempts,
            "{kind}: the handler ran {runs} times (max_attempts {max_attempts})"
        );
        let record = fetch(&store, *id).await?;
        let state = record
            .handler_results
            .get(*kind)
            .ok_or_else(|| Failure::new(format!("{kind}: no result recorded")))?;
        let error = state.last_error.as_deref().unwrap_or("");
        let fine = match *kind {
            "nul_error" => error == "bad\u{FFFD}error" && state.gave_up,
            "huge_error" => error.contains(CUT_MARK) && error.len() < 16 * 1024 && state.gave_up,
            "forever" => {
                let until = record.backoff_until.unwrap_or(record.created_at);
                let limit = chrono::Utc::now()
                    + chrono::Duration::from_std(MAX_RETRY_DELAY).unwrap_or_default()
                    + chrono::Duration::hours(1);
                record.status == EventStatus::Pending
                    && until > chrono::Utc::now() + chrono::Duration::days(300)
                    && until < limit
            }
            "deep_output" => error.contains("levels") && state.output.is_none(),
            "big_output" => error.contains("bytes of JSON") && state.output.is_none(),
            "nul_output" => state.output == Some(json!({"id\u{FFFD}": "a\u{FFFD}b"})),
            _ => state
                .logs
                .first()
                .is_some_and(|l| l.message == "line with \u{FFFD} NUL"),
        };
        ensure!(fine, "{kind}: recorded as {:?} / {state:?}", record.status);
    }
    Ok(Verdict::Passed)
}
