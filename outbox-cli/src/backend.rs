//! Opening the store a URL names: `postgres://`, `sqlite:`, `redis://`, `redis-cluster://`,
//! `mongodb://`.

use std::sync::Arc;

use outbox_core::store::Schema;
use outbox_core::{Store, StoreError};
use outbox_mongo::MongoStore;
use outbox_postgres::PgStore;
use outbox_redis::RedisStore;
use outbox_sqlite::SqliteStore;

/// Where the outbox lives inside its database: a table (PostgreSQL, SQLite), a key prefix name
/// (Redis) or a collection (MongoDB).
#[derive(Debug, Clone, Default)]
pub(crate) struct Names {
    /// PostgreSQL schema (default `public`).
    pub(crate) schema: Option<String>,
    /// Table or collection (default `outbox_events`), or the Redis outbox name (default `default`).
    pub(crate) table: Option<String>,
    /// MongoDB database (default `outbox`).
    pub(crate) database: Option<String>,
}

/// Why the command could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The URL names no backend this tool knows.
    #[error(
        "unsupported URL `{0}`: use postgres://…, sqlite:<path>, redis://…, \
         redis-cluster://host:port,host:port… or mongodb://…"
    )]
    UnknownScheme(String),
    /// A name or option is invalid.
    #[error(transparent)]
    Config(#[from] outbox_core::ConfigError),
    /// The store answered with an error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An argument is invalid.
    #[error("{0}")]
    Usage(String),
}

/// One opened store: its contract for the operations every backend has, and its schema.
pub(crate) struct Backend {
    /// The store.
    store: Arc<dyn Store>,
    /// What it creates in its database.
    schema: Arc<dyn Schema>,
}

impl Backend {
    fn of<S: Store + Schema + Clone>(store: S) -> Self {
        Self {
            store: Arc::new(store.clone()),
            schema: Arc::new(store),
        }
    }

    /// Opens the store `url` names. Nothing is created unless `create` (for `migrate`): a missing
    /// SQLite file is an error rather than a new empty database.
    pub(crate) async fn open(url: &str, names: &Names, create: bool) -> Result<Self, CliError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "postgres" | "postgresql" => {
                let pool = outbox_postgres::sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(std::time::Duration::from_secs(10))
                    .connect(url)
                    .await
                    .map_err(|e| {
                        StoreError::unavailable(format!("cannot connect to PostgreSQL: {e}"))
                    })?;
                let mut builder = PgStore::builder(pool);
                if let Some(schema) = &names.schema {
                    builder = builder.schema(schema);
                }
                if let Some(table) = &names.table {
                    builder = builder.table(table);
                }
                Ok(Self::of(builder.build()?))
            }
            "sqlite" => {
                let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
                let options = outbox_sqlite::sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(create)
                    .busy_timeout(std::time::Duration::from_secs(10));
                let pool = outbox_sqlite::sqlx::SqlitePool::connect_with(options)
                    .await
                    .map_err(|e| {
                        StoreError::unavailable(format!("cannot open the SQLite file {path}: {e}"))
                    })?;
                let table = names.table.as_deref().unwrap_or("outbox_events");
                Ok(Self::of(SqliteStore::builder(pool).table(table).build()?))
            }
            "redis" | "rediss" | "redis-cluster" => {
                let mut builder = if scheme == "redis-cluster" {
                    let nodes = cluster_nodes(url)?;
                    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
                    RedisStore::cluster_builder(&nodes).await?
                } else {
                    let client = outbox_redis::redis::Client::open(url)
                        .map_err(|e| StoreError::invalid(format!("invalid Redis URL: {e}")))?;
                    RedisStore::builder(client).await?
                };
                if let Some(name) = &names.table {
                    builder = builder.name(name);
                }
                // A partitioned outbox records its partition count: read every partition.
                if let Some(partitions) = builder.recorded_partitions().await? {
                    builder = builder.partitions(partitions);
                }
                Ok(Self::of(builder.build()?))
            }
            "mongodb" | "mongodb+srv" => {
                let client = outbox_mongo::mongodb::Client::with_uri_str(url)
                    .await
                    .map_err(|e| StoreError::invalid(format!("invalid MongoDB URI: {e}")))?;
                let mut builder = MongoStore::builder(client);
                if let Some(database) = &names.database {
                    builder = builder.database(database);
                }
                if let Some(collection) = &names.table {
                    builder = builder.collection(collection);
                }
                Ok(Self::of(builder.build()?))
            }
            _ => Err(CliError::UnknownScheme(url.to_owned())),
        }
    }

    /// The store, for the operations every backend has.
    pub(crate) fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// Creates or upgrades what the store needs (tables, indexes, functions).
    pub(crate) async fn migrate(&self) -> Result<&'static str, CliError> {
        self.schema.migrate().await?;
        Ok(if self.has_schema() {
            "schema is current"
        } else {
            "nothing to migrate: this backend creates what it needs as it goes"
        })
    }

    /// Checks the schema without changing it; backends without a schema to check say so.
    pub(crate) async fn verify(&self) -> Result<&'static str, CliError> {
        self.schema.verify().await?;
        Ok(if self.has_schema() {
            "schema is current"
        } else {
            "nothing to verify on this backend (no schema)"
        })
    }

    /// The DDL `migrate` runs, for backends that have one (SQL stores).
    pub(crate) fn ddl(&self) -> Option<Vec<String>> {
        self.schema.ddl()
    }

    /// Whether the backend keeps a schema of its own (DDL to run).
    fn has_schema(&self) -> bool {
        self.schema.ddl().is_some()
    }
}

/// The node URLs of `redis-cluster://host:port,host:port/…`: `redis://host:port` each (a
/// `user:password@` before a host applies to that node).
fn cluster_nodes(url: &str) -> Result<Vec<String>, CliError> {
    let rest = url.trim_start_matches("redis-cluster://");
    let hosts = rest.split(['/', '?']).next().unwrap_or_default();
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{h}"))
        .collect();
    if nodes.is_empty() {
        return Err(CliError::Usage(format!(
            "`{url}` names no node: use redis-cluster://host:port,host:port"
        )));
    }
    Ok(nodes)
}
