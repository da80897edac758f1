//! The conformance-suite factory for SQLite: one temporary database file per namespace.

#![allow(dead_code, unreachable_pub)]

use outbox_core::StoreError;
use outbox_sqlite::SqliteStore;
use outbox_testkit::{Damage, StoreFactory, TestTransaction};

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

#[outbox_core::kit::async_trait]
impl StoreFactory for SqliteFactory {
    type Store = SqliteStore;

    async fn create(&self, namespace: &str) -> Result<SqliteStore, StoreError> {
        outbox_core::kit::validate_name("namespace", namespace)?;
        SqliteStore::open(self.dir.path().join(format!("{namespace}.db"))).await
    }

    async fn begin(
        &self,
        store: &SqliteStore,
    ) -> Result<Option<Box<dyn TestTransaction>>, StoreError> {
        Ok(Some(outbox_testkit::begin_enqueue_in(store).await?))
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

    async fn damage_field(
        &self,
        store: &SqliteStore,
        id: uuid::Uuid,
        what: Damage,
    ) -> Result<bool, StoreError> {
        // The schema's NOT NULL and CHECK constraints keep a missing field or an unknown status
        // out of the table.
        let set = match what {
            Damage::Payload => "payload = 'not json'",
            Damage::HandlerResults => "handler_results = '[1,2]'",
            Damage::Attempts => "attempts = 'many'",
            Damage::Timestamp => "available_at = 'yesterday'",
            _ => return Ok(false),
        };
        let done = sqlx::query(&format!("UPDATE outbox_events SET {set} WHERE id = ?1"))
            .bind(id.to_string())
            .execute(store.pool())
            .await
            .map_err(|e| StoreError::unavailable(format!("damage {what:?}: {e}")))?;
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

/// The X1 clause's effects table: one row per handler write; a write that must fail at commit
/// references a parent row that does not exist through a deferred foreign key.
pub struct SqliteEffects {
    pool: sqlx::SqlitePool,
}

#[outbox_core::kit::async_trait]
impl outbox_testkit::suite::EffectTable<outbox_sqlite::SqliteTx> for SqliteEffects {
    async fn write(
        &self,
        tx: &mut outbox_sqlite::SqliteTx,
        event_id: uuid::Uuid,
        fail_at_commit: bool,
    ) -> Result<(), StoreError> {
        let parent = fail_at_commit.then(|| uuid::Uuid::now_v7().to_string());
        sqlx::query("INSERT INTO x1_effects (event_id, parent) VALUES (?1, ?2)")
            .bind(event_id.to_string())
            .bind(parent)
            .execute(&mut **tx)
            .await
            .map_err(|e| StoreError::unavailable(format!("write an effect: {e}")))?;
        Ok(())
    }

    async fn count(&self, event_id: uuid::Uuid) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM x1_effects WHERE event_id = ?1")
            .bind(event_id.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::unavailable(format!("count effects: {e}")))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// Creates the X1 effects tables in `store`'s database.
pub async fn sqlite_effects(store: &SqliteStore) -> Result<SqliteEffects, StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS x1_parent (id TEXT PRIMARY KEY);
         CREATE TABLE IF NOT EXISTS x1_effects (
             event_id TEXT NOT NULL,
             parent   TEXT REFERENCES x1_parent (id) DEFERRABLE INITIALLY DEFERRED
         );
         DELETE FROM x1_effects;",
    )
    .execute(store.pool())
    .await
    .map_err(|e| StoreError::unavailable(format!("create the effects table: {e}")))?;
    Ok(SqliteEffects {
        pool: store.pool().clone(),
    })
}

#[outbox_core::kit::async_trait]
impl outbox_testkit::suite::TransactionalFactory for SqliteFactory {
    type Effects = SqliteEffects;

    async fn effects(
        &self,
        store: &SqliteStore,
        _namespace: &str,
    ) -> Result<SqliteEffects, StoreError> {
        sqlite_effects(store).await
    }
}
