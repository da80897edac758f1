//! The conformance-suite factory for PostgreSQL: one schema per test, in the database named by
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/outbox_test`).

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use outbox_core::StoreError;
use outbox_core::prelude::*;
use outbox_postgres::PgStore;
use outbox_testkit::{Damage, StoreFactory, TestTransaction};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/outbox_test";

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// The URL without credentials, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

pub async fn connect() -> Result<PgPool, StoreError> {
    connect_to(&database_url()).await
}

/// A pool whose connections carry `application_name`, so a test can find (and kill) only its own.
pub async fn connect_named(application_name: &str) -> Result<PgPool, StoreError> {
    let url = database_url();
    let options: sqlx::postgres::PgConnectOptions = url
        .parse()
        .map_err(|e| StoreError::invalid(format!("DATABASE_URL is not a valid URL: {e}")))?;
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.application_name(application_name))
        .await
        .map_err(|err| {
            StoreError::unavailable(format!(
                "cannot reach PostgreSQL at {}: {err}",
                redacted(&url)
            ))
        })
}

pub async fn connect_to(url: &str) -> Result<PgPool, StoreError> {
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|err| {
            StoreError::unavailable(format!(
                "cannot reach PostgreSQL at {}: {err}. Start it (and create the database) with \
                 `./scripts/services.sh`, or point DATABASE_URL at a server",
                redacted(url)
            ))
        })
}

#[derive(Debug, Default)]
pub struct PgFactory;

#[outbox_core::kit::async_trait]
impl StoreFactory for PgFactory {
    type Store = PgStore;

    async fn create(&self, namespace: &str) -> Result<PgStore, StoreError> {
        outbox_core::kit::validate_name("namespace", namespace)?;
        let store = PgStore::builder(connect().await?)
            .schema(namespace)
            .build()?;
        store.migrate().await?;
        Ok(store)
    }

    async fn begin(&self, store: &PgStore) -> Result<Option<Box<dyn TestTransaction>>, StoreError> {
        Ok(Some(outbox_testkit::begin_enqueue_in(store).await?))
    }

    /// The poison row of issue 14: handler results that are not an object, a negative attempt
    /// count.
    async fn damage(&self, store: &PgStore, id: uuid::Uuid) -> Result<bool, StoreError> {
        let table = table_of(store);
        let done = sqlx::query(&format!(
            "UPDATE {table} SET handler_results = '[1,2,3]', attempts = -1 WHERE id = $1"
        ))
        .bind(id)
        .execute(store.pool())
        .await
        .map_err(|e| StoreError::unavailable(format!("damage: {e}")))?;
        Ok(done.rows_affected() == 1)
    }

    async fn damage_field(
        &self,
        store: &PgStore,
        id: uuid::Uuid,
        what: Damage,
    ) -> Result<bool, StoreError> {
        // The schema's NOT NULL and CHECK constraints keep a missing field or an unknown status
        // out of the table.
        let set = match what {
            Damage::Payload => "payload = (repeat('[', 200) || repeat(']', 200))::jsonb",
            Damage::HandlerResults => "handler_results = '[1,2,3]'",
            Damage::Attempts => "attempts = -1",
            Damage::Timestamp => "available_at = 'infinity'",
            _ => return Ok(false),
        };
        let table = table_of(store);
        let done = sqlx::query(&format!("UPDATE {table} SET {set} WHERE id = $1"))
            .bind(id)
            .execute(store.pool())
            .await
            .map_err(|e| StoreError::unavailable(format!("damage {what:?}: {e}")))?;
        Ok(done.rows_affected() == 1)
    }

    async fn repair(&self, store: &PgStore, id: uuid::Uuid) -> Result<bool, StoreError> {
        let table = table_of(store);
        let done = sqlx::query(&format!(
            "UPDATE {table} SET handler_results = '{{}}', attempts = 0 WHERE id = $1"
        ))
        .bind(id)
        .execute(store.pool())
        .await
        .map_err(|e| StoreError::unavailable(format!("repair: {e}")))?;
        Ok(done.rows_affected() == 1)
    }
}

/// The quoted `schema.table` of a store.
pub fn table_of(store: &PgStore) -> String {
    let (schema, table) = store.names();
    format!("\"{schema}\".\"{table}\"")
}

/// The X1 clause's effects table in a namespace's schema: one row per handler write; a write that
/// must fail at commit references a parent row that does not exist through a deferred foreign key.
pub struct PgEffects {
    pool: PgPool,
    table: String,
}

#[outbox_core::kit::async_trait]
impl outbox_testkit::suite::EffectTable<outbox_postgres::PgTx> for PgEffects {
    async fn write(
        &self,
        tx: &mut outbox_postgres::PgTx,
        event_id: uuid::Uuid,
        fail_at_commit: bool,
    ) -> Result<(), StoreError> {
        let parent = fail_at_commit.then(uuid::Uuid::now_v7);
        sqlx::query(&format!(
            "INSERT INTO {} (event_id, parent) VALUES ($1, $2)",
            self.table
        ))
        .bind(event_id)
        .bind(parent)
        .execute(&mut **tx)
        .await
        .map_err(|e| StoreError::unavailable(format!("write an effect: {e}")))?;
        Ok(())
    }

    async fn count(&self, event_id: uuid::Uuid) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE event_id = $1",
            self.table
        ))
        .bind(event_id)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::unavailable(format!("count effects: {e}")))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// Creates the X1 effects tables in schema `namespace`.
pub async fn pg_effects(store: &PgStore, namespace: &str) -> Result<PgEffects, StoreError> {
    let parent = format!("\"{namespace}\".x1_parent");
    let table = format!("\"{namespace}\".x1_effects");
    sqlx::raw_sql(&format!(
        "CREATE TABLE IF NOT EXISTS {parent} (id UUID PRIMARY KEY);
         CREATE TABLE IF NOT EXISTS {table} (
             event_id UUID NOT NULL,
             parent   UUID REFERENCES {parent} (id) DEFERRABLE INITIALLY DEFERRED
         );
         TRUNCATE {table};"
    ))
    .execute(store.pool())
    .await
    .map_err(|e| StoreError::unavailable(format!("create the effects table: {e}")))?;
    Ok(PgEffects {
        pool: store.pool().clone(),
        table,
    })
}

#[outbox_core::kit::async_trait]
impl outbox_testkit::suite::TransactionalFactory for PgFactory {
    type Effects = PgEffects;

    async fn effects(&self, store: &PgStore, namespace: &str) -> Result<PgEffects, StoreError> {
        pg_effects(store, namespace).await
    }
}
