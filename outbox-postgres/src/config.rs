//! [`PgStoreBuilder`]: schema and table names (validated against injection) and the SQL derived
//! from them.

use std::sync::Arc;

use outbox_core::{ConfigError, validate_name};
use sqlx::PgPool;

use crate::queries::Queries;
use crate::store::PgStore;

/// Builds a [`PgStore`].
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
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
}

impl PgStoreBuilder {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            schema: "public".to_owned(),
            table: "outbox_events".to_owned(),
        }
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
    /// It does not touch the database: call [`PgStore::migrate`] to create the schema.
    pub fn build(self) -> Result<PgStore, ConfigError> {
        validate_name("schema", &self.schema)?;
        validate_name("table", &self.table)?;
        Ok(PgStore::from_parts(
            self.pool,
            Arc::new(Queries::new(&self.schema, &self.table)),
        ))
    }
}
