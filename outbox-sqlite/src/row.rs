//! Decoding rows into [`EventRecord`]s; times are stored as Unix milliseconds.

use chrono::{DateTime, Utc};
use outbox_core::{EventRecord, EventStatus, HandlerResults, StoreError};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::error::map_sqlx;

pub(crate) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub(crate) fn now_millis() -> i64 {
    to_millis(Utc::now())
}

pub(crate) fn decode(row: &SqliteRow) -> Result<EventRecord, StoreError> {
    let get = |e: sqlx::Error| map_sqlx("decode event", e);
    let raw_id: String = row.try_get("id").map_err(get)?;
    let corrupt = |message: String| StoreError::Corrupt {
        id: raw_id.clone(),
        message,
    };
    let id = Uuid::parse_str(&raw_id).map_err(|e| corrupt(format!("id: {e}")))?;
    let status: String = row.try_get("status").map_err(get)?;
    let status =
        EventStatus::parse(&status).ok_or_else(|| corrupt(format!("unknown status {status:?}")))?;
    let payload: String = row.try_get("payload").map_err(get)?;
    let payload = serde_json::from_str(&payload).map_err(|e| corrupt(format!("payload: {e}")))?;
    let results: String = row.try_get("handler_results").map_err(get)?;
    let handler_results: HandlerResults =
        serde_json::from_str(&results).map_err(|e| corrupt(format!("handler_results: {e}")))?;
    let token: Option<String> = row.try_get("lease_token").map_err(get)?;
    let lease_token = token
        .map(|t| Uuid::parse_str(&t).map_err(|e| corrupt(format!("lease_token: {e}"))))
        .transpose()?;
    let time = |name: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(row
            .try_get::<Option<i64>, _>(name)
            .map_err(get)?
            .map(from_millis))
    };
    let required = |name: &str| -> Result<DateTime<Utc>, StoreError> {
        time(name)?.ok_or_else(|| StoreError::Corrupt {
            id: raw_id.clone(),
            message: format!("{name} is NULL"),
        })
    };
    let attempts: i64 = row.try_get("attempts").map_err(get)?;
    Ok(EventRecord {
        id,
        event_type: row.try_get("event_type").map_err(get)?,
        payload,
        correlation_id: row.try_get("correlation_id").map_err(get)?,
        ordering_key: row.try_get("ordering_key").map_err(get)?,
        idempotency_key: row.try_get("idempotency_key").map_err(get)?,
        created_at: required("created_at")?,
        available_at: required("available_at")?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        backoff_until: time("backoff_until")?,
        status,
        processed_at: time("processed_at")?,
        handler_results,
        locked_by: row.try_get("locked_by").map_err(get)?,
        locked_until: time("locked_until")?,
        lease_token,
    })
}
