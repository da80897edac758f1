//! Inspection and repair (contracts C7, C9, C11): what operators' tools read and fix.

use crate::error::map_redis;
use crate::row::{FIELDS, decode, from_millis};
use crate::scripts::SCRIPTS;

use crate::store::RedisStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::join_all;
use outbox_core::model::CorruptEvent;
use outbox_core::store::{Finished, InspectStore, RepairStore};
use outbox_core::store::{StoreStats, TypeStats};
use outbox_core::{EventRecord, StoreError};
use std::time::Duration;
use uuid::Uuid;

#[async_trait]
impl InspectStore for RedisStore {
    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        Ok(self.read_event(id).await?.map(|(_, record)| record))
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let oldest = self.oldest_in("dead", limit).await?;
        let rows = self.read_each(&oldest, &FIELDS[..], "dead letters").await?;
        let rows = rows.iter().filter(|r| r.iter().any(Option::is_some));
        Ok(outbox_core::kit::decodable(
            "dead letters",
            rows.map(|r| decode(r, None)),
        ))
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut total = [0u64; 6];
        let mut lag = Duration::ZERO;
        for reply in join_all((0..self.layout.len()).map(|p| self.stats_in(p))).await {
            let (counts, partition_lag) = reply?;
            for (sum, n) in total.iter_mut().zip(counts) {
                *sum += n;
            }
            lag = lag.max(partition_lag);
        }
        let [pending, due, leased, processed, dead, corrupt] = total;
        Ok(StoreStats::new(pending, due, leased, processed, dead, lag).with_corrupt(corrupt))
    }

    async fn stats_by_type(&self) -> Result<Vec<TypeStats>, StoreError> {
        crate::type_stats::stats_by_type(&mut self.connection.clone(), self.layout.prefixes()).await
    }

    async fn key_head(&self, key: &str) -> Result<Option<EventRecord>, StoreError> {
        let head: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.key(self.layout.of_key(key), &format!("okey:{key}")))
            .arg(0)
            .arg(0)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("key head", e))?;
        let Some(id) = head.first().and_then(|id| Uuid::parse_str(id).ok()) else {
            return Ok(None);
        };
        self.get(id).await
    }

    async fn corrupt_events(&self, limit: usize) -> Result<Vec<CorruptEvent>, StoreError> {
        let oldest = self.oldest_in("corrupt", limit).await?;
        let rows = self
            .read_each(
                &oldest,
                &["event_type", "corrupt_reason", "processed_at"],
                "corrupt events",
            )
            .await?;
        Ok(oldest
            .into_iter()
            .zip(rows)
            .map(|((_, id), row)| {
                let mut row = row.into_iter();
                let (event_type, reason, at) = (
                    row.next().flatten(),
                    row.next().flatten(),
                    row.next().flatten(),
                );
                CorruptEvent::new(id, reason.unwrap_or_default())
                    .with_event_type(event_type)
                    .with_set_aside_at(at.and_then(|ms| ms.parse().ok()).map(from_millis))
            })
            .collect())
    }
}

#[async_trait]
impl RepairStore for RedisStore {
    async fn requeue_dead(&self, id: Uuid) -> Result<bool, StoreError> {
        let Some((p, record)) = self.read_event(id).await? else {
            return Ok(false);
        };
        outbox_core::kit::requeue_dead_letter(record, |results| async move {
            let done: i64 = SCRIPTS
                .requeue
                .key(self.layout.prefix(p))
                .arg(id.to_string())
                .arg("dead")
                .arg(results)
                .invoke_async(&mut self.connection.clone())
                .await
                .map_err(|e| map_redis("requeue", e))?;
            Ok(done == 1)
        })
        .await
    }

    async fn purge(
        &self,
        finished: Finished,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for p in 0..self.layout.len() {
            loop {
                let n: i64 = SCRIPTS
                    .purge
                    .key(self.layout.prefix(p))
                    .arg(finished.status().as_str())
                    .arg(older_than.timestamp_millis())
                    .arg(PURGE_BATCH)
                    .invoke_async(&mut self.connection.clone())
                    .await
                    .map_err(|e| map_redis("purge", e))?;
                total += u64::try_from(n).unwrap_or(0);
                if n < PURGE_BATCH {
                    break;
                }
            }
        }
        Ok(total)
    }

    async fn requeue_corrupt(&self, id: &str) -> Result<bool, StoreError> {
        let Some(p) = self.locate(id).await? else {
            return Ok(false);
        };
        let done: i64 = SCRIPTS
            .requeue
            .key(self.layout.prefix(p))
            .arg(id)
            .arg("corrupt")
            .arg("")
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("requeue corrupt", e))?;
        Ok(done == 1)
    }
}

/// Events deleted per purge script call (each call is one short atomic step).
const PURGE_BATCH: i64 = 500;
