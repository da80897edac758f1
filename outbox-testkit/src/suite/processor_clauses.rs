//! Clauses P1–P9 and H5: what a worker running on the store guarantees.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use outbox_core::model::{HandlerResults, HandlerState};
use outbox_core::prelude::*;
use outbox_core::{
    Event, EventStatus, Handler, HandlerError, NewEvent, NoHandlerPolicy, Store, StoreExt,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::support::{
    Calls, claim, fast_config, fetch, put, ran_elsewhere, registry, start, wait_drained,
    wait_status, wait_until,
};
use crate::ensure;
use crate::harness::{ClauseResult, Failure, StoreFactory, Verdict, namespace};

const WAIT: Duration = Duration::from_secs(20);

/// A handler that counts its calls and fails the first `fail_first` of them per event.
fn counting(event_type: &str, name: &str, calls: &Calls, fail_first: u32) -> Handler {
    let calls = calls.clone();
    let name_owned = name.to_owned();
    Handler::raw(event_type, name, move |record, _ctx| {
        let n = calls.record(record.id, &name_owned);
        async move {
            if n <= fail_first {
                Err(HandlerError::retry(format!("transient failure {n}")))
            } else {
                Ok(())
            }
        }
    })
}

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

#[derive(Debug, Serialize, Deserialize)]
struct TypedPing {
    text: String,
}

impl Event for TypedPing {
    const EVENT_TYPE: &'static str = "p3.TypedPing";
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

/// P6: leases are renewed while handlers run (nobody else can claim the event), and when a lease is
/// lost the handler's cancellation token fires and its result is discarded.
pub async fn p6_lease_renewal_and_loss<F: StoreFactory>(factory: &F) -> ClauseResult {
    let base = factory.create(&namespace("p6")).await?;
    let store = crate::FaultyStore::new(base.clone());
    let faults = store.faults();
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let started = Arc::new(tokio::sync::Notify::new());
    let slow = {
        let saw_cancel = Arc::clone(&saw_cancel);
        let started = Arc::clone(&started);
        Handler::raw("p6.Long", "long", move |_record, ctx| {
            let saw_cancel = Arc::clone(&saw_cancel);
            let started = Arc::clone(&started);
            async move {
                started.notify_one();
                tokio::select! {
                    () = ctx.cancellation.cancelled() => saw_cancel.store(true, Ordering::SeqCst),
                    () = tokio::time::sleep(Duration::from_millis(1500)) => {}
                }
                Ok::<_, HandlerError>(json!({"by": "worker"}))
            }
        })
    };
    let config = fast_config()
        .with_lease(Duration::from_millis(400))
        .with_renew_interval(Duration::from_millis(100));
    let worker = start(&store, registry(vec![slow])?, config)?;

    // Renewal: a 1.5 s handler under a 400 ms lease keeps its event.
    let kept = put(&base, "p6.Long", json!({})).await?;
    tokio::time::timeout(WAIT, started.notified())
        .await
        .map_err(|_| Failure::new("handler never started"))?;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        ensure!(
            base.claim(&claim(10, Duration::from_secs(30)))
                .await?
                .is_empty(),
            "a renewed lease was taken over while its handler ran"
        );
    }
    let record = wait_status(&base, kept, EventStatus::Processed, WAIT).await?;
    ensure!(
        record.attempts == 1,
        "the event was delivered {} times",
        record.attempts
    );

    // Loss: renewals fail, the lease expires, a thief claims; the worker's handler is cancelled.
    faults.fail_renewals(true);
    let stolen = put(&base, "p6.Long", json!({})).await?;
    tokio::time::timeout(WAIT, started.notified())
        .await
        .map_err(|_| Failure::new("handler never started"))?;
    let thief = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut got = base.claim(&claim(1, Duration::from_secs(30))).await?;
            if let Some(c) = got.pop() {
                break c;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the unrenewed lease never expired"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    faults.fail_renewals(false);
    wait_until(WAIT, "the handler saw its cancellation", || async {
        Ok(saw_cancel.load(Ordering::SeqCst))
    })
    .await?;
    let mut results = outbox_core::model::HandlerResults::new();
    results.insert(
        "thief".into(),
        outbox_core::model::HandlerState {
            attempts: 1,
            succeeded_at: Some(chrono::Utc::now()),
            ..Default::default()
        },
    );
    base.complete(
        &thief.lease,
        outbox_core::store::Completion {
            status: EventStatus::Processed,
            handler_results: results,
            attempts: 2,
            retry_delay: None,
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = worker.shutdown().await.metrics;
    let record = fetch(&base, stolen).await?;
    ensure!(
        metrics.lease_lost >= 1,
        "the worker did not notice the lost lease: {metrics:?}"
    );
    ensure!(
        record.handler_results.keys().eq(["thief"]),
        "the worker's result after losing the lease was not discarded: {:?}",
        record.handler_results
    );
    Ok(Verdict::Passed)
}

/// P6, compromised leases: when the store stops answering renewals (they hang, as over a stalled
/// connection), the worker gives the lease up by itself before it can expire — its handler is
/// aborted even though it ignores its cancellation token — so a second claimer that takes the
/// event after the expiry never runs it while the first run still goes on.
pub async fn p6_compromised_lease_never_overlaps<F: StoreFactory>(factory: &F) -> ClauseResult {
    use std::sync::Mutex;
    use tokio::time::Instant;
    let base = factory.create(&namespace("p6c")).await?;
    let store = crate::FaultyStore::new(base.clone());
    let faults = store.faults();
    let started = Arc::new(tokio::sync::Notify::new());
    let ended: Arc<Mutex<Option<Instant>>> = Arc::default();
    /// Records when the handler's run ended, however it ended (dropped when aborted).
    struct RunEnd(Arc<Mutex<Option<Instant>>>);
    impl Drop for RunEnd {
        fn drop(&mut self) {
            *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        }
    }
    let stubborn = {
        let (started, ended) = (Arc::clone(&started), Arc::clone(&ended));
        Handler::raw("p6c.Long", "stubborn", move |_record, _ctx| {
            let _end = RunEnd(Arc::clone(&ended));
            let started = Arc::clone(&started);
            async move {
                let _end = _end;
                started.notify_one();
                // Ignores its cancellation token: only an abort stops it.
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, HandlerError>(())
            }
        })
    };
    let lease = Duration::from_millis(600);
    let config = fast_config()
        .with_lease(lease)
        .with_renew_interval(Duration::from_millis(150));
    let worker = start(&store, registry(vec![stubborn])?, config)?;
    let id = put(&base, "p6c.Long", json!({})).await?;
    tokio::time::timeout(WAIT, started.notified())
        .await
        .map_err(|_| Failure::new("handler never started"))?;
    faults.stall_renewals(true);
    let stalled_at = Instant::now();
    // The second claimer takes the event as soon as the store lets it.
    let thief = loop {
        let mut got = base.claim(&claim(1, Duration::from_secs(30))).await?;
        if let Some(c) = got.pop() {
            break c;
        }
        ensure!(
            stalled_at.elapsed() < Duration::from_secs(10),
            "the unrenewed lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let claimed_at = Instant::now();
    let run_ended = *ended
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    faults.stall_renewals(false);
    ensure!(
        thief.lease.event_id == id,
        "the second claim returned another event"
    );
    let Some(run_ended) = run_ended else {
        return Err(Failure::new(format!(
            "the first worker's handler still ran when a second claimer took the event {:?} after renewals stalled (the lease is {lease:?}): two runs of one event overlapped",
            claimed_at - stalled_at
        )));
    };
    ensure!(
        run_ended <= claimed_at,
        "the first run ended after the second claim"
    );
    let metrics = worker.shutdown().await.metrics;
    ensure!(
        metrics.leases_compromised >= 1 && metrics.lease_lost >= 1,
        "the worker did not count the compromised lease: {metrics:?}"
    );
    let record = fetch(&base, id).await?;
    ensure!(
        record.handler_results.is_empty() && record.status == EventStatus::Pending,
        "the compromised run's outcome was written: {:?}",
        record.handler_results
    );
    Ok(Verdict::Passed)
}

/// P7: shutdown stops claiming, fires handlers' cancellation tokens, lets them finish within the
/// grace period and persists their outcomes; handlers still running after it are aborted and their
/// events released, not left leased.
pub async fn p7_graceful_shutdown<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("p7")).await?;
    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let cooperative = {
        let started = Arc::clone(&started);
        Handler::raw("p7.Coop", "coop", move |_record, ctx| {
            let started = Arc::clone(&started);
            async move {
                started.add_permits(1);
                ctx.cancellation.cancelled().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, HandlerError>(json!({"finished": "after cancel"}))
            }
        })
    };
    let stubborn = {
        let started = Arc::clone(&started);
        Handler::raw("p7.Stubborn", "stubborn", move |_record, _ctx| {
            let started = Arc::clone(&started);
            async move {
                started.add_permits(1);
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, HandlerError>(())
            }
        })
    };
    let coop = put(&store, "p7.Coop", json!({})).await?;
    let stub = put(&store, "p7.Stubborn", json!({})).await?;
    let config = fast_config()
        .with_shutdown_grace(Duration::from_millis(800))
        .with_lease(Duration::from_secs(30));
    let worker = start(&store, registry(vec![cooperative, stubborn])?, config)?;
    let both = tokio::time::timeout(WAIT, started.acquire_many(2)).await;
    ensure!(matches!(both, Ok(Ok(_))), "handlers never started");
    let report = worker.shutdown().await;
    ensure!(
        report.in_flight_at_shutdown == 2,
        "expected 2 events in flight at shutdown: {report:?}"
    );
    ensure!(
        report.aborted_after_grace,
        "the stubborn handler should have been aborted after the grace period"
    );
    let coop = fetch(&store, coop).await?;
    ensure!(
        coop.status == EventStatus::Processed,
        "the cooperative handler's outcome was not persisted: {:?}",
        coop.status
    );
    let stub = fetch(&store, stub).await?;
    ensure!(
        stub.status == EventStatus::Pending,
        "the aborted event must stay pending: {:?}",
        stub.status
    );
    ensure!(
        stub.lease_token.is_none() && stub.locked_until.is_none(),
        "the aborted event was left leased"
    );
    ensure!(
        stub.handler_results
            .get("stubborn")
            .is_none_or(|s| s.attempts == 0),
        "an aborted run counted as a handler attempt"
    );
    let again = store.claim(&claim(10, Duration::from_secs(30))).await?;
    ensure!(
        again.iter().any(|c| c.record.id == stub.id),
        "the released event was not claimable at once"
    );
    Ok(Verdict::Passed)
}

/// Crash in the middle: a worker dropped (not shut down) mid-handler leaves its event leased; after
/// the lease it is redelivered and completes.
pub async fn p7_crash_mid_handler_redelivers<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("crash")).await?;
    let calls = Calls::default();
    let started = Arc::new(tokio::sync::Notify::new());
    // Set when the first run gets past its pause: a crashed worker's handler never does (it
    // stops with its process), so its outcome is never written.
    let outlived = Arc::new(AtomicBool::new(false));
    let handler = {
        let calls = calls.clone();
        let started = Arc::clone(&started);
        let outlived = Arc::clone(&outlived);
        Handler::raw("crash.Ev", "stuck_once", move |record, _ctx| {
            let n = calls.record(record.id, "stuck_once");
            let started = Arc::clone(&started);
            let outlived = Arc::clone(&outlived);
            async move {
                if n == 1 {
                    started.notify_one();
                    // Shorter than the lease: a handler that outlived the crash would finish
                    // while its lease still holds.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    outlived.store(true, Ordering::SeqCst);
                }
                Ok::<_, HandlerError>(())
            }
        })
    };
    let reg = registry(vec![handler])?;
    let id = put(&store, "crash.Ev", json!({})).await?;
    let config = fast_config()
        .with_lease(Duration::from_millis(600))
        .with_renew_interval(Duration::from_millis(200));
    let doomed = start(&store, reg.clone(), config.clone())?;
    tokio::time::timeout(WAIT, started.notified())
        .await
        .map_err(|_| Failure::new("handler never started"))?;
    doomed.abort();
    let leased = fetch(&store, id).await?;
    ensure!(
        leased.lease_token.is_some(),
        "the crashed worker's event should still be leased"
    );
    let survivor = start(&store, reg, config)?;
    let record = wait_status(&store, id, EventStatus::Processed, WAIT).await?;
    survivor.shutdown().await;
    ensure!(
        !outlived.load(Ordering::SeqCst),
        "the aborted worker's handler ran on after the crash (WorkerHandle::abort must stop its \
         handlers as a crash would)"
    );
    ensure!(
        calls.get(id, "stuck_once") == 2,
        "expected one crashed and one successful delivery, got {}",
        calls.get(id, "stuck_once")
    );
    ensure!(
        record.attempts == 2,
        "attempts must count the crashed delivery: {}",
        record.attempts
    );
    Ok(Verdict::Passed)
}

/// P9: while the store fails, the worker logs, backs off and continues; no event is lost.
pub async fn p9_store_faults<F: StoreFactory>(factory: &F) -> ClauseResult {
    let base = factory.create(&namespace("p9")).await?;
    let store = crate::FaultyStore::new(base.clone());
    let faults = store.faults();
    let calls = Calls::default();
    let reg = registry(vec![counting("p9.Ev", "h", &calls, 0)])?;
    let worker = start(&store, reg, fast_config())?;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(put(&base, "p9.Ev", json!({ "n": n })).await?);
    }
    faults.fail_everything(true);
    for n in 20..60 {
        ids.push(put(&base, "p9.Ev", json!({ "n": n })).await?);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    faults.fail_everything(false);
    wait_drained(&base, WAIT).await?;
    let metrics = worker.shutdown().await.metrics;
    ensure!(
        faults.injected() > 0 && metrics.store_errors > 0,
        "no fault reached the worker: {metrics:?}"
    );
    for id in ids {
        let r = fetch(&base, id).await?;
        ensure!(
            r.status == EventStatus::Processed,
            "event {id} ended {:?}",
            r.status
        );
        ensure!(calls.get(id, "h") >= 1, "event {id} was never handled");
    }
    Ok(Verdict::Passed)
}

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
