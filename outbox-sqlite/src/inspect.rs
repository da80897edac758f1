//! Inspection and repair (contracts C7, C9, C11): what operators' tools read and fix.

use crate::error::map_sqlx;
use crate::row::{decode, from_millis, now_millis, to_millis};

use crate::store::SqliteStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outbox_core::model::CorruptEvent;
use outbox_core::store::{Finished, InspectStore, RepairStore};
use outbox_core::store::{StoreStats, TypeStats};
use outbox_core::{EventRecord, StoreError};
use sqlx::Row;
use std::time::Duration;
use uuid::Uuid;

#[async_trait]
impl InspectStore for SqliteStore {
    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let Some(row) = sqlx::query(&self.queries.get)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_sqlx("get", e))?
        else {
            return Ok(None);
        };
        let status: &str = row.try_get(11).map_err(|e| map_sqlx("get", e))?;
        if status == outbox_core::kit::CORRUPT_STATUS {
            let reason: Option<String> = row.try_get(18).map_err(|e| map_sqlx("get", e))?;
            return Err(StoreError::Corrupt {
                id: id.to_string(),
                message: format!(
                    "set aside because it does not decode ({}); fix it and call requeue_corrupt",
                    reason.unwrap_or_default()
                ),
            });
        }
        decode(&row).map(Some)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(&self.queries.dead_letters)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("dead letters", e))?;
        Ok(outbox_core::kit::decodable(
            "dead letters",
            rows.iter().map(decode),
        ))
    }

    async fn corrupt_events(&self, limit: usize) -> Result<Vec<CorruptEvent>, StoreError> {
        let rows: Vec<(String, String, Option<String>, Option<i64>)> =
            sqlx::query_as(&self.queries.corrupt_events)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| map_sqlx("corrupt events", e))?;
        Ok(rows
            .into_iter()
            .map(|(id, event_type, reason, at)| {
                CorruptEvent::new(id, reason.unwrap_or_default())
                    .with_event_type(Some(event_type))
                    .with_set_aside_at(at.map(from_millis))
            })
            .collect())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = now_millis();
        let row = sqlx::query(&self.queries.stats)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_sqlx("stats", e))?;
        let count = |i: usize| -> Result<u64, StoreError> {
            let n: i64 = row.try_get(i).map_err(|e| map_sqlx("stats: decode", e))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        let oldest: Option<i64> = row.try_get(6).map_err(|e| map_sqlx("stats: decode", e))?;
        let lag = outbox_core::kit::age_millis(now, oldest);
        Ok(
            StoreStats::new(count(0)?, count(1)?, count(2)?, count(3)?, count(4)?, lag)
                .with_corrupt(count(5)?),
        )
    }

    async fn stats_by_type(&self) -> Result<Vec<TypeStats>, StoreError> {
        let now = now_millis();
        let rows = sqlx::query(&self.queries.stats_by_type)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("stats by type", e))?;
        rows.iter()
            .map(|row| {
                let decode = |e| map_sqlx("stats by type: decode", e);
                let count = |i: usize| -> Result<u64, StoreError> {
                    let n: i64 = row.try_get(i).map_err(decode)?;
                    Ok(u64::try_from(n).unwrap_or(0))
                };
                let event_type: String = row.try_get(0).map_err(decode)?;
                let oldest: Option<i64> = row.try_get(5).map_err(decode)?;
                Ok(TypeStats::new(event_type)
                    .with_counts(count(1)?, count(2)?, count(3)?, count(4)?)
                    .with_oldest_due_age(outbox_core::kit::age_millis(now, oldest)))
            })
            .collect()
    }

    async fn key_head(&self, key: &str) -> Result<Option<EventRecord>, StoreError> {
        sqlx::query(&self.queries.key_head)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_sqlx("key head", e))?
            .as_ref()
            .map(decode)
            .transpose()
    }

    async fn lag(&self) -> Result<Duration, StoreError> {
        let now = now_millis();
        let oldest: Option<i64> = sqlx::query_scalar(&self.queries.lag)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_sqlx("lag", e))?;
        Ok(outbox_core::kit::age_millis(now, oldest))
    }
}

#[async_trait]
impl RepairStore for SqliteStore {
    async fn requeue_dead(&self, id: Uuid) -> Result<bool, StoreError> {
        let Some(record) = self.get(id).await? else {
            return Ok(false);
        };
        outbox_core::kit::requeue_dead_letter(record, |results| async move {
            let done = sqlx::query(&self.queries.requeue_dead)
                .bind(now_millis())
                .bind(id.to_string())
                .bind(results)
                .execute(&self.pool)
                .await
                .map_err(|e| map_sqlx("requeue", e))?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn purge(
        &self,
        finished: Finished,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(&self.queries.purge)
            .bind(finished.status().as_str())
            .bind(to_millis(older_than))
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("purge", e))?;
        Ok(done.rows_affected())
    }

    async fn requeue_corrupt(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.queries.requeue_corrupt)
            .bind(now_millis())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("requeue corrupt", e))?;
        Ok(done.rows_affected() == 1)
    }
}
