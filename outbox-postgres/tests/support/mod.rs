//! The conformance-suite factory for PostgreSQL: one schema per test, in the database named by
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/outbox_test`).

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use outbox_core::{Enqueued, NewEvent, StoreError};
use outbox_postgres::PgStore;
use outbox_testkit::{StoreFactory, TestTransaction};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};

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

#[outbox_core::async_trait]
impl StoreFactory for PgFactory {
    type Store = PgStore;

    async fn create(&self, namespace: &str) -> Result<PgStore, StoreError> {
        outbox_core::validate_name("namespace", namespace)?;
        let store = PgStore::builder(connect().await?)
            .schema(namespace)
            .build()?;
        store.migrate().await?;
        Ok(store)
    }

    async fn begin(&self, store: &PgStore) -> Result<Option<Box<dyn TestTransaction>>, StoreError> {
        let tx = store
            .pool()
            .begin()
            .await
            .map_err(|e| StoreError::unavailable(format!("begin: {e}")))?;
        Ok(Some(Box::new(PgTestTransaction {
            tx,
            store: store.clone(),
        })))
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

struct PgTestTransaction {
    tx: Transaction<'static, Postgres>,
    store: PgStore,
}

#[outbox_core::async_trait]
impl TestTransaction for PgTestTransaction {
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
