//! [`RedisStoreBuilder`]: the outbox's name (validated), from which every key is derived.

use outbox_core::{ConfigError, Limits, validate_name};
use redis::aio::ConnectionManager;

use crate::store::RedisStore;

/// Builds a [`RedisStore`].
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let client = redis::Client::open("redis://127.0.0.1:6379")?;
/// let store = outbox_redis::RedisStore::builder(client).await?.name("billing").build()?;
/// assert_eq!(store.key_prefix(), "{outbox:billing}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStoreBuilder {
    client: redis::Client,
    connection: ConnectionManager,
    name: String,
    limits: Limits,
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    pub(crate) fn new(client: redis::Client, connection: ConnectionManager) -> Self {
        Self {
            client,
            connection,
            name: "default".to_owned(),
            limits: Limits::default(),
        }
    }

    /// The limits events are checked against before they are written (default
    /// [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The outbox's name (default `default`): keys are `{outbox:<name>}:…`, one cluster slot.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Validates the name and builds the store.
    pub fn build(self) -> Result<RedisStore, ConfigError> {
        validate_name("name", &self.name)?;
        Ok(RedisStore::from_parts(
            self.client,
            self.connection,
            format!("{{outbox:{}}}", self.name),
            self.limits,
        ))
    }
}
