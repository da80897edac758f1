//! What the store creates in MongoDB (contract C10): the collections' indexes.

use crate::error::{code, map_mongo};

use crate::store::MongoStore;
use async_trait::async_trait;
use mongodb::IndexModel;
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use outbox_core::StoreError;
use outbox_core::store::Schema;

/// The collections' indexes (C10); MongoDB records no schema version and has no DDL.
#[async_trait]
impl Schema for MongoStore {
    /// Creates the indexes if missing (C10); idempotent.
    async fn migrate(&self) -> Result<(), StoreError> {
        let index = |keys: Document, name: &str, mut options: IndexOptions| {
            options.name = Some(name.to_owned());
            IndexModel::builder().keys(keys).options(options).build()
        };
        // 0.1 had a "due" index on (status, due_at, locked_until); claims now sort by due time,
        // then id.
        if let Err(err) = self.events.drop_index("due").await {
            if code(&err) != Some(27) {
                tracing::debug!(error = %err, "could not drop the old \"due\" index");
            }
        }
        let indexes = vec![
            index(
                doc! { "status": 1, "due_at": 1, "_id": 1 },
                "due_order",
                IndexOptions::default(),
            ),
            index(
                doc! { "ordering_key": 1, "status": 1, "_id": 1 },
                "ordering",
                IndexOptions::default(),
            ),
            index(
                doc! { "idempotency_key": 1 },
                "idempotency",
                IndexOptions::builder()
                    .unique(true)
                    .partial_filter_expression(doc! { "idempotency_key": { "$type": "string" } })
                    .build(),
            ),
            index(
                doc! { "status": 1, "processed_at": 1 },
                "finished",
                IndexOptions::default(),
            ),
        ];
        self.events
            .create_indexes(indexes)
            .await
            .map_err(|e| map_mongo("migrate: create indexes", e))?;
        // The inbox's ids, purged by consumer and age.
        self.inbox()
            .create_index(index(
                doc! { "_id.c": 1, "at": 1 },
                "received_at",
                IndexOptions::default(),
            ))
            .await
            .map_err(|e| map_mongo("migrate: create the inbox index", e))?;
        Ok(())
    }
}
