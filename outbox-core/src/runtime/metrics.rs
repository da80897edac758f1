//! Counters the worker keeps (contract P10), readable as a [`MetricsSnapshot`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Live counters, shared by a worker's tasks.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    claimed: AtomicU64,
    handler_succeeded: AtomicU64,
    handler_failed: AtomicU64,
    processed: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    released: AtomicU64,
    lease_lost: AtomicU64,
    leases_compromised: AtomicU64,
    store_errors: AtomicU64,
    unhandled: AtomicU64,
    claims: AtomicU64,
    handed_off: AtomicU64,
    completion_batches: AtomicU64,
    latency_count: AtomicU64,
    latency_total_us: AtomicU64,
    latency_max_us: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Also counts through the `metrics` facade when that feature is on (names in the `telemetry`
/// module).
macro_rules! export {
    ($name:literal, $n:expr) => {
        #[cfg(feature = "metrics")]
        ::metrics::counter!($name).increment($n);
    };
}

/// Counts one handler run through the `metrics` facade, when that feature is on.
fn export_handler_run(handler: &str, outcome: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("outbox_handler_runs_total", "handler" => handler.to_owned(), "outcome" => outcome)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (handler, outcome);
}

impl Metrics {
    pub(crate) fn claimed(&self, n: usize) {
        add(&self.claims, 1);
        add(&self.claimed, n as u64);
        export!("outbox_claims_total", 1);
        export!("outbox_events_claimed_total", n as u64);
    }
    /// Events the store leased to this worker when their key's previous event finished.
    pub(crate) fn handed_off(&self, n: usize) {
        add(&self.claimed, n as u64);
        add(&self.handed_off, n as u64);
        export!("outbox_events_claimed_total", n as u64);
        export!("outbox_events_handed_off_total", n as u64);
    }
    pub(crate) fn completion_batch(&self) {
        add(&self.completion_batches, 1);
        export!("outbox_completion_batches_total", 1);
    }
    pub(crate) fn handler_succeeded(&self, handler: &str) {
        add(&self.handler_succeeded, 1);
        export_handler_run(handler, "succeeded");
    }
    pub(crate) fn handler_failed(&self, handler: &str) {
        add(&self.handler_failed, 1);
        export_handler_run(handler, "failed");
    }
    pub(crate) fn processed(&self) {
        add(&self.processed, 1);
        export!("outbox_events_processed_total", 1);
    }
    pub(crate) fn retried(&self) {
        add(&self.retried, 1);
        export!("outbox_events_retried_total", 1);
    }
    pub(crate) fn dead(&self) {
        add(&self.dead, 1);
        export!("outbox_events_dead_total", 1);
    }
    pub(crate) fn released(&self) {
        add(&self.released, 1);
        export!("outbox_events_released_total", 1);
    }
    pub(crate) fn lease_lost(&self) {
        add(&self.lease_lost, 1);
        export!("outbox_leases_lost_total", 1);
    }
    /// A lease whose renewal could not be confirmed before its expiry (P6): counted in
    /// `lease_lost` too.
    pub(crate) fn lease_compromised(&self) {
        add(&self.leases_compromised, 1);
        export!("outbox_leases_compromised_total", 1);
    }
    pub(crate) fn store_error(&self) {
        add(&self.store_errors, 1);
        export!("outbox_store_errors_total", 1);
    }
    pub(crate) fn unhandled(&self) {
        add(&self.unhandled, 1);
        export!("outbox_events_unhandled_total", 1);
    }
    pub(crate) fn latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        add(&self.latency_count, 1);
        add(&self.latency_total_us, us);
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        ::metrics::histogram!("outbox_event_latency_seconds").record(latency.as_secs_f64());
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let count = get(&self.latency_count);
        MetricsSnapshot {
            claimed: get(&self.claimed),
            handler_succeeded: get(&self.handler_succeeded),
            handler_failed: get(&self.handler_failed),
            processed: get(&self.processed),
            retried: get(&self.retried),
            dead: get(&self.dead),
            released: get(&self.released),
            lease_lost: get(&self.lease_lost),
            leases_compromised: get(&self.leases_compromised),
            store_errors: get(&self.store_errors),
            unhandled: get(&self.unhandled),
            claims: get(&self.claims),
            handed_off: get(&self.handed_off),
            completion_batches: get(&self.completion_batches),
            mean_latency: Duration::from_micros(
                get(&self.latency_total_us).checked_div(count).unwrap_or(0),
            ),
            max_latency: Duration::from_micros(get(&self.latency_max_us)),
        }
    }
}

/// A point-in-time copy of a worker's counters.
///
/// Latency is measured from the later of `created_at` and `available_at` to the end of processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Events claimed.
    pub claimed: u64,
    /// Handler runs that succeeded (each recorded success counts once).
    pub handler_succeeded: u64,
    /// Handler runs that failed.
    pub handler_failed: u64,
    /// Events that became processed.
    pub processed: u64,
    /// Events that went back to pending to be retried.
    pub retried: u64,
    /// Events that became dead letters.
    pub dead: u64,
    /// Claimed events given back unprocessed at shutdown.
    pub released: u64,
    /// Leases lost while processing (results discarded).
    pub lease_lost: u64,
    /// Of those, leases the worker gave up on itself because no renewal was confirmed before
    /// their expiry (the store did not answer in time; contract P6).
    pub leases_compromised: u64,
    /// Store calls that failed.
    pub store_errors: u64,
    /// Claims of events whose type has no handler in this worker (contract P4).
    pub unhandled: u64,
    /// Claim calls that returned (with or without events).
    pub claims: u64,
    /// Events the store leased to this worker with the completion of their ordering key's
    /// previous event (counted in `claimed` too).
    pub handed_off: u64,
    /// `ClaimStore::complete_many` calls made (each writes the completions that finished together).
    pub completion_batches: u64,
    /// Mean enqueue-to-completion latency of completed events.
    pub mean_latency: Duration,
    /// Maximum enqueue-to-completion latency.
    pub max_latency: Duration,
}

/// Records how long an event waited from due to its handlers' start (commit → start).
pub(crate) fn start_latency(latency: Duration) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!("outbox_event_start_latency_seconds").record(latency.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = latency;
}

/// Records one handler run's duration.
#[cfg(feature = "metrics")]
pub(crate) fn handler_duration(handler: &str, took: Duration) {
    ::metrics::histogram!("outbox_handler_duration_seconds", "handler" => handler.to_owned())
        .record(took.as_secs_f64());
}
