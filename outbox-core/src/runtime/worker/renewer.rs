//! One lease renewer per worker (P6): every held lease is renewed in one `ClaimStore::renew_many` call
//! per interval, instead of a task and a timer per event. A lease found lost cancels only its own
//! event's handlers. The same registry lets shutdown cancel, then abort, every event in flight.
//!
//! A lease the store does not confirm in time is *compromised*: the worker knows when each lease
//! was last confirmed (the instant the claim or renewal that confirmed it was sent: the store's
//! expiry is at least `lease` later, whatever its clock says), and a watchdog cancels and aborts
//! the event's handlers once `lease - margin` has passed since then without a confirmed renewal —
//! also when the store never answers (a partition, a stalled connection, a failover). Another
//! worker can claim the event only after the lease expired, so the two runs never overlap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Shared;
use crate::model::error::StoreError;
use crate::store::Lease;

/// One held lease and the tokens that stop its event's handlers.
#[derive(Debug)]
pub(crate) struct Held {
    lease: Lease,
    lost: AtomicBool,
    /// When the lease becomes compromised unless a renewal is confirmed before: the last
    /// confirmation's send instant plus the lease, less the safety margin.
    compromised_at: Mutex<Instant>,
    cancellation: CancellationToken,
    abort: CancellationToken,
    /// Handler transactions open on the event that hold it themselves (a store whose
    /// transactions would conflict with a renewal): the renewer leaves the lease alone meanwhile.
    transactions_open: Arc<AtomicUsize>,
}

impl Held {
    fn compromised_at(&self) -> Instant {
        *self
            .compromised_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A renewal sent at `sent` was confirmed: the lease holds until `until` (less the margin).
    fn confirm(&self, until: Instant) {
        let mut at = self
            .compromised_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *at = (*at).max(until);
    }

    fn holding_transaction(&self) -> bool {
        self.transactions_open.load(Ordering::SeqCst) > 0
    }
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

    /// Registers a lease for renewal until the returned guard is dropped. `compromised_at` is when
    /// it becomes compromised unless renewed ([`WorkerConfig::lease_trusted_until`] of the claim's
    /// send instant).
    ///
    /// [`WorkerConfig::lease_trusted_until`]: super::WorkerConfig::lease_trusted_until
    pub(crate) fn hold(
        &self,
        lease: Lease,
        compromised_at: Instant,
        cancellation: CancellationToken,
        abort: CancellationToken,
    ) -> HoldGuard<'_> {
        let held = Arc::new(Held {
            lease,
            lost: AtomicBool::new(false),
            compromised_at: Mutex::new(compromised_at),
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

    /// The leases to renew now: those still held that no open handler transaction holds.
    fn snapshot(&self) -> Vec<Arc<Held>> {
        self.map()
            .values()
            .filter(|h| !h.holding_transaction() && !h.lost.load(Ordering::SeqCst))
            .cloned()
            .collect()
    }

    /// Every held lease.
    fn all(&self) -> Vec<Arc<Held>> {
        self.map().values().cloned().collect()
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
/// aborts it). Failed renewals are retried after a short pause rather than a whole interval; a
/// renewal that does not answer within the renewal interval counts as failed.
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
        let sent = Instant::now();
        let renewal = shared.store.renew_many(leases, shared.config.lease);
        let Ok(results) = tokio::time::timeout(every, renewal).await else {
            shared.metrics.store_error();
            tracing::warn!(
                leases = held.len(),
                timeout = ?every,
                "lease renewal did not answer in time; retrying"
            );
            pause = retry_soon;
            continue;
        };
        let trusted_until = shared.config.lease_trusted_until(sent);
        for (held, result) in held.iter().zip(results) {
            match result {
                Ok(_) => held.confirm(trusted_until),
                Err(StoreError::LeaseLost { .. }) => lost(&shared, held),
                Err(err) => {
                    shared.metrics.store_error();
                    tracing::warn!(event_id = %held.lease.event_id, error = %crate::model::text::untrusted(&err.to_string()), "lease renewal failed; retrying");
                    pause = retry_soon;
                }
            }
        }
    }
}

/// Gives up every held lease whose renewal was not confirmed in time (P6), before the store's
/// lease can expire and another worker claim the event: one safety margin before the lease's
/// trusted expiry it is *compromised* — its outcome will be discarded and its handlers'
/// cancellation fires, so that cooperative handlers can stop — and at the trusted expiry (the
/// lease less the margin) its handlers are aborted, whether they stopped or not. A lease lost
/// otherwise is aborted then at the latest too. Wakes at the earliest such instant, and at least
/// once per margin to see leases held since (which all come due later than that). A lease held by
/// an open handler transaction is left alone meanwhile: the transaction's write fences the event
/// against other claims until it ends.
pub(crate) async fn expire_unconfirmed_leases(shared: Arc<Shared>) {
    let margin = shared.config.lease_margin();
    let tick = margin.max(Duration::from_millis(1));
    loop {
        let now = Instant::now();
        let mut next = now + tick;
        for held in shared.held.all() {
            if held.holding_transaction() || held.abort.is_cancelled() {
                continue;
            }
            let abort_at = held.compromised_at();
            let cancel_at = abort_at.checked_sub(margin).unwrap_or(abort_at);
            if !held.lost.load(Ordering::SeqCst) {
                if cancel_at > now {
                    next = next.min(cancel_at);
                    continue;
                }
                compromised(&shared, &held);
            }
            if abort_at <= now {
                held.abort.cancel();
            } else {
                next = next.min(abort_at);
            }
        }
        tokio::time::sleep_until(next).await;
    }
}

fn compromised(shared: &Shared, held: &Held) {
    if held.lost.swap(true, Ordering::SeqCst) {
        return;
    }
    shared.metrics.lease_compromised();
    tracing::warn!(
        event_id = %held.lease.event_id,
        lease = ?shared.config.lease,
        margin = ?shared.config.lease_margin(),
        "lease compromised: no renewal was confirmed in time; cancelling its handlers, which are \
         aborted before the lease can expire"
    );
    held.cancellation.cancel();
}

/// Marks a lease lost: its handlers' cancellation fires now, and they are aborted if they have not
/// finished after a wind-down (their results are discarded anyway).
fn lost(shared: &Arc<Shared>, held: &Arc<Held>) {
    if held.lost.swap(true, Ordering::SeqCst) {
        return;
    }
    tracing::warn!(event_id = %held.lease.event_id, "lease lost while handlers ran; cancelling them");
    held.cancellation.cancel();
    // The wind-down ends no later than the lease could have expired (P6).
    let wind_down = Instant::now() + shared.config.shutdown_grace.min(shared.config.lease);
    let until = wind_down.min(held.compromised_at());
    let shared = Arc::clone(shared);
    let held = Arc::clone(held);
    tokio::spawn(async move {
        tokio::time::sleep_until(until).await;
        if shared.held.still_held(&held.lease.token) {
            held.abort.cancel();
        }
    });
}
