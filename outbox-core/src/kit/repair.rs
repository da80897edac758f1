//! The contract's re-queue of a dead letter (C7), for stores that write it in two steps: read the
//! event, then write it back while it is still dead.

use std::future::Future;

use crate::model::record::reset_unfinished_handlers;
use crate::model::{EventRecord, EventStatus, StoreError};

/// Re-queues `record` if it is a dead letter (C7): computes the handler results it goes back with
/// — handlers that had not succeeded start over, successes and settled handlers stay — encodes
/// them as JSON text and calls `write` with them. `write` stores them and makes the event pending
/// (attempts 0, due now, no back-off, no `processed_at`) **only while it is still dead**, and
/// answers whether it did. A record that is not dead is answered `false` without calling `write`.
///
/// ```
/// use outbox_core::kit::requeue_dead_letter;
/// use outbox_core::{EventStatus, NewEvent};
/// # futures::executor::block_on(async {
/// let mut record = NewEvent::new("UserInvited", serde_json::json!({})).into_record(chrono::Utc::now());
/// record.status = EventStatus::Dead;
/// let requeued = requeue_dead_letter(record, |results| async move {
///     // UPDATE events SET status = 'pending', handler_results = $results, …
///     //  WHERE id = $id AND status = 'dead'
///     assert_eq!(results, "{}");
///     Ok(true)
/// })
/// .await;
/// assert!(requeued.unwrap());
/// # });
/// ```
pub async fn requeue_dead_letter<W, Fut>(record: EventRecord, write: W) -> Result<bool, StoreError>
where
    W: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<bool, StoreError>>,
{
    if record.status != EventStatus::Dead {
        return Ok(false);
    }
    let mut results = record.handler_results;
    reset_unfinished_handlers(&mut results);
    let results = serde_json::to_string(&results)
        .map_err(|e| StoreError::invalid(format!("handler results do not serialize: {e}")))?;
    write(results).await
}
