//! [`MongoStoreBuilder`]: database and collection names, validated.

use mongodb::Client;
use outbox_core::kit::validate_name;
use outbox_core::{ConfigError, Limits};

/// MongoDB's own databases: `local` refuses retryable writes and transactions, `admin` and
/// `config` belong to the server.
const RESERVED_DATABASES: [&str; 3] = ["admin", "local", "config"];

use crate::store::MongoStore;

/// Builds a [`MongoStore`].
///
/// ```no_run
/// # use outbox_core::prelude::*;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let client = mongodb::Client::with_uri_str("mongodb://127.0.0.1:27017").await?;
/// let store = outbox_mongo::MongoStore::builder(client).database("app").collection("outbox").build()?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MongoStoreBuilder {
    client: Client,
    database: String,
    collection: String,
    limits: Limits,
}

impl MongoStoreBuilder {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            database: "outbox".to_owned(),
            collection: "outbox_events".to_owned(),
            limits: Limits::default(),
        }
    }

    /// The limits events are checked against before they are written (default
    /// [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The database (default `outbox`).
    pub fn database(mut self, name: impl Into<String>) -> Self {
        self.database = name.into();
        self
    }

    /// The collection (default `outbox_events`).
    pub fn collection(mut self, name: impl Into<String>) -> Self {
        self.collection = name.into();
        self
    }

    /// Validates the names (ASCII letters, digits, `_`) and builds the store; call
    /// [`migrate`](outbox_core::store::Schema::migrate) to create the indexes.
    pub fn build(self) -> Result<MongoStore, ConfigError> {
        validate_name("database", &self.database)?;
        if RESERVED_DATABASES.contains(&self.database.to_ascii_lowercase().as_str()) {
            return Err(ConfigError::new(
                "database",
                format!(
                    "`{}` is one of MongoDB's own databases (admin, local, config), which refuse \
                     the transactions and retryable writes the outbox needs; use a database of \
                     your own",
                    self.database
                ),
            ));
        }
        validate_name("collection", &self.collection)?;
        self.limits.validate()?;
        let collection = self
            .client
            .database(&self.database)
            .collection(&self.collection);
        Ok(MongoStore::from_parts(self.client, collection, self.limits))
    }
}
