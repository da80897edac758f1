//! [`FaultyStore`]: wraps any store and makes its calls fail on demand, to test how a worker
//! rides out a database that goes away (contract P9).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outbox_core::store::{
    ClaimRequest, ClaimStore, ClaimedEvent, Completion, HandOff, Lease, Transactions, WakeupStream,
};
use outbox_core::{Store, StoreError};

/// Switches shared by a [`FaultyStore`] and the test that drives it.
///
/// ```
/// use outbox_testkit::{FaultyStore, MemoryStore};
/// let store = FaultyStore::new(MemoryStore::new());
/// let faults = store.faults();
/// faults.fail_everything(true);
/// assert!(faults.is_failing());
/// ```
#[derive(Debug, Default)]
pub struct Faults {
    everything: AtomicBool,
    renewals: AtomicBool,
    stalled_renewals: AtomicBool,
    unstalled: tokio::sync::Notify,
    injected: AtomicU64,
}

impl Faults {
    /// Makes every call fail with [`StoreError::Unavailable`] (or succeed again).
    pub fn fail_everything(&self, on: bool) {
        self.everything.store(on, Ordering::SeqCst);
    }

    /// Makes lease renewals fail with [`StoreError::Unavailable`] (or succeed again).
    pub fn fail_renewals(&self, on: bool) {
        self.renewals.store(on, Ordering::SeqCst);
    }

    /// Makes lease renewals hang without an answer, as over a stalled connection or a network
    /// partition (or answer again: the hung calls then go on to the inner store).
    pub fn stall_renewals(&self, on: bool) {
        self.stalled_renewals.store(on, Ordering::SeqCst);
        if !on {
            self.unstalled.notify_waiters();
        }
    }

    /// Waits while renewals are stalled.
    async fn wait_unstalled(&self) {
        loop {
            let unstalled = self.unstalled.notified();
            if !self.stalled_renewals.load(Ordering::SeqCst) {
                return;
            }
            unstalled.await;
        }
    }

    /// Whether every call fails now.
    pub fn is_failing(&self) -> bool {
        self.everything.load(Ordering::SeqCst)
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    fn check(&self, flag: &AtomicBool, call: &str) -> Result<(), StoreError> {
        if flag.load(Ordering::SeqCst) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::unavailable(format!(
                "injected fault in `{call}`"
            )));
        }
        Ok(())
    }
}

/// A store whose calls fail while its [`Faults`] say so; otherwise it forwards to the inner store.
#[derive(Debug, Clone)]
pub struct FaultyStore<S> {
    inner: S,
    faults: Arc<Faults>,
}

impl<S: Store> FaultyStore<S> {
    /// Wraps `inner`, healthy at first.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            faults: Arc::default(),
        }
    }

    /// The switches.
    pub fn faults(&self) -> Arc<Faults> {
        Arc::clone(&self.faults)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn check(&self, call: &str) -> Result<(), StoreError> {
        self.faults.check(&self.faults.everything, call)
    }

    /// One injected failure per item when every call fails (or, for a renewal, when renewals
    /// fail); `None` when the call may go on.
    fn refuse_each<T>(
        &self,
        items: usize,
        call: &str,
        renewal: bool,
    ) -> Option<Vec<Result<T, StoreError>>> {
        let refused = self.check(call).and_then(|()| {
            if renewal {
                self.faults.check(&self.faults.renewals, call)
            } else {
                Ok(())
            }
        });
        refused.err()?;
        Some(
            (0..items)
                .map(|_| {
                    Err(StoreError::unavailable(format!(
                        "injected fault in `{call}`"
                    )))
                })
                .collect(),
        )
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: Store> ClaimStore for FaultyStore<S> {
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
        self.check("claim")?;
        self.inner.claim(request).await
    }

    async fn renew_many(
        &self,
        leases: Vec<Lease>,
        extend: Duration,
    ) -> Vec<Result<DateTime<Utc>, StoreError>> {
        if let Some(refused) = self.refuse_each(leases.len(), "renew_many", true) {
            return refused;
        }
        self.faults.wait_unstalled().await;
        self.inner.renew_many(leases, extend).await
    }

    async fn complete_many(&self, items: &[(Lease, Completion)]) -> Vec<Result<(), StoreError>> {
        if let Some(refused) = self.refuse_each(items.len(), "complete_many", false) {
            return refused;
        }
        self.inner.complete_many(items).await
    }

    async fn complete_and_hand_off(
        &self,
        items: &[(Lease, Completion)],
        next: &ClaimRequest,
    ) -> HandOff {
        if let Some(refused) = self.refuse_each(items.len(), "complete_and_hand_off", false) {
            return HandOff::new(refused, Vec::new());
        }
        self.inner.complete_and_hand_off(items, next).await
    }

    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError> {
        self.check("subscribe")?;
        self.inner.subscribe().await
    }

    fn transactions(&self) -> Option<Arc<dyn Transactions>> {
        self.inner.transactions()
    }
}

outbox_core::forward_store!(
    impl[S: Store] EnqueueStore for FaultyStore<S>,
    |s| &s.inner,
    check |s, call| s.check(call)
);
outbox_core::forward_store!(
    impl[S: Store] InspectStore for FaultyStore<S>,
    |s| &s.inner,
    check |s, call| s.check(call)
);
outbox_core::forward_store!(
    impl[S: Store] RepairStore for FaultyStore<S>,
    |s| &s.inner,
    check |s, call| s.check(call)
);
