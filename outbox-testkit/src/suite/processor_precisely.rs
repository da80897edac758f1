//! P2 and P4 precisely: the back-off a failed handler waits is the retry policy's — exponential,
//! capped, with its jitter — measured from what the store records after each failure; a handler
//! that already succeeded is never waited for, registered or not.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use outbox_core::model::{HandlerResults, HandlerState};
use outbox_core::prelude::*;
use outbox_core::{EventStatus, Handler, HandlerError, RetryPolicy};
use serde_json::json;

use super::support::{fast_config, put, ran_elsewhere, registry, start, wait_status};
use crate::ensure;
use crate::harness::{ClauseResult, Failure, StoreFactory, Verdict, namespace};

/// How much later than the policy's delay a store may record the back-off: the completion is
/// written after the handler returns (batched, on a busy machine).
const LATE: Duration = Duration::from_millis(250);

/// One run of a handler: the back-off its claimed record carried in, and when the run ended.
type Run = (Option<DateTime<Utc>>, DateTime<Utc>);

/// P2: after failure `n` the event backs off for the policy's `delay_after(n)` — here 400 ms × 3ⁿ⁻¹
/// capped at 2 s, with jitter 0.5 and a random source fixed at 0, so exactly half: 200 ms, 600 ms,
/// 1 s — as the claimed record's `backoff_until` shows, measured from the end of the failed run;
/// after `max_attempts` (4) the event is dead.
pub async fn p2_backoff_schedule<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("p2sched")).await?;
    let policy = RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(400))
        .with_multiplier(3.0)
        .with_max_delay(Duration::from_secs(2))
        .with_jitter(0.5)
        .with_random(Arc::new(|| 0.0));
    // Per run: the back-off the claimed record carried in, and when the run ended.
    let runs: Arc<Mutex<Vec<Run>>> = Arc::default();
    let handler = {
        let runs = Arc::clone(&runs);
        Handler::raw("p2s.Flaky", "flaky", move |record, _ctx| {
            let runs = Arc::clone(&runs);
            async move {
                runs.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((record.backoff_until, Utc::now()));
                Err::<(), _>(HandlerError::retry("still failing"))
            }
        })
        .with_max_attempts(4)
    };
    let id = put(&store, "p2s.Flaky", json!({})).await?;
    let worker = start(
        &store,
        registry(vec![handler])?,
        fast_config().with_retry(policy),
    )?;
    let record = wait_status(&store, id, EventStatus::Dead, Duration::from_secs(30)).await;
    worker.shutdown().await;
    let record = record?;
    let runs = runs.lock().unwrap_or_else(PoisonError::into_inner).clone();
    ensure!(
        runs.len() == 4 && record.handler_results["flaky"].attempts == 4,
        "the handler must run max_attempts (4) times, ran {} (record: {:?})",
        runs.len(),
        record.handler_results
    );
    // Written out, not computed by the policy under test.
    let schedule = [
        Duration::from_millis(200),
        Duration::from_millis(600),
        Duration::from_millis(1000),
    ];
    for failure in 1..4 {
        let expected = schedule[failure - 1];
        let ended = runs[failure - 1].1;
        let Some(until) = runs[failure].0 else {
            return Err(Failure::new(format!(
                "the claim after failure {failure} carried no backoff_until"
            )));
        };
        let waited = (until - ended).to_std().unwrap_or_default();
        ensure!(
            waited + Duration::from_millis(20) >= expected && waited <= expected + LATE,
            "after failure {failure} the back-off must be the policy's {expected:?} (400 ms × 3^{} \
             capped at 2 s, halved by the jitter), measured from the end of the run: got {waited:?}",
            failure - 1
        );
    }
    Ok(Verdict::Passed)
}

/// P4: a handler recorded as succeeded that this worker does not have (renamed or removed since)
/// is settled: the event is not held back waiting for a worker that has it. Here the other,
/// registered handler failed once; on its retry the event is processed at once (not after the
/// missing-handler back-off of 5 s), and the retired handler's success stays recorded untouched.
pub async fn p4_settled_handlers_are_not_awaited<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("p4settled")).await?;
    let id = put(&store, "p4s.E", json!({})).await?;
    let retired = HandlerState {
        succeeded_at: Some(Utc::now()),
        attempts: 1,
        ..HandlerState::default()
    };
    let mut results = HandlerResults::new();
    results.insert("retired".into(), retired);
    results.insert(
        "current".into(),
        HandlerState {
            attempts: 1,
            last_error: Some("first try failed".into()),
            ..HandlerState::default()
        },
    );
    ran_elsewhere(&store, results).await?;
    let current = Handler::raw("p4s.E", "current", |_record, _ctx| async {
        Ok::<_, HandlerError>(())
    });
    let worker = start(&store, registry(vec![current])?, fast_config())?;
    let record = wait_status(&store, id, EventStatus::Processed, Duration::from_secs(3)).await;
    worker.shutdown().await;
    let record = record.map_err(|f| {
        Failure::new(format!(
            "an event whose unregistered handler had already succeeded was held back: {}",
            f.message
        ))
    })?;
    let kept = &record.handler_results["retired"];
    ensure!(
        kept.succeeded_at.is_some() && kept.missing_since.is_none() && !kept.gave_up,
        "the retired handler's success must stay as recorded: {kept:?}"
    );
    ensure!(
        record.handler_results["current"].succeeded_at.is_some(),
        "the registered handler must have succeeded: {:?}",
        record.handler_results
    );
    Ok(Verdict::Passed)
}

/// C8 through the worker: a worker on a store with wake-ups handles a new event long before its
/// next poll (here 60 s away), because it listens; and one committed while it was busy is not
/// missed either.
pub async fn c8_worker_wakes_on_commit<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c8worker")).await?;
    if store.subscribe().await?.is_none() {
        return Ok(Verdict::NotApplicable(
            "subscribe() returns None: the store has no wake-ups; workers poll".into(),
        ));
    }
    let handler = Handler::raw("c8w.E", "quick", |_record, _ctx| async {
        Ok::<_, HandlerError>(())
    });
    let worker = start(
        &store,
        registry(vec![handler])?,
        fast_config().with_poll_interval(Duration::from_secs(60)),
    )?;
    // Let the worker make its first (empty) claim and subscribe.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut outcome = Ok(());
    for n in 0..2 {
        let id = put(&store, "c8w.E", json!({ "n": n })).await?;
        if let Err(f) =
            wait_status(&store, id, EventStatus::Processed, Duration::from_secs(10)).await
        {
            outcome = Err(Failure::new(format!(
                "event {n} committed while the worker waited was not handled within 10 s (its \
                 poll is 60 s away): the worker must wake on the store's announcement — {}",
                f.message
            )));
            break;
        }
    }
    worker.shutdown().await;
    outcome.map(|()| Verdict::Passed)
}
