//! What a backend plugs into the conformance suite: a [`StoreFactory`], an optional
//! [`TestTransaction`] for C1, and the verdict types the clause functions return.

use std::future::Future;
use std::ops::DerefMut;
use std::time::Duration;

use async_trait::async_trait;
use outbox_core::store::{EnqueueIn, TransactionalStore};
use outbox_core::{Enqueued, NewEvent, Store, StoreError};
use uuid::Uuid;

/// Creates fresh stores for the conformance suite.
///
/// Each clause calls [`create`](StoreFactory::create) with its own namespace (a table prefix, schema,
/// database or key prefix), so clauses can run in parallel against one server. Calling `create`
/// twice with one namespace must return two handles on the same data (C10: schema setup is
/// idempotent); a namespace that is not a safe identifier must be refused with an error.
///
/// ```
/// use outbox_core::StoreError;
/// use outbox_testkit::{MemoryStore, StoreFactory};
///
/// struct MyFactory;
///
/// #[outbox_core::kit::async_trait]
/// impl StoreFactory for MyFactory {
///     type Store = MemoryStore;
///     async fn create(&self, namespace: &str) -> Result<MemoryStore, StoreError> {
///         MemoryStore::in_namespace(namespace)
///     }
/// }
/// ```
#[async_trait]
pub trait StoreFactory: Send + Sync + 'static {
    /// The store type under test.
    type Store: Store + Clone;

    /// A store in `namespace`, with its schema created (idempotently).
    async fn create(&self, namespace: &str) -> Result<Self::Store, StoreError>;

    /// Begins a transaction on `store` in the backend's own terms (C1); `None` (the default)
    /// when the store has no enqueue in a caller's transaction. A store implementing
    /// [`EnqueueIn`] and [`TransactionalStore`] returns
    /// `Ok(Some(begin_enqueue_in(store).await?))` ([`begin_enqueue_in`]).
    async fn begin(
        &self,
        store: &Self::Store,
    ) -> Result<Option<Box<dyn TestTransaction>>, StoreError> {
        let _ = store;
        Ok(None)
    }

    /// Damages the stored event `id` the way a row written by hand or by another program could be
    /// (a payload or handler results that do not decode, an impossible attempt count), keeping its
    /// id readable (C11: poison rows). Returns `false` when the factory cannot damage events; the
    /// poison-row clause then does not apply.
    async fn damage(&self, store: &Self::Store, id: Uuid) -> Result<bool, StoreError> {
        let _ = (store, id);
        Ok(false)
    }

    /// Damages one part of the stored event `id` — `what` — as a row written by hand, by another
    /// program or by an older version could be (C11: the quarantine covers every field). Returns
    /// `false` when the backend's schema cannot hold such a row (a `NOT NULL` or `CHECK`
    /// constraint refuses it) or the factory does not damage that part; clause
    /// `c11_every_field_is_quarantined` then skips that part.
    async fn damage_field(
        &self,
        store: &Self::Store,
        id: Uuid,
        what: Damage,
    ) -> Result<bool, StoreError> {
        let _ = (store, id, what);
        Ok(false)
    }

    /// Undoes [`damage`](StoreFactory::damage), as an operator fixing the data by hand would.
    async fn repair(&self, store: &Self::Store, id: Uuid) -> Result<bool, StoreError> {
        let _ = (store, id);
        Ok(false)
    }
}

/// The part of a stored event [`StoreFactory::damage_field`] damages.
///
/// ```
/// use outbox_testkit::Damage;
/// assert!(Damage::ALL.contains(&Damage::Timestamp));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Damage {
    /// The payload is not JSON (or not stored as the type the store keeps it as).
    Payload,
    /// The handler results are not a map of handler states.
    HandlerResults,
    /// The attempt count is negative or not a number.
    Attempts,
    /// The status is none of the statuses the store writes.
    Status,
    /// `available_at` cannot be read as an instant (not a time, or out of range).
    Timestamp,
    /// A required field (`event_type`) is missing.
    Missing,
}

impl Damage {
    /// Every part, in the order the clause damages them.
    pub const ALL: &'static [Damage] = &[
        Self::Payload,
        Self::HandlerResults,
        Self::Attempts,
        Self::Status,
        Self::Timestamp,
        Self::Missing,
    ];
}

/// A caller's transaction, seen through the backend's own transaction type (C1).
#[async_trait]
pub trait TestTransaction: Send {
    /// Enqueues inside the transaction.
    async fn enqueue(&mut self, event: NewEvent) -> Result<Enqueued, StoreError>;
    /// Commits.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
    /// Rolls back.
    async fn rollback(self: Box<Self>) -> Result<(), StoreError>;
}

/// The [`TestTransaction`] of any store that enqueues in a caller's transaction through
/// [`EnqueueIn`] and begins, commits and rolls back its own transactions through
/// [`TransactionalStore`] (PostgreSQL, SQLite, MongoDB): a factory's
/// [`begin`](StoreFactory::begin) is then one line.
///
/// ```
/// use outbox_core::StoreError;
/// use outbox_core::store::{EnqueueIn, TransactionalStore};
/// use outbox_testkit::{TestTransaction, begin_enqueue_in};
///
/// async fn begin<S>(store: &S) -> Result<Option<Box<dyn TestTransaction>>, StoreError>
/// where
///     S: TransactionalStore + EnqueueIn + Clone,
///     S::Tx: std::ops::DerefMut<Target = S::Conn>,
/// {
///     Ok(Some(begin_enqueue_in(store).await?))
/// }
/// ```
pub async fn begin_enqueue_in<S>(store: &S) -> Result<Box<dyn TestTransaction>, StoreError>
where
    S: TransactionalStore + EnqueueIn + Clone,
    S::Tx: DerefMut<Target = S::Conn>,
{
    let tx = store.begin().await?;
    Ok(Box::new(EnqueueInTransaction {
        store: store.clone(),
        tx,
    }))
}

/// A transaction of the store's own, enqueued into through [`EnqueueIn`].
struct EnqueueInTransaction<S: TransactionalStore> {
    store: S,
    tx: S::Tx,
}

#[async_trait]
impl<S> TestTransaction for EnqueueInTransaction<S>
where
    S: TransactionalStore + EnqueueIn + Clone,
    S::Tx: DerefMut<Target = S::Conn>,
{
    async fn enqueue(&mut self, event: NewEvent) -> Result<Enqueued, StoreError> {
        self.store.enqueue_in(&mut *self.tx, event).await
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let Self { store, tx } = *self;
        store.commit(tx).await
    }

    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        let Self { store, tx } = *self;
        store.rollback(tx).await
    }
}

/// A clause's verdict when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The store upholds the clause.
    Passed,
    /// The clause is about an optional part of the contract the store does not have.
    NotApplicable(String),
}

/// A clause the store does not uphold, with what was observed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// A failure with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Self::new(format!("unexpected store error: {err}"))
    }
}

/// What every clause function returns.
pub type ClauseResult = Result<Verdict, Failure>;

/// Fails the clause unless `cond` holds.
#[macro_export]
#[doc(hidden)]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return ::core::result::Result::Err($crate::Failure::new(::std::format!($($msg)+)));
        }
    };
}

/// Runs one clause on a fresh multi-threaded runtime with a time limit, and panics with the
/// failure's message (so `cargo test` reports it). A clause that does not apply to the store
/// passes and prints why.
///
/// ```
/// use outbox_testkit::{MemoryFactory, run_clause, suite};
/// use std::time::Duration;
///
/// run_clause("c2_due_order", Duration::from_secs(60), async {
///     suite::c2_due_order(&MemoryFactory::default()).await
/// });
/// ```
pub fn run_clause<F: Future<Output = ClauseResult>>(name: &str, limit: Duration, clause: F) {
    run_clause_applying(name, limit, &[], clause);
}

/// [`run_clause`], except that the clause fails when it does not apply to the store and `name` is
/// one of `applies` (the optional clauses the store must pass). Used by
/// [`conformance_suite!`](crate::conformance_suite).
///
/// ```should_panic
/// use outbox_testkit::{run_clause_applying, suite, MemoryFactory, Verdict};
/// use std::time::Duration;
///
/// // A store without wake-ups named as having them fails.
/// run_clause_applying("c8_wakeups", Duration::from_secs(60), &["c8_wakeups"], async {
///     Ok(Verdict::NotApplicable("subscribe() returns None".into()))
/// });
/// ```
pub fn run_clause_applying<F: Future<Output = ClauseResult>>(
    name: &str,
    limit: Duration,
    applies: &[&str],
    clause: F,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => panic!("{name}: cannot start a tokio runtime: {err}"),
    };
    match runtime.block_on(async { tokio::time::timeout(limit, clause).await }) {
        Ok(Ok(Verdict::Passed)) => {}
        Ok(Ok(Verdict::NotApplicable(why))) if applies.contains(&name) => panic!(
            "conformance clause {name} FAILED: it must apply to this store (named after \
             `applies:`), but it did not: {why}"
        ),
        Ok(Ok(Verdict::NotApplicable(why))) => {
            println!("{name}: does not apply to this store ({why})");
        }
        Ok(Err(failure)) => panic!("conformance clause {name} FAILED: {failure}"),
        Err(_) => panic!("conformance clause {name} FAILED: did not finish within {limit:?}"),
    }
}

/// A namespace unique to one clause run: `<prefix>_<clause>_<random>`, a safe identifier.
pub fn namespace(clause: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let short: String = clause
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(20)
        .collect();
    format!("t_{}_{}", short.to_ascii_lowercase(), &id[id.len() - 10..])
}
