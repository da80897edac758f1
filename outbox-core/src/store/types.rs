//! The values that cross the store contract: what a claim asks for and returns, the lease that
//! fences it, the outcome written back, and what enqueueing answers.

use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use uuid::Uuid;

use crate::model::{EventRecord, EventStatus, HandlerResults, StoreError};
#[cfg(doc)]
use crate::store::{ClaimStore, RepairStore};

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
/// use outbox_core::store::ClaimRequest;
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
    /// use outbox_core::store::ClaimedEvent;
    /// use outbox_core::NewEvent;
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

/// The outcome of one claim, written with [`ClaimStore::complete_many`] while the lease is held.
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

/// The two ways an event finishes for good, and what [`RepairStore::purge`] deletes.
///
/// ```
/// use outbox_core::EventStatus;
/// use outbox_core::store::Finished;
///
/// assert_eq!(Finished::Dead.status(), EventStatus::Dead);
/// assert_eq!(Finished::Processed.status().as_str(), "processed");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Finished {
    /// Every handler succeeded or was settled.
    Processed,
    /// Retries were exhausted or a handler failed permanently: a dead letter.
    Dead,
}

impl Finished {
    /// The status events that finished this way have.
    pub fn status(self) -> EventStatus {
        match self {
            Self::Processed => EventStatus::Processed,
            Self::Dead => EventStatus::Dead,
        }
    }
}

/// What [`ClaimStore::complete_and_hand_off`] did: one result per completion, in order, and the
/// successors it leased to the worker.
#[derive(Debug)]
#[non_exhaustive]
pub struct HandOff {
    /// One result per completion, as [`ClaimStore::complete_many`] returns them.
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

/// A stream of wake-up signals: each item means "new events may be claimable".
pub type WakeupStream = Pin<Box<dyn Stream<Item = ()> + Send + 'static>>;
