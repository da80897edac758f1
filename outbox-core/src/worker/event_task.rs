//! One claimed event's life in a worker: processing (its lease renewed by the worker's renewer),
//! folding, fenced completion.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::Shared;
use crate::error::StoreError;
use crate::outcome::{FoldRules, fold_outcome};
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
    let ClaimedEvent {
        mut record, lease, ..
    } = claimed;
    if shared.stop_claiming.is_cancelled() {
        release(&shared, &lease, &record).await;
        return;
    }
    shared
        .processor
        .migrate_handler_names(&record.event_type, &mut record.handler_results);
    let record = Arc::new(record);

    let cancellation = shared.stop_claiming.child_token();
    let abort = shared.hard_stop.child_token();
    let held = shared.held.hold(lease, cancellation.clone(), abort.clone());
    let mut delivery = Delivery::new(Arc::clone(&record), shared.config.handler_timeout);
    delivery.cancellation = cancellation;
    delivery.abort = abort.clone();
    let dispatch = process_catching_panics(shared.processor.as_ref(), delivery).await;
    let lease_lost = held.is_lost();
    drop(held);

    if lease_lost {
        shared.metrics.lease_lost();
        tracing::warn!(
            "lease lost while handlers ran; results discarded, the event will be redelivered"
        );
        return;
    }

    match &dispatch {
        Dispatch::Ran(outcomes) => {
            for outcome in outcomes {
                match &outcome.result {
                    Ok(_) => shared.metrics.handler_succeeded(),
                    Err(err) => {
                        shared.metrics.handler_failed();
                        tracing::warn!(handler = %outcome.handler, error = %err, permanent = err.is_permanent(), "handler failed");
                    }
                }
            }
        }
        Dispatch::NoHandlers => {
            shared.metrics.unhandled();
            shared.report_unhandled(&record.event_type);
        }
    }

    let nothing_ran = matches!(&dispatch, Dispatch::Ran(o) if o.is_empty());
    if abort.is_cancelled() && nothing_ran {
        // Shutdown's grace period ended before any handler reported: give the claim back as if it
        // never ran, claimable at once by another worker.
        release(&shared, &lease, &record).await;
        return;
    }
    let expected = shared.processor.handler_names(&record.event_type);
    let rules = FoldRules {
        retry: &shared.config.retry,
        no_handler: shared.config.no_handler,
        missing_handler_grace: shared.config.missing_handler_grace,
    };
    let completion = fold_outcome(&record, &dispatch, expected, &rules, Utc::now());
    let status = completion.status;
    let reason = (status == EventStatus::Dead).then(|| record_reason(&completion));
    if persist(&shared, &lease, completion).await {
        match status {
            EventStatus::Processed => shared.metrics.processed(),
            EventStatus::Dead => {
                shared.metrics.dead();
                tracing::error!(reason = ?reason.flatten(), "event is dead: a handler gave up");
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
