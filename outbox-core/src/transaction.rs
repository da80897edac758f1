//! Transactional handlers (contract X1): a handler that runs inside a transaction of the store's
//! own database, with its success recorded in that same transaction, fenced by the lease.
//!
//! A store with transactions implements [`TransactionalStore`] (its transaction type implements
//! [`StoreTransaction`]) and returns it from [`Store::transactions`]. A handler asks for the
//! transaction by taking `&mut` of that type — `#[handler(event = "…", transactional)]` with a
//! `tx: &mut PgTx` parameter, or [`Handler::transactional`](crate::Handler::transactional) — and
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
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::Utc;

use crate::error::{HandlerError, StoreError};
use crate::handler::{HandlerContext, HandlerResult};
use crate::record::HandlerState;
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
/// [`Store::transactions`]; the conformance clause `x1_transactional_handlers` checks the result.
///
/// ```
/// use outbox_core::{StoreError, TransactionalStore};
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
}

/// The type of a store's transactions, as handlers name it.
///
/// ```
/// struct MyTx;
/// impl outbox_core::StoreTransaction for MyTx {}
/// let t = outbox_core::TransactionType::of::<MyTx>();
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
/// ([`Store::transactions`]). Made by [`transactions_of`].
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

/// `store`'s transactions for [`Store::transactions`].
///
/// ```
/// use outbox_core::{TransactionType, TransactionalStore, transactions_of};
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

/// What a transactional handler run needs from its delivery: the store's transactions and the
/// lease its success is fenced by. The runtime puts one in each [`Delivery`](crate::Delivery)
/// when its store has transactions.
#[derive(Clone)]
pub struct TransactionScope {
    transactions: Arc<dyn Transactions>,
    lease: Lease,
    /// Open transactions holding the event; the runtime's renewer skips it while non-zero.
    holding: Option<Arc<AtomicUsize>>,
    /// Taken by each transaction that holds the event: two of them would conflict, so the
    /// transactional handlers of one delivery then run their transactions one after the other.
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
    /// The successes this delivery's transactions committed, kept even when their handler was
    /// dropped meanwhile (a timeout or an abort landing during the commit).
    commits: Arc<Commits>,
}

/// The handler successes a delivery's transactions committed, and how many commits are still
/// running.
#[derive(Debug, Default)]
struct Commits {
    running: AtomicUsize,
    committed: std::sync::Mutex<Vec<(String, Option<serde_json::Value>)>>,
    done: tokio::sync::Notify,
}

/// Counts a commit as running until dropped (even if its task panics).
struct Running(Arc<Commits>);

impl Running {
    fn start(commits: &Arc<Commits>) -> Self {
        commits.running.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(commits))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.done.notify_waiters();
    }
}

impl TransactionScope {
    /// The scope of one delivery under `lease`.
    ///
    /// ```
    /// use outbox_core::{Lease, TransactionScope, TransactionalStore, Uuid, transactions_of};
    /// fn scope<S: TransactionalStore>(store: S) {
    ///     let lease = Lease { event_id: Uuid::now_v7(), token: Uuid::now_v7() };
    ///     let scope = TransactionScope::new(transactions_of(store), lease);
    ///     assert_eq!(scope.lease(), &lease);
    /// }
    /// ```
    pub fn new(transactions: Arc<dyn Transactions>, lease: Lease) -> Self {
        Self {
            transactions,
            lease,
            holding: None,
            one_at_a_time: Arc::default(),
            commits: Arc::default(),
        }
    }

    /// This scope counting, in `open`, the transactions that hold the event while they run (on
    /// stores whose transactions do; see [`TransactionalStore::holds_event`]), so that the
    /// runtime's renewer leaves its lease alone meanwhile.
    #[must_use]
    pub fn pausing_renewal(mut self, open: Arc<AtomicUsize>) -> Self {
        if self.transactions.holds_event() {
            self.holding = Some(open);
        }
        self
    }

    /// Waits for the delivery's running commits, then returns the handlers whose success was
    /// committed, with their outputs — also those whose handler was dropped (timed out, aborted)
    /// while its transaction committed: the runtime records them as succeeded, so that the
    /// event's outcome does not overwrite a committed success with a failure.
    pub(crate) async fn committed(&self) -> Vec<(String, Option<serde_json::Value>)> {
        loop {
            let done = self.commits.done.notified();
            if self.commits.running.load(Ordering::SeqCst) == 0 {
                break;
            }
            done.await;
        }
        std::mem::take(
            &mut *self
                .commits
                .committed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The lease the delivery runs under.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }
}

impl std::fmt::Debug for TransactionScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionScope")
            .field(
                "transaction_type",
                &self.transactions.transaction_type().type_name,
            )
            .field("lease", &self.lease)
            .finish()
    }
}

/// Begins the transaction a transactional handler runs in (generated code and
/// [`Handler::transactional`](crate::Handler::transactional) call it).
pub(crate) async fn begin<T: StoreTransaction>(
    ctx: &HandlerContext,
) -> Result<(T, TransactionGuard), HandlerError> {
    let Some(scope) = ctx.transaction_scope() else {
        return Err(HandlerError::permanent(format!(
            "handler `{}` runs in a `{}` but its delivery has no transaction: the worker's store \
             has no transactions (PostgreSQL, SQLite and MongoDB stores have), or a custom \
             processor ran it without one",
            ctx.handler,
            std::any::type_name::<T>()
        )));
    };
    let given = scope.transactions.transaction_type();
    if given.type_id != std::any::TypeId::of::<T>() {
        return Err(HandlerError::permanent(format!(
            "handler `{}` runs in a `{}` but the worker's store gives `{}`",
            ctx.handler,
            std::any::type_name::<T>(),
            given.type_name
        )));
    }
    // In a task of its own: a handler dropped (timed out, aborted) while its transaction begins
    // must not leave the connection inside a transaction nobody owns (on SQLite, holding the write
    // lock). Here the task finishes, and dropping the transaction it made rolls it back.
    let transactions = Arc::clone(&scope.transactions);
    let turn = match &scope.holding {
        Some(_) => Some(Arc::clone(&scope.one_at_a_time).lock_owned().await),
        None => None,
    };
    let guard = TransactionGuard::open(scope.holding.clone(), turn);
    let lease = scope.lease;
    let tx = tokio::spawn(async move { transactions.begin_any(&lease).await })
        .await
        .map_err(|err| HandlerError::retry(format!("beginning the transaction failed: {err}")))?
        .map_err(|err| HandlerError::retry(format!("could not begin the transaction: {err}")))?;
    tx.downcast::<T>().map(|tx| (*tx, guard)).map_err(|_| {
        HandlerError::permanent(format!(
            "the store began a transaction that is not a `{}`",
            std::any::type_name::<T>()
        ))
    })
}

/// Ends a transactional handler's run: on success, records it in `tx` fenced by the lease and
/// commits; on failure (or a lost lease) rolls back. Returns the run's result.
pub(crate) async fn finish<T: StoreTransaction>(
    ctx: &HandlerContext,
    (tx, guard): (T, TransactionGuard),
    result: HandlerResult,
) -> HandlerResult {
    let mut output = match result {
        Ok(output) => output,
        Err(err) => {
            drop((tx, guard)); // rolls back the handler's writes
            return Err(err);
        }
    };
    if let Err(why) = crate::storable::check_output(&mut output) {
        drop((tx, guard)); // an output no store could read back: the handler's failure
        return Err(HandlerError::permanent(why));
    }
    let Some(scope) = ctx.transaction_scope() else {
        return Err(HandlerError::permanent(
            "a transactional handler's delivery lost its transaction scope",
        ));
    };
    let state = HandlerState {
        succeeded_at: Some(Utc::now()),
        attempts: ctx.attempt,
        output: output.clone(),
        ..HandlerState::default()
    };
    // In a task of its own, so that a handler dropped now (timed out, aborted) still ends its
    // transaction one way or the other: committed with its mark, or rolled back.
    let transactions = Arc::clone(&scope.transactions);
    let (lease, handler) = (scope.lease, ctx.handler.clone());
    let tx: Box<dyn Any + Send> = Box::new(tx);
    let running = Running::start(&scope.commits);
    let finished = tokio::spawn(async move {
        let finished = transactions.finish_any(tx, &lease, &handler, &state).await;
        drop(guard); // the transaction has ended
        if matches!(finished, Ok(true)) {
            running
                .0
                .committed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((handler, state.output.clone()));
        }
        drop(running);
        finished
    })
    .await
    .unwrap_or_else(|err| {
        Err(StoreError::unavailable(format!(
            "the commit task failed: {err}"
        )))
    });
    match finished {
        Ok(true) => Ok(output),
        Ok(false) => Err(HandlerError::retry(
            "the lease was lost before the transaction committed: the handler's writes were \
             rolled back and it will run again",
        )),
        Err(err) => Err(HandlerError::retry(format!(
            "recording the success in the handler's transaction failed ({err}): its writes were \
             rolled back and it will run again"
        ))),
    }
}

/// Counts a handler transaction as holding its event while alive (see
/// [`TransactionalStore::holds_event`]); it travels with the transaction.
#[derive(Debug)]
pub struct TransactionGuard {
    holding: Option<Arc<AtomicUsize>>,
    /// This transaction's turn among the delivery's transactions that hold the event.
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl TransactionGuard {
    fn open(
        holding: Option<Arc<AtomicUsize>>,
        turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    ) -> Self {
        if let Some(open) = &holding {
            open.fetch_add(1, Ordering::SeqCst);
        }
        Self {
            holding,
            _turn: turn,
        }
    }
}

impl Drop for TransactionGuard {
    fn drop(&mut self) {
        if let Some(open) = &self.holding {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
