//! Transactional handlers (contract X1): a handler that runs inside a transaction of the store's
//! own database, with its success recorded in that same transaction, fenced by the lease.
//!
//! A store with transactions implements [`TransactionalStore`] (its transaction type implements
//! [`StoreTransaction`]) and returns it from [`ClaimStore::transactions`](crate::store::ClaimStore::transactions). A handler asks for the
//! transaction by taking `&mut` of that type — `#[handler(event = "…", transactional)]` with a
//! `tx: &mut PgTx` parameter, or [`Handler::transactional`](crate::handlers::Handler::transactional) — and
//! the runtime then, for each run of that handler:
//!
//! 1. begins a transaction;
//! 2. runs the handler with it;
//! 3. on success, records the handler's success on the event *in that transaction*, only if the
//!    run's lease is still the event's current one, and commits.
//!
//! So the handler's writes and its "done" mark commit together or not at all: a failure, timeout,
//! panic or lost lease rolls the writes back and the normal retry path runs the handler again; a
//! success is never repeated, even when the worker dies before it reports the event's outcome.
//! Other handlers of the event keep their own results (contract P1).

use std::any::{Any, TypeId};
use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{HandlerState, StoreError};
use crate::store::{Lease, Store};

/// A database transaction a transactional handler can run in: implemented by the stores'
/// transaction types (`outbox_postgres::PgTx`, `outbox_sqlite::SqliteTx`,
/// `outbox_mongo::MongoTx`).
///
/// Redis has no transaction that can hold a handler's reads and writes, so it has none: a
/// handler asking for one fails to compile.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a store transaction a handler can run in",
    label = "take `&mut` of a store's transaction type here",
    note = "transactional handlers run in `outbox_postgres::PgTx`, `outbox_sqlite::SqliteTx` or `outbox_mongo::MongoTx`; Redis has no transactions: make the handler idempotent instead"
)]
pub trait StoreTransaction: Send + 'static {}

/// A store whose database has transactions a handler can run in (contract X1).
///
/// Implement it, then return [`transactions_of`]`(self.clone())` from
/// [`ClaimStore::transactions`](crate::store::ClaimStore::transactions); the conformance clause `x1_transactional_handlers` checks the result.
///
/// ```
/// use outbox_core::StoreError;
/// use outbox_core::store::TransactionalStore;
///
/// // What the runtime does around one run of a transactional handler, in outline.
/// async fn run_once<S: TransactionalStore>(store: &S) -> Result<(), StoreError> {
///     let tx = store.begin().await?;
///     // the handler writes through `&mut tx`; then `record_success_in(&mut tx, …)`
///     store.commit(tx).await
/// }
/// ```
#[async_trait]
pub trait TransactionalStore: Store {
    /// The transaction handlers receive (`&mut Self::Tx`).
    type Tx: StoreTransaction;

    /// Begins a transaction.
    async fn begin(&self) -> Result<Self::Tx, StoreError>;

    /// Begins the transaction a handler runs in under `lease`. The default is
    /// [`begin`](Self::begin). A store whose transactions fail when they write a document changed
    /// after their snapshot (MongoDB) takes the leased event here, fenced by the lease, and
    /// returns `true` from [`holds_event`](Self::holds_event): lease renewals then wait for the
    /// transaction instead of aborting it, and the runtime pauses them meanwhile.
    async fn begin_for(&self, lease: &Lease) -> Result<Self::Tx, StoreError> {
        let _ = lease;
        self.begin().await
    }

    /// Whether [`begin_for`](Self::begin_for) holds the event until the transaction ends (the
    /// runtime then does not renew its lease meanwhile). Default `false`.
    fn holds_event(&self) -> bool {
        false
    }

    /// Inside `tx`, stores `state` as `handler`'s result on the leased event — only if `lease` is
    /// still the event's current lease and the event is pending. Returns `false` (writing nothing)
    /// when it is not: the caller then rolls back. The write must hold the event against a
    /// concurrent claim until `tx` ends (a row lock, or a write conflict that fails the commit).
    async fn record_success_in(
        &self,
        tx: &mut Self::Tx,
        lease: &Lease,
        handler: &str,
        state: &HandlerState,
    ) -> Result<bool, StoreError>;

    /// Commits `tx`. Dropping a transaction without committing it rolls it back.
    async fn commit(&self, tx: Self::Tx) -> Result<(), StoreError>;

    /// Rolls `tx` back and waits until the database has done so. The default drops it (which
    /// rolls back, but perhaps only after this returns); stores whose driver can wait override
    /// it.
    async fn rollback(&self, tx: Self::Tx) -> Result<(), StoreError> {
        drop(tx);
        Ok(())
    }
}

/// The type of a store's transactions, as handlers name it.
///
/// ```
/// struct MyTx;
/// impl outbox_core::store::StoreTransaction for MyTx {}
/// let t = outbox_core::store::TransactionType::of::<MyTx>();
/// assert!(t.type_name.ends_with("MyTx"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionType {
    /// Its `TypeId`.
    pub type_id: TypeId,
    /// Its type name, for messages.
    pub type_name: &'static str,
}

impl TransactionType {
    /// The transaction type `T`.
    pub fn of<T: StoreTransaction>() -> Self {
        Self {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
        }
    }
}

/// A store's transactions with their type erased, as the runtime holds them
/// ([`ClaimStore::transactions`](crate::store::ClaimStore::transactions)). Made by [`transactions_of`].
#[async_trait]
pub trait Transactions: Send + Sync + 'static {
    /// The transaction type handlers receive.
    fn transaction_type(&self) -> TransactionType;

    /// Begins a handler's transaction under `lease` (a boxed [`TransactionalStore::Tx`]).
    async fn begin_any(&self, lease: &Lease) -> Result<Box<dyn Any + Send>, StoreError>;

    /// Whether the transaction holds the event until it ends ([`TransactionalStore::holds_event`]).
    fn holds_event(&self) -> bool;

    /// Records the success in `tx` fenced by `lease`, then commits; `Ok(false)` (rolled back)
    /// when the lease was lost.
    async fn finish_any(
        &self,
        tx: Box<dyn Any + Send>,
        lease: &Lease,
        handler: &str,
        state: &HandlerState,
    ) -> Result<bool, StoreError>;
}

/// `store`'s transactions for [`ClaimStore::transactions`](crate::store::ClaimStore::transactions).
///
/// ```
/// use outbox_core::store::{TransactionType, TransactionalStore, transactions_of};
/// fn erase<S: TransactionalStore>(store: S) {
///     let transactions = transactions_of(store);
///     assert_eq!(transactions.transaction_type(), TransactionType::of::<S::Tx>());
/// }
/// ```
pub fn transactions_of<S: TransactionalStore>(store: S) -> Arc<dyn Transactions> {
    Arc::new(Erased(store))
}

struct Erased<S>(S);

#[async_trait]
impl<S: TransactionalStore> Transactions for Erased<S> {
    fn transaction_type(&self) -> TransactionType {
        TransactionType::of::<S::Tx>()
    }

    async fn begin_any(&self, lease: &Lease) -> Result<Box<dyn Any + Send>, StoreError> {
        Ok(Box::new(self.0.begin_for(lease).await?))
    }

    fn holds_event(&self) -> bool {
        self.0.holds_event()
    }

    async fn finish_any(
        &self,
        tx: Box<dyn Any + Send>,
        lease: &Lease,
        handler: &str,
        state: &HandlerState,
    ) -> Result<bool, StoreError> {
        let mut tx = tx.downcast::<S::Tx>().map_err(|_| {
            StoreError::invalid(format!(
                "a transaction that is not a `{}` was given back to finish",
                std::any::type_name::<S::Tx>()
            ))
        })?;
        if !self
            .0
            .record_success_in(&mut tx, lease, handler, state)
            .await?
        {
            return Ok(false); // dropping `tx` rolls it back
        }
        self.0.commit(*tx).await?;
        Ok(true)
    }
}
