//! How a worker handles events (contracts P1–P5): fan-out, retries, permanent errors, unhandled
//! types, panics and timeouts.

use std::time::Duration;

use outbox_core::model::{HandlerResults, HandlerState};
use outbox_core::prelude::*;
use outbox_core::{Event, EventStatus, Handler, HandlerError, NoHandlerPolicy};
use serde_json::json;

use super::support::{
    Calls, fast_config, fetch, put, ran_elsewhere, registry, start, wait_status, wait_until,
};
use super::support::{TypedPing, WAIT, counting};
use crate::ensure;
use crate::harness::{ClauseResult, Failure, StoreFactory, Verdict, namespace};

/// P1: every handler of the type runs; successes are recorded per handler, a retry re-runs only the
/// failed ones, and a returned JSON result is stored.
pub async fn p1_fan_out_per_handler_results<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("p1")).await?;
    let calls = Calls::default();
    let receipt = {
        let calls = calls.clone();
        Handler::raw("p1.Fan", "receipt", move |record, _ctx| {
            calls.record(record.id, "receipt");
            async move { Ok::<_, HandlerError>(json!({"message_id": format!("m-{}", record.id)})) }
        })
    };
    let reg = registry(vec![
        counting("p1.Fan", "always_ok", &calls, 0),
        counting("p1.Fan", "flaky", &calls, 1),
        receipt,
    ])?;
    let id = put(&store, "p1.Fan", json!({"n": 1})).await?;
    let worker = start(&store, reg, fast_config())?;
    let record = wait_status(&store, id, EventStatus::Processed, WAIT).await?;
    worker.shutdown().await;
    for (handler, want) in [("always_ok", 1), ("flaky", 2), ("receipt", 1)] {
        let got = calls.get(id, handler);
        ensure!(
            got == want,
            "handler {handler} ran {got} times, expected {want} (only failed handlers re-run)"
        );
        let state = record
            .handler_results
            .get(handler)
            .ok_or_else(|| Failure::new(format!("no result for {handler}")))?;
        ensure!(
            state.succeeded_at.is_some() && state.attempts == want,
            "{handler}: {state:?}"
        );
    }
    ensure!(
        record.handler_results["receipt"].output == Some(json!({"message_id": format!("m-{id}")})),
        "handler output not stored: {:?}",
        record.handler_results["receipt"].output
    );
    ensure!(record.lease_token.is_none(), "processed event still leased");
    Ok(Verdict::Passed)
}

/// P2: failed handlers are retried with back-off until their attempts (per-handler override) run
/// out; then the event is dead once no handler can make progress.
pub async fn p2_retries_then_dead<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("p2")).await?;
    let calls = Calls::default();
    let reg = registry(vec![
        counting("p2.Fail", "hopeless", &calls, u32::MAX).with_max_attempts(3),
        counting("p2.Fail", "fine", &calls, 0),
    ])?;
    let id = put(&store, "p2.Fail", json!({})).await?;
    let started = tokio::time::Instant::now();
    let worker = start(&store, reg, fast_config())?;
    let record = wait_status(&store, id, EventStatus::Dead, WAIT).await?;
    let elapsed = started.elapsed();
    worker.shutdown().await;
    ensure!(
        calls.get(id, "hopeless") == 3,
        "the failing handler ran {} times, expected its max_attempts 3",
        calls.get(id, "hopeless")
    );
    ensure!(calls.get(id, "fine") == 1, "the succeeding handler re-ran");
    let state = &record.handler_results["hopeless"];
    ensure!(
        state.gave_up && state.attempts == 3,
        "expected gave_up after 3 attempts: {state:?}"
    );
    ensure!(
        state.last_error.as_deref() == Some("transient failure 3"),
        "last error not kept: {state:?}"
    );
    // Back-off of 30 ms then 60 ms must have been waited.
    ensure!(
        elapsed >= Duration::from_millis(90),
        "retries did not back off: all done in {elapsed:?}"
    );
    ensure!(
        store.dead_letters(10).await?.iter().any(|r| r.id == id),
        "dead event not listed"
    );
    Ok(Verdict::Passed)
}

/// P3: a permanent failure (including a payload that does not deserialize) is not retried; the
/// reason is recorded and the event goes dead.
pub async fn p3_permanent_errors<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("p3")).await?;
    let calls = Calls::default();
    let typed = {
        let calls = calls.clone();
        Handler::typed("typed", move |event: TypedPing, ctx| {
            calls.record(ctx.event_id, "typed");
            async move {
                if event.text == "reject" {
                    Err(HandlerError::permanent("rejected on purpose"))
                } else {
                    Ok(())
                }
            }
        })
    };
    let reg = registry(vec![typed])?;
    let bad = put(&store, TypedPing::EVENT_TYPE, json!({"wrong_field": 42})).await?;
    let rejected = put(&store, TypedPing::EVENT_TYPE, json!({"text": "reject"})).await?;
    let good = put(&store, TypedPing::EVENT_TYPE, json!({"text": "hello"})).await?;
    let worker = start(&store, reg, fast_config())?;
    let bad_record = wait_status(&store, bad, EventStatus::Dead, WAIT).await?;
    let rejected_record = wait_status(&store, rejected, EventStatus::Dead, WAIT).await?;
    wait_status(&store, good, EventStatus::Processed, WAIT).await?;
    worker.shutdown().await;
    let state = &bad_record.handler_results["typed"];
    ensure!(
        state.attempts == 1 && state.gave_up,
        "a bad payload must give up after one attempt: {state:?}"
    );
    ensure!(
        state
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("deserialize")),
        "the reason must say the payload does not deserialize: {:?}",
        state.last_error
    );
    ensure!(
        calls.get(bad, "typed") == 0,
        "the handler body ran for a payload that does not deserialize"
    );
    let state = &rejected_record.handler_results["typed"];
    ensure!(
        calls.get(rejected, "typed") == 1 && state.attempts == 1,
        "a permanent error was retried: {state:?}"
    );
    ensure!(
        state.last_error.as_deref() == Some("rejected on purpose"),
        "reason not recorded: {state:?}"
    );
    Ok(Verdict::Passed)
}

/// P4: an event type without handlers stays pending with back-off by default (a rolling deploy may
/// bring its handler) and never blocks other events; marking it processed is an explicit choice.
pub async fn p4_unhandled_event_types<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("p4")).await?;
    let calls = Calls::default();
    let reg = registry(vec![counting("p4.Known", "known", &calls, 0)])?;
    let orphan = put(&store, "p4.Orphan", json!({})).await?;
    let known = put(&store, "p4.Known", json!({})).await?;
    let worker = start(&store, reg.clone(), fast_config())?;
    wait_status(&store, known, EventStatus::Processed, WAIT).await?;
    wait_until(WAIT, "the unhandled event was looked at", || async {
        Ok(fetch(&store, orphan).await?.backoff_until.is_some())
    })
    .await?;
    // Polling every 25 ms, a hot loop would claim it dozens of times in this second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = worker.metrics();
    worker.shutdown().await;
    let record = fetch(&store, orphan).await?;
    ensure!(
        record.status == EventStatus::Pending,
        "by default an unhandled event must stay pending, got {:?}",
        record.status
    );
    ensure!(
        record.lease_token.is_none(),
        "the unhandled event is still leased"
    );
    ensure!(
        record.attempts <= 2,
        "the unhandled event was claimed {} times in about a second: no back-off",
        record.attempts
    );
    ensure!(
        record.backoff_until.is_some_and(|b| b > chrono::Utc::now()),
        "the unhandled event must wait: {:?}",
        record.backoff_until
    );
    ensure!(
        metrics.unhandled >= 1,
        "unhandled claims must be counted: {metrics:?}"
    );

    let dropped = put(&store, "p4.Orphan", json!({})).await?;
    let worker = start(
        &store,
        reg,
        fast_config().with_no_handler(NoHandlerPolicy::MarkProcessed),
    )?;
    wait_status(&store, dropped, EventStatus::Processed, WAIT).await?;
    worker.shutdown().await;
    Ok(Verdict::Passed)
}

/// P4: a handler recorded in an event's results that is no longer registered (renamed, removed, or
/// known only to another version) causes no hot loop: the event waits with back-off for a worker
/// that has the handler, and after the grace period the handler gives up with a reason naming it.
pub async fn p4_missing_handler_no_hot_loop<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("p4missing")).await?;
    let id = put(&store, "p4.Moved", json!({})).await?;
    // A worker of the previous version ran `old_name` once, and it failed.
    let mut results = HandlerResults::new();
    results.insert(
        "old_name".into(),
        HandlerState {
            attempts: 1,
            last_error: Some("smtp unavailable".into()),
            ..HandlerState::default()
        },
    );
    ran_elsewhere(&store, results).await?;
    let calls = Calls::default();
    let reg = registry(vec![counting("p4.Moved", "new_name", &calls, 0)])?;
    let waiting = NoHandlerPolicy::Backoff {
        initial: Duration::from_millis(400),
        max: Duration::from_millis(400),
    };
    let worker = start(&store, reg.clone(), fast_config().with_no_handler(waiting))?;
    wait_until(WAIT, "the current handler ran", || async {
        Ok(calls.get(id, "new_name") == 1)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    worker.shutdown().await;
    let record = fetch(&store, id).await?;
    ensure!(
        record.status == EventStatus::Pending,
        "the event must wait for a worker with `old_name`, got {:?}",
        record.status
    );
    ensure!(
        record.attempts <= 4,
        "the event was claimed {} times in about a second: a hot loop",
        record.attempts
    );
    ensure!(
        calls.get(id, "new_name") == 1,
        "a handler that succeeded ran again"
    );
    ensure!(
        record.handler_results["old_name"].missing_since.is_some(),
        "the missing handler is not marked: {:?}",
        record.handler_results
    );

    // Once the grace period has passed, the missing handler gives up and the event is dead.
    let config = fast_config()
        .with_missing_handler_grace(Duration::from_millis(300))
        .with_no_handler(waiting);
    let worker = start(&store, reg, config)?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let record = fetch(&store, id).await?;
        if record.status == EventStatus::Dead {
            let state = &record.handler_results["old_name"];
            ensure!(
                state.gave_up
                    && state
                        .last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("old_name")),
                "the dead event must name the missing handler: {state:?}"
            );
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the event never gave up on its missing handler: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await;
    Ok(Verdict::Passed)
}

/// P5: a panicking handler and one exceeding its timeout are recorded as failures; the worker keeps
/// running.
pub async fn p5_panics_and_timeouts<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("p5")).await?;
    let panicking = Handler::raw("p5.Panic", "panicker", |_record, _ctx| async move {
        if true {
            panic!("handler exploded");
        }
        Ok::<_, HandlerError>(())
    })
    .with_max_attempts(1);
    let slow = Handler::raw("p5.Slow", "sleeper", |_record, _ctx| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok::<_, HandlerError>(())
    })
    .with_timeout(Duration::from_millis(200))
    .with_max_attempts(1);
    let calls = Calls::default();
    let reg = registry(vec![
        panicking,
        slow,
        counting("p5.Fine", "fine", &calls, 0),
    ])?;
    let boom = put(&store, "p5.Panic", json!({})).await?;
    let sleepy = put(&store, "p5.Slow", json!({})).await?;
    let worker = start(&store, reg, fast_config())?;
    let boom = wait_status(&store, boom, EventStatus::Dead, WAIT).await?;
    let sleepy = wait_status(&store, sleepy, EventStatus::Dead, WAIT).await?;
    let after = put(&store, "p5.Fine", json!({})).await?;
    wait_status(&store, after, EventStatus::Processed, WAIT).await?;
    ensure!(
        !worker.is_finished(),
        "the worker stopped after a handler panic"
    );
    worker.shutdown().await;
    let err = boom.handler_results["panicker"]
        .last_error
        .clone()
        .unwrap_or_default();
    ensure!(
        err.contains("panicked") && err.contains("handler exploded"),
        "panic not recorded: {err:?}"
    );
    let err = sleepy.handler_results["sleeper"]
        .last_error
        .clone()
        .unwrap_or_default();
    ensure!(err.contains("timed out"), "timeout not recorded: {err:?}");
    Ok(Verdict::Passed)
}
