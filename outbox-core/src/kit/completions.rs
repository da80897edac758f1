//! Helpers for backends that complete or renew many leases in one statement or script: the rows to
//! send, and the per-item results to answer (so every backend maps them the same way).

use super::time::millis;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::error::StoreError;
use crate::model::record::EventStatus;
use crate::store::{Completion, Lease};

/// One completion ready for a batch statement.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRow {
    /// The event.
    pub event_id: Uuid,
    /// The lease token that fences the write.
    pub token: Uuid,
    /// The new status.
    pub status: EventStatus,
    /// The handler results as JSON text.
    pub results_json: String,
    /// The attempt count to store.
    pub attempts: u32,
    /// The retry delay in milliseconds, for a `Pending` status that waits.
    pub retry_delay_ms: Option<i64>,
}

/// The completions of one `ClaimStore::complete_many` call, encoded for one statement, and the
/// mapping of what the statement applied back to one result per item.
///
/// ```
/// use std::collections::HashSet;
/// use outbox_core::store::{Completion, Lease};
/// use outbox_core::kit::CompletionBatch;
/// use outbox_core::EventStatus;
/// use outbox_core::model::HandlerResults;
///
/// let lease = Lease { event_id: uuid::Uuid::now_v7(), token: uuid::Uuid::now_v7() };
/// let done = Completion { status: EventStatus::Processed, handler_results: HandlerResults::new(), attempts: 1, retry_delay: None };
/// let batch = CompletionBatch::new(&[(lease, done)]);
/// assert_eq!(batch.rows()[0].results_json, "{}");
/// // The statement applied nothing: the lease was lost.
/// let results = batch.results(&HashSet::new());
/// assert!(matches!(results[0], Err(outbox_core::StoreError::LeaseLost { .. })));
/// ```
#[derive(Debug)]
pub struct CompletionBatch {
    leases: Vec<Lease>,
    rows: Vec<CompletionRow>,
    rejected: HashMap<usize, String>,
}

impl CompletionBatch {
    /// Encodes each completion; one whose results do not serialize is left out of the rows and
    /// answered with `InvalidRequest`.
    pub fn new(items: &[(Lease, Completion)]) -> Self {
        let mut leases = Vec::with_capacity(items.len());
        let mut rows = Vec::with_capacity(items.len());
        let mut rejected = HashMap::new();
        for (n, (lease, completion)) in items.iter().enumerate() {
            leases.push(*lease);
            match serde_json::to_string(&completion.handler_results) {
                Ok(results_json) => rows.push(CompletionRow {
                    event_id: lease.event_id,
                    token: lease.token,
                    status: completion.status,
                    results_json,
                    attempts: completion.attempts,
                    retry_delay_ms: completion.retry_delay.map(millis),
                }),
                Err(e) => {
                    rejected.insert(n, format!("handler results do not serialize: {e}"));
                }
            }
        }
        Self {
            leases,
            rows,
            rejected,
        }
    }

    /// The rows to send, in item order.
    pub fn rows(&self) -> &[CompletionRow] {
        &self.rows
    }

    /// One result per item, given the lease tokens the statement applied: the others lost their
    /// lease (C3).
    pub fn results(self, applied_tokens: &HashSet<Uuid>) -> Vec<Result<(), StoreError>> {
        self.results_where(|token| applied_tokens.contains(token))
    }

    /// One result per item, given the lease tokens of the rows sent that the statement did *not*
    /// apply (they lost their lease, C3); the others were applied. For statements that answer
    /// with the exceptions only (usually none) rather than a row per applied completion.
    ///
    /// ```
    /// use std::collections::HashSet;
    /// use outbox_core::store::{Completion, Lease};
    /// use outbox_core::kit::CompletionBatch;
    /// use outbox_core::EventStatus;
    /// use outbox_core::model::HandlerResults;
    ///
    /// let lease = Lease { event_id: uuid::Uuid::now_v7(), token: uuid::Uuid::now_v7() };
    /// let done = Completion { status: EventStatus::Processed, handler_results: HandlerResults::new(), attempts: 1, retry_delay: None };
    /// let batch = CompletionBatch::new(&[(lease, done)]);
    /// assert!(batch.results_except(&HashSet::new())[0].is_ok());
    /// ```
    pub fn results_except(self, lost_tokens: &HashSet<Uuid>) -> Vec<Result<(), StoreError>> {
        self.results_where(|token| !lost_tokens.contains(token))
    }

    fn results_where(self, applied: impl Fn(&Uuid) -> bool) -> Vec<Result<(), StoreError>> {
        let Self {
            leases,
            mut rejected,
            ..
        } = self;
        leases
            .into_iter()
            .enumerate()
            .map(|(n, lease)| {
                if let Some(message) = rejected.remove(&n) {
                    Err(StoreError::invalid(message))
                } else if applied(&lease.token) {
                    Ok(())
                } else {
                    Err(StoreError::LeaseLost {
                        event_id: lease.event_id,
                    })
                }
            })
            .collect()
    }

    /// One result per item when the whole statement failed: nothing was applied, every item fails
    /// alike (keeping the error's kind).
    pub fn failed(self, err: &StoreError) -> Vec<Result<(), StoreError>> {
        let Self {
            leases,
            mut rejected,
            ..
        } = self;
        (0..leases.len())
            .map(|n| match rejected.remove(&n) {
                Some(message) => Err(StoreError::invalid(message)),
                None => Err(err.replicate()),
            })
            .collect()
    }
}

/// One result per lease of a `ClaimStore::renew_many` call, given the new expiry per renewed lease
/// token: a lease missing from `renewed` is lost (C4).
///
/// ```
/// use std::collections::HashMap;
/// use outbox_core::store::Lease;
/// use outbox_core::kit::renewal_results;
/// let lease = Lease { event_id: uuid::Uuid::now_v7(), token: uuid::Uuid::now_v7() };
/// let results = renewal_results(&[lease], &HashMap::new());
/// assert!(results[0].is_err());
/// ```
pub fn renewal_results(
    leases: &[Lease],
    renewed: &HashMap<Uuid, DateTime<Utc>>,
) -> Vec<Result<DateTime<Utc>, StoreError>> {
    leases
        .iter()
        .map(|lease| {
            renewed
                .get(&lease.token)
                .copied()
                .ok_or(StoreError::LeaseLost {
                    event_id: lease.event_id,
                })
        })
        .collect()
}
