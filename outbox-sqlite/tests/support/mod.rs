//! The conformance-suite factory for SQLite: one temporary database file per namespace.

#![allow(dead_code, unreachable_pub)]

use outbox_core::{Enqueued, NewEvent, StoreError};
use outbox_sqlite::SqliteStore;
use outbox_testkit::{StoreFactory, TestTransaction};
use sqlx::{Sqlite, Transaction};

/// Keeps its temporary directory (and so every database file) alive while tests use it.
#[derive(Debug)]
pub struct SqliteFactory {
    dir: tempfile::TempDir,
}

impl SqliteFactory {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }
}

#[outbox_core::async_trait]
impl StoreFactory for SqliteFactory {
    type Store = SqliteStore;

    async fn create(&self, namespace: &str) -> Result<SqliteStore, StoreError> {
        outbox_core::validate_name("namespace", namespace)?;
        SqliteStore::open(self.dir.path().join(format!("{namespace}.db"))).await
    }

    async fn begin(
        &self,
        store: &SqliteStore,
    ) -> Result<Option<Box<dyn TestTransaction>>, StoreError> {
        let tx = store
            .pool()
            .begin()
            .await
            .map_err(|e| StoreError::unavailable(format!("begin: {e}")))?;
        Ok(Some(Box::new(SqliteTestTransaction {
            tx,
            store: store.clone(),
        })))
    }

    /// The poison row of issue 14: a payload that is not JSON and handler results that are not an
    /// object.
    async fn damage(&self, store: &SqliteStore, id: uuid::Uuid) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox_events SET payload = 'not json', handler_results = '[1,2]' WHERE id = ?1",
        )
        .bind(id.to_string())
        .execute(store.pool())
        .await
        .map_err(|e| StoreError::unavailable(format!("damage: {e}")))?;
        Ok(done.rows_affected() == 1)
    }

    async fn repair(&self, store: &SqliteStore, id: uuid::Uuid) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox_events SET payload = '{\"n\":\"repaired\"}', handler_results = '{}' WHERE id = ?1",
        )
        .bind(id.to_string())
        .execute(store.pool())
        .await
        .map_err(|e| StoreError::unavailable(format!("repair: {e}")))?;
        Ok(done.rows_affected() == 1)
    }
}

struct SqliteTestTransaction {
    tx: Transaction<'static, Sqlite>,
    store: SqliteStore,
}

#[outbox_core::async_trait]
impl TestTransaction for SqliteTestTransaction {
    async fn enqueue(&mut self, event: NewEvent) -> Result<Enqueued, StoreError> {
        self.store.enqueue_in(&mut self.tx, event).await
    }
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.tx
            .commit()
            .await
            .map_err(|e| StoreError::unavailable(format!("commit: {e}")))
    }
    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        self.tx
            .rollback()
            .await
            .map_err(|e| StoreError::unavailable(format!("rollback: {e}")))
    }
}
