//! [`FaultyStore`]: wraps any store and makes its calls fail on demand, to test how a worker
//! rides out a database that goes away (contract P9).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outbox_core::{
    ClaimRequest, ClaimedEvent, Completion, CorruptEvent, Enqueued, EventRecord, Lease, NewEvent,
    Store, StoreCapabilities, StoreError, StoreStats, WakeupStream,
};
use uuid::Uuid;

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
}

#[async_trait]
impl<S: Store> Store for FaultyStore<S> {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }
    async fn enqueue_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        self.check("enqueue_batch")?;
        self.inner.enqueue_batch(events).await
    }
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
        self.check("claim")?;
        self.inner.claim(request).await
    }
    async fn renew_lease(
        &self,
        lease: &Lease,
        extend: Duration,
    ) -> Result<DateTime<Utc>, StoreError> {
        self.check("renew_lease")?;
        self.faults.check(&self.faults.renewals, "renew_lease")?;
        self.faults.wait_unstalled().await;
        self.inner.renew_lease(lease, extend).await
    }
    async fn complete(&self, lease: &Lease, completion: Completion) -> Result<(), StoreError> {
        self.check("complete")?;
        self.inner.complete(lease, completion).await
    }
    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        self.check("get")?;
        self.inner.get(id).await
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.check("dead_letters")?;
        self.inner.dead_letters(limit).await
    }
    async fn requeue_dead(&self, id: Uuid) -> Result<bool, StoreError> {
        self.check("requeue_dead")?;
        self.inner.requeue_dead(id).await
    }
    async fn purge_dead(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        self.check("purge_dead")?;
        self.inner.purge_dead(older_than).await
    }
    async fn purge_processed(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        self.check("purge_processed")?;
        self.inner.purge_processed(older_than).await
    }
    async fn corrupt_events(&self, limit: usize) -> Result<Vec<CorruptEvent>, StoreError> {
        self.check("corrupt_events")?;
        self.inner.corrupt_events(limit).await
    }
    async fn requeue_corrupt(&self, id: &str) -> Result<bool, StoreError> {
        self.check("requeue_corrupt")?;
        self.inner.requeue_corrupt(id).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.check("stats")?;
        self.inner.stats().await
    }
    async fn lag(&self) -> Result<Duration, StoreError> {
        self.check("lag")?;
        self.inner.lag().await
    }
    async fn stats_by_type(&self) -> Result<Vec<outbox_core::TypeStats>, StoreError> {
        self.check("stats_by_type")?;
        self.inner.stats_by_type().await
    }
    async fn key_head(&self, key: &str) -> Result<Option<EventRecord>, StoreError> {
        self.check("key_head")?;
        self.inner.key_head(key).await
    }
    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError> {
        self.check("subscribe")?;
        self.inner.subscribe().await
    }
}
