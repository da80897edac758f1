//! [`RedisStoreBuilder`]: the outbox's name (validated), from which every key is derived.

use outbox_core::kit::validate_name;
use outbox_core::{ConfigError, Limits, StoreError};

use crate::connection::RedisConnection;
use crate::partition::{Layout, MAX_PARTITIONS, recorded_count};
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
    pubsub: Vec<redis::Client>,
    connection: RedisConnection,
    name: String,
    limits: Limits,
    partitions: usize,
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("name", &self.name)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    pub(crate) fn new(pubsub: Vec<redis::Client>, connection: RedisConnection) -> Self {
        Self {
            pubsub,
            connection,
            name: "default".to_owned(),
            limits: Limits::default(),
            partitions: 1,
        }
    }

    /// The limits events are checked against before they are written (default
    /// [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The outbox's name (default `default`): with one partition, keys are `{outbox:<name>}:…`,
    /// one cluster slot.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many partitions the outbox has (default 1; at most 256). Each partition is one hash
    /// tag, so one slot of a Redis Cluster: with more partitions than shards, an outbox spreads
    /// over the cluster. An event goes to the partition of its ordering key (so one key's events
    /// keep their order), else of its idempotency key, else of its id; claims take the oldest due
    /// events across all partitions.
    ///
    /// The count is part of the outbox's layout: the first enqueue or claim records it, and a
    /// store built with another count for the same outbox refuses to work (its events would be
    /// stranded in partitions the store does not know). On one server, one partition is fastest.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let nodes = ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001", "redis://127.0.0.1:7002"];
    /// let store = outbox_redis::RedisStore::cluster_builder(&nodes).await?.partitions(8).build()?;
    /// assert_eq!(store.key_prefixes().len(), 8);
    /// # Ok(()) }
    /// ```
    pub fn partitions(mut self, partitions: usize) -> Self {
        self.partitions = partitions;
        self
    }

    /// The partition count the outbox with this builder's name was created with, as its first
    /// enqueue or claim recorded it (`None` when nothing is recorded yet). Tools that inspect an
    /// outbox they did not create use it to read every partition:
    ///
    /// ```no_run
    /// # async fn demo(nodes: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut builder = outbox_redis::RedisStore::cluster_builder(nodes).await?.name("billing");
    /// if let Some(n) = builder.recorded_partitions().await? {
    ///     builder = builder.partitions(n);
    /// }
    /// let store = builder.build()?;
    /// # Ok(()) }
    /// ```
    pub async fn recorded_partitions(&self) -> Result<Option<usize>, StoreError> {
        validate_name("name", &self.name)?;
        recorded_count(
            &mut self.connection.clone(),
            &Layout::layout_key_of(&self.name),
        )
        .await
    }

    /// Validates the name and the partition count and builds the store.
    pub fn build(self) -> Result<RedisStore, ConfigError> {
        validate_name("name", &self.name)?;
        self.limits.validate()?;
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(ConfigError::new(
                "partitions",
                format!(
                    "{} partitions: choose 1 to {MAX_PARTITIONS}",
                    self.partitions
                ),
            ));
        }
        Ok(RedisStore::from_parts(
            self.pubsub,
            self.connection,
            Layout::new(&self.name, self.partitions),
            self.limits,
        ))
    }
}
