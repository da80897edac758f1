//! Batches completions: event tasks that finish together share one `ClaimStore::complete_many` call
//! (one round trip on backends that implement it). An event task hands its completion over and
//! ends; the in-flight slot it held is released once the outcome is persisted (or given up on), and
//! the completer retries transient failures while the lease can still hold.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use super::Shared;
use crate::model::error::StoreError;
use crate::model::record::EventRecord;
use crate::model::record::EventStatus;
use crate::store::{ClaimRequest, ClaimedEvent, Completion, HandOff, Lease, StoreExt};

/// How many batches are written at once. One: while it is written the next one fills up (group
/// commit); measured on PostgreSQL, 4 concurrent batches averaged 60 completions per statement and
/// one averaged 150, for 25 % more events per second.
const CONCURRENT_BATCHES: usize = 1;

/// While due events wait for a free slot (the worker's last claim came back full), one key
/// hand-off in this many gives the key back to the queue instead: its next event is made due and
/// claimed like any other, after the events that have waited longer. Otherwise a worker with
/// fewer free slots than keys kept the keys it held for as long as they had events, and the keys
/// it did not hold waited until those ran dry (C2's oldest-first order, broken for as long; a
/// drain of 100,000 events over 1,000 keys with 800 slots spent its last quarter at half the
/// rate). A rotated key costs one more write and a claim, so it happens only under that backlog.
const HAND_OFF_ROTATION: u64 = 16;

/// Why a completion is written: an outcome of handlers, or a claim given back unprocessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Handlers ran; count the new status when it is persisted.
    Outcome,
    /// Shutdown began before the event ran; it goes back to the queue.
    Release,
}

/// One completion on its way to the store.
pub(crate) struct Pending {
    pub(crate) lease: Lease,
    pub(crate) completion: Completion,
    pub(crate) kind: Kind,
    /// The in-flight slot the event held, released once this is settled (or passed on to the
    /// key's next event when the store hands that to this worker).
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    /// When the event became deliverable, for the latency metric.
    pub(crate) since: DateTime<Utc>,
    /// Give up retrying transient failures after this (the lease will have expired).
    pub(crate) deadline: Instant,
    /// The next pause before a retry.
    pub(crate) pause: Duration,
    /// The event has an ordering key: once it is persisted as finished, the key's next event may
    /// be due.
    pub(crate) keyed: bool,
}

impl Pending {
    /// Whether persisting this completion hands the event's ordering key to its next event.
    fn hands_off_key(&self) -> bool {
        self.keyed && self.kind == Kind::Outcome && self.completion.status != EventStatus::Pending
    }
}

/// The sending side, shared by a worker's event tasks; the batching task starts with the worker.
pub(crate) struct Completer {
    tx: mpsc::UnboundedSender<Pending>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Pending>>>,
    max_batch: usize,
    /// Key-passing completions so far, for [`HAND_OFF_ROTATION`].
    key_passes: AtomicU64,
}

impl Completer {
    pub(crate) fn new(max_batch: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            max_batch: max_batch.max(1),
            key_passes: AtomicU64::new(0),
        }
    }

    /// How many of `passes` key-passing completions may hand their key to its next event here:
    /// all of them, but while due events wait for a slot every [`HAND_OFF_ROTATION`]th one gives
    /// its key back to the queue instead.
    fn hand_offs_allowed(&self, passes: usize, due_events_wait: bool) -> usize {
        if !due_events_wait {
            return passes;
        }
        let n = passes as u64;
        let before = self.key_passes.fetch_add(n, Ordering::Relaxed);
        let rotated = (before + n) / HAND_OFF_ROTATION - before / HAND_OFF_ROTATION;
        passes.saturating_sub(usize::try_from(rotated).unwrap_or(passes))
    }

    /// Starts the batching task (once; later calls do nothing). It ends when the worker is dropped.
    pub(crate) fn start(&self, shared: &Arc<Shared>) {
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(rx) = rx {
            tokio::spawn(batch_completions(
                Arc::downgrade(shared),
                rx,
                self.max_batch,
            ));
        }
    }

    /// Hands a completion over; it is written with the next batch.
    pub(crate) fn submit(&self, pending: Pending) {
        if let Err(mpsc::error::SendError(pending)) = self.tx.send(pending) {
            tracing::error!(event_id = %pending.lease.event_id, "the worker's completion queue is closed; the event will be redelivered after its lease");
        }
    }
}

async fn batch_completions(
    shared: std::sync::Weak<Shared>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    max_batch: usize,
) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_BATCHES));
    while let Some(first) = rx.recv().await {
        // Wait for a free slot first: whatever arrives meanwhile joins this batch.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        // Let event tasks that are finishing right now join this batch.
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            write_batch(&shared, batch).await;
            drop(slot);
        });
    }
}

async fn write_batch(shared: &Arc<Shared>, mut batch: Vec<Pending>) {
    let count = batch.len();
    shared.metrics.completion_batch();
    // Events that end their ordering key's turn may get the key's next event leased to this
    // worker in the same call; each runs in the slot its predecessor leaves.
    let passes = batch.iter().filter(|p| p.hands_off_key()).count();
    let hand_offs = if passes > 0 && shared.config.hand_off_keys {
        shared
            .completer
            .hand_offs_allowed(passes, shared.claims_full.load(Ordering::Relaxed))
    } else {
        0
    };
    // The completions are lent to the store and put back for `settle` (which retries transient
    // failures with them): no copy per event.
    let items: Vec<(Lease, Completion)> = batch
        .iter_mut()
        .map(|p| (p.lease, std::mem::replace(&mut p.completion, lent())))
        .collect();
    let sent = Instant::now();
    let handed = if hand_offs > 0 && !shared.stop_claiming.is_cancelled() {
        let next = ClaimRequest::new(
            shared.config.worker_id.clone(),
            hand_offs,
            shared.config.lease,
        );
        shared.store.complete_and_hand_off(&items, &next).await
    } else {
        HandOff::new(shared.store.complete_many(&items).await, Vec::new())
    };
    for (pending, (_, completion)) in batch.iter_mut().zip(items) {
        pending.completion = completion;
    }
    let mut results = handed.results;
    rewrite_refused(shared, &mut batch, &mut results).await;
    let mut results = results.into_iter();
    let mut successors = handed.next;
    let mut slots = Vec::with_capacity(successors.len());
    if results.len() != count {
        tracing::error!(
            expected = count,
            got = results.len(),
            "ClaimStore::complete_many returned the wrong number of results"
        );
    }
    let mut handed_off = false;
    for pending in batch {
        let result = results.next().unwrap_or_else(|| {
            Err(StoreError::unavailable(
                "the store returned no result for this completion",
            ))
        });
        let key_passed = result.is_ok() && pending.hands_off_key();
        handed_off |= key_passed;
        let mut pending = pending;
        if key_passed && slots.len() < successors.len() {
            slots.extend(pending.permit.take());
        }
        settle(shared, pending, result);
    }
    if !successors.is_empty() {
        shared.metrics.handed_off(successors.len());
        if successors.len() > slots.len() {
            // More than the store was asked for: give the extra ones back, claimable at once.
            tracing::error!(
                asked = hand_offs,
                got = successors.len(),
                "ClaimStore::complete_and_hand_off leased more events than asked for; giving them back"
            );
            for extra in successors.split_off(slots.len()) {
                give_back(shared, extra);
            }
        }
        for (event, slot) in successors.into_iter().zip(slots) {
            shared.spawn_event_task(event, slot, sent);
        }
    }
    if handed_off {
        // Keys passed to their next events: claim again now rather than after the poll interval
        // (SQLite has no wake-ups to say so) (measured: a keyed drain on SQLite ran at 0.16-0.25 of
        // the plain drain without this, 0.74 with it).
        shared.wake.notify_one();
    }
}

/// Whether a completion failed for a reason of its own: not a lost lease (fencing worked) and not
/// a passing fault (retried as it is).
fn refused(result: &Result<(), StoreError>) -> bool {
    matches!(result, Err(err) if !err.is_transient() && !matches!(err, StoreError::LeaseLost { .. }))
}

/// One item must not take the others' outcomes down with it, nor loop (C11): the items a store
/// refused for a reason of their own are written again one at a time (a whole batch fails when
/// one of its items cannot be written), and an item still refused alone is written in its
/// stripped form (no outputs or logs, short errors), which says why.
async fn rewrite_refused(
    shared: &Shared,
    batch: &mut [Pending],
    results: &mut [Result<(), StoreError>],
) {
    let batched = batch.len() > 1;
    for (pending, result) in batch.iter_mut().zip(results.iter_mut()) {
        if !refused(result) {
            continue;
        }
        if batched {
            *result = shared
                .store
                .complete(&pending.lease, pending.completion.clone())
                .await;
            if !refused(result) {
                continue;
            }
        }
        let why = match &*result {
            Err(err) => err.to_string(),
            Ok(()) => continue,
        };
        tracing::error!(
            event_id = %pending.lease.event_id,
            error = %crate::model::text::untrusted(&why),
            "the store refused this outcome; writing it without outputs and logs"
        );
        let stripped = crate::kit::storable::stripped(&pending.completion, &why);
        *result = shared
            .store
            .complete(&pending.lease, stripped.clone())
            .await;
        if result.is_ok() {
            pending.completion = stripped;
        }
    }
}

/// What stands in a [`Pending`] while its completion is lent to the store (no allocation).
fn lent() -> Completion {
    Completion {
        status: EventStatus::Pending,
        handler_results: crate::model::record::HandlerResults::new(),
        attempts: 0,
        retry_delay: None,
    }
}

/// Counts a persisted completion, or retries it, or gives up on it (the event is then redelivered
/// after its lease).
fn settle(shared: &Arc<Shared>, mut pending: Pending, result: Result<(), StoreError>) {
    let event_id = pending.lease.event_id;
    match result {
        Ok(()) => match pending.kind {
            Kind::Release => shared.metrics.released(),
            Kind::Outcome => {
                match pending.completion.status {
                    EventStatus::Processed => shared.metrics.processed(),
                    EventStatus::Dead => {
                        shared.metrics.dead();
                        let reason = pending
                            .completion
                            .handler_results
                            .iter()
                            .find(|(_, s)| s.gave_up)
                            .map(|(n, s)| {
                                format!("{n}: {}", s.last_error.as_deref().unwrap_or(""))
                            });
                        tracing::error!(%event_id, reason, "event is dead: a handler gave up");
                    }
                    EventStatus::Pending => shared.metrics.retried(),
                }
                if let Ok(latency) = (Utc::now() - pending.since).to_std() {
                    shared.metrics.latency(latency);
                }
            }
        },
        Err(StoreError::LeaseLost { .. }) => {
            shared.metrics.lease_lost();
            tracing::warn!(%event_id, "completion refused: lease lost; the event will be redelivered");
        }
        Err(err) if err.is_transient() && Instant::now() + pending.pause < pending.deadline => {
            shared.metrics.store_error();
            tracing::warn!(%event_id, error = %crate::model::text::untrusted(&err.to_string()), retry_in = ?pending.pause, "completion failed; retrying");
            let shared = Arc::clone(shared);
            tokio::spawn(async move {
                tokio::time::sleep(pending.pause).await;
                pending.pause = (pending.pause * 2).min(shared.config.store_backoff_max);
                shared.completer.submit(pending);
            });
        }
        Err(err) => {
            shared.metrics.store_error();
            tracing::error!(%event_id, error = %crate::model::text::untrusted(&err.to_string()), "completion failed; the event will be redelivered after its lease");
        }
    }
}

/// Gives back an event leased to this worker that it will not run (no slot for it): the claim
/// is undone, claimable at once by any worker.
pub(super) fn give_back(shared: &Shared, claimed: ClaimedEvent) {
    let completion = Completion {
        status: EventStatus::Pending,
        handler_results: claimed.record.handler_results.clone(),
        attempts: claimed.record.attempts.saturating_sub(1),
        retry_delay: None,
    };
    submit(
        shared,
        claimed.lease,
        completion,
        Kind::Release,
        &claimed.record,
        None,
    );
}

/// Hands an event's completion to the completer, unless the worker crashed (then the event
/// stays leased, as after a real crash). `permit` is the event's slot, freed once it is written.
pub(super) fn submit(
    shared: &Shared,
    lease: Lease,
    completion: Completion,
    kind: Kind,
    record: &EventRecord,
    permit: impl Into<Option<OwnedSemaphorePermit>>,
) {
    if shared.crashed() {
        // The worker was dropped without a shutdown: as after a crash, the event stays leased.
        return;
    }
    shared.completer.submit(Pending {
        lease,
        completion,
        kind,
        permit: permit.into(),
        since: record.available_at.max(record.created_at),
        deadline: tokio::time::Instant::now() + shared.config.lease,
        pause: shared.config.store_backoff_initial,
        keyed: record.ordering_key.is_some(),
    });
}
