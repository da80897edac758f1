//! [`MemoryStore`]: the in-memory reference implementation of the whole `Store` contract.
//!
//! It is the first thing to read when writing a backend: every rule of the contract appears here
//! once, in plain code, without a database in the way. It is also a real store for tests and
//! single-process prototypes (nothing survives the process).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outbox_core::kit::validate_name;
use outbox_core::model::CorruptEvent;
use outbox_core::store::{
    ClaimRequest, ClaimedEvent, Completion, Finished, Lease, StoreStats, TypeStats, WakeupStream,
};
use outbox_core::store::{ClaimStore, EnqueueStore, InspectStore, RepairStore};
use outbox_core::{Enqueued, EventRecord, EventStatus, Limits, NewEvent, StoreError};
use tokio::sync::broadcast;
use uuid::Uuid;

/// An in-memory store; clones share the same events.
///
/// ```
/// use outbox_core::prelude::*;
/// use outbox_core::store::ClaimRequest;
/// use outbox_core::{NewEvent, Store, StoreExt};
/// use outbox_testkit::MemoryStore;
/// use std::time::Duration;
///
/// # tokio_test_block_on(async {
/// let store = MemoryStore::new();
/// store.enqueue(NewEvent::new("UserInvited", serde_json::json!({"email": "a@b.c"}))).await?;
/// let claimed = store.claim(&ClaimRequest::new("me", 10, Duration::from_secs(30))).await?;
/// assert_eq!(claimed.len(), 1);
/// # Ok::<_, outbox_core::StoreError>(()) });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

struct Inner {
    namespace: String,
    limits: Limits,
    state: Mutex<State>,
    wakeups: broadcast::Sender<()>,
}

#[derive(Default)]
struct State {
    /// Every event by insertion sequence: creation order, even within one clock tick.
    events: BTreeMap<u64, EventRecord>,
    seq_by_id: HashMap<Uuid, u64>,
    /// Sequences of pending events, so claims never walk processed ones.
    pending: BTreeSet<u64>,
    idempotency: HashMap<String, Uuid>,
    next_seq: u64,
    /// Events made undecodable by [`MemoryStore::damage`], with the decode error they would give.
    damaged: HashMap<u64, String>,
    /// Events set aside because they did not decode (C11), with the reason and when.
    corrupt: BTreeMap<u64, (String, DateTime<Utc>)>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::with_inner("default".to_owned())
    }

    /// An empty store for `namespace`, validated like a backend's table prefix (C10).
    pub fn in_namespace(namespace: &str) -> Result<Self, StoreError> {
        validate_name("namespace", namespace)?;
        Ok(Self::with_inner(namespace.to_owned()))
    }

    /// An empty store that checks events against `limits` instead of the defaults (C11).
    ///
    /// ```
    /// use outbox_core::{Limits, NewEvent, StoreExt};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = outbox_testkit::MemoryStore::with_limits(Limits::default().with_max_payload_bytes(10));
    /// let big = NewEvent::new("T", serde_json::json!({"note": "far too long"}));
    /// assert!(store.enqueue(big).await.is_err());
    /// # });
    /// ```
    pub fn with_limits(limits: Limits) -> Self {
        let mut store = Self::new();
        if let Some(inner) = Arc::get_mut(&mut store.inner) {
            inner.limits = limits;
        }
        store
    }

    fn with_inner(namespace: String) -> Self {
        let (wakeups, _) = broadcast::channel(64);
        Self {
            inner: Arc::new(Inner {
                namespace,
                limits: Limits::default(),
                state: Mutex::new(State::default()),
                wakeups,
            }),
        }
    }

    /// Makes a stored event undecodable, as a row written by hand or by another program would be
    /// in a database: its next claim must set it aside (C11) instead of failing. For the
    /// conformance suite's poison-row clause. Returns `false` when the event does not exist.
    pub fn damage(&self, id: Uuid) -> bool {
        self.damage_because(
            id,
            "handler_results: invalid type: sequence, expected a map",
        )
    }

    /// [`damage`](Self::damage) with the decode error the row would give, `<field>: <error>`.
    ///
    /// ```
    /// use outbox_core::prelude::*;
    /// use outbox_core::{NewEvent, Store, StoreExt};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = outbox_testkit::MemoryStore::new();
    /// let id = store.enqueue(NewEvent::new("T", serde_json::json!({}))).await.unwrap().id;
    /// assert!(store.damage_because(id, "attempts: invalid digit"));
    /// assert!(store.get(id).await.is_err());
    /// # });
    /// ```
    pub fn damage_because(&self, id: Uuid, reason: &str) -> bool {
        let mut state = self.state();
        let Some(seq) = state.seq_by_id.get(&id).copied() else {
            return false;
        };
        state.damaged.insert(seq, reason.to_owned());
        true
    }

    /// Undoes [`damage`](Self::damage), as fixing the stored data by hand would.
    pub fn repair(&self, id: Uuid) -> bool {
        let mut state = self.state();
        let Some(seq) = state.seq_by_id.get(&id).copied() else {
            return false;
        };
        state.damaged.remove(&seq).is_some()
    }

    /// Starts a transaction: staged events become visible, atomically, at
    /// [`commit`](MemoryTransaction::commit) and vanish on rollback or drop (C1).
    pub fn begin(&self) -> MemoryTransaction {
        MemoryTransaction {
            store: self.clone(),
            staged: Vec::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic while holding it; the state is still consistent because every
        // mutation below completes before any call that could panic.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        for event in &events {
            self.inner.limits.check(event)?;
        }
        let now = Utc::now();
        let mut state = self.state();
        let mut out = Vec::with_capacity(events.len());
        let mut inserted = false;
        for event in events {
            if let Some(key) = &event.idempotency_key {
                if let Some(existing) = state.idempotency.get(key) {
                    out.push(Enqueued {
                        id: *existing,
                        duplicate: true,
                    });
                    continue;
                }
            }
            if state.seq_by_id.contains_key(&event.id) {
                return Err(StoreError::invalid(format!(
                    "event id {} already exists",
                    event.id
                )));
            }
            let record = event.into_record(now);
            let seq = state.next_seq;
            state.next_seq += 1;
            if let Some(key) = &record.idempotency_key {
                state.idempotency.insert(key.clone(), record.id);
            }
            state.seq_by_id.insert(record.id, seq);
            state.pending.insert(seq);
            out.push(Enqueued {
                id: record.id,
                duplicate: false,
            });
            state.events.insert(seq, record);
            inserted = true;
        }
        drop(state);
        if inserted {
            let _ = self.inner.wakeups.send(());
        }
        Ok(out)
    }
}

fn is_leased(record: &EventRecord, now: DateTime<Utc>) -> bool {
    record.locked_until.is_some_and(|until| until > now)
}

fn is_due(record: &EventRecord, now: DateTime<Utc>) -> bool {
    record.available_at <= now && record.backoff_until.is_none_or(|b| b <= now)
}

/// When a due event became claimable: the latest of its schedule, its back-off and an abandoned
/// lease.
fn due_since(record: &EventRecord) -> DateTime<Utc> {
    [record.backoff_until, record.locked_until]
        .into_iter()
        .flatten()
        .fold(record.available_at, DateTime::max)
}

fn add(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[async_trait]
impl ClaimStore for MemoryStore {
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
        let now = Utc::now();
        let locked_until = add(now, request.lease);
        let mut state = self.state();
        let State {
            events,
            pending,
            damaged,
            corrupt,
            ..
        } = &mut *state;
        // The head of each ordering key: its oldest pending event (C5). Only heads may be claimed.
        let mut heads: HashMap<&str, u64> = HashMap::new();
        for seq in pending.iter() {
            if let Some(key) = events.get(seq).and_then(|r| r.ordering_key.as_deref()) {
                heads.entry(key).or_insert(*seq);
            }
        }
        // Due order, then creation order (C2).
        let mut due: Vec<(DateTime<Utc>, u64)> = pending
            .iter()
            .filter_map(|seq| {
                let record = events.get(seq)?;
                let head = record
                    .ordering_key
                    .as_deref()
                    .is_none_or(|key| heads.get(key) == Some(seq));
                (head && !is_leased(record, now) && is_due(record, now))
                    .then(|| (due_since(record), *seq))
            })
            .collect();
        due.sort_unstable();
        let mut claimed = Vec::new();
        for (_, seq) in due {
            if claimed.len() >= request.limit {
                break;
            }
            if let Some(reason) = damaged.get(&seq) {
                // It would not decode: set it aside on its own (C11); the batch goes on.
                corrupt.insert(seq, (reason.clone(), now));
                pending.remove(&seq);
                continue;
            }
            let Some(record) = events.get_mut(&seq) else {
                continue;
            };
            let token = Uuid::now_v7();
            record.attempts = record.attempts.saturating_add(1);
            record.lease_token = Some(token);
            record.locked_by = Some(request.worker_id.clone());
            record.locked_until = Some(locked_until);
            claimed.push(ClaimedEvent {
                record: record.clone(),
                lease: Lease {
                    event_id: record.id,
                    token,
                },
                locked_until,
            });
        }
        Ok(claimed)
    }

    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError> {
        let receiver = self.inner.wakeups.subscribe();
        let stream = futures::stream::unfold(receiver, |mut rx| async move {
            match rx.recv().await {
                Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => Some(((), rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        Ok(Some(Box::pin(stream)))
    }

    async fn renew_many(
        &self,
        leases: Vec<Lease>,
        extend: Duration,
    ) -> Vec<Result<DateTime<Utc>, StoreError>> {
        outbox_core::kit::each_concurrently(&leases, |lease| self.renew_one(lease, extend)).await
    }

    async fn complete_many(&self, items: &[(Lease, Completion)]) -> Vec<Result<(), StoreError>> {
        outbox_core::kit::each_concurrently(items, |(lease, completion)| {
            self.complete_one(lease, completion.clone())
        })
        .await
    }
}

#[async_trait]
impl EnqueueStore for MemoryStore {
    async fn enqueue_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        self.insert(events)
    }
}

#[async_trait]
impl InspectStore for MemoryStore {
    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let state = self.state();
        let Some(seq) = state.seq_by_id.get(&id) else {
            return Ok(None);
        };
        if let Some(reason) = state.damaged.get(seq) {
            // As a database row that does not decode would.
            return Err(StoreError::Corrupt {
                id: id.to_string(),
                message: reason.clone(),
            });
        }
        Ok(state.events.get(seq).cloned())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let state = self.state();
        // A damaged row reads as a database row that does not decode would.
        let rows = state
            .events
            .iter()
            .filter(|(_, r)| r.status == EventStatus::Dead)
            .take(limit)
            .map(|(seq, r)| match state.damaged.get(seq) {
                Some(reason) => Err(StoreError::Corrupt {
                    id: r.id.to_string(),
                    message: reason.clone(),
                }),
                None => Ok(r.clone()),
            });
        Ok(outbox_core::kit::decodable("dead letters", rows))
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = Utc::now();
        let state = self.state();
        let (mut pending, mut due, mut leased, mut processed, mut dead) = (0, 0, 0, 0, 0);
        let mut oldest_due: Option<DateTime<Utc>> = None;
        let mut keys_seen: HashSet<&str> = HashSet::new();
        for (seq, record) in &state.events {
            match record.status {
                EventStatus::Processed => processed += 1,
                EventStatus::Dead => dead += 1,
                EventStatus::Pending if state.corrupt.contains_key(seq) => {}
                EventStatus::Pending => {
                    pending += 1;
                    // Only the oldest pending event of a key can be due (C5).
                    let head = record
                        .ordering_key
                        .as_deref()
                        .is_none_or(|key| keys_seen.insert(key));
                    if is_leased(record, now) {
                        leased += 1;
                    } else if head && is_due(record, now) {
                        due += 1;
                        let since = due_since(record);
                        oldest_due = Some(oldest_due.map_or(since, |o| o.min(since)));
                    }
                }
            }
        }
        let lag = oldest_due
            .and_then(|t| (now - t).to_std().ok())
            .unwrap_or_default();
        Ok(StoreStats::new(pending, due, leased, processed, dead, lag)
            .with_corrupt(state.corrupt.len() as u64))
    }

    async fn stats_by_type(&self) -> Result<Vec<TypeStats>, StoreError> {
        let now = Utc::now();
        let state = self.state();
        let mut rows: BTreeMap<&str, (TypeStats, Option<DateTime<Utc>>)> = BTreeMap::new();
        let mut keys_seen: HashSet<&str> = HashSet::new();
        for (seq, record) in &state.events {
            let pending = match record.status {
                EventStatus::Processed => continue,
                EventStatus::Pending if state.corrupt.contains_key(seq) => continue,
                EventStatus::Pending => true,
                EventStatus::Dead => false,
            };
            let (row, oldest) = rows
                .entry(record.event_type.as_str())
                .or_insert_with(|| (TypeStats::new(record.event_type.as_str()), None));
            if !pending {
                row.dead += 1;
                continue;
            }
            row.pending += 1;
            let head = record
                .ordering_key
                .as_deref()
                .is_none_or(|key| keys_seen.insert(key));
            if is_leased(record, now) {
                row.leased += 1;
            } else if head && is_due(record, now) {
                row.due += 1;
                let since = due_since(record);
                *oldest = Some(oldest.map_or(since, |o| o.min(since)));
            }
        }
        Ok(rows
            .into_values()
            .map(|(row, oldest)| {
                let age = oldest
                    .and_then(|t| (now - t).to_std().ok())
                    .unwrap_or_default();
                row.with_oldest_due_age(age)
            })
            .collect())
    }

    async fn key_head(&self, key: &str) -> Result<Option<EventRecord>, StoreError> {
        let state = self.state();
        Ok(state
            .events
            .iter()
            .find(|(seq, r)| {
                r.status == EventStatus::Pending
                    && !state.corrupt.contains_key(seq)
                    && r.ordering_key.as_deref() == Some(key)
            })
            .map(|(_, r)| r.clone()))
    }

    async fn corrupt_events(&self, limit: usize) -> Result<Vec<CorruptEvent>, StoreError> {
        let state = self.state();
        Ok(state
            .corrupt
            .iter()
            .take(limit)
            .filter_map(|(seq, (reason, at))| {
                let record = state.events.get(seq)?;
                Some(
                    CorruptEvent::new(record.id.to_string(), reason.clone())
                        .with_event_type(Some(record.event_type.clone()))
                        .with_set_aside_at(Some(*at)),
                )
            })
            .collect())
    }
}

#[async_trait]
impl RepairStore for MemoryStore {
    async fn requeue_dead(&self, id: Uuid) -> Result<bool, StoreError> {
        let now = Utc::now();
        let mut state = self.state();
        let Some(seq) = state.seq_by_id.get(&id).copied() else {
            return Ok(false);
        };
        let Some(record) = state
            .events
            .get_mut(&seq)
            .filter(|r| r.status == EventStatus::Dead)
        else {
            return Ok(false);
        };
        record.status = EventStatus::Pending;
        record.attempts = 0;
        record.backoff_until = None;
        record.available_at = now;
        record.processed_at = None;
        outbox_core::kit::reset_unfinished_handlers(&mut record.handler_results);
        state.pending.insert(seq);
        drop(state);
        let _ = self.inner.wakeups.send(());
        Ok(true)
    }

    async fn purge(
        &self,
        finished: Finished,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        Ok(purge(&mut self.state(), finished.status(), older_than))
    }

    async fn requeue_corrupt(&self, id: &str) -> Result<bool, StoreError> {
        let Ok(id) = Uuid::parse_str(id) else {
            return Ok(false);
        };
        let now = Utc::now();
        let mut state = self.state();
        let Some(seq) = state.seq_by_id.get(&id).copied() else {
            return Ok(false);
        };
        if state.corrupt.remove(&seq).is_none() {
            return Ok(false);
        }
        state.pending.insert(seq);
        if let Some(record) = state.events.get_mut(&seq) {
            record.lease_token = None;
            record.locked_by = None;
            record.locked_until = None;
            record.backoff_until = None;
            record.available_at = now;
        }
        drop(state);
        let _ = self.inner.wakeups.send(());
        Ok(true)
    }
}

impl MemoryStore {
    /// Renews one lease (C4): an item of `renew_many`.
    async fn renew_one(
        &self,
        lease: &Lease,
        extend: Duration,
    ) -> Result<DateTime<Utc>, StoreError> {
        let now = Utc::now();
        let mut state = self.state();
        let State {
            events, seq_by_id, ..
        } = &mut *state;
        let record = seq_by_id
            .get(&lease.event_id)
            .and_then(|seq| events.get_mut(seq))
            .filter(|r| r.lease_token == Some(lease.token) && r.status == EventStatus::Pending)
            .ok_or(StoreError::LeaseLost {
                event_id: lease.event_id,
            })?;
        let until = add(now, extend);
        record.locked_until = Some(until);
        Ok(until)
    }

    /// Completes one lease (C3): an item of `complete_many`.
    async fn complete_one(&self, lease: &Lease, completion: Completion) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut state = self.state();
        let State {
            events,
            seq_by_id,
            pending,
            ..
        } = &mut *state;
        let seq = *seq_by_id
            .get(&lease.event_id)
            .ok_or(StoreError::LeaseLost {
                event_id: lease.event_id,
            })?;
        let record = events
            .get_mut(&seq)
            .filter(|r| r.lease_token == Some(lease.token) && r.status == EventStatus::Pending)
            .ok_or(StoreError::LeaseLost {
                event_id: lease.event_id,
            })?;
        record.status = completion.status;
        record.handler_results = completion.handler_results;
        record.attempts = completion.attempts;
        record.backoff_until = completion.retry_delay.map(|d| add(now, d));
        record.lease_token = None;
        record.locked_by = None;
        record.locked_until = None;
        if completion.status == EventStatus::Pending {
            record.processed_at = None;
        } else {
            record.processed_at = Some(now);
            pending.remove(&seq);
        }
        let requeued_now =
            completion.status == EventStatus::Pending && completion.retry_delay.is_none();
        let releases_key =
            completion.status != EventStatus::Pending && record.ordering_key.is_some();
        drop(state);
        if requeued_now || releases_key {
            let _ = self.inner.wakeups.send(());
        }
        Ok(())
    }
}

fn purge(state: &mut State, status: EventStatus, older_than: DateTime<Utc>) -> u64 {
    let doomed: Vec<u64> = state
        .events
        .iter()
        .filter(|(_, r)| r.status == status && r.processed_at.is_some_and(|t| t < older_than))
        .map(|(seq, _)| *seq)
        .collect();
    for seq in &doomed {
        if let Some(record) = state.events.remove(seq) {
            state.seq_by_id.remove(&record.id);
            if let Some(key) = &record.idempotency_key {
                state.idempotency.remove(key);
            }
        }
    }
    doomed.len() as u64
}

/// A transaction on a [`MemoryStore`]: staged events are stored atomically on commit.
#[derive(Debug)]
pub struct MemoryTransaction {
    store: MemoryStore,
    staged: Vec<NewEvent>,
}

impl MemoryTransaction {
    /// Stages an event; it is invisible until commit. Returns its id.
    pub fn enqueue(&mut self, event: NewEvent) -> Result<Uuid, StoreError> {
        event.validate()?;
        let id = event.id;
        self.staged.push(event);
        Ok(id)
    }

    /// Stores every staged event at once; duplicates of an idempotency key return the first id.
    pub fn commit(self) -> Result<Vec<Enqueued>, StoreError> {
        self.store.insert(self.staged)
    }

    /// Discards every staged event.
    pub fn rollback(self) {}
}
