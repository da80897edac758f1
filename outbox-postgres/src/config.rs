//! [`PgStoreBuilder`]: schema and table names (validated against injection) and the SQL derived
//! from them.

use std::sync::Arc;

use outbox_core::kit::validate_name;
use outbox_core::{ConfigError, Limits};
use sqlx::PgPool;

use crate::queries::Queries;
use crate::store::PgStore;

/// Builds a [`PgStore`].
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use outbox_core::prelude::*;
/// use outbox_postgres::PgStore;
/// let store = PgStore::builder(pool).schema("billing").table("outbox").build()?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PgStoreBuilder {
    pool: PgPool,
    schema: String,
    table: String,
    limits: Limits,
    retention: Retention,
}

/// What happens to an event once every handler succeeded.
///
/// | | drain, events/s (2 workers, no-op handler, this repository's benchmark) |
/// |---|---|
/// | `KeepProcessed` (default) | see `BENCHMARKS.md` |
/// | `DeleteProcessed` | see `BENCHMARKS.md` |
///
/// ```
/// # fn demo(pool: sqlx::PgPool) -> Result<(), outbox_core::ConfigError> {
/// use outbox_postgres::{PgStore, Retention};
/// let store = PgStore::builder(pool).retention(Retention::DeleteProcessed).build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Retention {
    /// Processed events stay, with each handler's result and output, until
    /// [`purge_processed`](outbox_core::StoreExt::purge_processed) removes them.
    #[default]
    KeepProcessed,
    /// Processed events are deleted by their completion, in the same statement. An event with an
    /// idempotency key is kept anyway (it is the record of the key, so a later enqueue with the
    /// same key stays a duplicate) until `purge_processed`. Dead and set-aside events are always
    /// kept.
    DeleteProcessed,
}

impl PgStoreBuilder {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            schema: "public".to_owned(),
            table: "outbox_events".to_owned(),
            limits: Limits::default(),
            retention: Retention::default(),
        }
    }

    /// The limits events are checked against before they are written (default
    /// [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether processed events are kept or deleted (default: kept).
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The schema holding the table (default `public`).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The table name (default `outbox_events`).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Validates the names (ASCII letters, digits, `_`; at most 48 characters) and builds the store.
    /// It does not touch the database: call [`migrate`](outbox_core::store::Schema::migrate) to create the schema.
    pub fn build(self) -> Result<PgStore, ConfigError> {
        validate_name("schema", &self.schema)?;
        validate_name("table", &self.table)?;
        self.limits.validate()?;
        Ok(PgStore::from_parts(
            self.pool,
            Arc::new(Queries::new(&self.schema, &self.table)),
            self.limits,
            self.retention,
        ))
    }
}
