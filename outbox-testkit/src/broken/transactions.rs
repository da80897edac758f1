//! Stores with a deliberate flaw in their transactional handlers (contract X1), for checking that
//! the X1 clauses catch them on a real backend: wrap the backend's factory in a
//! [`BrokenTransactionsFactory`] and expect [`x1_transactional_handlers`] to fail.
//!
//! [`x1_transactional_handlers`]: crate::suite::x1_transactional_handlers

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outbox_core::StoreError;
use outbox_core::model::HandlerState;
use outbox_core::store::ClaimStore;
use outbox_core::store::{
    ClaimRequest, ClaimedEvent, Completion, HandOff, InboxStore, Lease, TransactionalStore,
    Transactions, WakeupStream,
};

use crate::harness::{StoreFactory, TestTransaction};
use crate::suite::TransactionalFactory;

/// How a [`BrokenTransactions`] store gets X1 wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionFlaw {
    /// Records the handler's success in a transaction of its own, committed at once, instead of
    /// the handler's: the mark survives when the handler's writes roll back.
    SuccessOutsideTransaction,
    /// Commits the handler's transaction, then records the success (fenced) outside it: writes
    /// of a handler whose lease was taken over survive.
    SuccessAfterCommit,
    /// Records the success under whatever lease the event has now, not the handler's.
    Unfenced,
    /// Not wrong, only slow: each commit waits this long first, so a handler's timeout can fire
    /// while its transaction commits (the runtime must still count a committed success once).
    SlowCommit(Duration),
}

/// A store whose [`TransactionalStore`] side has `flaw`; everything else is the inner store's.
#[derive(Debug, Clone)]
pub struct BrokenTransactions<S> {
    inner: S,
    flaw: TransactionFlaw,
    /// Successes a [`TransactionFlaw::SuccessAfterCommit`] store records after its next commits.
    after_commit: Arc<Mutex<Vec<PendingMark>>>,
}

/// A success to record after a commit.
type PendingMark = (Lease, String, HandlerState);

impl<S> BrokenTransactions<S> {
    /// `inner` with `flaw`.
    ///
    /// ```
    /// use outbox_testkit::broken::{BrokenTransactions, TransactionFlaw};
    /// let broken = BrokenTransactions::new((), TransactionFlaw::Unfenced);
    /// assert_eq!(broken.flaw(), TransactionFlaw::Unfenced);
    /// ```
    pub fn new(inner: S, flaw: TransactionFlaw) -> Self {
        Self {
            inner,
            flaw,
            after_commit: Arc::default(),
        }
    }

    /// Its flaw.
    pub fn flaw(&self) -> TransactionFlaw {
        self.flaw
    }
}

#[async_trait]
impl<S: InboxStore + Clone> TransactionalStore for BrokenTransactions<S> {
    type Tx = S::Tx;

    async fn begin(&self) -> Result<S::Tx, StoreError> {
        self.inner.begin().await
    }

    async fn begin_for(&self, lease: &Lease) -> Result<S::Tx, StoreError> {
        self.inner.begin_for(lease).await
    }

    fn holds_event(&self) -> bool {
        self.inner.holds_event()
    }

    async fn record_success_in(
        &self,
        tx: &mut S::Tx,
        lease: &Lease,
        handler: &str,
        state: &HandlerState,
    ) -> Result<bool, StoreError> {
        match self.flaw {
            TransactionFlaw::SuccessOutsideTransaction => {
                let mut own = self.inner.begin().await?;
                let recorded = self
                    .inner
                    .record_success_in(&mut own, lease, handler, state)
                    .await?;
                self.inner.commit(own).await?;
                Ok(recorded)
            }
            // Recorded by `commit`, below.
            TransactionFlaw::SuccessAfterCommit => {
                self.after_commit
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((*lease, handler.to_owned(), state.clone()));
                Ok(true)
            }
            TransactionFlaw::SlowCommit(_) => {
                self.inner
                    .record_success_in(tx, lease, handler, state)
                    .await
            }
            TransactionFlaw::Unfenced => {
                let current = self
                    .inner
                    .get(lease.event_id)
                    .await?
                    .and_then(|r| r.lease_token)
                    .unwrap_or(lease.token);
                let forged = Lease {
                    event_id: lease.event_id,
                    token: current,
                };
                self.inner
                    .record_success_in(tx, &forged, handler, state)
                    .await
            }
        }
    }

    async fn commit(&self, tx: S::Tx) -> Result<(), StoreError> {
        if let TransactionFlaw::SlowCommit(pause) = self.flaw {
            tokio::time::sleep(pause).await;
        }
        self.inner.commit(tx).await?;
        if self.flaw == TransactionFlaw::SuccessAfterCommit {
            let pending = self
                .after_commit
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            if let Some((lease, handler, state)) = pending {
                let mut own = self.inner.begin().await?;
                if self
                    .inner
                    .record_success_in(&mut own, &lease, &handler, &state)
                    .await?
                {
                    self.inner.commit(own).await?;
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl<S: InboxStore + Clone> InboxStore for BrokenTransactions<S> {
    async fn inbox_record(
        &self,
        tx: &mut S::Tx,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        self.inner.inbox_record(tx, consumer, message_id).await
    }

    async fn inbox_purge(&self, consumer: &str, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.inbox_purge(consumer, before).await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: InboxStore + Clone> ClaimStore for BrokenTransactions<S> {
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
        self.inner.claim(request).await
    }

    async fn renew_many(
        &self,
        leases: Vec<Lease>,
        extend: Duration,
    ) -> Vec<Result<DateTime<Utc>, StoreError>> {
        self.inner.renew_many(leases, extend).await
    }

    async fn complete_many(&self, items: &[(Lease, Completion)]) -> Vec<Result<(), StoreError>> {
        self.inner.complete_many(items).await
    }

    async fn complete_and_hand_off(
        &self,
        items: &[(Lease, Completion)],
        next: &ClaimRequest,
    ) -> HandOff {
        self.inner.complete_and_hand_off(items, next).await
    }

    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError> {
        self.inner.subscribe().await
    }

    fn transactions(&self) -> Option<Arc<dyn Transactions>> {
        Some(outbox_core::store::transactions_of(self.clone()))
    }
}

outbox_core::forward_store!(impl[S: InboxStore + Clone] EnqueueStore for BrokenTransactions<S>, |s| &s.inner);

outbox_core::forward_store!(impl[S: InboxStore + Clone] InspectStore for BrokenTransactions<S>, |s| &s.inner);

outbox_core::forward_store!(impl[S: InboxStore + Clone] RepairStore for BrokenTransactions<S>, |s| &s.inner);

/// A backend's [`TransactionalFactory`] whose stores have a [`TransactionFlaw`].
///
/// ```ignore
/// let broken = BrokenTransactionsFactory::new(MyFactory::new(), TransactionFlaw::Unfenced);
/// assert!(outbox_testkit::suite::x1_transactional_handlers(&broken).await.is_err());
/// ```
#[derive(Debug)]
pub struct BrokenTransactionsFactory<F> {
    inner: F,
    flaw: TransactionFlaw,
}

impl<F> BrokenTransactionsFactory<F> {
    /// `inner`'s stores, with `flaw`.
    pub fn new(inner: F, flaw: TransactionFlaw) -> Self {
        Self { inner, flaw }
    }
}

#[async_trait]
impl<F: TransactionalFactory> StoreFactory for BrokenTransactionsFactory<F> {
    type Store = BrokenTransactions<F::Store>;

    async fn create(&self, namespace: &str) -> Result<Self::Store, StoreError> {
        Ok(BrokenTransactions::new(
            self.inner.create(namespace).await?,
            self.flaw,
        ))
    }

    async fn begin(
        &self,
        store: &Self::Store,
    ) -> Result<Option<Box<dyn TestTransaction>>, StoreError> {
        self.inner.begin(&store.inner).await
    }
}

#[async_trait]
impl<F: TransactionalFactory> TransactionalFactory for BrokenTransactionsFactory<F> {
    type Effects = F::Effects;

    async fn effects(
        &self,
        store: &Self::Store,
        namespace: &str,
    ) -> Result<F::Effects, StoreError> {
        self.inner.effects(&store.inner, namespace).await
    }
}

/// Runs the X1 clause on `factory`'s stores with `flaw` and panics unless the clause fails (a test
/// of your backend's `tests/`, beside the conformance suite).
///
/// ```ignore
/// #[test]
/// fn an_unfenced_success_is_caught() {
///     outbox_testkit::broken::assert_caught(MyFactory::new(), TransactionFlaw::Unfenced);
/// }
/// ```
pub fn assert_caught<F: TransactionalFactory>(factory: F, flaw: TransactionFlaw) {
    let factory = BrokenTransactionsFactory::new(factory, flaw);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(crate::suite::x1_transactional_handlers(&factory)) {
        Err(failure) => println!("{flaw:?} caught: {failure}"),
        Ok(verdict) => panic!("the X1 clause passed a store with {flaw:?}: {verdict:?}"),
    }
}
