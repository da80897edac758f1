//! One lease renewer per worker (P6): every held lease is renewed in one `Store::renew_many` call
//! per interval, instead of a task and a timer per event. A lease found lost cancels only its own
//! event's handlers. The same registry lets shutdown cancel, then abort, every event in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Shared;
use crate::error::StoreError;
use crate::store::Lease;

/// One held lease and the tokens that stop its event's handlers.
#[derive(Debug)]
pub(crate) struct Held {
    lease: Lease,
    lost: AtomicBool,
    cancellation: CancellationToken,
    abort: CancellationToken,
    /// Handler transactions open on the event that hold it themselves (a store whose
    /// transactions would conflict with a renewal): the renewer leaves the lease alone meanwhile.
    transactions_open: Arc<AtomicUsize>,
}

/// The leases a worker holds right now, keyed by lease token (unique per claim).
#[derive(Debug, Default)]
pub(crate) struct HeldLeases {
    held: Mutex<HashMap<Uuid, Arc<Held>>>,
}

impl HeldLeases {
    fn map(&self) -> MutexGuard<'_, HashMap<Uuid, Arc<Held>>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a lease for renewal until the returned guard is dropped.
    pub(crate) fn hold(
        &self,
        lease: Lease,
        cancellation: CancellationToken,
        abort: CancellationToken,
    ) -> HoldGuard<'_> {
        let held = Arc::new(Held {
            lease,
            lost: AtomicBool::new(false),
            cancellation,
            abort,
            transactions_open: Arc::default(),
        });
        self.map().insert(lease.token, Arc::clone(&held));
        HoldGuard { leases: self, held }
    }

    /// Fires every held event's cancellation (shutdown began).
    pub(crate) fn cancel_all(&self) {
        for held in self.map().values() {
            held.cancellation.cancel();
        }
    }

    /// Fires every held event's abort (the shutdown grace period is over).
    pub(crate) fn abort_all(&self) {
        for held in self.map().values() {
            held.abort.cancel();
        }
    }

    /// The leases to renew now: those no open handler transaction holds.
    fn snapshot(&self) -> Vec<Arc<Held>> {
        self.map()
            .values()
            .filter(|h| h.transactions_open.load(Ordering::SeqCst) == 0)
            .cloned()
            .collect()
    }

    fn still_held(&self, token: &Uuid) -> bool {
        self.map().contains_key(token)
    }
}

/// Keeps a lease renewed while alive.
#[derive(Debug)]
pub(crate) struct HoldGuard<'a> {
    leases: &'a HeldLeases,
    held: Arc<Held>,
}

impl HoldGuard<'_> {
    /// Whether the renewer found the lease lost (results must be discarded).
    pub(crate) fn is_lost(&self) -> bool {
        self.held.lost.load(Ordering::SeqCst)
    }

    /// The count of handler transactions holding the event (the renewer skips it while non-zero).
    pub(crate) fn transactions_open(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.held.transactions_open)
    }
}

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        self.leases.map().remove(&self.held.lease.token);
    }
}

/// Renews every held lease once per renewal interval until the worker's task ends (the caller
/// aborts it). Failed renewals are retried after a short pause rather than a whole interval.
pub(crate) async fn renew_held_leases(shared: Arc<Shared>) {
    let every = shared.config.renew_every();
    let retry_soon = shared.config.store_backoff_initial.min(every);
    let mut pause = every;
    loop {
        tokio::time::sleep(pause).await;
        pause = every;
        let held = shared.held.snapshot();
        if held.is_empty() {
            continue;
        }
        let leases = held.iter().map(|h| h.lease).collect();
        let results = shared.store.renew_many(leases, shared.config.lease).await;
        for (held, result) in held.iter().zip(results) {
            match result {
                Ok(_) => {}
                Err(StoreError::LeaseLost { .. }) => lost(&shared, held),
                Err(err) => {
                    shared.metrics.store_error();
                    tracing::warn!(event_id = %held.lease.event_id, error = %err, "lease renewal failed; retrying");
                    pause = retry_soon;
                }
            }
        }
    }
}

/// Marks a lease lost: its handlers' cancellation fires now, and they are aborted if they have not
/// finished after a wind-down (their results are discarded anyway).
fn lost(shared: &Arc<Shared>, held: &Arc<Held>) {
    if held.lost.swap(true, Ordering::SeqCst) {
        return;
    }
    tracing::warn!(event_id = %held.lease.event_id, "lease lost while handlers ran; cancelling them");
    held.cancellation.cancel();
    let wind_down: Duration = shared.config.shutdown_grace.min(shared.config.lease);
    let shared = Arc::clone(shared);
    let held = Arc::clone(held);
    tokio::spawn(async move {
        tokio::time::sleep(wind_down).await;
        if shared.held.still_held(&held.lease.token) {
            held.abort.cancel();
        }
    });
}
