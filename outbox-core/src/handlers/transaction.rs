//! The handler side of transactional handlers (contract X1): the scope a delivery carries, and
//! the begin / finish pair a `#[handler(transactional)]` run goes through. What a store offers
//! for them is [`TransactionalStore`](crate::store::TransactionalStore).

/// What a transactional handler run needs from its delivery: the store's transactions and the
/// lease its success is fenced by. The runtime puts one in each [`Delivery`](crate::runtime::Delivery)
/// when its store has transactions.
use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Utc;

use crate::handlers::handler::{HandlerContext, HandlerResult};
use crate::model::{HandlerError, HandlerState, StoreError};
use crate::store::{Lease, StoreTransaction, Transactions};

/// What a transactional handler run needs from its delivery: the store's transactions and the
/// lease its success is fenced by. The runtime puts one in each
/// [`Delivery`](crate::runtime::Delivery) when its store has transactions.
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
    /// use outbox_core::store::{Lease, TransactionalStore, transactions_of};
    /// use outbox_core::handlers::TransactionScope;
    /// use outbox_core::Uuid;
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
    /// stores whose transactions do; see [`TransactionalStore::holds_event`](crate::store::TransactionalStore::holds_event)), so that the
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
/// [`Handler::transactional`](crate::handlers::Handler::transactional) call it).
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
    if let Err(why) = crate::kit::storable::check_output(&mut output) {
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
/// [`TransactionalStore::holds_event`](crate::store::TransactionalStore::holds_event)); it travels with the transaction.
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
