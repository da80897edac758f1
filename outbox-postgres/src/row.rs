//! Decoding rows into [`EventRecord`]s.

use chrono::{DateTime, Utc};
use outbox_core::{EventRecord, EventStatus, HandlerResults, StoreError};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::error::map_sqlx;

pub(crate) fn decode(row: &PgRow) -> Result<EventRecord, StoreError> {
    let id: Uuid = row.try_get("id").map_err(|e| map_sqlx("decode id", e))?;
    let corrupt = |message: String| StoreError::Corrupt {
        id: id.to_string(),
        message,
    };
    let get = |e: sqlx::Error| map_sqlx("decode event", e);
    let status: String = row.try_get("status").map_err(get)?;
    let status =
        EventStatus::parse(&status).ok_or_else(|| corrupt(format!("unknown status {status:?}")))?;
    let results: serde_json::Value = row.try_get("handler_results").map_err(get)?;
    let handler_results: HandlerResults =
        serde_json::from_value(results).map_err(|e| corrupt(format!("handler_results: {e}")))?;
    let attempts: i32 = row.try_get("attempts").map_err(get)?;
    Ok(EventRecord {
        id,
        event_type: row.try_get("event_type").map_err(get)?,
        payload: row.try_get("payload").map_err(get)?,
        correlation_id: row.try_get("correlation_id").map_err(get)?,
        ordering_key: row.try_get("ordering_key").map_err(get)?,
        idempotency_key: row.try_get("idempotency_key").map_err(get)?,
        created_at: row.try_get::<DateTime<Utc>, _>("created_at").map_err(get)?,
        available_at: row
            .try_get::<DateTime<Utc>, _>("available_at")
            .map_err(get)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        backoff_until: row.try_get("backoff_until").map_err(get)?,
        status,
        processed_at: row.try_get("processed_at").map_err(get)?,
        handler_results,
        locked_by: row.try_get("locked_by").map_err(get)?,
        locked_until: row.try_get("locked_until").map_err(get)?,
        lease_token: row.try_get("lease_token").map_err(get)?,
    })
}
