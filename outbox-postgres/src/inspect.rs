//! Inspection and repair (contracts C7, C9, C11): what operators' tools read and fix.

use crate::error::map_sqlx;
use crate::row::decode;

use crate::store::{PgStore, seconds};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outbox_core::model::CorruptEvent;
use outbox_core::store::{Finished, InspectStore, RepairStore};
use outbox_core::store::{HeldBack, StoreStats, TypeStats};
use outbox_core::{EventRecord, StoreError};
use sqlx::Row;
use std::time::Duration;
use uuid::Uuid;

#[async_trait]
impl InspectStore for PgStore {
    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let Some(row) = sqlx::query(&self.queries.get)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_sqlx("get", e))?
        else {
            return Ok(None);
        };
        let status: &str = row.try_get(10).map_err(|e| map_sqlx("get", e))?;
        if status == outbox_core::kit::CORRUPT_STATUS {
            let reason: Option<String> = row.try_get(17).map_err(|e| map_sqlx("get", e))?;
            return Err(set_aside_error(id, reason));
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
        let rows: Vec<(Uuid, String, Option<String>, Option<DateTime<Utc>>)> =
            sqlx::query_as(&self.queries.corrupt_events)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| map_sqlx("corrupt events", e))?;
        Ok(rows
            .into_iter()
            .map(|(id, event_type, reason, at)| {
                CorruptEvent::new(id.to_string(), reason.unwrap_or_default())
                    .with_event_type(Some(event_type))
                    .with_set_aside_at(at)
            })
            .collect())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let row = sqlx::query(&self.queries.stats)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_sqlx("stats", e))?;
        let count = |i: usize| -> Result<u64, StoreError> {
            let n: i64 = row.try_get(i).map_err(|e| map_sqlx("stats: decode", e))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        let lag: f64 = row.try_get(6).map_err(|e| map_sqlx("stats: decode", e))?;
        let snapshot: f64 = row.try_get(7).map_err(|e| map_sqlx("stats: decode", e))?;
        let held_back = HeldBack::new(seconds(snapshot), count(8)?)
            .with_windowed_claims(self.claim_window.is_windowed());
        Ok(StoreStats::new(
            count(0)?,
            count(1)?,
            count(2)?,
            count(3)?,
            count(4)?,
            seconds(lag),
        )
        .with_corrupt(count(5)?)
        .with_held_back(held_back))
    }

    async fn held_back(&self) -> Result<Option<HeldBack>, StoreError> {
        let (snapshot, dead_rows): (f64, i64) = sqlx::query_as(&self.queries.held_back)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_sqlx("held back", e))?;
        Ok(Some(
            HeldBack::new(seconds(snapshot), u64::try_from(dead_rows).unwrap_or(0))
                .with_windowed_claims(self.claim_window.is_windowed()),
        ))
    }

    async fn stats_by_type(&self) -> Result<Vec<TypeStats>, StoreError> {
        let rows = sqlx::query(&self.queries.stats_by_type)
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
                let lag: f64 = row.try_get(5).map_err(decode)?;
                Ok(TypeStats::new(event_type)
                    .with_counts(count(1)?, count(2)?, count(3)?, count(4)?)
                    .with_oldest_due_age(seconds(lag)))
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
        let lag: f64 = sqlx::query_scalar(&self.queries.lag)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_sqlx("lag", e))?;
        Ok(seconds(lag))
    }
}

#[async_trait]
impl RepairStore for PgStore {
    async fn requeue_dead(&self, id: Uuid) -> Result<bool, StoreError> {
        let Some(record) = self.get(id).await? else {
            return Ok(false);
        };
        outbox_core::kit::requeue_dead_letter(record, |results| async move {
            let done = sqlx::query(&self.queries.requeue_dead)
                .bind(id)
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
            .bind(older_than)
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("purge", e))?;
        Ok(done.rows_affected())
    }

    async fn requeue_corrupt(&self, id: &str) -> Result<bool, StoreError> {
        let Ok(id) = Uuid::parse_str(id) else {
            return Ok(false);
        };
        let done = sqlx::query(&self.queries.requeue_corrupt)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("requeue corrupt", e))?;
        Ok(done.rows_affected() == 1)
    }
}

/// The error `get` answers for an event that was set aside (C11).
fn set_aside_error(id: Uuid, reason: Option<String>) -> StoreError {
    StoreError::Corrupt {
        id: id.to_string(),
        message: format!(
            "set aside because it does not decode ({}); fix it and call requeue_corrupt",
            reason.unwrap_or_default()
        ),
    }
}
