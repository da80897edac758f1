//! Transactional handlers and the inbox on SQLite (contract X1): [`SqliteTx`], the transaction a
//! handler runs in, and the store's [`TransactionalStore`] and [`InboxStore`] implementations.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outbox_core::StoreError;
use outbox_core::model::HandlerState;
use outbox_core::store::{InboxStore, Lease, StoreTransaction, TransactionalStore};
use sqlx::{Sqlite, SqliteConnection};

use crate::error::map_sqlx;
use crate::row::{now_millis, to_millis};
use crate::store::SqliteStore;

/// A SQLite transaction a transactional handler runs in, begun with `BEGIN IMMEDIATE`: it holds
/// the database's write lock from its start, so keep transactional handlers short (SQLite admits
/// one writer at a time, the outbox's own claims and completions included). It dereferences to the
/// connection, so a handler taking `tx: &mut SqliteTx` writes with `.execute(&mut **tx)` and
/// enqueues follow-up events with `store.enqueue_in(tx, …)`.
///
/// ```
/// use outbox_core::{EventRecord, HandlerError, handler};
/// use outbox_sqlite::SqliteTx;
///
/// #[handler(event = "UserInvited", transactional)]
/// async fn record_invite(event: EventRecord, tx: &mut SqliteTx) -> Result<(), HandlerError> {
///     sqlx::query("INSERT INTO invites_sent (event_id) VALUES (?1)")
///         .bind(event.id.to_string())
///         .execute(&mut **tx)
///         .await?;
///     Ok(()) // committed together with this handler's success
/// }
/// ```
pub struct SqliteTx {
    tx: sqlx::Transaction<'static, Sqlite>,
}

impl StoreTransaction for SqliteTx {}

impl SqliteTx {
    /// Wraps a transaction the application began (tests, custom runtimes).
    pub fn from_sqlx(tx: sqlx::Transaction<'static, Sqlite>) -> Self {
        Self { tx }
    }

    /// The sqlx transaction inside.
    pub fn into_sqlx(self) -> sqlx::Transaction<'static, Sqlite> {
        self.tx
    }
}

impl std::fmt::Debug for SqliteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTx").finish_non_exhaustive()
    }
}

impl std::ops::Deref for SqliteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for SqliteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

#[async_trait]
impl TransactionalStore for SqliteStore {
    type Tx = SqliteTx;

    async fn begin(&self) -> Result<SqliteTx, StoreError> {
        let tx = self
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| map_sqlx("begin a handler's transaction", e))?;
        Ok(SqliteTx { tx })
    }

    async fn record_success_in(
        &self,
        tx: &mut SqliteTx,
        lease: &Lease,
        handler: &str,
        state: &HandlerState,
    ) -> Result<bool, StoreError> {
        let state = serde_json::to_string(state)
            .map_err(|e| StoreError::invalid(format!("handler state does not serialize: {e}")))?;
        // The row lock this takes holds off a competing claim until the transaction ends.
        let updated = sqlx::query(&self.queries().record_success)
            .bind(lease.event_id.to_string())
            .bind(lease.token.simple().to_string())
            .bind(handler)
            .bind(state)
            .execute(&mut **tx)
            .await
            .map_err(|e| map_sqlx("record a handler's success in its transaction", e))?;
        Ok(updated.rows_affected() == 1)
    }

    async fn commit(&self, tx: SqliteTx) -> Result<(), StoreError> {
        tx.tx
            .commit()
            .await
            .map_err(|e| map_sqlx("commit a handler's transaction", e))
    }

    async fn rollback(&self, tx: SqliteTx) -> Result<(), StoreError> {
        tx.tx
            .rollback()
            .await
            .map_err(|e| map_sqlx("roll back a transaction", e))
    }
}

#[async_trait]
impl InboxStore for SqliteStore {
    async fn inbox_record(
        &self,
        tx: &mut SqliteTx,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(&self.queries().inbox_record)
            .bind(consumer)
            .bind(message_id)
            .bind(now_millis())
            .execute(&mut **tx)
            .await
            .map_err(|e| map_sqlx("record a received message in the inbox", e))?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn inbox_purge(&self, consumer: &str, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = sqlx::query(&self.queries().inbox_purge)
            .bind(consumer)
            .bind(to_millis(before))
            .execute(self.pool())
            .await
            .map_err(|e| map_sqlx("purge the inbox", e))?;
        Ok(purged.rows_affected())
    }
}
