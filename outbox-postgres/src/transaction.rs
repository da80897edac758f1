//! Transactional handlers and the inbox on PostgreSQL (contract X1): [`PgTx`], the transaction a
//! handler runs in, and the store's [`TransactionalStore`] and [`InboxStore`] implementations.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outbox_core::StoreError;
use outbox_core::model::HandlerState;
use outbox_core::store::{InboxStore, Lease, StoreTransaction, TransactionalStore};
use sqlx::{PgConnection, Postgres};

use crate::error::map_sqlx;
use crate::store::PgStore;

/// A PostgreSQL transaction a transactional handler runs in. It dereferences to the
/// connection, so a handler taking `tx: &mut PgTx` writes with `.execute(&mut **tx)` and
/// enqueues follow-up events with `store.enqueue_in(tx, …)`.
///
/// ```
/// use outbox_core::{EventRecord, HandlerError, handler};
/// use outbox_postgres::PgTx;
///
/// #[handler(event = "UserInvited", transactional)]
/// async fn record_invite(event: EventRecord, tx: &mut PgTx) -> Result<(), HandlerError> {
///     sqlx::query("INSERT INTO invites_sent (event_id) VALUES ($1)")
///         .bind(event.id)
///         .execute(&mut **tx)
///         .await?;
///     Ok(()) // committed together with this handler's success
/// }
/// ```
pub struct PgTx {
    tx: sqlx::Transaction<'static, Postgres>,
}

impl StoreTransaction for PgTx {}

impl PgTx {
    /// Wraps a transaction the application began (tests, custom runtimes).
    pub fn from_sqlx(tx: sqlx::Transaction<'static, Postgres>) -> Self {
        Self { tx }
    }

    /// The sqlx transaction inside.
    pub fn into_sqlx(self) -> sqlx::Transaction<'static, Postgres> {
        self.tx
    }
}

impl std::fmt::Debug for PgTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTx").finish_non_exhaustive()
    }
}

impl std::ops::Deref for PgTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for PgTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

#[async_trait]
impl TransactionalStore for PgStore {
    type Tx = PgTx;

    async fn begin(&self) -> Result<PgTx, StoreError> {
        let tx = self
            .pool()
            .begin()
            .await
            .map_err(|e| map_sqlx("begin a handler's transaction", e))?;
        Ok(PgTx { tx })
    }

    async fn record_success_in(
        &self,
        tx: &mut PgTx,
        lease: &Lease,
        handler: &str,
        state: &HandlerState,
    ) -> Result<bool, StoreError> {
        let state = serde_json::to_string(state)
            .map_err(|e| StoreError::invalid(format!("handler state does not serialize: {e}")))?;
        // The row lock this takes holds off a competing claim until the transaction ends.
        let updated = sqlx::query(&self.queries().record_success)
            .bind(lease.event_id)
            .bind(lease.token)
            .bind(handler)
            .bind(state)
            .execute(&mut **tx)
            .await
            .map_err(|e| map_sqlx("record a handler's success in its transaction", e))?;
        Ok(updated.rows_affected() == 1)
    }

    async fn commit(&self, tx: PgTx) -> Result<(), StoreError> {
        tx.tx
            .commit()
            .await
            .map_err(|e| map_sqlx("commit a handler's transaction", e))
    }

    async fn rollback(&self, tx: PgTx) -> Result<(), StoreError> {
        tx.tx
            .rollback()
            .await
            .map_err(|e| map_sqlx("roll back a transaction", e))
    }
}

#[async_trait]
impl InboxStore for PgStore {
    async fn inbox_record(
        &self,
        tx: &mut PgTx,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(&self.queries().inbox_record)
            .bind(consumer)
            .bind(message_id)
            .execute(&mut **tx)
            .await
            .map_err(|e| map_sqlx("record a received message in the inbox", e))?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn inbox_purge(&self, consumer: &str, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = sqlx::query(&self.queries().inbox_purge)
            .bind(consumer)
            .bind(before)
            .execute(self.pool())
            .await
            .map_err(|e| map_sqlx("purge the inbox", e))?;
        Ok(purged.rows_affected())
    }
}
