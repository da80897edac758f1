//! The inbox (contract X1, consumer side): de-duplication of messages that arrive from a broker,
//! recorded in the caller's own transaction.
//!
//! A consumer that writes a message's effects to its database receives the message inside the
//! transaction of those writes: [`Inbox::receive_in`] records the message id there and says
//! whether it was received before. A redelivered message is then skipped, and a message whose
//! transaction rolled back is not marked received.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::model::error::{ConfigError, StoreError};
use crate::store::transactions::TransactionalStore;

/// The longest message id the inbox accepts, in bytes.
pub const MAX_MESSAGE_ID_BYTES: usize = 512;

/// A store that keeps an inbox of received message ids (PostgreSQL, SQLite, MongoDB).
#[async_trait]
pub trait InboxStore: TransactionalStore {
    /// Inside `tx`, records that `consumer` received `message_id`; `true` the first time, `false`
    /// when it was recorded before (by a committed transaction). A concurrent transaction
    /// recording the same id makes this one wait for it (or fail with a conflict).
    async fn inbox_record(
        &self,
        tx: &mut Self::Tx,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, StoreError>;

    /// Forgets the ids `consumer` received before `before`; returns how many.
    async fn inbox_purge(&self, consumer: &str, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// What [`Inbox::receive_in`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a duplicate message must not be applied again"]
pub enum Receipt {
    /// The first time this message was received: apply it (in the same transaction).
    First,
    /// Received before: skip it (commit or roll back; nothing was written).
    Duplicate,
}

impl Receipt {
    /// Whether the message was received before.
    ///
    /// ```
    /// assert!(outbox_core::Receipt::Duplicate.is_duplicate());
    /// ```
    pub fn is_duplicate(self) -> bool {
        self == Self::Duplicate
    }
}

/// Consumer-side de-duplication for one consumer (a name for the code that applies messages).
///
/// ```no_run
/// use outbox_core::{Inbox, Receipt};
/// use outbox_core::store::InboxStore;
///
/// // `store` is e.g. an `outbox_postgres::PgStore`, `S::Tx` its `PgTx`.
/// async fn consume<S: InboxStore + Clone>(store: S, message_id: &str) -> Result<(), Box<dyn std::error::Error>> {
/// let inbox = Inbox::new(store.clone(), "invite-mailer")?.retention(std::time::Duration::from_secs(7 * 86_400));
/// let mut tx = store.begin().await?;
/// if inbox.receive_in(&mut tx, message_id).await? == Receipt::First {
///     // apply the message's effects through `&mut **tx`
/// }
/// store.commit(tx).await?;
/// inbox.purge_expired().await?; // now and then: forget ids older than the retention
/// Ok(())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Inbox<S> {
    store: S,
    consumer: String,
    retention: Duration,
}

impl<S: InboxStore> Inbox<S> {
    /// The inbox of `consumer` in `store`, keeping ids for 7 days. The name must be 1–200
    /// bytes.
    pub fn new(store: S, consumer: impl Into<String>) -> Result<Self, ConfigError> {
        let consumer = consumer.into();
        if consumer.trim().is_empty() || consumer.len() > 200 {
            return Err(ConfigError::new(
                "inbox consumer",
                format!(
                    "must be 1 to 200 bytes and not blank, got {} bytes",
                    consumer.len()
                ),
            ));
        }
        Ok(Self {
            store,
            consumer,
            retention: Duration::from_secs(7 * 24 * 3600),
        })
    }

    /// How long received ids are kept: a message redelivered later than this after its first
    /// delivery is applied again. Choose it longer than the broker's redelivery horizon.
    #[must_use]
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The consumer's name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Records `message_id` in `tx` and says whether it was received before. The record commits
    /// or rolls back with the caller's writes.
    pub async fn receive_in(
        &self,
        tx: &mut S::Tx,
        message_id: &str,
    ) -> Result<Receipt, StoreError> {
        if message_id.is_empty() || message_id.len() > MAX_MESSAGE_ID_BYTES {
            return Err(StoreError::invalid(format!(
                "inbox message id must be 1 to {MAX_MESSAGE_ID_BYTES} bytes, got {}",
                message_id.len()
            )));
        }
        let first = self
            .store
            .inbox_record(tx, &self.consumer, message_id)
            .await?;
        Ok(if first {
            Receipt::First
        } else {
            Receipt::Duplicate
        })
    }

    /// Forgets the ids received longer ago than the retention; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let retention = chrono::Duration::from_std(self.retention)
            .unwrap_or_else(|_| chrono::Duration::days(365 * 100));
        let before = Utc::now()
            .checked_sub_signed(retention)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        self.store.inbox_purge(&self.consumer, before).await
    }
}
