//! The conformance-suite factory for MongoDB: one database per test, on the deployment at
//! `MONGODB_URI` (`./scripts/services.sh` starts one and prints the URI).

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use mongodb::Client;
use mongodb::options::ClientOptions;
use outbox_core::StoreError;
use outbox_core::prelude::*;
use outbox_mongo::MongoStore;
use outbox_testkit::{Damage, StoreFactory, TestTransaction};
use tokio::sync::OnceCell;

pub const DEFAULT_URI: &str = "mongodb://127.0.0.1:27017/?directConnection=true";

pub fn mongodb_uri() -> String {
    std::env::var("MONGODB_URI").unwrap_or_else(|_| DEFAULT_URI.to_owned())
}

const HOW_TO_START: &str = "start a MongoDB-compatible server with `./scripts/services.sh` (it prints MONGODB_URI), \
     or set MONGODB_URI to a replica set";

/// A client whose first operation fails within seconds when the server is missing.
pub async fn client() -> Result<Client, StoreError> {
    let uri = mongodb_uri();
    let mut options = ClientOptions::parse(&uri)
        .await
        .map_err(|e| StoreError::invalid(format!("MONGODB_URI is not a valid URI: {e}")))?;
    options.server_selection_timeout = Some(Duration::from_secs(5));
    options.connect_timeout = Some(Duration::from_secs(5));
    let client = Client::with_options(options)
        .map_err(|e| StoreError::invalid(format!("MONGODB_URI: {e}")))?;
    client
        .database("admin")
        .run_command(mongodb::bson::doc! { "ping": 1 })
        .await
        .map_err(|e| {
            StoreError::unavailable(format!(
                "cannot reach MongoDB at MONGODB_URI ({e}); {HOW_TO_START}"
            ))
        })?;
    Ok(client)
}

#[derive(Debug, Default)]
pub struct MongoFactory {
    client: OnceCell<Client>,
}

#[outbox_core::kit::async_trait]
impl StoreFactory for MongoFactory {
    type Store = MongoStore;

    async fn create(&self, namespace: &str) -> Result<MongoStore, StoreError> {
        outbox_core::kit::validate_name("namespace", namespace)?;
        let client = self.client.get_or_try_init(client).await?.clone();
        let store = MongoStore::builder(client).database(namespace).build()?;
        store.migrate().await?;
        Ok(store)
    }

    async fn begin(
        &self,
        store: &MongoStore,
    ) -> Result<Option<Box<dyn TestTransaction>>, StoreError> {
        Ok(Some(outbox_testkit::begin_enqueue_in(store).await?))
    }

    /// A poison document: a payload that is a number instead of JSON text, handler results that
    /// are not an object.
    async fn damage(&self, store: &MongoStore, id: uuid::Uuid) -> Result<bool, StoreError> {
        set_fields(
            store,
            id,
            mongodb::bson::doc! { "payload": 42_i32, "handler_results": "[1]" },
        )
        .await
    }

    async fn damage_field(
        &self,
        store: &MongoStore,
        id: uuid::Uuid,
        what: Damage,
    ) -> Result<bool, StoreError> {
        use mongodb::bson::doc;
        let update = match what {
            Damage::Payload => doc! { "$set": { "payload": 42_i32 } },
            Damage::HandlerResults => doc! { "$set": { "handler_results": "[1]" } },
            Damage::Attempts => doc! { "$set": { "attempts": "many" } },
            Damage::Status => doc! { "$set": { "status": "bogus" } },
            Damage::Timestamp => doc! { "$set": { "available_at": "soon" } },
            Damage::Missing => doc! { "$unset": { "event_type": "" } },
            _ => return Ok(false),
        };
        let done = store
            .collection()
            .update_one(doc! { "_id": id.to_string() }, update)
            .await
            .map_err(|e| StoreError::unavailable(format!("damage {what:?}: {e}")))?;
        Ok(done.matched_count == 1)
    }

    async fn repair(&self, store: &MongoStore, id: uuid::Uuid) -> Result<bool, StoreError> {
        set_fields(
            store,
            id,
            mongodb::bson::doc! { "payload": "{\"n\":\"repaired\"}", "handler_results": "{}" },
        )
        .await
    }
}

async fn set_fields(
    store: &MongoStore,
    id: uuid::Uuid,
    fields: mongodb::bson::Document,
) -> Result<bool, StoreError> {
    let done = store
        .collection()
        .update_one(
            mongodb::bson::doc! { "_id": id.to_string() },
            mongodb::bson::doc! { "$set": fields },
        )
        .await
        .map_err(|e| StoreError::unavailable(format!("update: {e}")))?;
    Ok(done.matched_count == 1)
}

/// The X1 clause's effects collection in a namespace's database: one document per handler
/// write. MongoDB has no commit-time checks, so no write can make a commit fail.
pub struct MongoEffects {
    effects: mongodb::Collection<mongodb::bson::Document>,
}

#[outbox_core::kit::async_trait]
impl outbox_testkit::suite::EffectTable<outbox_mongo::MongoTx> for MongoEffects {
    async fn write(
        &self,
        tx: &mut outbox_mongo::MongoTx,
        event_id: uuid::Uuid,
        fail_at_commit: bool,
    ) -> Result<(), StoreError> {
        if fail_at_commit {
            return Err(StoreError::invalid(
                "MongoDB cannot fail a commit on purpose",
            ));
        }
        self.effects
            .insert_one(mongodb::bson::doc! { "event_id": event_id.to_string() })
            .session(&mut **tx)
            .await
            .map_err(|e| StoreError::unavailable(format!("write an effect: {e}")))?;
        Ok(())
    }

    async fn count(&self, event_id: uuid::Uuid) -> Result<u64, StoreError> {
        self.effects
            .count_documents(mongodb::bson::doc! { "event_id": event_id.to_string() })
            .await
            .map_err(|e| StoreError::unavailable(format!("count effects: {e}")))
    }

    fn can_fail_at_commit(&self) -> bool {
        false
    }
}

#[outbox_core::kit::async_trait]
impl outbox_testkit::suite::TransactionalFactory for MongoFactory {
    type Effects = MongoEffects;

    async fn effects(
        &self,
        store: &MongoStore,
        namespace: &str,
    ) -> Result<MongoEffects, StoreError> {
        let effects = store
            .client()
            .database(namespace)
            .collection::<mongodb::bson::Document>("x1_effects");
        effects
            .delete_many(mongodb::bson::doc! {})
            .await
            .map_err(|e| StoreError::unavailable(format!("empty the effects collection: {e}")))?;
        Ok(MongoEffects { effects })
    }
}
