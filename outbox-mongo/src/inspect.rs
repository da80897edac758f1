//! Inspection and repair (contracts C7, C9, C11): what operators' tools read and fix.

use crate::error::map_mongo;
use crate::row::{decode, never, to_bson_time};

use crate::store::{CORRUPT, MongoStore, due_filter, not_live, set_aside};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use outbox_core::model::CorruptEvent;
use outbox_core::store::{Finished, InspectStore, RepairStore};
use outbox_core::store::{StoreStats, TypeStats};
use outbox_core::{EventRecord, StoreError};
use std::time::Duration;
use uuid::Uuid;

#[async_trait]
impl InspectStore for MongoStore {
    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let Some(document) = self
            .events
            .find_one(doc! { "_id": id.to_string() })
            .await
            .map_err(|e| map_mongo("get", e))?
        else {
            return Ok(None);
        };
        if document.get_str("status") == Ok(CORRUPT) {
            return Err(StoreError::Corrupt {
                id: id.to_string(),
                message: format!(
                    "set aside because it does not decode ({}); fix it and call requeue_corrupt",
                    document.get_str("corrupt_reason").unwrap_or_default()
                ),
            });
        }
        decode(&document).map(Some)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        // MongoDB reads a limit of 0 as "no limit".
        if limit == 0 {
            return Ok(Vec::new());
        }
        let documents: Vec<Document> = self
            .events
            .find(doc! { "status": "dead" })
            .sort(doc! { "_id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(|e| map_mongo("dead letters", e))?
            .try_collect()
            .await
            .map_err(|e| map_mongo("dead letters", e))?;
        Ok(outbox_core::kit::decodable(
            "dead letters",
            documents.iter().map(decode),
        ))
    }

    async fn corrupt_events(&self, limit: usize) -> Result<Vec<CorruptEvent>, StoreError> {
        // MongoDB reads a limit of 0 as "no limit".
        if limit == 0 {
            return Ok(Vec::new());
        }
        let documents: Vec<Document> = self
            .events
            .find(set_aside())
            .sort(doc! { "processed_at": 1, "_id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .projection(
                doc! { "_id": 1, "event_type": 1, "corrupt_reason": 1, "processed_at": 1, "status": 1 },
            )
            .await
            .map_err(|e| map_mongo("corrupt events", e))?
            .try_collect()
            .await
            .map_err(|e| map_mongo("corrupt events", e))?;
        Ok(documents
            .iter()
            .map(|d| {
                let id = match d.get("_id") {
                    Some(Bson::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                let reason = match d.get_str("corrupt_reason") {
                    Ok(reason) => reason.to_owned(),
                    // Not set aside yet (the next sweep will): a status the store never writes.
                    Err(_) => format!(
                        "status: unknown status {}",
                        d.get("status").cloned().unwrap_or(Bson::Null)
                    ),
                };
                CorruptEvent::new(id, reason)
                    .with_event_type(d.get_str("event_type").ok().map(str::to_owned))
                    .with_set_aside_at(d.get_datetime("processed_at").ok().map(|t| {
                        DateTime::<Utc>::from_timestamp_millis(t.timestamp_millis())
                            .unwrap_or_default()
                    }))
            })
            .collect())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = Utc::now();
        let count = |filter: Document| async move {
            self.events
                .count_documents(filter)
                .await
                .map_err(|e| map_mongo("stats: count", e))
        };
        let bnow = to_bson_time(now);
        let pending = count(doc! { "status": "pending" }).await?;
        let due = count(due_filter(now)).await?;
        let leased = count(doc! { "status": "pending", "locked_until": { "$gt": bnow } }).await?;
        let processed = count(doc! { "status": "processed" }).await?;
        let dead = count(doc! { "status": "dead" }).await?;
        let corrupt = count(set_aside()).await?;
        let lag = self.oldest_due_age(now).await?;
        Ok(StoreStats::new(pending, due, leased, processed, dead, lag).with_corrupt(corrupt))
    }

    async fn lag(&self) -> Result<Duration, StoreError> {
        self.oldest_due_age(Utc::now()).await
    }

    async fn stats_by_type(&self) -> Result<Vec<TypeStats>, StoreError> {
        let now = Utc::now();
        let bnow = to_bson_time(now);
        let pending = doc! { "$eq": ["$status", "pending"] };
        // Keyed events are counted as due below, only when they head their key: a keyed event
        // behind its head keeps its due time until a claim parks it.
        let unkeyed = doc! { "$eq": [{ "$ifNull": ["$ordering_key", Bson::Null] }, Bson::Null] };
        let due = doc! { "$and": [pending.clone(), unkeyed, { "$lte": ["$due_at", bnow] }] };
        let leased = doc! { "$and": [pending.clone(), { "$gt": ["$locked_until", bnow] }] };
        let one_if = |cond: &Document| doc! { "$sum": { "$cond": [cond.clone(), 1, 0] } };
        let pipeline = vec![
            doc! { "$match": { "status": { "$in": ["pending", "dead"] } } },
            doc! { "$group": {
                "_id": "$event_type",
                "pending": one_if(&pending),
                "due": one_if(&due),
                "leased": one_if(&leased),
                "dead": one_if(&doc! { "$eq": ["$status", "dead"] }),
                "oldest": { "$min": { "$cond": [due.clone(), "$due_at", Bson::Null] } },
            } },
            doc! { "$sort": { "_id": 1 } },
        ];
        let mut cursor = self
            .events
            .aggregate(pipeline)
            .await
            .map_err(|e| map_mongo("stats by type", e))?;
        let mut rows = Vec::new();
        while let Some(group) = cursor
            .try_next()
            .await
            .map_err(|e| map_mongo("stats by type", e))?
        {
            let count = |field: &str| -> u64 {
                match group.get(field) {
                    Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
                    Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
                    Some(Bson::Double(n)) if *n >= 0.0 => *n as u64,
                    _ => 0,
                }
            };
            let age = match group.get("oldest") {
                Some(Bson::DateTime(t)) => Duration::from_millis(
                    u64::try_from(now.timestamp_millis() - t.timestamp_millis()).unwrap_or(0),
                ),
                _ => Duration::ZERO,
            };
            let event_type = group.get_str("_id").unwrap_or_default();
            rows.push(
                TypeStats::new(event_type)
                    .with_counts(
                        count("pending"),
                        count("due"),
                        count("leased"),
                        count("dead"),
                    )
                    .with_oldest_due_age(age),
            );
        }
        self.count_due_key_heads(now, &mut rows).await?;
        Ok(rows)
    }

    async fn key_head(&self, key: &str) -> Result<Option<EventRecord>, StoreError> {
        self.events
            .find_one(doc! { "ordering_key": key, "status": "pending" })
            .sort(doc! { "_id": 1 })
            .await
            .map_err(|e| map_mongo("key head", e))?
            .as_ref()
            .map(decode)
            .transpose()
    }
}

#[async_trait]
impl RepairStore for MongoStore {
    async fn requeue_dead(&self, id: Uuid) -> Result<bool, StoreError> {
        let Some(record) = self.get(id).await? else {
            return Ok(false);
        };
        outbox_core::kit::requeue_dead_letter(record, |results| async move {
            let now = to_bson_time(Utc::now());
            let done = self
                .events
                .update_one(
                    doc! { "_id": id.to_string(), "status": "dead" },
                    doc! {
                        "$set": {
                            "status": "pending", "attempts": 0_i64, "backoff_until": never(), "available_at": now,
                            "due_at": now, "handler_results": results,
                        },
                        "$unset": { "processed_at": "" },
                    },
                )
                .await
                .map_err(|e| map_mongo("requeue", e))?;
            Ok(done.modified_count == 1)
        })
        .await
    }

    async fn requeue_corrupt(&self, id: &str) -> Result<bool, StoreError> {
        let now = to_bson_time(Utc::now());
        let done = self
            .events
            .update_one(
                doc! { "_id": id, "status": not_live() },
                doc! {
                    "$set": {
                        "status": "pending", "backoff_until": never(), "available_at": now,
                        "due_at": now, "locked_until": never(),
                    },
                    "$unset": { "processed_at": "", "corrupt_reason": "", "lease_token": "", "locked_by": "" },
                },
            )
            .await
            .map_err(|e| map_mongo("requeue corrupt", e))?;
        Ok(done.modified_count == 1)
    }

    async fn purge(
        &self,
        finished: Finished,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let done = self
            .events
            .delete_many(doc! { "status": finished.status().as_str(), "processed_at": { "$lt": to_bson_time(older_than) } })
            .await
            .map_err(|e| map_mongo("purge", e))?;
        Ok(done.deleted_count)
    }
}
