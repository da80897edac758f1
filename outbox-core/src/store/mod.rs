//! The store contract: what a backend implements, in four parts by who calls them.
//!
//! | part | called by | methods |
//! |---|---|---|
//! | [`ClaimStore`] | the worker | `claim`, `renew_many`, `complete_many`, `complete_and_hand_off`, `subscribe`, `transactions` |
//! | [`EnqueueStore`] | applications | `enqueue_batch` |
//! | [`InspectStore`] | operators' tools (CLI, dashboard), `wait_for` | `get`, `dead_letters`, `corrupt_events`, `stats`, `lag`, `stats_by_type`, `key_head` |
//! | [`RepairStore`] | operators' tools | `requeue_dead`, `purge`, `requeue_corrupt` |
//!
//! [`Store`] is every part at once, implemented for any type that implements the four: it is
//! the name an application and the worker hold (`Arc<dyn Store>`). Conveniences built on the
//! batch forms — [`enqueue`](StoreExt::enqueue), [`complete`](StoreExt::complete),
//! [`renew_lease`](StoreExt::renew_lease), [`wait_for`](StoreExt::wait_for) — are in
//! [`StoreExt`]. Enqueueing in the caller's own transaction (C1) is [`EnqueueIn`], with the
//! backend's connection type as a type parameter. Transactional handlers (X1) need
//! [`TransactionalStore`]; the inbox needs [`InboxStore`]. What a store creates in its database is
//! [`Schema`].
//!
//! A wrapper around a store (a fault injector, a metrics layer) forwards the parts it does not
//! change with [`forward_store!`](crate::forward_store), so no method can be dropped on the way.
//! Helpers for writing a backend are in [`kit`](crate::kit); `outbox-testkit`'s conformance
//! suite checks every clause.
//!
//! This module imports nothing from the runtime or the handlers (a test in `outbox-core` checks).

mod ext;
#[macro_use]
mod forward;
pub(crate) mod inbox;
mod schema;
mod stats;
pub(crate) mod transactions;
mod types;
pub(crate) mod wait;

/// What the code [`forward_store!`](crate::forward_store) generates names. Not a public API.
#[doc(hidden)]
pub mod __forward {
    pub use async_trait::async_trait;
    pub use chrono::{DateTime, Utc};
    pub use uuid::Uuid;
}

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::{CorruptEvent, EventRecord, NewEvent, StoreError};

pub use ext::StoreExt;
pub use inbox::{Inbox, InboxStore, MAX_MESSAGE_ID_BYTES, Receipt};
pub use schema::Schema;
pub use stats::{HeldBack, StoreStats, TypeStats};
pub use transactions::{
    StoreTransaction, TransactionType, TransactionalStore, Transactions, transactions_of,
};
pub use types::{
    ClaimRequest, ClaimedEvent, Completion, Enqueued, Finished, HandOff, Lease, WakeupStream,
};
pub use wait::Outcome;

/// What the worker needs from a store: claims, lease renewals, completions, wake-ups and (for
/// transactional handlers) transactions.
///
/// # Contract
///
/// - **C2** [`claim`](ClaimStore::claim) returns up to `limit` due events — pending,
///   `available_at` and `backoff_until` passed, no live lease — oldest first, and leases them
///   atomically with a fresh token, incrementing `attempts`. Concurrent claimers never hold the
///   same event at once. "Oldest first" means *due order*: by the time the event became claimable
///   (its `available_at`, the end of its back-off, or the expiry of an abandoned lease), then by
///   creation order. A claim's cost must not grow with events that are not due (scheduled,
///   backing off, leased, or waiting behind an older event of their ordering key).
/// - **C3** [`complete_many`](ClaimStore::complete_many) writes each outcome and releases its
///   lease only while the lease token still matches and the lease has not been taken over;
///   otherwise that item is [`StoreError::LeaseLost`] and changes nothing.
/// - **C4** [`renew_many`](ClaimStore::renew_many) extends each held lease or reports `LeaseLost`
///   for it.
/// - **C5** an event with an `ordering_key` is not claimable while an older event with the same
///   key is pending (leased or not).
/// - **C8** a store whose [`subscribe`](ClaimStore::subscribe) returns a stream announces every
///   commit on it.
/// - **C11** a stored event that does not decode is set aside on its own (status
///   [`CORRUPT_STATUS`](crate::model::CORRUPT_STATUS) with the reason) instead of failing its
///   claim batch.
///
/// ```
/// use outbox_core::store::{ClaimRequest, ClaimStore};
/// use std::time::Duration;
///
/// async fn leased(store: &dyn ClaimStore) -> usize {
///     let request = ClaimRequest::new("worker-1", 10, Duration::from_secs(30));
///     store.claim(&request).await.map(|batch| batch.len()).unwrap_or(0)
/// }
/// ```
#[async_trait]
pub trait ClaimStore: Send + Sync + 'static {
    /// Claims and leases up to `request.limit` due events, oldest first (C2, C5).
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError>;

    /// Extends held leases by `extend` from the store's now, each fenced by its own token; one
    /// result per lease, in order: the new expiry, or `LeaseLost` for a lease no longer held
    /// (C4). A worker renews every lease it holds through this, once per renewal interval.
    ///
    /// ```
    /// use outbox_core::store::{ClaimStore, Lease};
    /// use std::time::Duration;
    ///
    /// async fn lost(store: &dyn ClaimStore, held: Vec<Lease>) -> usize {
    ///     let results = store.renew_many(held, Duration::from_secs(30)).await;
    ///     results.iter().filter(|r| r.is_err()).count()
    /// }
    /// ```
    async fn renew_many(
        &self,
        leases: Vec<Lease>,
        extend: Duration,
    ) -> Vec<Result<DateTime<Utc>, StoreError>>;

    /// Records outcomes and releases their leases, each fenced by its own lease token; one result
    /// per item, in order (a stale lease fails only its own item with `LeaseLost`) (C3). The
    /// items are borrowed: the worker keeps them to retry a transient failure without copying
    /// them first.
    ///
    /// ```
    /// use outbox_core::StoreError;
    /// use outbox_core::store::{ClaimStore, Completion, Lease};
    ///
    /// async fn finish(store: &dyn ClaimStore, done: &[(Lease, Completion)]) -> usize {
    ///     let results = store.complete_many(done).await;
    ///     results.iter().filter(|r| matches!(r, Err(StoreError::LeaseLost { .. }))).count()
    /// }
    /// ```
    async fn complete_many(&self, items: &[(Lease, Completion)]) -> Vec<Result<(), StoreError>>;

    /// Completes like [`complete_many`](ClaimStore::complete_many) and, for each ordering key
    /// whose event this finished (processed or dead), leases the key's next pending event to
    /// `next.worker_id` for `next.lease` when it is due now, at most `next.limit` of them: the
    /// worker runs it at once, and the store spares the write that would make it claimable and
    /// the claim that would lease it (C5 holds: it heads its key now). A successor that is
    /// scheduled or backing off is made claimable as usual. The default hands nothing off.
    ///
    /// ```
    /// use outbox_core::store::{ClaimRequest, ClaimStore, Completion, Lease};
    /// # async fn demo(store: &dyn ClaimStore, done: Vec<(Lease, Completion)>) {
    /// let next = ClaimRequest::new("worker-1", done.len(), std::time::Duration::from_secs(30));
    /// let handed = store.complete_and_hand_off(&done, &next).await;
    /// for event in &handed.next {
    ///     println!("run {} now: it is leased to worker-1", event.record.id);
    /// }
    /// # }
    /// ```
    async fn complete_and_hand_off(
        &self,
        items: &[(Lease, Completion)],
        next: &ClaimRequest,
    ) -> HandOff {
        let _ = next;
        HandOff::new(self.complete_many(items).await, Vec::new())
    }

    /// A stream announcing commits (C8), or `None` when the store has no wake-ups and workers
    /// poll. The stream ending means the subscription was lost: the runtime polls and
    /// subscribes again. Whether a store has wake-ups is this answer; there is no flag to keep
    /// in step with it.
    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError>;

    /// The store's transactions for transactional handlers (contract X1), when its database has
    /// them: return [`transactions_of`]`(self.clone())` after implementing
    /// [`TransactionalStore`]. The default has none; a worker with a transactional handler then
    /// refuses to build.
    fn transactions(&self) -> Option<std::sync::Arc<dyn Transactions>> {
        None
    }
}

/// Enqueueing outside any caller transaction.
///
/// # Contract
///
/// - **C2** the batch is stored all or none, one result per event in order.
/// - **C6** enqueueing an existing `idempotency_key` stores nothing and returns the first
///   event's id with `duplicate: true`.
/// - **C11** every event is checked against the store's [`Limits`](crate::Limits) before the
///   database sees it.
///
/// ```
/// use outbox_core::NewEvent;
/// use outbox_core::store::EnqueueStore;
/// # async fn demo(store: &dyn EnqueueStore) -> Result<(), outbox_core::StoreError> {
/// let stored = store.enqueue_batch(vec![NewEvent::new("UserInvited", serde_json::json!({}))]).await?;
/// assert_eq!(stored.len(), 1);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait EnqueueStore: Send + Sync + 'static {
    /// Enqueues events outside any caller transaction, all or none.
    async fn enqueue_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError>;
}

/// Enqueueing in the caller's own transaction (C1), the reason an outbox exists: the event is
/// written with the caller's data, becomes claimable when the caller commits, and never exists
/// if it rolls back.
///
/// `Conn` is the backend driver's connection type that a caller's transaction hands out:
/// `sqlx::PgConnection` for PostgreSQL (pass `&mut *tx` of a `sqlx::Transaction<'_, Postgres>`),
/// `sqlx::SqliteConnection` for SQLite, `mongodb::ClientSession` (in a transaction) for MongoDB.
/// Redis has no transactions that a caller holds open while it reads: its store adds the enqueue
/// to the caller's `MULTI`/`EXEC` pipeline instead (`RedisStore::enqueue_in_pipeline`), whose
/// results exist only once the caller executes it, so it does not implement this trait.
///
/// # Contract
///
/// - **C1** the events commit or roll back with the caller's transaction.
/// - **C2**, **C6**, **C11** hold as for [`EnqueueStore::enqueue_batch`].
///
/// ```
/// use outbox_core::store::EnqueueIn;
/// use outbox_core::{Enqueued, NewEvent, StoreError};
///
/// /// Any backend: the caller's connection type comes with the store.
/// async fn invite<S: EnqueueIn>(store: &S, tx: &mut S::Conn, user: u64) -> Result<Enqueued, StoreError> {
///     // ... the caller's own writes on `tx` ...
///     store.enqueue_in(tx, NewEvent::new("UserInvited", serde_json::json!({ "user": user }))).await
/// }
/// ```
#[async_trait]
pub trait EnqueueIn: EnqueueStore {
    /// The connection a caller's transaction hands out, which the enqueue joins.
    type Conn: ?Sized + Send;

    /// Enqueues events inside the caller's transaction, all or none with it; one result per
    /// event, in order.
    async fn enqueue_batch_in(
        &self,
        conn: &mut Self::Conn,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Enqueued>, StoreError>;

    /// Enqueues one event inside the caller's transaction: one item of
    /// [`enqueue_batch_in`](EnqueueIn::enqueue_batch_in).
    async fn enqueue_in(
        &self,
        conn: &mut Self::Conn,
        event: NewEvent,
    ) -> Result<Enqueued, StoreError> {
        let mut out = self.enqueue_batch_in(conn, vec![event]).await?;
        out.pop()
            .ok_or_else(|| StoreError::invalid("store returned no result for an enqueued event"))
    }
}

/// Reading what the outbox holds, for operators' tools and [`StoreExt::wait_for`].
///
/// # Contract
///
/// - **C7** dead letters are listed oldest first.
/// - **C9** [`stats`](InspectStore::stats) counts per status and reports lag;
///   [`stats_by_type`](InspectStore::stats_by_type) per type.
/// - **C11** events set aside because they do not decode are listed by
///   [`corrupt_events`](InspectStore::corrupt_events).
///
/// ```
/// use outbox_core::store::InspectStore;
/// # async fn demo(store: &dyn InspectStore) -> Result<(), outbox_core::StoreError> {
/// let stats = store.stats().await?;
/// println!("{} pending, {} dead, lag {:?}", stats.pending, stats.dead, store.lag().await?);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait InspectStore: Send + Sync + 'static {
    /// Reads one event.
    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError>;

    /// Lists up to `limit` dead letters, oldest first (C7).
    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError>;

    /// Lists up to `limit` events set aside because they do not decode, oldest first (C11).
    async fn corrupt_events(&self, limit: usize) -> Result<Vec<CorruptEvent>, StoreError>;

    /// Counts per status and lag (C9). Exact counts: on a table that keeps many processed events
    /// this costs in proportion to them; poll [`lag`](InspectStore::lag) as a gauge instead.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// How long the oldest due, unleased event has been due (zero when none): the same figure as
    /// [`StoreStats::oldest_due_age`], read from the front of the due-time index, so it costs the
    /// same whatever the outbox holds (C9). The default takes it from
    /// [`stats`](InspectStore::stats); every store in this workspace answers it with one index
    /// lookup.
    async fn lag(&self) -> Result<Duration, StoreError> {
        Ok(self.stats().await?.oldest_due_age)
    }

    /// Per event type, counts of its pending and dead events and its lag (C9), sorted by type;
    /// types with neither are left out. Processed events are not counted: on a table that keeps
    /// them that would cost in proportion to them. Costs a scan of the unfinished events, so
    /// sample it (every few seconds at most), do not call it per event.
    async fn stats_by_type(&self) -> Result<Vec<TypeStats>, StoreError>;

    /// The pending event at the head of ordering key `key`'s line: the one that must finish
    /// before the key's next event can run (C5), or `None` when no event of the key is pending.
    async fn key_head(&self, key: &str) -> Result<Option<EventRecord>, StoreError>;

    /// What holds the store's cleanup back, on stores where that can happen (PostgreSQL: the
    /// oldest open snapshot, the dead row versions it keeps, whether claims switched to a
    /// window) — the same figure as [`StoreStats::held_back`], without counting the table, so it
    /// can be sampled as a gauge. The default answers `None`: nothing can hold cleanup back.
    async fn held_back(&self) -> Result<Option<HeldBack>, StoreError> {
        Ok(None)
    }
}

/// Putting failed events back and deleting finished ones, for operators' tools.
///
/// # Contract
///
/// - **C7** dead letters are re-queueable and purgeable; processed events purgeable by age.
/// - **C11** an event set aside as undecodable is re-queued as stored.
///
/// ```
/// use outbox_core::store::{Finished, RepairStore};
/// # async fn demo(store: &dyn RepairStore) -> Result<(), outbox_core::StoreError> {
/// let week_ago = outbox_core::chrono::Utc::now() - outbox_core::chrono::Duration::days(7);
/// println!("purged {}", store.purge(Finished::Processed, week_ago).await?);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait RepairStore: Send + Sync + 'static {
    /// Puts a dead event back to pending with attempts and handler failures reset (successful
    /// handlers keep their success). Returns `false` when the event is not dead (C7).
    async fn requeue_dead(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Deletes the events that finished as `finished` (processed, or dead) before `older_than` —
    /// by when they finished, not when they were created — and returns how many (C7).
    async fn purge(&self, finished: Finished, older_than: DateTime<Utc>)
    -> Result<u64, StoreError>;

    /// Puts an event that was set aside back in the queue, as stored (fix its data first). `id` is
    /// the id as [`corrupt_events`](InspectStore::corrupt_events) lists it. Returns `false` when
    /// no event with that id is set aside (C11).
    async fn requeue_corrupt(&self, id: &str) -> Result<bool, StoreError>;
}

/// Durable storage of outbox events: every part of the store contract at once.
///
/// Implemented for every type that implements [`ClaimStore`], [`EnqueueStore`],
/// [`InspectStore`] and [`RepairStore`]; never implement it by hand. It is object safe: the
/// runtime holds an `Arc<dyn Store>`, and every part's methods can be called on it.
///
/// ```
/// use outbox_core::{NewEvent, Store, StoreExt};
/// use std::sync::Arc;
///
/// async fn produce(store: Arc<dyn Store>) -> Result<(), outbox_core::StoreError> {
///     let stored = store.enqueue(NewEvent::new("UserInvited", serde_json::json!({}))).await?;
///     println!("{} is {:?}", stored.id, store.get(stored.id).await?.map(|r| r.status));
///     Ok(())
/// }
/// ```
pub trait Store: ClaimStore + EnqueueStore + InspectStore + RepairStore {}

impl<S: ClaimStore + EnqueueStore + InspectStore + RepairStore + ?Sized> Store for S {}

forward_store!(impl[S: ClaimStore + ?Sized] ClaimStore for std::sync::Arc<S>, |s| &**s);
forward_store!(impl[S: EnqueueStore + ?Sized] EnqueueStore for std::sync::Arc<S>, |s| &**s);
forward_store!(impl[S: InspectStore + ?Sized] InspectStore for std::sync::Arc<S>, |s| &**s);
forward_store!(impl[S: RepairStore + ?Sized] RepairStore for std::sync::Arc<S>, |s| &**s);
forward_store!(impl[S: ClaimStore + ?Sized] ClaimStore for Box<S>, |s| &**s);
forward_store!(impl[S: EnqueueStore + ?Sized] EnqueueStore for Box<S>, |s| &**s);
forward_store!(impl[S: InspectStore + ?Sized] InspectStore for Box<S>, |s| &**s);
forward_store!(impl[S: RepairStore + ?Sized] RepairStore for Box<S>, |s| &**s);

#[async_trait]
impl<S: EnqueueIn + ?Sized> EnqueueIn for std::sync::Arc<S> {
    type Conn = S::Conn;

    async fn enqueue_batch_in(
        &self,
        conn: &mut S::Conn,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        (**self).enqueue_batch_in(conn, events).await
    }

    async fn enqueue_in(
        &self,
        conn: &mut S::Conn,
        event: NewEvent,
    ) -> Result<Enqueued, StoreError> {
        (**self).enqueue_in(conn, event).await
    }
}
