//! What both versions of the rolling-deploy application share: the event both know, the database
//! table their handlers write to, and the worker's start-up. Version 1 (`src/bin/v1.rs`) has the
//! handler `notify` in module `billing`; version 2 (`src/bin/v2.rs`) moved it to module
//! `notifications` and adds the event type `OrderShipped` with its handler. Run both at once
//! against one outbox: `v1 <database url> <schema>` and `v2 <database url> <schema>`.

use std::time::Duration;

use outbox_core::prelude::*;
use outbox_core::{Event, Worker, WorkerConfig};
use outbox_postgres::PgStore;
use serde::{Deserialize, Serialize};

/// Known to both versions.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub struct OrderPlaced {
    /// The order.
    pub order: u64,
}

/// The database table the handlers write their side effects to, one row per successful run.
pub fn runs_table(schema: &str) -> String {
    format!("\"{schema}\".runs")
}

/// Creates the table of side effects.
pub async fn create_runs_table(pool: &sqlx::PgPool, schema: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {} (event_id uuid NOT NULL, handler text NOT NULL, version text NOT NULL)",
        runs_table(schema)
    ))
    .execute(pool)
    .await
    .map(drop)
}

/// Records one successful handler run.
pub async fn record_run(
    pool: &sqlx::PgPool,
    schema: &str,
    event_id: uuid::Uuid,
    handler: &str,
    version: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO {} (event_id, handler, version) VALUES ($1, $2, $3)",
        runs_table(schema)
    ))
    .bind(event_id)
    .bind(handler)
    .bind(version)
    .execute(pool)
    .await
    .map(drop)
}

/// The pool the handlers write with, set once at start-up.
pub static POOL: std::sync::OnceLock<(sqlx::PgPool, String)> = std::sync::OnceLock::new();

/// Runs a worker with this binary's `#[handler]`s until SIGTERM, printing `ready` once started.
pub async fn run(version: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(schema)) = (args.next(), args.next()) else {
        return Err(format!("usage: {version} <database url> <schema>").into());
    };
    let pool = sqlx::PgPool::connect(&url).await?;
    let store = PgStore::builder(pool.clone()).schema(&schema).build()?;
    store.migrate().await?;
    create_runs_table(&pool, &schema).await?;
    let _ = POOL.set((pool, schema));
    let config = WorkerConfig::default()
        .with_worker_id(format!("{version}-{}", std::process::id()))
        .with_poll_interval(Duration::from_millis(100))
        .with_retry(
            outbox_core::RetryPolicy::default()
                .with_initial_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(1)),
        );
    let worker = Worker::builder(store).config(config).build()?.start();
    println!("ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    term.recv().await;
    worker.shutdown().await;
    Ok(())
}

/// The pool and schema set at start-up.
pub fn pool() -> Result<&'static (sqlx::PgPool, String), outbox_core::HandlerError> {
    POOL.get()
        .ok_or_else(|| outbox_core::HandlerError::retry("the worker has not started"))
}
