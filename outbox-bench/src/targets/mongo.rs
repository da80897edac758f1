//! MongoDB: one database per outbox, and the raw insert / findOneAndUpdate / updateOne operations
//! on the library's collection and indexes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};
use outbox_core::Store;
use outbox_core::prelude::*;
use outbox_mongo::MongoStore;
use uuid::Uuid;

use super::{COMPLETE_CONCURRENCY, for_each_concurrent, unique};
use crate::BenchError;
use crate::target::{Bench, EVENT_TYPE, Target, event, payload};

fn db(err: mongodb::error::Error) -> BenchError {
    BenchError::Database(err.to_string())
}

/// The deployment at `MONGODB_URI`.
pub(crate) struct Mongo {
    client: Client,
}

impl Mongo {
    pub(crate) async fn connect() -> Result<Self, BenchError> {
        let uri = std::env::var("MONGODB_URI")
            .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true".to_owned());
        let mut options = ClientOptions::parse(&uri).await.map_err(db)?;
        options.server_selection_timeout = Some(Duration::from_secs(5));
        let client = Client::with_options(options).map_err(db)?;
        client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| {
                BenchError::Setup(format!(
                    "cannot reach MongoDB at MONGODB_URI ({e}); start one with ./scripts/services.sh"
                ))
            })?;
        Ok(Self { client })
    }
}

#[async_trait]
impl Target for Mongo {
    fn name(&self) -> &'static str {
        "mongo"
    }

    async fn fresh(&self, tag: &str) -> Result<Box<dyn Bench>, BenchError> {
        let database = format!("bench_{tag}_{}", unique());
        let store = MongoStore::builder(self.client.clone())
            .database(&database)
            .build()?;
        store.migrate().await?;
        Ok(Box::new(MongoBench {
            events: store.collection().clone(),
            store: Arc::new(store),
            client: self.client.clone(),
            database,
        }))
    }
}

struct MongoBench {
    client: Client,
    database: String,
    events: Collection<Document>,
    store: Arc<MongoStore>,
}

fn raw_document(n: usize) -> Document {
    let now = DateTime::now();
    doc! {
        "_id": Uuid::now_v7().to_string(),
        "event_type": EVENT_TYPE,
        "payload": payload(n).to_string(),
        "created_at": now,
        "available_at": now,
        "due_at": now,
        "attempts": 0_i64,
        "status": "pending",
        "handler_results": "{}",
        "locked_until": DateTime::from_millis(0),
    }
}

#[async_trait]
impl Bench for MongoBench {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn outbox_enqueue(&self, transactions: usize, per: usize) -> Result<(), BenchError> {
        let mut session = self.client.start_session().await.map_err(db)?;
        for t in 0..transactions {
            session.start_transaction().await.map_err(db)?;
            let events = (0..per).map(|i| event(t * per + i)).collect();
            self.store.enqueue_batch_in(&mut session, events).await?;
            session.commit_transaction().await.map_err(db)?;
        }
        Ok(())
    }

    async fn raw_enqueue(&self, transactions: usize, per: usize) -> Result<(), BenchError> {
        let mut session = self.client.start_session().await.map_err(db)?;
        for t in 0..transactions {
            session.start_transaction().await.map_err(db)?;
            if per == 1 {
                self.events
                    .insert_one(raw_document(t))
                    .session(&mut session)
                    .await
                    .map_err(db)?;
            } else {
                let documents: Vec<Document> =
                    (0..per).map(|i| raw_document(t * per + i)).collect();
                self.events
                    .insert_many(documents)
                    .session(&mut session)
                    .await
                    .map_err(db)?;
            }
            session.commit_transaction().await.map_err(db)?;
        }
        Ok(())
    }

    async fn raw_drain(&self, processors: usize, batch: usize) -> Result<u64, BenchError> {
        let done = Arc::new(AtomicU64::new(0));
        let loops = (0..processors).map(|p| {
            let (events, done) = (self.events.clone(), done.clone());
            tokio::spawn(async move {
                loop {
                    let now = DateTime::now();
                    let due = doc! { "status": "pending", "due_at": { "$lte": now } };
                    let candidates: Vec<Document> = events
                        .find(due.clone())
                        .sort(doc! { "due_at": 1, "_id": 1 })
                        .limit(i64::try_from(batch).unwrap_or(100))
                        .projection(doc! { "_id": 1 })
                        .await
                        .map_err(db)?
                        .try_collect()
                        .await
                        .map_err(db)?;
                    if candidates.is_empty() {
                        return Ok::<_, BenchError>(());
                    }
                    let ids: Vec<String> = candidates
                        .iter()
                        .filter_map(|d| d.get_str("_id").ok().map(str::to_owned))
                        .collect();
                    for_each_concurrent(ids, COMPLETE_CONCURRENCY, |id| {
                        let (events, done, due) = (&events, &done, &due);
                        async move {
                            let token = Uuid::now_v7().to_string();
                            let mut filter = due.clone();
                            filter.insert("_id", &id);
                            let until = DateTime::from_millis(DateTime::now().timestamp_millis() + 30_000);
                            let leased = events
                                .find_one_and_update(
                                    filter,
                                    doc! {
                                        "$set": { "lease_token": &token, "locked_by": format!("raw-{p}"), "locked_until": until, "due_at": until },
                                        "$inc": { "attempts": 1_i64 },
                                    },
                                )
                                .await
                                .map_err(db)?;
                            if leased.is_none() {
                                return Ok(());
                            }
                            let r = events
                                .update_one(
                                    doc! { "_id": &id, "lease_token": &token, "status": "pending" },
                                    doc! {
                                        "$set": { "status": "processed", "processed_at": DateTime::now(), "locked_until": DateTime::from_millis(0) },
                                        "$unset": { "lease_token": "", "locked_by": "" },
                                    },
                                )
                                .await
                                .map_err(db)?;
                            done.fetch_add(r.modified_count, Ordering::Relaxed);
                            Ok::<_, BenchError>(())
                        }
                    })
                    .await?;
                }
            })
        });
        for handle in loops.collect::<Vec<_>>() {
            handle
                .await
                .map_err(|e| BenchError::Setup(e.to_string()))??;
        }
        Ok(done.load(Ordering::Relaxed))
    }

    async fn cleanup(&self) {
        let _ = self.client.database(&self.database).drop().await;
    }
}
