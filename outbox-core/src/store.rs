//! The [`Store`] trait every backend implements, and the types that cross it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::Stream;
use uuid::Uuid;

use crate::corrupt::CorruptEvent;
use crate::error::StoreError;
use crate::record::{EventRecord, EventStatus, HandlerResults, NewEvent};

/// The result of enqueueing one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The stored event's id: the new one, or the first event's id for a duplicate idempotency key.
    pub id: Uuid,
    /// `true` when an event with the same idempotency key already existed and nothing was stored.
    pub duplicate: bool,
}

/// What a claimer asks for.
///
/// ```
/// use outbox_core::ClaimRequest;
/// use std::time::Duration;
/// let request = ClaimRequest::new("worker-1", 100, Duration::from_secs(30));
/// assert_eq!(request.limit, 100);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// Recorded as `locked_by`.
    pub worker_id: String,
    /// At most this many events.
    pub limit: usize,
    /// How long the lease holds from the store's `now`.
    pub lease: Duration,
}

impl ClaimRequest {
    /// A claim of up to `limit` events for `lease`.
    pub fn new(worker_id: impl Into<String>, limit: usize, lease: Duration) -> Self {
        Self {
            worker_id: worker_id.into(),
            limit,
            lease,
        }
    }
}

/// Proof of one claim: the event and the token that fences writes about it (contract C3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The claimed event.
    pub event_id: Uuid,
    /// The token this claim set; any other claim of the event sets a different one.
    pub token: Uuid,
}

/// A claimed event: its record (with `attempts` already counting this claim) and its lease.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    /// The event as stored at claim time.
    pub record: EventRecord,
    /// The lease to present when renewing or completing.
    pub lease: Lease,
    /// When the lease expires unless renewed.
    pub locked_until: DateTime<Utc>,
}

impl ClaimedEvent {
    /// The claimed event a claim's returned record describes: its lease token and expiry must be
    /// set (a store that leased it set them), otherwise the record is corrupt.
    ///
    /// ```
    /// use outbox_core::{ClaimedEvent, NewEvent};
    /// let mut record = NewEvent::new("T", serde_json::json!({})).into_record(chrono::Utc::now());
    /// assert!(ClaimedEvent::from_record(record.clone()).is_err());
    /// record.lease_token = Some(uuid::Uuid::now_v7());
    /// record.locked_until = Some(chrono::Utc::now());
    /// assert!(ClaimedEvent::from_record(record).is_ok());
    /// ```
    pub fn from_record(record: EventRecord) -> Result<Self, StoreError> {
        match (record.lease_token, record.locked_until) {
            (Some(token), Some(locked_until)) => Ok(Self {
                lease: Lease {
                    event_id: record.id,
                    token,
                },
                locked_until,
                record,
            }),
            _ => Err(StoreError::Corrupt {
                id: record.id.to_string(),
                message: "claimed without a lease token or expiry".into(),
            }),
        }
    }
}

/// Sorts a claimed batch into due order, then creation order (C2), for stores whose claim
/// statement returns rows in no particular order. The due time of a claimed event is the later of
/// its schedule and its back-off.
///
/// ```
/// use outbox_core::{ClaimedEvent, NewEvent, sort_in_due_order};
/// let claimed = |delay: i64| {
///     let mut r = NewEvent::new("T", serde_json::json!({})).into_record(chrono::Utc::now());
///     r.available_at = r.created_at + chrono::Duration::milliseconds(delay);
///     r.lease_token = Some(uuid::Uuid::now_v7());
///     r.locked_until = Some(chrono::Utc::now());
///     ClaimedEvent::from_record(r).unwrap()
/// };
/// let mut batch = vec![claimed(50), claimed(0)];
/// sort_in_due_order(&mut batch);
/// assert!(batch[0].record.available_at <= batch[1].record.available_at);
/// ```
pub fn sort_in_due_order(batch: &mut [ClaimedEvent]) {
    batch.sort_by_key(|c| {
        let r = &c.record;
        let due = r
            .backoff_until
            .map_or(r.available_at, |b| b.max(r.available_at));
        (due, r.created_at, r.id)
    });
}

/// The outcome of one claim, written with [`Store::complete`] while the lease is held.
///
/// The runtime computes it; stores write it as given and release the lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The event's new status. `Pending` means it goes back to the queue.
    pub status: EventStatus,
    /// The full, merged per-handler results.
    pub handler_results: HandlerResults,
    /// The event's attempt count to store (a released, unprocessed claim gives its attempt back).
    pub attempts: u32,
    /// For `Pending`: not claimable again before this delay has passed (by the store's clock).
    pub retry_delay: Option<Duration>,
}

/// Optional capabilities a store declares; the conformance suite and runtime act on them.
///
/// ```
/// let caps = outbox_core::StoreCapabilities::default().with_wakeups(true);
/// assert!(caps.wakeups);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StoreCapabilities {
    /// [`Store::subscribe`] returns a stream announcing commits (contract C8).
    pub wakeups: bool,
    /// Enqueue can join a caller's own transaction (contract C1).
    pub transactional_enqueue: bool,
}

impl StoreCapabilities {
    /// Declares wake-up support.
    pub fn with_wakeups(mut self, yes: bool) -> Self {
        self.wakeups = yes;
        self
    }

    /// Declares transactional enqueue support.
    pub fn with_transactional_enqueue(mut self, yes: bool) -> Self {
        self.transactional_enqueue = yes;
        self
    }
}

/// What [`Store::complete_and_hand_off`] did: one result per completion, in order, and the
/// successors it leased to the worker.
#[derive(Debug)]
#[non_exhaustive]
pub struct HandOff {
    /// One result per completion, as [`Store::complete_many`] returns them.
    pub results: Vec<Result<(), StoreError>>,
    /// Events leased to the worker that completed their key's previous event.
    pub next: Vec<ClaimedEvent>,
}

impl HandOff {
    /// A hand-off of `next` after completions with `results` (for backend authors: the struct is
    /// `#[non_exhaustive]`).
    pub fn new(results: Vec<Result<(), StoreError>>, next: Vec<ClaimedEvent>) -> Self {
        Self { results, next }
    }
}

/// Counts per status and lag (contract C9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StoreStats {
    /// Pending events, leased or not, due or not.
    pub pending: u64,
    /// Pending events due now and not leased.
    pub due: u64,
    /// Pending events under a live lease.
    pub leased: u64,
    /// Processed events still retained.
    pub processed: u64,
    /// Dead letters.
    pub dead: u64,
    /// Events set aside because they do not decode (contract C11).
    pub corrupt: u64,
    /// How long the oldest due, unleased event has been due (zero when none).
    pub oldest_due_age: Duration,
    /// What in the database holds the outbox's cleanup back, on stores where that can happen
    /// (PostgreSQL); `None` elsewhere.
    pub held_back: Option<HeldBack>,
}

/// What holds a store's cleanup back: on PostgreSQL the oldest open snapshot in the database (a
/// long transaction, `pg_dump`, an idle-in-transaction session, a replica with
/// `hot_standby_feedback`, a replication slot) keeps every row version the outbox deleted or
/// updated since it began, and claims walk them.
///
/// ```
/// use outbox_core::{HeldBack, StoreStats};
/// use std::time::Duration;
/// let stats = StoreStats::default().with_held_back(HeldBack::new(Duration::from_secs(600), 250_000));
/// assert_eq!(stats.to_json()["held_back"]["oldest_snapshot_age_ms"], 600_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HeldBack {
    /// How long the oldest snapshot any session of the database holds has been open.
    pub oldest_snapshot_age: Duration,
    /// Dead row versions in the outbox's table that cleanup has not removed.
    pub dead_rows: u64,
    /// Claims start just below what was last taken instead of walking the whole due index, because
    /// full walks became slow.
    pub windowed_claims: bool,
}

impl HeldBack {
    /// The age of the oldest snapshot and the dead rows.
    pub fn new(oldest_snapshot_age: Duration, dead_rows: u64) -> Self {
        Self {
            oldest_snapshot_age,
            dead_rows,
            windowed_claims: false,
        }
    }

    /// Says whether claims start just below what was last taken.
    pub fn with_windowed_claims(mut self, yes: bool) -> Self {
        self.windowed_claims = yes;
        self
    }

    /// Whether an operator should look: a snapshot open for more than a minute, or claims that
    /// had to switch to a window.
    ///
    /// ```
    /// use outbox_core::HeldBack;
    /// use std::time::Duration;
    /// assert!(!HeldBack::new(Duration::from_secs(2), 10).is_holding_back());
    /// assert!(HeldBack::new(Duration::from_secs(300), 10).is_holding_back());
    /// ```
    pub fn is_holding_back(&self) -> bool {
        self.oldest_snapshot_age > Duration::from_secs(60) || self.windowed_claims
    }
}

impl StoreStats {
    /// Builds stats from counts (for backend authors: the struct is `#[non_exhaustive]`).
    pub fn new(
        pending: u64,
        due: u64,
        leased: u64,
        processed: u64,
        dead: u64,
        oldest_due_age: Duration,
    ) -> Self {
        Self {
            pending,
            due,
            leased,
            processed,
            dead,
            corrupt: 0,
            oldest_due_age,
            held_back: None,
        }
    }

    /// Adds what holds the store's cleanup back.
    pub fn with_held_back(mut self, held_back: HeldBack) -> Self {
        self.held_back = Some(held_back);
        self
    }

    /// The counts as the JSON object operators' tools print: `pending`, `due`, `leased`,
    /// `processed`, `dead`, `corrupt` and `lag_ms`.
    ///
    /// ```
    /// let json = outbox_core::StoreStats::default().with_corrupt(1).to_json();
    /// assert_eq!((json["corrupt"].as_u64(), json["lag_ms"].as_u64()), (Some(1), Some(0)));
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "pending": self.pending,
            "due": self.due,
            "leased": self.leased,
            "processed": self.processed,
            "dead": self.dead,
            "corrupt": self.corrupt,
            "lag_ms": millis(self.oldest_due_age),
            "held_back": self.held_back.map(|h| serde_json::json!({
                "oldest_snapshot_age_ms": millis(h.oldest_snapshot_age),
                "dead_rows": h.dead_rows,
                "windowed_claims": h.windowed_claims,
            })),
        })
    }

    /// Sets the count of events set aside as corrupt.
    ///
    /// ```
    /// let stats = outbox_core::StoreStats::default().with_corrupt(2);
    /// assert_eq!(stats.corrupt, 2);
    /// ```
    pub fn with_corrupt(mut self, corrupt: u64) -> Self {
        self.corrupt = corrupt;
        self
    }
}

/// Counts of one event type's unfinished events (see [`Store::stats_by_type`]).
///
/// ```
/// let row = outbox_core::TypeStats::new("UserInvited")
///     .with_counts(5, 2, 1, 3)
///     .with_oldest_due_age(std::time::Duration::from_millis(40));
/// assert_eq!((row.pending, row.due, row.leased, row.dead), (5, 2, 1, 3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TypeStats {
    /// The event type.
    pub event_type: String,
    /// Pending events of the type, leased or not, due or not.
    pub pending: u64,
    /// Of those, due now and not leased.
    pub due: u64,
    /// Of those, under a live lease.
    pub leased: u64,
    /// Dead letters of the type.
    pub dead: u64,
    /// How long the type's oldest due, unleased event has been due (zero when none).
    pub oldest_due_age: Duration,
}

impl TypeStats {
    /// A row of zeros for `event_type` (for backend authors: the struct is `#[non_exhaustive]`).
    pub fn new(event_type: impl Into<String>) -> Self {
        Self {
            event_type: event_type.into(),
            ..Self::default()
        }
    }

    /// Sets the counts: pending, due, leased, dead.
    #[must_use]
    pub fn with_counts(mut self, pending: u64, due: u64, leased: u64, dead: u64) -> Self {
        (self.pending, self.due, self.leased, self.dead) = (pending, due, leased, dead);
        self
    }

    /// The row as JSON: `event_type`, `pending`, `due`, `leased`, `dead` and `lag_ms`.
    ///
    /// ```
    /// let json = outbox_core::TypeStats::new("T").with_counts(3, 2, 1, 0).to_json();
    /// assert_eq!(json["due"].as_u64(), Some(2));
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "event_type": self.event_type,
            "pending": self.pending,
            "due": self.due,
            "leased": self.leased,
            "dead": self.dead,
            "lag_ms": millis(self.oldest_due_age),
        })
    }

    /// Sets the age of the oldest due event.
    #[must_use]
    pub fn with_oldest_due_age(mut self, age: Duration) -> Self {
        self.oldest_due_age = age;
        self
    }
}

/// Whole milliseconds of `d`, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A stream of wake-up signals: each item means "new events may be claimable".
pub type WakeupStream = Pin<Box<dyn Stream<Item = ()> + Send + 'static>>;

/// Runs [`Store::complete`] for each item, concurrently; one result per item, in order. It is the
/// default of [`Store::complete_many`], for a backend's override to fall back on (small batches).
///
/// ```
/// use outbox_core::{Completion, Lease, Store, StoreError, complete_each};
///
/// async fn one_by_one(store: &dyn Store, done: &[(Lease, Completion)]) -> Vec<Result<(), StoreError>> {
///     complete_each(store, done).await
/// }
/// ```
pub async fn complete_each<S: Store + ?Sized>(
    store: &S,
    items: &[(Lease, Completion)],
) -> Vec<Result<(), StoreError>> {
    futures::future::join_all(
        items
            .iter()
            .map(|(lease, completion)| store.complete(lease, completion.clone())),
    )
    .await
}

/// Runs [`Store::renew_lease`] for each lease, concurrently; one result per lease, in order. It is
/// the default of [`Store::renew_many`].
///
/// ```
/// use outbox_core::{Lease, Store, renew_each};
/// use std::time::Duration;
///
/// async fn renew(store: &dyn Store, held: Vec<Lease>) -> usize {
///     renew_each(store, held, Duration::from_secs(30)).await.iter().filter(|r| r.is_ok()).count()
/// }
/// ```
pub async fn renew_each<S: Store + ?Sized>(
    store: &S,
    leases: Vec<Lease>,
    extend: Duration,
) -> Vec<Result<DateTime<Utc>, StoreError>> {
    futures::future::join_all(
        leases
            .iter()
            .map(|lease| async move { store.renew_lease(lease, extend).await }),
    )
    .await
}

/// Durable storage of outbox events.
///
/// # Contract
///
/// Implementations uphold the store clauses of the product contract; `outbox-testkit`'s conformance
/// suite checks each one.
///
/// - **C2** [`claim`](Store::claim) returns up to `limit` due events — pending, `available_at` and
///   `backoff_until` passed, no live lease — oldest first, and leases them atomically with a fresh
///   token, incrementing `attempts`. Concurrent claimers never hold the same event at once.
///   "Oldest first" means *due order*: by the time the event became claimable (its `available_at`,
///   the end of its back-off, or the expiry of an abandoned lease), then by creation order. A
///   claim's cost must not grow with events that are not due (scheduled, backing off, leased, or
///   waiting behind an older event of their ordering key).
/// - **C3** [`complete`](Store::complete) writes the outcome and releases the lease only while the
///   lease token still matches and the lease has not been taken over; otherwise it returns
///   [`StoreError::LeaseLost`] and changes nothing.
/// - **C4** [`renew_lease`](Store::renew_lease) extends a held lease or reports `LeaseLost`.
/// - **C5** an event with an `ordering_key` is not claimable while an older event with the same key is
///   pending (leased or not).
/// - **C6** enqueueing an existing `idempotency_key` stores nothing and returns the first event's id.
/// - **C7** dead letters are listable, re-queueable and purgeable; processed events purgeable by age.
/// - **C8** stores that declare [`StoreCapabilities::wakeups`] announce commits via
///   [`subscribe`](Store::subscribe).
/// - **C9** [`stats`](Store::stats) counts per status and reports lag.
/// - **C11** enqueue checks the event against the store's [`Limits`](crate::Limits) before the
///   database sees it; a stored event that does not decode is set aside on its own (status
///   [`CORRUPT_STATUS`](crate::CORRUPT_STATUS) with the reason) instead of failing its claim
///   batch, listed by [`corrupt_events`](Store::corrupt_events) and re-queued by
///   [`requeue_corrupt`](Store::requeue_corrupt).
///
/// The trait is object safe: the runtime holds an `Arc<dyn Store>`. Transactional enqueue (C1) is
/// not part of it: each backend offers it as an inherent method taking its driver's transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// What optional parts of the contract this store supports.
    fn capabilities(&self) -> StoreCapabilities;

    /// Enqueues events outside any caller transaction, all or none.
    async fn enqueue_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError>;

    /// Claims and leases up to `request.limit` due events, oldest first (C2, C5).
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError>;

    /// Extends a held lease by `extend` from the store's now; returns the new expiry (C4).
    async fn renew_lease(
        &self,
        lease: &Lease,
        extend: Duration,
    ) -> Result<DateTime<Utc>, StoreError>;

    /// Extends many held leases, each fenced by its own token exactly as [`renew_lease`] does; one
    /// result per lease, in order (a lost lease fails only its own item with `LeaseLost`). A worker
    /// renews every lease it holds through this, once per renewal interval. The default runs
    /// [`renew_lease`] for each concurrently; a backend overrides it to use one round trip.
    ///
    /// [`renew_lease`]: Store::renew_lease
    ///
    /// ```
    /// use outbox_core::{Lease, Store};
    /// use std::time::Duration;
    ///
    /// async fn lost(store: &dyn Store, held: Vec<Lease>) -> usize {
    ///     let results = store.renew_many(held, Duration::from_secs(30)).await;
    ///     results.iter().filter(|r| r.is_err()).count()
    /// }
    /// ```
    async fn renew_many(
        &self,
        leases: Vec<Lease>,
        extend: Duration,
    ) -> Vec<Result<DateTime<Utc>, StoreError>> {
        renew_each(self, leases, extend).await
    }

    /// Records an outcome and releases the lease, fenced by the lease token (C3).
    async fn complete(&self, lease: &Lease, completion: Completion) -> Result<(), StoreError>;

    /// Records many outcomes, each fenced by its own lease token exactly as [`complete`] does; one
    /// result per item, in order (a stale lease fails only its own item with `LeaseLost`). The
    /// worker sends the completions of events that finish together through this. The items are
    /// borrowed: the worker keeps them to retry a transient failure without copying them first.
    /// The default runs [`complete`] for each item concurrently; a backend overrides it to use
    /// one round trip.
    ///
    /// [`complete`]: Store::complete
    ///
    /// ```
    /// use outbox_core::{Completion, Lease, Store, StoreError};
    ///
    /// async fn finish(store: &dyn Store, done: &[(Lease, Completion)]) -> usize {
    ///     let results = store.complete_many(done).await;
    ///     results.iter().filter(|r| matches!(r, Err(StoreError::LeaseLost { .. }))).count()
    /// }
    /// ```
    async fn complete_many(&self, items: &[(Lease, Completion)]) -> Vec<Result<(), StoreError>> {
        complete_each(self, items).await
    }

    /// Completes like [`complete_many`](Store::complete_many) and, for each ordering key whose
    /// event this finished (processed or dead), leases the key's next pending event to
    /// `next.worker_id` for `next.lease` when it is due now, at most `next.limit` of them: the
    /// worker runs it at once, and the store spares the write that would make it claimable and
    /// the claim that would lease it (C5 holds: it heads its key now). A successor that is
    /// scheduled or backing off is made claimable as usual. The default hands nothing off.
    ///
    /// ```
    /// use outbox_core::{ClaimRequest, Completion, Lease, Store};
    /// # async fn demo(store: &dyn Store, done: Vec<(Lease, Completion)>) {
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
        HandOff {
            results: self.complete_many(items).await,
            next: Vec::new(),
        }
    }

    /// Reads one event.
    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError>;

    /// Lists up to `limit` dead letters, oldest first (C7).
    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError>;

    /// Puts a dead event back to pending with attempts and handler failures reset (successful
    /// handlers keep their success). Returns `false` when the event is not dead (C7).
    async fn requeue_dead(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Deletes dead events that became dead before `older_than`; returns how many (C7).
    async fn purge_dead(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Deletes processed events processed before `older_than`; returns how many (C7).
    async fn purge_processed(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Lists up to `limit` events set aside because they do not decode, oldest first (C11).
    async fn corrupt_events(&self, limit: usize) -> Result<Vec<CorruptEvent>, StoreError>;

    /// Puts an event that was set aside back in the queue, as stored (fix its data first). `id` is
    /// the id as [`corrupt_events`](Store::corrupt_events) lists it. Returns `false` when no event
    /// with that id is set aside (C11).
    async fn requeue_corrupt(&self, id: &str) -> Result<bool, StoreError>;

    /// Counts per status and lag (C9). Exact counts: on a table that keeps many processed events
    /// this costs in proportion to them; poll [`lag`](Store::lag) as a gauge instead.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// How long the oldest due, unleased event has been due (zero when none): the same figure as
    /// [`StoreStats::oldest_due_age`], read from the front of the due-time index, so it costs the
    /// same whatever the outbox holds (C9). The default takes it from [`stats`](Store::stats);
    /// every store in this workspace answers it with one index lookup.
    async fn lag(&self) -> Result<Duration, StoreError> {
        Ok(self.stats().await?.oldest_due_age)
    }

    /// Per event type, counts of its pending and dead events and its lag (C9), sorted by type;
    /// types with neither are left out. Processed events are not counted: on a table that keeps
    /// them that would cost in proportion to them. Costs a scan of the unfinished events, so
    /// sample it (every few seconds at most), do not call it per event. The default answers
    /// [`StoreError::InvalidRequest`] ("not supported by this store").
    async fn stats_by_type(&self) -> Result<Vec<TypeStats>, StoreError> {
        Err(StoreError::invalid(
            "stats_by_type is not supported by this store",
        ))
    }

    /// The pending event at the head of ordering key `key`'s line: the one that must finish
    /// before the key's next event can run (C5), or `None` when no event of the key is pending.
    /// The default answers [`StoreError::InvalidRequest`] ("not supported by this store").
    async fn key_head(&self, key: &str) -> Result<Option<EventRecord>, StoreError> {
        let _ = key;
        Err(StoreError::invalid(
            "key_head is not supported by this store",
        ))
    }

    /// A stream announcing commits, for stores that declare wake-ups (C8); `None` otherwise. The
    /// stream ending means the subscription was lost: the runtime polls and subscribes again.
    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError>;

    /// The store's transactions for transactional handlers (contract X1), when its database has
    /// them: return [`transactions_of`](crate::transactions_of)`(self.clone())` after
    /// implementing [`TransactionalStore`](crate::TransactionalStore). The default has none; a
    /// worker with a transactional handler then refuses to build.
    fn transactions(&self) -> Option<std::sync::Arc<dyn crate::Transactions>> {
        None
    }
}

/// Conveniences on every [`Store`].
#[async_trait]
pub trait StoreExt: Store {
    /// Enqueues one event outside any caller transaction.
    ///
    /// ```
    /// # async fn demo(store: &dyn outbox_core::Store) -> Result<(), outbox_core::StoreError> {
    /// use outbox_core::{NewEvent, StoreExt};
    /// let enqueued = store.enqueue(NewEvent::new("UserInvited", serde_json::json!({}))).await?;
    /// println!("stored {}", enqueued.id);
    /// # Ok(()) }
    /// ```
    async fn enqueue(&self, event: NewEvent) -> Result<Enqueued, StoreError> {
        let mut out = self.enqueue_batch(vec![event]).await?;
        out.pop()
            .ok_or_else(|| StoreError::invalid("store returned no result for an enqueued event"))
    }

    /// Waits until event `id` is processed or dead (contract W1), or `timeout` runs out: the
    /// outcome with each handler's stored output, or the reason it died. Reads the event with
    /// a growing pause (2 ms doubling to 100 ms): stores' wake-ups announce new work, not
    /// outcomes. An unknown id is [`StoreError::NotFound`]; an event deleted after processing
    /// (a retention that deletes) is [`Outcome::Deleted`](crate::Outcome::Deleted).
    ///
    /// ```
    /// use outbox_core::{Outcome, StoreExt};
    /// # async fn demo(store: &dyn outbox_core::Store, id: outbox_core::Uuid) -> Result<(), outbox_core::StoreError> {
    /// match store.wait_for(id, std::time::Duration::from_secs(2)).await? {
    ///     Outcome::Processed(record) => println!("done: {:?}", record.handler_results),
    ///     Outcome::Dead(record) => println!("failed: {:?}", record.give_up_reason()),
    ///     Outcome::TimedOut(_) => println!("still running; ask again later"),
    ///     _ => {}
    /// }
    /// # Ok(()) }
    /// ```
    async fn wait_for(&self, id: Uuid, timeout: Duration) -> Result<crate::Outcome, StoreError> {
        crate::wait::wait_for(self, id, timeout).await
    }

    /// The event that `record` waits behind, if any: the head of its ordering key's line while it
    /// is pending ([`Store::key_head`]; the record itself when it heads the line), what
    /// [`explain`](crate::explain) takes.
    ///
    /// ```
    /// use outbox_core::StoreExt;
    /// # async fn demo(store: &dyn outbox_core::Store, record: outbox_core::EventRecord) -> Result<(), outbox_core::StoreError> {
    /// let head = store.key_head_of(&record).await?;
    /// let why = outbox_core::explain(&record, head.as_ref(), outbox_core::chrono::Utc::now());
    /// println!("{}", why.summary);
    /// # Ok(()) }
    /// ```
    async fn key_head_of(&self, record: &EventRecord) -> Result<Option<EventRecord>, StoreError> {
        match (&record.ordering_key, record.status) {
            (Some(key), EventStatus::Pending) => self.key_head(key).await,
            _ => Ok(None),
        }
    }

    /// Enqueues one typed event outside any caller transaction.
    async fn enqueue_event<E: crate::Event>(&self, event: &E) -> Result<Enqueued, StoreError>
    where
        Self: Sized,
    {
        let new = NewEvent::from_event(event)
            .map_err(|e| StoreError::invalid(format!("event does not serialize: {e}")))?;
        self.enqueue(new).await
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

#[async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    fn capabilities(&self) -> StoreCapabilities {
        (**self).capabilities()
    }
    async fn enqueue_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        (**self).enqueue_batch(events).await
    }
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
        (**self).claim(request).await
    }
    async fn renew_lease(
        &self,
        lease: &Lease,
        extend: Duration,
    ) -> Result<DateTime<Utc>, StoreError> {
        (**self).renew_lease(lease, extend).await
    }
    async fn renew_many(
        &self,
        leases: Vec<Lease>,
        extend: Duration,
    ) -> Vec<Result<DateTime<Utc>, StoreError>> {
        (**self).renew_many(leases, extend).await
    }
    async fn complete(&self, lease: &Lease, completion: Completion) -> Result<(), StoreError> {
        (**self).complete(lease, completion).await
    }
    async fn complete_many(&self, items: &[(Lease, Completion)]) -> Vec<Result<(), StoreError>> {
        (**self).complete_many(items).await
    }
    async fn complete_and_hand_off(
        &self,
        items: &[(Lease, Completion)],
        next: &ClaimRequest,
    ) -> HandOff {
        (**self).complete_and_hand_off(items, next).await
    }
    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        (**self).get(id).await
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        (**self).dead_letters(limit).await
    }
    async fn requeue_dead(&self, id: Uuid) -> Result<bool, StoreError> {
        (**self).requeue_dead(id).await
    }
    async fn purge_dead(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        (**self).purge_dead(older_than).await
    }
    async fn purge_processed(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        (**self).purge_processed(older_than).await
    }
    async fn corrupt_events(&self, limit: usize) -> Result<Vec<CorruptEvent>, StoreError> {
        (**self).corrupt_events(limit).await
    }
    async fn requeue_corrupt(&self, id: &str) -> Result<bool, StoreError> {
        (**self).requeue_corrupt(id).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        (**self).stats().await
    }
    async fn lag(&self) -> Result<Duration, StoreError> {
        (**self).lag().await
    }
    async fn stats_by_type(&self) -> Result<Vec<TypeStats>, StoreError> {
        (**self).stats_by_type().await
    }
    async fn key_head(&self, key: &str) -> Result<Option<EventRecord>, StoreError> {
        (**self).key_head(key).await
    }
    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError> {
        (**self).subscribe().await
    }
    fn transactions(&self) -> Option<std::sync::Arc<dyn crate::Transactions>> {
        (**self).transactions()
    }
}
