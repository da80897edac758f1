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
use outbox_core::{
    ClaimRequest, ClaimedEvent, Completion, Enqueued, EventRecord, EventStatus, Lease, NewEvent,
    Store, StoreCapabilities, StoreError, StoreStats, WakeupStream, validate_name,
};
use tokio::sync::broadcast;
use uuid::Uuid;

/// An in-memory store; clones share the same events.
///
/// ```
/// use outbox_core::{ClaimRequest, NewEvent, Store, StoreExt};
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

    fn with_inner(namespace: String) -> Self {
        let (wakeups, _) = broadcast::channel(64);
        Self {
            inner: Arc::new(Inner {
                namespace,
                state: Mutex::new(State::default()),
                wakeups,
            }),
        }
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
            event.validate()?;
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

fn add(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[async_trait]
impl Store for MemoryStore {
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::default()
            .with_wakeups(true)
            .with_transactional_enqueue(true)
    }

    async fn enqueue_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        self.insert(events)
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
        let now = Utc::now();
        let locked_until = add(now, request.lease);
        let mut state = self.state();
        let State {
            events, pending, ..
        } = &mut *state;
        let mut blocked_keys: HashSet<String> = HashSet::new();
        let mut claimed = Vec::new();
        for seq in pending.iter() {
            if claimed.len() >= request.limit {
                break;
            }
            let Some(record) = events.get_mut(seq) else {
                continue;
            };
            if let Some(key) = &record.ordering_key {
                // Only the oldest pending event of a key may be delivered (C5).
                if !blocked_keys.insert(key.clone()) {
                    continue;
                }
            }
            if is_leased(record, now) || !is_due(record, now) {
                continue;
            }
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

    async fn renew_lease(
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

    async fn complete(&self, lease: &Lease, completion: Completion) -> Result<(), StoreError> {
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

    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let state = self.state();
        Ok(state
            .seq_by_id
            .get(&id)
            .and_then(|s| state.events.get(s))
            .cloned())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let state = self.state();
        Ok(state
            .events
            .values()
            .filter(|r| r.status == EventStatus::Dead)
            .take(limit)
            .cloned()
            .collect())
    }

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
        outbox_core::reset_unfinished_handlers(&mut record.handler_results);
        state.pending.insert(seq);
        drop(state);
        let _ = self.inner.wakeups.send(());
        Ok(true)
    }

    async fn purge_dead(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(purge(&mut self.state(), EventStatus::Dead, older_than))
    }

    async fn purge_processed(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(purge(&mut self.state(), EventStatus::Processed, older_than))
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = Utc::now();
        let state = self.state();
        let (mut pending, mut due, mut leased, mut processed, mut dead) = (0, 0, 0, 0, 0);
        let mut oldest_due: Option<DateTime<Utc>> = None;
        for record in state.events.values() {
            match record.status {
                EventStatus::Processed => processed += 1,
                EventStatus::Dead => dead += 1,
                EventStatus::Pending => {
                    pending += 1;
                    if is_leased(record, now) {
                        leased += 1;
                    } else if is_due(record, now) {
                        due += 1;
                        let since = record
                            .backoff_until
                            .unwrap_or(record.available_at)
                            .max(record.available_at);
                        oldest_due = Some(oldest_due.map_or(since, |o| o.min(since)));
                    }
                }
            }
        }
        let lag = oldest_due
            .and_then(|t| (now - t).to_std().ok())
            .unwrap_or_default();
        Ok(StoreStats::new(pending, due, leased, processed, dead, lag))
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
