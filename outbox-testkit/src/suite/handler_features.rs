//! What handlers get beyond a call: hand-built registries, waiting for outcomes, per-event logs,
//! batch handlers and outcome targets (contracts H5, W1, L1, B1, W2).

use super::support::{TypedPing, WAIT};
use super::support::{fast_config, registry, start, wait_status, wait_until};
use crate::ensure;
use crate::harness::{ClauseResult, Failure, StoreFactory, Verdict, namespace};
use outbox_core::prelude::*;
use outbox_core::{Event, EventStatus, Handler, HandlerError, NewEvent, Store, StoreExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// H5: a registry built by hand drives a worker with typed and raw handlers.
pub async fn h5_hand_built_registry<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("h5")).await?;
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let typed = {
        let seen = Arc::clone(&seen);
        Handler::typed("typed", move |event: TypedPing, _ctx| {
            seen.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(event.text);
            async { Ok::<_, HandlerError>(()) }
        })
    };
    let raw = Handler::raw(TypedPing::EVENT_TYPE, "raw", |record, ctx| async move {
        if record.id == ctx.event_id && ctx.correlation_id.as_deref() == Some("corr-1") {
            Ok(())
        } else {
            Err(HandlerError::permanent("context does not match the record"))
        }
    });
    let id = store
        .enqueue(
            NewEvent::from_event(&TypedPing {
                text: "héllo 👋".into(),
            })
            .map_err(|e| Failure::new(e.to_string()))?
            .correlation_id("corr-1"),
        )
        .await?
        .id;
    let worker = start(&store, registry(vec![typed, raw])?, fast_config())?;
    let record = wait_status(&store, id, EventStatus::Processed, WAIT).await;
    worker.shutdown().await;
    let record = record?;
    ensure!(
        record.handler_results.len() == 2,
        "both handlers must have results: {:?}",
        record.handler_results
    );
    let seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    ensure!(seen == ["héllo 👋"], "typed handler got {seen:?}");
    Ok(Verdict::Passed)
}

/// W1: [`StoreExt::wait_for`] returns an event's final outcome — processed with every handler's
/// stored output, or dead with the reason — as soon as a worker persisted it, and the event as it
/// stands when the timeout runs out; an unknown id is an error.
pub async fn w1_wait_for_outcomes<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("w1")).await?;
    let ok = Handler::raw("w1.Good", "receipt", |record, _ctx| {
        let n = record.payload["n"].clone();
        async move { Ok::<_, HandlerError>(json!({ "receipt": n })) }
    });
    let quiet = Handler::raw("w1.Good", "quiet", |_record, _ctx| async {
        Ok::<_, HandlerError>(())
    });
    let refuse = Handler::raw("w1.Bad", "refuse", |_record, _ctx| async {
        Err::<(), _>(HandlerError::permanent("card declined"))
    });
    let worker = start(&store, registry(vec![ok, quiet, refuse])?, fast_config())?;
    let result = async {
        let good = store.enqueue(NewEvent::new("w1.Good", json!({ "n": 7 }))).await?.id;
        let bad = store.enqueue(NewEvent::new("w1.Bad", json!({}))).await?.id;
        let later = store
            .enqueue(NewEvent::new("w1.Good", json!({ "n": 8 })).deliver_after(Duration::from_secs(3600)))
            .await?
            .id;

        let outcome = store.wait_for(good, WAIT).await?;
        ensure!(
            matches!(outcome, outbox_core::Outcome::Processed(_)),
            "the good event must be processed: {outcome:?}"
        );
        let outputs = outcome.outputs();
        ensure!(
            outputs.len() == 1 && outputs.get("receipt") == Some(&&json!({ "receipt": 7 })),
            "the outcome carries each handler's stored output: {outputs:?}"
        );

        let outcome = store.wait_for(bad, WAIT).await?;
        let reason = outcome.record().and_then(|r| r.give_up_reason()).map(|(h, e)| format!("{h}: {e}"));
        ensure!(
            matches!(outcome, outbox_core::Outcome::Dead(_))
                && reason.as_deref() == Some("refuse: card declined"),
            "the bad event must be dead with its reason: {outcome:?}"
        );

        let started = std::time::Instant::now();
        let outcome = store.wait_for(later, Duration::from_millis(300)).await?;
        let waited = started.elapsed();
        ensure!(
            matches!(outcome, outbox_core::Outcome::TimedOut(ref r) if r.status == EventStatus::Pending),
            "a scheduled event times out still pending: {outcome:?}"
        );
        ensure!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
            "the wait must last about its timeout: {waited:?}"
        );

        match store.wait_for(uuid::Uuid::now_v7(), Duration::from_millis(100)).await {
            Err(outbox_core::StoreError::NotFound { .. }) => {}
            other => {
                return Err(Failure::new(format!(
                    "waiting for an unknown id must be NotFound: {other:?}"
                )));
            }
        }
        Ok(Verdict::Passed)
    }
    .await;
    worker.shutdown().await;
    result
}

/// L1: what handlers log through their context is stored with the event, per handler and
/// attempt, after a failure, a success, a panic and a timeout alike; an event keeps at most
/// [`outbox_core::model::MAX_LOG_ENTRIES`] entries, the oldest dropped and counted.
pub async fn l1_per_event_logs<F: StoreFactory>(factory: &F) -> ClauseResult {
    use outbox_core::Outcome;
    use outbox_core::model::LogLevel;
    let store = factory.create(&namespace("l1")).await?;
    let flaky = Handler::raw("l1.Flaky", "flaky", |_record, ctx| {
        ctx.info(format!("try {}", ctx.attempt));
        async move {
            if ctx.attempt == 1 {
                ctx.warn("the mail server said 451");
                Err(HandlerError::retry("451 try again"))
            } else {
                Ok(())
            }
        }
    });
    let panicky = Handler::raw("l1.Panic", "panicky", |_record, ctx| {
        ctx.error("about to panic");
        async move {
            if ctx.attempt < 100 {
                panic!("boom");
            }
            Ok::<_, HandlerError>(())
        }
    })
    .with_max_attempts(1);
    let slow = Handler::raw("l1.Slow", "slow", |_record, ctx| async move {
        ctx.debug("waiting for the slow service");
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok::<_, HandlerError>(())
    })
    .with_max_attempts(1)
    .with_timeout(Duration::from_millis(100));
    let loud = Handler::raw("l1.Loud", "loud", |_record, ctx| {
        for n in 0..150 {
            ctx.info(format!("line {n}"));
        }
        async { Ok::<_, HandlerError>(()) }
    });
    let worker = start(
        &store,
        registry(vec![flaky, panicky, slow, loud])?,
        fast_config(),
    )?;
    let result = async {
        let flaky = store
            .enqueue(NewEvent::new("l1.Flaky", json!({})))
            .await?
            .id;
        let panicky = store
            .enqueue(NewEvent::new("l1.Panic", json!({})))
            .await?
            .id;
        let slow = store.enqueue(NewEvent::new("l1.Slow", json!({}))).await?.id;
        let loud = store.enqueue(NewEvent::new("l1.Loud", json!({}))).await?.id;

        let outcome = store.wait_for(flaky, WAIT).await?;
        let Outcome::Processed(record) = outcome else {
            return Err(Failure::new(format!(
                "the flaky event must be processed: {outcome:?}"
            )));
        };
        let lines: Vec<(u32, LogLevel, &str)> = record.handler_results["flaky"]
            .logs
            .iter()
            .map(|e| (e.attempt, e.level, e.message.as_str()))
            .collect();
        ensure!(
            lines
                == [
                    (1, LogLevel::Info, "try 1"),
                    (1, LogLevel::Warn, "the mail server said 451"),
                    (2, LogLevel::Info, "try 2"),
                ],
            "both attempts' entries, in order, failure included: {lines:?}"
        );

        for (id, handler, message) in [
            (panicky, "panicky", "about to panic"),
            (slow, "slow", "waiting for the slow service"),
        ] {
            let outcome = store.wait_for(id, WAIT).await?;
            let logs = outcome
                .record()
                .and_then(|r| r.handler_results.get(handler))
                .map(|s| s.logs.iter().map(|e| e.message.clone()).collect::<Vec<_>>());
            ensure!(
                matches!(outcome, Outcome::Dead(_)) && logs == Some(vec![message.to_owned()]),
                "{handler}: dead, with what it logged before it panicked or timed out: {outcome:?}"
            );
        }

        let outcome = store.wait_for(loud, WAIT).await?;
        let state = outcome
            .record()
            .and_then(|r| r.handler_results.get("loud"))
            .cloned()
            .unwrap_or_default();
        ensure!(
            state.logs.len() == outbox_core::model::MAX_LOG_ENTRIES
                && state.logs_dropped == 50
                && state.logs.first().map(|e| e.message.as_str()) == Some("line 50"),
            "150 lines keep the newest {}, 50 dropped and counted: {} kept, {} dropped, first {:?}",
            outbox_core::model::MAX_LOG_ENTRIES,
            state.logs.len(),
            state.logs_dropped,
            state.logs.first()
        );
        Ok(Verdict::Passed)
    }
    .await;
    worker.shutdown().await;
    result
}

/// B1: a batch handler gets the running events of its type in groups (at most its size), gives
/// each its own result (recorded as for any handler: outputs, dead letters), and ordering keys
/// still hold (a key's events run in creation order, never two in one batch).
pub async fn b1_batch_handlers<F: StoreFactory>(factory: &F) -> ClauseResult {
    use std::sync::Mutex;
    let store = factory.create(&namespace("b1")).await?;
    // Each call's events: (id, ordering key).
    type Batches = Arc<Mutex<Vec<Vec<(uuid::Uuid, Option<String>)>>>>;
    let calls: Batches = Arc::default();
    let relay = {
        let calls = Arc::clone(&calls);
        Handler::batch(
            "b1.Msg",
            "relay",
            10,
            Duration::from_millis(50),
            move |items: Vec<outbox_core::handlers::BatchItem>| {
                let size = items.len();
                calls
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(
                        items
                            .iter()
                            .map(|i| (i.record.id, i.record.ordering_key.clone()))
                            .collect(),
                    );
                let results = items
                    .iter()
                    .map(|item| {
                        if item.record.payload["fail"] == json!(true) {
                            Err(HandlerError::permanent("broker refused the message"))
                        } else {
                            Ok(Some(json!({ "batch": size })))
                        }
                    })
                    .collect::<Vec<_>>();
                async move { results }
            },
        )
    };
    let mut ids = Vec::new();
    let mut keyed = Vec::new();
    let mut failing = Vec::new();
    for n in 0..30 {
        let mut event = NewEvent::new("b1.Msg", json!({ "n": n, "fail": n % 13 == 5 }));
        if n % 6 == 0 {
            event = event.ordering_key("b1-key");
        }
        let id = store.enqueue(event).await?.id;
        if n % 6 == 0 {
            keyed.push(id);
        }
        if n % 13 == 5 {
            failing.push(id);
        }
        ids.push(id);
    }
    let worker = start(&store, registry(vec![relay])?, fast_config())?;
    let result = async {
        for id in &ids {
            let outcome = store.wait_for(*id, WAIT).await?;
            let state = outcome
                .record()
                .and_then(|r| r.handler_results.get("relay"))
                .cloned()
                .unwrap_or_default();
            if failing.contains(id) {
                ensure!(
                    matches!(outcome, outbox_core::Outcome::Dead(_))
                        && state.last_error.as_deref() == Some("broker refused the message"),
                    "a failed item is that event's failure: {outcome:?}"
                );
            } else {
                ensure!(
                    matches!(outcome, outbox_core::Outcome::Processed(_))
                        && state.attempts == 1
                        && state
                            .output
                            .as_ref()
                            .and_then(|o| o["batch"].as_u64())
                            .is_some(),
                    "each event gets its own result, recorded once, with its output: {outcome:?}"
                );
            }
        }
        let calls = calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let handled: usize = calls.iter().map(Vec::len).sum();
        ensure!(
            handled == ids.len(),
            "every event handled once: {handled} of {}",
            ids.len()
        );
        ensure!(
            calls.iter().all(|c| c.len() <= 10),
            "no batch above its size: {:?}",
            calls.iter().map(Vec::len).collect::<Vec<_>>()
        );
        ensure!(
            calls.len() < ids.len(),
            "events were grouped: {} calls for {} events",
            calls.len(),
            ids.len()
        );
        ensure!(
            calls
                .iter()
                .all(|c| c.iter().filter(|(_, k)| k.is_some()).count() <= 1),
            "never two events of one key in a batch"
        );
        let keyed_order: Vec<uuid::Uuid> = calls
            .iter()
            .flatten()
            .filter(|(_, k)| k.is_some())
            .map(|(id, _)| *id)
            .collect();
        ensure!(
            keyed_order == keyed,
            "a key's events are handled in creation order: {keyed_order:?} vs {keyed:?}"
        );
        Ok(Verdict::Passed)
    }
    .await;
    worker.shutdown().await;
    result
}

/// W2: targets attached to an event — at enqueue, after it finished, or while it is still
/// pending — are each notified of its final outcome, at least once; a failing notifier is retried
/// and one that keeps failing leaves its target a dead letter.
pub async fn w2_outcome_targets<F: StoreFactory>(factory: &F) -> ClauseResult {
    use outbox_core::Outcome;
    use outbox_core::handlers::{Notifiers, target_event, with_target};
    use std::sync::Mutex;
    let store = factory.create(&namespace("w2")).await?;
    type Heard = Arc<Mutex<Vec<(String, uuid::Uuid, bool)>>>;
    let heard: Heard = Arc::default();
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let notifiers = {
        let heard = Arc::clone(&heard);
        Notifiers::new(shared)
            .kind("test", move |n| {
                let tag = n.target["tag"].as_str().unwrap_or_default().to_owned();
                let processed = matches!(n.outcome, Outcome::Processed(_))
                    && n.outcome.outputs().get("work") == Some(&&json!({ "done": true }));
                let mut heard = heard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let earlier = heard.iter().filter(|(t, _, _)| *t == tag).count();
                heard.push((tag, n.event_id, processed));
                let fail = n.target["flaky"] == json!(true) && earlier == 0;
                async move {
                    if fail {
                        Err(HandlerError::retry("the session was busy"))
                    } else {
                        Ok(())
                    }
                }
            })
            .kind("broken", |_n| async {
                Err(HandlerError::permanent("the webhook answered 410 Gone"))
            })
    };
    let work = Handler::raw("w2.Work", "work", |_record, _ctx| async {
        Ok::<_, HandlerError>(json!({ "done": true }))
    });
    let worker = start(
        &store,
        registry(vec![work, notifiers.handler()])?,
        fast_config(),
    )?;
    let result = async {
        // At enqueue: the target runs right after its event.
        let (event, target) = with_target(
            NewEvent::new("w2.Work", json!({})),
            json!({ "kind": "test", "tag": "at-enqueue" }),
        );
        let first = event.id;
        store.enqueue_batch(vec![event, target]).await?;
        // After the event finished.
        let second = store.enqueue(NewEvent::new("w2.Work", json!({}))).await?.id;
        ensure!(
            store.wait_for(second, WAIT).await?.is_final(),
            "the second event was not processed"
        );
        store
            .enqueue(target_event(
                second,
                json!({ "kind": "test", "tag": "after" }),
            ))
            .await?;
        // While the event is still pending (scheduled): notified once it is processed; the
        // notifier fails once and is retried.
        let third = store
            .enqueue(NewEvent::new("w2.Work", json!({})).deliver_after(Duration::from_millis(600)))
            .await?
            .id;
        store
            .enqueue(target_event(
                third,
                json!({ "kind": "test", "tag": "later", "flaky": true }),
            ))
            .await?;
        // A notifier that always fails: the target becomes a dead letter.
        let broken = store
            .enqueue(target_event(first, json!({ "kind": "broken" })))
            .await?
            .id;

        let expected = [("at-enqueue", first), ("after", second), ("later", third)];
        wait_until(WAIT, "every target to be notified", || {
            let heard = Arc::clone(&heard);
            async move {
                let heard = heard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                Ok(expected.iter().all(|(tag, id)| {
                    heard.iter().any(|(t, e, p)| t == tag && e == id && *p)
                        && (*tag != "later"
                            || heard.iter().filter(|(t, _, _)| t == tag).count() >= 2)
                }))
            }
        })
        .await?;
        let heard = heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        ensure!(
            heard.iter().all(|(_, _, processed)| *processed),
            "a notifier only hears final outcomes, with the handlers' outputs: {heard:?}"
        );
        let outcome = store.wait_for(broken, WAIT).await?;
        ensure!(
            matches!(outcome, Outcome::Dead(_)),
            "a target whose notifier keeps failing is a dead letter: {outcome:?}"
        );
        Ok(Verdict::Passed)
    }
    .await;
    worker.shutdown().await;
    result
}
