//! One claimed event's life in a worker: processing (its lease renewed by the worker's renewer),
//! folding, and handing the completion to the completer.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Shared;
use super::completer::{Kind, submit};
use crate::model::record::{EventRecord, EventStatus};
use crate::runtime::fold::{FoldRules, fold_outcome};
use crate::runtime::processor::{Delivery, Dispatch, process_catching_panics};
use crate::store::{ClaimedEvent, Completion, Lease};

/// The task that processes one claimed event. Built in two steps: what needs the record by value
/// (its handler names brought up to date, its span) happens here, so the task's future holds only
/// an `Arc` of it (736 bytes instead of 2,288); and the future is boxed, so spawning it does not
/// copy it (measured with callgrind: spawning the unboxed one cost 3,400 instructions per event).
pub(super) fn process_event(
    shared: Arc<Shared>,
    claimed: ClaimedEvent,
    permit: OwnedSemaphorePermit,
    trusted_until: tokio::time::Instant,
) -> std::pin::Pin<Box<impl std::future::Future<Output = ()> + Send>> {
    let ClaimedEvent {
        mut record, lease, ..
    } = claimed;
    shared
        .processor
        .migrate_handler_names(&record.event_type, &mut record.handler_results);
    // A root span, as in a spawned task (the claim loop's span is not its parent).
    let span = tracing::info_span!(
        parent: None,
        "outbox.event",
        event_id = %record.id,
        event_type = %crate::model::text::untrusted(&record.event_type),
        correlation_id = record.correlation_id.as_deref().unwrap_or(""),
        attempt = record.attempts,
    );
    crate::model::trace::continue_trace(&span, record.traceparent.as_deref());
    Box::pin(run(shared, Arc::new(record), lease, permit, trusted_until).instrument(span))
}

async fn run(
    shared: Arc<Shared>,
    record: Arc<EventRecord>,
    lease: Lease,
    permit: OwnedSemaphorePermit,
    trusted_until: tokio::time::Instant,
) {
    if shared.crashed() {
        return;
    }
    if shared.stop_claiming.is_cancelled() {
        release(&shared, lease, &record, permit);
        return;
    }
    if cfg!(feature = "metrics") {
        record_start_latency(&record);
    }

    // Fired by the renewer when the lease is lost, and by shutdown (which sweeps every held lease).
    let cancellation = CancellationToken::new();
    let abort = CancellationToken::new();
    let held = shared
        .held
        .hold(lease, trusted_until, cancellation.clone(), abort.clone());
    if shared.stop_claiming.is_cancelled() {
        cancellation.cancel();
    }
    if shared.hard_stop.is_cancelled() {
        abort.cancel();
    }
    // Built whole: `Delivery::new` would create tokens and a log buffer only to be replaced.
    let delivery = Delivery {
        record: Arc::clone(&record),
        cancellation,
        abort: abort.clone(),
        default_timeout: shared.config.handler_timeout,
        logs: crate::handlers::LogBuffer::default(),
        transaction: shared.transactions.as_ref().map(|t| {
            crate::handlers::TransactionScope::new(Arc::clone(t), lease)
                .pausing_renewal(held.transactions_open())
        }),
    };
    let logs = delivery.logs.clone();
    let scope = delivery.transaction.clone();
    let mut dispatch = process_catching_panics(shared.processor.as_ref(), delivery).await;
    // A handler whose transaction committed its success succeeded, even if it was dropped (timed
    // out, aborted) while committing: the outcome written below must not undo that success.
    if let Some(scope) = &scope {
        for (handler, output) in scope.committed().await {
            dispatch.record_success(handler, output);
        }
    }
    let lease_lost = held.is_lost();
    drop(held);

    if lease_lost {
        shared.metrics.lease_lost();
        tracing::warn!(
            "lease lost while handlers ran; results discarded, the event will be redelivered"
        );
        return;
    }

    report_dispatch(&shared, &record, &dispatch);

    let nothing_ran = matches!(&dispatch, Dispatch::Ran(o) if o.is_empty());
    if abort.is_cancelled() && nothing_ran {
        // Shutdown's grace period ended before any handler reported: give the claim back as if it
        // never ran, claimable at once by another worker.
        release(&shared, lease, &record, permit);
        return;
    }
    let rules = FoldRules {
        retry: &shared.config.retry,
        no_handler: shared.config.no_handler,
        missing_handler_grace: shared.config.missing_handler_grace,
    };
    let expected = shared.processor.handler_names(&record.event_type);
    let mut completion = fold_outcome(&record, &dispatch, expected, &rules, Utc::now());
    crate::handlers::logs::merge_logs(&mut completion.handler_results, logs.take());
    crate::kit::storable::make_storable(&mut completion);
    submit(&shared, lease, completion, Kind::Outcome, &record, permit);
}

/// Counts and logs what the handlers did: each success or failure, or an event no handler of
/// this worker is registered for.
fn report_dispatch(shared: &Shared, record: &EventRecord, dispatch: &Dispatch) {
    match dispatch {
        Dispatch::Ran(outcomes) => {
            for outcome in outcomes {
                match &outcome.result {
                    Ok(_) => shared.metrics.handler_succeeded(&outcome.handler),
                    Err(err) => {
                        shared.metrics.handler_failed(&outcome.handler);
                        tracing::warn!(handler = %outcome.handler, error = %crate::model::text::untrusted(err.message()), permanent = err.is_permanent(), "handler failed");
                    }
                }
            }
        }
        Dispatch::NoHandlers => {
            shared.metrics.unhandled();
            shared.report_unhandled(&record.event_type);
        }
    }
}

/// Records how long the event waited between becoming due and starting.
fn record_start_latency(record: &EventRecord) {
    let due = [Some(record.available_at), record.backoff_until]
        .into_iter()
        .flatten()
        .fold(record.created_at, DateTime::max);
    if let Ok(waited) = (Utc::now() - due).to_std() {
        crate::runtime::metrics::start_latency(waited);
    }
}

/// Gives an unstarted claim back (shutdown began before it ran), returning its attempt.
fn release(shared: &Shared, lease: Lease, record: &EventRecord, permit: OwnedSemaphorePermit) {
    let completion = Completion {
        status: EventStatus::Pending,
        handler_results: record.handler_results.clone(),
        attempts: record.attempts.saturating_sub(1),
        retry_delay: None,
    };
    submit(shared, lease, completion, Kind::Release, record, permit);
}
