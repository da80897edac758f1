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
    store_errors: AtomicU64,
    unhandled: AtomicU64,
    claims: AtomicU64,
    completion_batches: AtomicU64,
    latency_count: AtomicU64,
    latency_total_us: AtomicU64,
    latency_max_us: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub(crate) fn claimed(&self, n: usize) {
        add(&self.claims, 1);
        add(&self.claimed, n as u64);
    }
    pub(crate) fn completion_batch(&self) {
        add(&self.completion_batches, 1);
    }
    pub(crate) fn handler_succeeded(&self) {
        add(&self.handler_succeeded, 1);
    }
    pub(crate) fn handler_failed(&self) {
        add(&self.handler_failed, 1);
    }
    pub(crate) fn processed(&self) {
        add(&self.processed, 1);
    }
    pub(crate) fn retried(&self) {
        add(&self.retried, 1);
    }
    pub(crate) fn dead(&self) {
        add(&self.dead, 1);
    }
    pub(crate) fn released(&self) {
        add(&self.released, 1);
    }
    pub(crate) fn lease_lost(&self) {
        add(&self.lease_lost, 1);
    }
    pub(crate) fn store_error(&self) {
        add(&self.store_errors, 1);
    }
    pub(crate) fn unhandled(&self) {
        add(&self.unhandled, 1);
    }
    pub(crate) fn latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        add(&self.latency_count, 1);
        add(&self.latency_total_us, us);
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
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
            store_errors: get(&self.store_errors),
            unhandled: get(&self.unhandled),
            claims: get(&self.claims),
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
    /// Store calls that failed.
    pub store_errors: u64,
    /// Claims of events whose type has no handler in this worker (contract P4).
    pub unhandled: u64,
    /// Claim calls that returned (with or without events).
    pub claims: u64,
    /// `Store::complete_many` calls made (each writes the completions that finished together).
    pub completion_batches: u64,
    /// Mean enqueue-to-completion latency of completed events.
    pub mean_latency: Duration,
    /// Maximum enqueue-to-completion latency.
    pub max_latency: Duration,
}
