//! A worker under failure: lease renewal and loss, shutdown and crashes, store faults (contracts
//! P6, P7, P9).

use super::support::{
    Calls, claim, fast_config, fetch, put, registry, start, wait_drained, wait_status, wait_until,
};
use super::support::{WAIT, counting};
use crate::ensure;
use crate::harness::{ClauseResult, Failure, StoreFactory, Verdict, namespace};
use outbox_core::prelude::*;
use outbox_core::{EventStatus, Handler, HandlerError, StoreExt};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
