//! The backend kit: contract logic every store needs, written once, for store authors.
//!
//! A backend implements the parts of [`store`](crate::store) with its driver and takes the
//! rules from here, so they hold the same on every backend:
//!
//! - [`CompletionBatch`] / [`renewal_results`]: the rows of a batched completion or renewal and
//!   the per-item results to answer (`LeaseLost` for exactly the stale ones).
//! - [`sort_in_due_order`]: due order (C2) for a claim statement that returns rows unordered.
//! - [`each_concurrently`]: a batch method answered one item at a time, for a store without a
//!   batch statement.
//! - [`CORRUPT_STATUS`], [`corrupt_reason`], [`column_damage`], [`decodable`]: setting poison
//!   rows aside (C11).
//! - [`storable`]: the bounds an outcome is cut to before any store sees it (C11).
//! - [`validate_name`]: configurable table, collection and key names checked against injection
//!   (C10).
//! - [`millis`], [`from_millis`], [`age_millis`]: durations and instants as stored integer
//!   milliseconds, one cap for all.
//! - [`requeue_dead_letter`]: the re-queue of a dead letter (C7) around a backend's write;
//!   [`reset_unfinished_handlers`], [`rename_handler`]: handler results on re-queue and rename.
//!
//! ```
//! use outbox_core::kit::validate_name;
//! assert!(validate_name("table", "outbox_events").is_ok());
//! assert!(validate_name("table", "events; DROP TABLE users").is_err());
//! ```

mod completions;
mod naming;
mod repair;
pub mod storable;
mod time;

use std::future::Future;

pub use async_trait::async_trait;
pub use completions::{CompletionBatch, CompletionRow, renewal_results};
pub use naming::validate_name;
pub use repair::requeue_dead_letter;
pub use time::{age_millis, from_millis, millis};

pub use crate::model::corrupt::{CORRUPT_STATUS, column_damage, corrupt_reason, decodable};
pub use crate::model::record::{rename_handler, reset_unfinished_handlers};

use crate::store::ClaimedEvent;

/// Answers a batch one item at a time, concurrently: `f` for each item, one result per item, in
/// order. For a store without a statement that completes or renews many leases at once.
///
/// ```
/// use outbox_core::kit::each_concurrently;
/// # futures::executor::block_on(async {
/// let doubled = each_concurrently(&[1, 2, 3], |n| async move { n * 2 }).await;
/// assert_eq!(doubled, vec![2, 4, 6]);
/// # });
/// ```
pub async fn each_concurrently<'a, T, R, F, Fut>(items: &'a [T], f: F) -> Vec<R>
where
    F: FnMut(&'a T) -> Fut,
    Fut: Future<Output = R>,
{
    futures::future::join_all(items.iter().map(f)).await
}

/// Sorts a claimed batch into due order, then creation order (C2), for stores whose claim
/// statement returns rows in no particular order. The due time of a claimed event is the later of
/// its schedule and its back-off.
///
/// ```
/// use outbox_core::NewEvent;
/// use outbox_core::kit::sort_in_due_order;
/// use outbox_core::store::ClaimedEvent;
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
