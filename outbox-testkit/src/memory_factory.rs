//! [`MemoryFactory`]: the conformance-suite factory for [`MemoryStore`], and the model of a factory
//! for backend authors.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use outbox_core::{Enqueued, NewEvent, StoreError};
use uuid::Uuid;

use crate::harness::{Damage, StoreFactory, TestTransaction};
use crate::memory::{MemoryStore, MemoryTransaction};

/// Creates [`MemoryStore`]s by namespace: a second `create` with one namespace returns the same data,
/// as a database would.
#[derive(Debug, Default)]
pub struct MemoryFactory {
    stores: Mutex<HashMap<String, MemoryStore>>,
}

#[async_trait]
impl StoreFactory for MemoryFactory {
    type Store = MemoryStore;

    async fn create(&self, namespace: &str) -> Result<MemoryStore, StoreError> {
        let fresh = MemoryStore::in_namespace(namespace)?;
        let mut stores = self
            .stores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(stores.entry(namespace.to_owned()).or_insert(fresh).clone())
    }

    async fn begin(
        &self,
        store: &MemoryStore,
    ) -> Result<Option<Box<dyn TestTransaction>>, StoreError> {
        Ok(Some(Box::new(MemoryTestTransaction(store.begin()))))
    }

    async fn damage(&self, store: &MemoryStore, id: Uuid) -> Result<bool, StoreError> {
        Ok(store.damage(id))
    }

    async fn damage_field(
        &self,
        store: &MemoryStore,
        id: Uuid,
        what: Damage,
    ) -> Result<bool, StoreError> {
        // The decode error a database row damaged this way would give.
        let reason = match what {
            Damage::Payload => "payload: expected value at line 1 column 1",
            Damage::HandlerResults => "handler_results: invalid type: sequence, expected a map",
            Damage::Attempts => "attempts: -1 is not an attempt count",
            Damage::Status => "status: unknown status \"bogus\"",
            Damage::Timestamp => "available_at: out of range",
            Damage::Missing => "event_type: missing",
        };
        Ok(store.damage_because(id, reason))
    }

    async fn repair(&self, store: &MemoryStore, id: Uuid) -> Result<bool, StoreError> {
        Ok(store.repair(id))
    }
}

struct MemoryTestTransaction(MemoryTransaction);

#[async_trait]
impl TestTransaction for MemoryTestTransaction {
    async fn enqueue(&mut self, event: NewEvent) -> Result<Enqueued, StoreError> {
        let id = self.0.enqueue(event)?;
        Ok(Enqueued {
            id,
            duplicate: false,
        })
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.0.commit().map(drop)
    }

    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        self.0.rollback();
        Ok(())
    }
}
