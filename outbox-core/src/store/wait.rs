//! Waiting for an event's outcome (contract W1): [`StoreExt::wait_for`](crate::store::StoreExt::wait_for)
//! returns once the event is processed or dead, or when the timeout runs out.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::model::error::StoreError;
use crate::model::record::{EventRecord, EventStatus};
use crate::store::Store;

/// The first pause between two reads of a waited-for event; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(2);
/// The longest pause between two reads.
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// What [`StoreExt::wait_for`](crate::store::StoreExt::wait_for) found.
///
/// ```
/// use outbox_core::{NewEvent, Outcome};
/// let record = NewEvent::new("T", outbox_core::serde_json::json!({})).into_record(outbox_core::chrono::Utc::now());
/// let outcome = Outcome::TimedOut(record);
/// assert!(!outcome.is_final());
/// assert!(outcome.outputs().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// Every handler succeeded; the record holds each handler's stored output.
    Processed(EventRecord),
    /// A handler gave up; the record holds the reason ([`EventRecord::give_up_reason`]).
    Dead(EventRecord),
    /// The event was there, then gone: processed and deleted by the store's retention
    /// (`Retention::DeleteProcessed` on PostgreSQL), so its outputs are not kept.
    Deleted,
    /// Still pending when the timeout ran out: the record as last read.
    TimedOut(EventRecord),
}

impl Outcome {
    /// Whether the event reached its final outcome (processed, dead or deleted after processing).
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::TimedOut(_))
    }

    /// The record, when there is one.
    pub fn record(&self) -> Option<&EventRecord> {
        match self {
            Self::Processed(r) | Self::Dead(r) | Self::TimedOut(r) => Some(r),
            Self::Deleted => None,
        }
    }

    /// Each handler's stored output, by handler name (handlers that returned none are left out).
    pub fn outputs(&self) -> BTreeMap<&str, &serde_json::Value> {
        self.record()
            .map(|r| {
                r.handler_results
                    .iter()
                    .filter_map(|(name, state)| Some((name.as_str(), state.output.as_ref()?)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Reads `id` until it is processed or dead or `timeout` runs out, pausing 2 ms between reads,
/// doubling up to 100 ms.
pub(crate) async fn wait_for<S: Store + ?Sized>(
    store: &S,
    id: Uuid,
    timeout: Duration,
) -> Result<Outcome, StoreError> {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    let mut seen = false;
    loop {
        let record = match store.get(id).await? {
            Some(record) => record,
            None if seen => return Ok(Outcome::Deleted),
            None => return Err(StoreError::NotFound { event_id: id }),
        };
        seen = true;
        match record.status {
            EventStatus::Processed => return Ok(Outcome::Processed(record)),
            EventStatus::Dead => return Ok(Outcome::Dead(record)),
            EventStatus::Pending => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Outcome::TimedOut(record));
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}
