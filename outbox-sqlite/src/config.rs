//! [`SqliteStoreBuilder`]: the table name (validated) and, for [`SqliteStore::open`], the connection
//! settings a shared database file needs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use outbox_core::kit::validate_name;
use outbox_core::{ConfigError, Limits, StoreError};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use crate::error::map_sqlx;
use crate::queries::Queries;
use crate::store::SqliteStore;

/// Builds a [`SqliteStore`] on a pool you made.
///
/// ```no_run
/// # use outbox_core::prelude::*;
/// # async fn demo(pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
/// let store = outbox_sqlite::SqliteStore::builder(pool).table("outbox").build()?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    pool: SqlitePool,
    table: String,
    limits: Limits,
}

impl SqliteStoreBuilder {
    pub(crate) fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            table: "outbox_events".to_owned(),
            limits: Limits::default(),
        }
    }

    /// The limits events are checked against before they are written (default
    /// [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The table name (default `outbox_events`).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Validates the name and builds the store; call [`migrate`](outbox_core::store::Schema::migrate) to create the table.
    pub fn build(self) -> Result<SqliteStore, ConfigError> {
        validate_name("table", &self.table)?;
        self.limits.validate()?;
        Ok(SqliteStore::from_parts(
            self.pool,
            Arc::new(Queries::new(&self.table)),
            self.limits,
        ))
    }
}

/// Opens (creating if missing) a database file with the settings several processes sharing it
/// need: WAL journal, a 10 s busy timeout, full synchronous commits.
pub(crate) async fn open_pool(path: &Path) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(|e| map_sqlx(&format!("open {}", path.display()), e))
}
