//! The conformance-suite factory for Redis: one outbox name (key prefix) per test, on the server at
//! `REDIS_URL` (default `redis://127.0.0.1:6379`). Dropping the factory deletes its keys.

#![allow(dead_code, unreachable_pub)]

use std::sync::Mutex;

use outbox_core::{Enqueued, NewEvent, StoreError};
use outbox_redis::RedisStore;
use outbox_testkit::{StoreFactory, TestTransaction};

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub async fn store_named(name: &str) -> Result<RedisStore, StoreError> {
    outbox_core::validate_name("namespace", name)?;
    let client = redis::Client::open(redis_url())
        .map_err(|e| StoreError::invalid(format!("REDIS_URL: {e}")))?;
    let builder = RedisStore::builder(client).await.map_err(|e| {
        StoreError::unavailable(format!(
            "cannot reach Redis at REDIS_URL ({e}). Start it with `./scripts/services.sh`, or point REDIS_URL at a server"
        ))
    })?;
    Ok(builder.name(name).build()?)
}

#[derive(Debug, Default)]
pub struct RedisFactory {
    prefixes: Mutex<Vec<String>>,
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
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut con) = client.get_connection() else {
            return;
        };
        for prefix in prefixes {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query(&mut con)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut con);
            }
        }
    }
}

#[outbox_core::async_trait]
impl StoreFactory for RedisFactory {
    type Store = RedisStore;

    async fn create(&self, namespace: &str) -> Result<RedisStore, StoreError> {
        let store = store_named(namespace).await?;
        self.prefixes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(store.key_prefix().to_owned());
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

    async fn repair(&self, store: &RedisStore, id: uuid::Uuid) -> Result<bool, StoreError> {
        set_fields(store, id, &[("handler_results", "{}"), ("attempts", "0")]).await
    }
}

async fn set_fields(
    store: &RedisStore,
    id: uuid::Uuid,
    fields: &[(&str, &str)],
) -> Result<bool, StoreError> {
    let key = format!("{}:ev:{id}", store.key_prefix());
    let mut con = store.connection();
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut con)
        .await
        .map_err(|e| StoreError::unavailable(format!("EXISTS: {e}")))?;
    if !exists {
        return Ok(false);
    }
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

#[outbox_core::async_trait]
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
        self.pipe
            .atomic()
            .set(format!("{}:test:committed", self.store.key_prefix()), 1)
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
