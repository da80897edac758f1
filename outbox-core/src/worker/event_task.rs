//! One claimed event's life in a worker: lease renewal, processing, folding, fenced completion.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Shared;
use crate::error::StoreError;
use crate::outcome::fold_outcome;
use crate::processor::{Delivery, Dispatch, process_catching_panics};
use crate::record::EventStatus;
use crate::store::{ClaimedEvent, Completion, Lease};

pub(super) async fn process_event(
    shared: Arc<Shared>,
    claimed: ClaimedEvent,
    permit: OwnedSemaphorePermit,
) {
    let record = &claimed.record;
    let span = tracing::info_span!(
        "outbox.event",
        event_id = %record.id,
        event_type = %record.event_type,
        correlation_id = record.correlation_id.as_deref().unwrap_or(""),
        attempt = record.attempts,
    );
    run(shared, claimed).instrument(span).await;
    drop(permit);
}

async fn run(shared: Arc<Shared>, claimed: ClaimedEvent) {
    let ClaimedEvent { record, lease, .. } = claimed;
    let record = Arc::new(record);
    if shared.stop_claiming.is_cancelled() {
        release(&shared, &lease, &record).await;
        return;
    }

    let cancellation = shared.stop_claiming.child_token();
    let abort = shared.hard_stop.child_token();
    let lease_lost = Arc::new(AtomicBool::new(false));
    let renewal_done = CancellationToken::new();
    let renewer = tokio::spawn(renew_while_running(
        Arc::clone(&shared),
        lease,
        Arc::clone(&lease_lost),
        renewal_done.clone(),
        cancellation.clone(),
        abort.clone(),
    ));
    // A worker dropped mid-event (a crash) must not leave a renewer keeping the lease alive.
    let _stop_renewer = crate::processor::AbortOnDrop(renewer.abort_handle());

    let mut delivery = Delivery::new(Arc::clone(&record), shared.config.handler_timeout);
    delivery.cancellation = cancellation;
    delivery.abort = abort.clone();
    let dispatch = process_catching_panics(shared.processor.as_ref(), delivery).await;
    renewal_done.cancel();
    let _ = renewer.await;

    if lease_lost.load(Ordering::SeqCst) {
        shared.metrics.lease_lost();
        tracing::warn!(
            "lease lost while handlers ran; results discarded, the event will be redelivered"
        );
        return;
    }

    if let Dispatch::Ran(outcomes) = &dispatch {
        for outcome in outcomes {
            match &outcome.result {
                Ok(_) => shared.metrics.handler_succeeded(),
                Err(err) => {
                    shared.metrics.handler_failed();
                    tracing::warn!(handler = %outcome.handler, error = %err, permanent = err.is_permanent(), "handler failed");
                }
            }
        }
    } else {
        tracing::warn!(policy = ?shared.config.no_handler, "no handler registered for this event type");
    }

    let expected = shared.processor.handler_names(&record.event_type);
    let mut completion = fold_outcome(
        &record,
        &dispatch,
        &expected,
        &shared.config.retry,
        shared.config.no_handler,
        Utc::now(),
    );
    let nothing_ran = matches!(&dispatch, Dispatch::Ran(o) if o.is_empty());
    if abort.is_cancelled() && nothing_ran {
        completion.attempts = record.attempts.saturating_sub(1);
    }
    if persist(&shared, &lease, completion.clone()).await {
        match completion.status {
            EventStatus::Processed => shared.metrics.processed(),
            EventStatus::Dead => {
                shared.metrics.dead();
                tracing::error!(reason = ?record_reason(&completion), "event is dead: a handler gave up");
            }
            EventStatus::Pending => shared.metrics.retried(),
        }
        let since = record.available_at.max(record.created_at);
        if let Ok(latency) = (Utc::now() - since).to_std() {
            shared.metrics.latency(latency);
        }
    }
}

fn record_reason(completion: &Completion) -> Option<(String, String)> {
    completion
        .handler_results
        .iter()
        .find(|(_, s)| s.gave_up)
        .map(|(n, s)| (n.clone(), s.last_error.clone().unwrap_or_default()))
}

/// Gives an unstarted claim back (shutdown began before it ran), returning its attempt.
async fn release(shared: &Shared, lease: &Lease, record: &crate::record::EventRecord) {
    let completion = Completion {
        status: EventStatus::Pending,
        handler_results: record.handler_results.clone(),
        attempts: record.attempts.saturating_sub(1),
        retry_delay: None,
    };
    if persist(shared, lease, completion).await {
        shared.metrics.released();
    }
}

/// Writes a completion, retrying transient failures while the lease can still hold.
async fn persist(shared: &Shared, lease: &Lease, completion: Completion) -> bool {
    let deadline = tokio::time::Instant::now() + shared.config.lease;
    let mut pause = shared.config.store_backoff_initial;
    loop {
        match shared.completer.complete(*lease, completion.clone()).await {
            Ok(()) => return true,
            Err(StoreError::LeaseLost { .. }) => {
                shared.metrics.lease_lost();
                tracing::warn!("completion refused: lease lost; the event will be redelivered");
                return false;
            }
            Err(err) if err.is_transient() && tokio::time::Instant::now() + pause < deadline => {
                shared.metrics.store_error();
                tracing::warn!(error = %err, retry_in = ?pause, "completion failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(shared.config.store_backoff_max);
            }
            Err(err) => {
                shared.metrics.store_error();
                tracing::error!(error = %err, "completion failed; the event will be redelivered after its lease");
                return false;
            }
        }
    }
}

async fn renew_while_running(
    shared: Arc<Shared>,
    lease: Lease,
    lost: Arc<AtomicBool>,
    done: CancellationToken,
    cancellation: CancellationToken,
    abort: CancellationToken,
) {
    let every = shared.config.renew_every();
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match shared.store.renew_lease(&lease, shared.config.lease).await {
            Ok(_) => {}
            Err(StoreError::LeaseLost { .. }) => {
                lost.store(true, Ordering::SeqCst);
                cancellation.cancel();
                // Let handlers notice their token and wind down; their results are discarded anyway.
                let wind_down = shared.config.shutdown_grace.min(shared.config.lease);
                tokio::select! {
                    () = done.cancelled() => {}
                    () = tokio::time::sleep(wind_down) => abort.cancel(),
                }
                return;
            }
            Err(err) => {
                shared.metrics.store_error();
                tracing::warn!(error = %err, "lease renewal failed; retrying");
                tokio::time::sleep(Duration::from_millis(50).min(every)).await;
            }
        }
    }
}
