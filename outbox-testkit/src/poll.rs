//! Polling helpers for tests that wait on a store or a worker: [`wait_until`] a condition holds,
//! [`wait_drained`] until nothing is pending. Each fails with a message naming what it waited
//! for, instead of hanging.

use std::future::Future;
use std::time::Duration;

use outbox_core::Store;

use crate::Failure;

/// Polls `check` every 20 ms until it returns true, or fails after `limit` with `what`.
///
/// ```
/// use outbox_core::NewEvent;
/// use outbox_core::prelude::*;
/// use outbox_testkit::{MemoryStore, wait_until};
/// use std::time::Duration;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let id = store.enqueue(NewEvent::new("T", serde_json::json!({}))).await.unwrap().id;
/// wait_until(Duration::from_secs(1), "the event is stored", || async {
///     Ok(store.get(id).await?.is_some())
/// })
/// .await
/// .unwrap();
/// # });
/// ```
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<(), Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, Failure>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(format!(
                "timed out after {limit:?} waiting until {what}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no event is pending, or fails after `limit`.
pub async fn wait_drained<S: Store>(store: &S, limit: Duration) -> Result<(), Failure> {
    wait_until(limit, "no event is pending", || async {
        Ok(store.stats().await?.pending == 0)
    })
    .await
}
