//! [`StoreExt`]: conveniences on every [`Store`], built on the contract's batch forms.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::wait::Outcome;
#[cfg(doc)]
use super::{ClaimStore, InspectStore, RepairStore};
use super::{Completion, Enqueued, Finished, Lease, Store};
use crate::model::{Event, EventRecord, EventStatus, NewEvent, StoreError};

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

    /// Deletes dead letters that died before `older_than`; returns how many (C7):
    /// [`RepairStore::purge`] of [`Finished::Dead`].
    ///
    /// ```
    /// use outbox_core::StoreExt;
    /// # async fn demo(store: &dyn outbox_core::Store) -> Result<(), outbox_core::StoreError> {
    /// let month_ago = outbox_core::chrono::Utc::now() - outbox_core::chrono::Duration::days(30);
    /// println!("purged {} dead letters", store.purge_dead(month_ago).await?);
    /// # Ok(()) }
    /// ```
    async fn purge_dead(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        self.purge(Finished::Dead, older_than).await
    }

    /// Deletes events processed before `older_than`; returns how many (C7):
    /// [`RepairStore::purge`] of [`Finished::Processed`].
    ///
    /// ```
    /// use outbox_core::StoreExt;
    /// # async fn demo(store: &dyn outbox_core::Store) -> Result<(), outbox_core::StoreError> {
    /// let week_ago = outbox_core::chrono::Utc::now() - outbox_core::chrono::Duration::days(7);
    /// println!("purged {} processed events", store.purge_processed(week_ago).await?);
    /// # Ok(()) }
    /// ```
    async fn purge_processed(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        self.purge(Finished::Processed, older_than).await
    }

    /// Records one outcome and releases its lease, fenced by the lease token (C3): one item of
    /// [`ClaimStore::complete_many`].
    ///
    /// ```
    /// use outbox_core::StoreExt;
    /// use outbox_core::store::{Completion, Lease};
    /// # async fn demo(store: &dyn outbox_core::Store, lease: Lease, done: Completion) {
    /// if let Err(e) = store.complete(&lease, done).await {
    ///     println!("not recorded: {e}");
    /// }
    /// # }
    /// ```
    async fn complete(&self, lease: &Lease, completion: Completion) -> Result<(), StoreError> {
        let mut results = self.complete_many(&[(*lease, completion)]).await;
        results.pop().unwrap_or_else(|| {
            Err(StoreError::invalid(
                "store returned no result for a completion",
            ))
        })
    }

    /// Extends one held lease by `extend` from the store's now and returns the new expiry (C4):
    /// one item of [`ClaimStore::renew_many`].
    ///
    /// ```
    /// use outbox_core::StoreExt;
    /// # async fn demo(store: &dyn outbox_core::Store, lease: outbox_core::store::Lease) {
    /// match store.renew_lease(&lease, std::time::Duration::from_secs(30)).await {
    ///     Ok(until) => println!("held until {until}"),
    ///     Err(e) => println!("lost: {e}"),
    /// }
    /// # }
    /// ```
    async fn renew_lease(
        &self,
        lease: &Lease,
        extend: Duration,
    ) -> Result<DateTime<Utc>, StoreError> {
        let mut results = self.renew_many(vec![*lease], extend).await;
        results.pop().unwrap_or_else(|| {
            Err(StoreError::invalid(
                "store returned no result for a renewal",
            ))
        })
    }

    /// Waits until event `id` is processed or dead (contract W1), or `timeout` runs out: the
    /// outcome with each handler's stored output, or the reason it died. Reads the event with
    /// a growing pause (2 ms doubling to 100 ms): stores' wake-ups announce new work, not
    /// outcomes. An unknown id is [`StoreError::NotFound`]; an event deleted after processing
    /// (a retention that deletes) is [`Outcome::Deleted`].
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
    async fn wait_for(&self, id: Uuid, timeout: Duration) -> Result<Outcome, StoreError> {
        super::wait::wait_for(self, id, timeout).await
    }

    /// The event that `record` waits behind, if any: the head of its ordering key's line while it
    /// is pending ([`InspectStore::key_head`]; the record itself when it heads the line), what
    /// [`explain`](crate::ops::explain) takes.
    ///
    /// ```
    /// use outbox_core::StoreExt;
    /// # async fn demo(store: &dyn outbox_core::Store, record: outbox_core::EventRecord) -> Result<(), outbox_core::StoreError> {
    /// let head = store.key_head_of(&record).await?;
    /// let why = outbox_core::ops::explain(&record, head.as_ref(), outbox_core::chrono::Utc::now());
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
    async fn enqueue_event<E: Event>(&self, event: &E) -> Result<Enqueued, StoreError>
    where
        Self: Sized,
    {
        let new = NewEvent::from_event(event)
            .map_err(|e| StoreError::invalid(format!("event does not serialize: {e}")))?;
        self.enqueue(new).await
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
