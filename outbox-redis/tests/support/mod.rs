//! The conformance-suite factory for Redis: one outbox name (key prefix) per test, on the server at
//! `REDIS_URL` (default `redis://127.0.0.1:6379`) with one partition, or on the Redis Cluster at
//! `REDIS_CLUSTER_URLS` (comma-separated; default ports 7000–7002, started by
//! `./scripts/services.sh`) with several. Dropping the factory deletes its keys.

#![allow(dead_code, unreachable_pub)]

use std::sync::Mutex;

use outbox_core::{Enqueued, NewEvent, StoreError};
use outbox_redis::RedisStore;
use outbox_testkit::{Damage, StoreFactory, TestTransaction};

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn cluster_urls() -> Vec<String> {
    std::env::var("REDIS_CLUSTER_URLS")
        .unwrap_or_else(|_| {
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002".to_owned()
        })
        .split(',')
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
        .collect()
}

/// Outbox `name` with `partitions` partitions on the test cluster.
pub async fn cluster_store_named(name: &str, partitions: usize) -> Result<RedisStore, StoreError> {
    outbox_core::kit::validate_name("namespace", name)?;
    let urls = cluster_urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let builder = RedisStore::cluster_builder(&nodes).await.map_err(|e| {
        StoreError::unavailable(format!(
            "cannot reach the Redis Cluster at REDIS_CLUSTER_URLS {urls:?} ({e}). Start it with \
             `./scripts/services.sh`, or point REDIS_CLUSTER_URLS at a cluster's nodes"
        ))
    })?;
    Ok(builder.name(name).partitions(partitions).build()?)
}

pub async fn store_named(name: &str) -> Result<RedisStore, StoreError> {
    outbox_core::kit::validate_name("namespace", name)?;
    let client = redis::Client::open(redis_url())
        .map_err(|e| StoreError::invalid(format!("REDIS_URL: {e}")))?;
    let builder = RedisStore::builder(client).await.map_err(|e| {
        StoreError::unavailable(format!(
            "cannot reach Redis at REDIS_URL ({e}). Start it with `./scripts/services.sh`, or point REDIS_URL at a server"
        ))
    })?;
    Ok(builder.name(name).build()?)
}

/// Where a [`RedisFactory`]'s outboxes live.
#[derive(Debug, Default)]
pub enum Target {
    /// The server at `REDIS_URL`, one partition.
    #[default]
    Server,
    /// The cluster at `REDIS_CLUSTER_URLS`, with this many partitions.
    Cluster { partitions: usize },
}

#[derive(Debug, Default)]
pub struct RedisFactory {
    target: Target,
    prefixes: Mutex<Vec<String>>,
}

impl RedisFactory {
    /// Outboxes with `partitions` partitions on the test cluster.
    pub fn cluster(partitions: usize) -> Self {
        Self {
            target: Target::Cluster { partitions },
            prefixes: Mutex::default(),
        }
    }
}

/// Deletes every key under `prefixes` on each server in `urls` (on a cluster, each node holds its
/// own slots' keys; one key per `DEL`, as keys of different slots cannot share a command).
pub fn delete_keys_under(urls: &[String], prefixes: &[String]) {
    for url in urls {
        let Ok(client) = redis::Client::open(url.as_str()) else {
            continue;
        };
        let Ok(mut con) = client.get_connection() else {
            continue;
        };
        for prefix in prefixes {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query(&mut con)
                .unwrap_or_default();
            for key in keys {
                let _: Result<(), _> = redis::cmd("DEL").arg(key).query(&mut con);
            }
        }
    }
}

/// The patterns of every key of `store`'s outbox: its partitions' and its layout record.
pub fn key_patterns(store: &RedisStore) -> Vec<String> {
    let mut patterns = store.key_prefixes().to_vec();
    patterns.push(store.layout_key());
    patterns
}

impl Drop for RedisFactory {
    /// Deletes only the keys of the outboxes this factory created.
    fn drop(&mut self) {
        let prefixes = std::mem::take(
            &mut *self
                .prefixes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let urls = match self.target {
            Target::Server => vec![redis_url()],
            Target::Cluster { .. } => cluster_urls(),
        };
        delete_keys_under(&urls, &prefixes);
    }
}

#[outbox_core::kit::async_trait]
impl StoreFactory for RedisFactory {
    type Store = RedisStore;

    async fn create(&self, namespace: &str) -> Result<RedisStore, StoreError> {
        let store = match self.target {
            Target::Server => store_named(namespace).await?,
            Target::Cluster { partitions } => cluster_store_named(namespace, partitions).await?,
        };
        self.prefixes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(key_patterns(&store));
        Ok(store)
    }

    async fn begin(
        &self,
        store: &RedisStore,
    ) -> Result<Option<Box<dyn TestTransaction>>, StoreError> {
        Ok(Some(Box::new(RedisTestTransaction {
            pipe: redis::pipe(),
            events: Vec::new(),
            store: store.clone(),
        })))
    }

    /// A poison event: handler results that are not an object, attempts that are not a number.
    async fn damage(&self, store: &RedisStore, id: uuid::Uuid) -> Result<bool, StoreError> {
        set_fields(store, id, &[("handler_results", "[1]"), ("attempts", "-x")]).await
    }

    async fn damage_field(
        &self,
        store: &RedisStore,
        id: uuid::Uuid,
        what: Damage,
    ) -> Result<bool, StoreError> {
        match what {
            // `body` is the header (a JSON array: created_at, id, type, …), a newline, the payload.
            Damage::Payload => {
                rewrite_body(store, id, |header, _| format!("{header}\nnot json")).await
            }
            Damage::Missing => {
                rewrite_body(store, id, |header, payload| {
                    let mut parts: Vec<serde_json::Value> =
                        serde_json::from_str(header).unwrap_or_default();
                    if let Some(event_type) = parts.get_mut(2) {
                        *event_type = serde_json::Value::Null;
                    }
                    format!("{}\n{payload}", serde_json::Value::from(parts))
                })
                .await
            }
            Damage::HandlerResults => set_fields(store, id, &[("handler_results", "[1]")]).await,
            Damage::Attempts => set_fields(store, id, &[("attempts", "-x")]).await,
            Damage::Status => set_fields(store, id, &[("status", "bogus")]).await,
            Damage::Timestamp => set_fields(store, id, &[("available_at", "soon")]).await,
            _ => Ok(false),
        }
    }

    async fn repair(&self, store: &RedisStore, id: uuid::Uuid) -> Result<bool, StoreError> {
        set_fields(store, id, &[("handler_results", "{}"), ("attempts", "0")]).await
    }
}

/// Rewrites an event's `body` from its header and payload.
async fn rewrite_body(
    store: &RedisStore,
    id: uuid::Uuid,
    rewrite: impl FnOnce(&str, &str) -> String,
) -> Result<bool, StoreError> {
    let Some(key) = store.event_key(&id.to_string()).await? else {
        return Ok(false);
    };
    let body: Option<String> = redis::cmd("HGET")
        .arg(&key)
        .arg("body")
        .query_async(&mut store.connection())
        .await
        .map_err(|e| StoreError::unavailable(format!("HGET: {e}")))?;
    let Some((header, payload)) = body.as_deref().and_then(|b| b.split_once('\n')) else {
        return Ok(false);
    };
    let body = rewrite(header, payload);
    set_fields(store, id, &[("body", &body)]).await
}

async fn set_fields(
    store: &RedisStore,
    id: uuid::Uuid,
    fields: &[(&str, &str)],
) -> Result<bool, StoreError> {
    let Some(key) = store.event_key(&id.to_string()).await? else {
        return Ok(false);
    };
    let mut con = store.connection();
    let mut cmd = redis::cmd("HSET");
    cmd.arg(&key);
    for (field, value) in fields {
        cmd.arg(*field).arg(*value);
    }
    cmd.query_async::<()>(&mut con)
        .await
        .map_err(|e| StoreError::unavailable(format!("HSET: {e}")))?;
    Ok(true)
}

/// A `MULTI`/`EXEC` pipeline: nothing reaches the server before commit; rollback sends nothing.
struct RedisTestTransaction {
    pipe: redis::Pipeline,
    events: Vec<NewEvent>,
    store: RedisStore,
}

#[outbox_core::kit::async_trait]
impl TestTransaction for RedisTestTransaction {
    async fn enqueue(&mut self, event: NewEvent) -> Result<Enqueued, StoreError> {
        let id = event.id;
        // The same check the pipeline's enqueue makes, at the point the caller enqueues.
        self.store.limits().check(&event)?;
        self.events.push(event);
        Ok(Enqueued {
            id,
            duplicate: false,
        })
    }
    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let events = std::mem::take(&mut self.events);
        // In a cluster, MULTI is atomic within one slot: the caller's key goes in the events'
        // partition.
        self.pipe
            .atomic()
            .set(
                format!("{}:test:committed", self.store.key_prefix_for(&events)?),
                1,
            )
            .ignore();
        self.store.enqueue_in_pipeline(&mut self.pipe, events)?;
        let mut con = self.store.connection();
        self.pipe
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| StoreError::unavailable(format!("EXEC: {e}")))
    }
    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        Ok(())
    }
}
