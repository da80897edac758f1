//! Decoding rows into [`EventRecord`]s; times are stored as Unix milliseconds.

use chrono::{DateTime, Utc};
use outbox_core::model::{HandlerResults, Payload};
use outbox_core::{EventRecord, EventStatus, StoreError};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::error::map_sqlx;

pub(crate) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) use outbox_core::kit::from_millis;

pub(crate) fn now_millis() -> i64 {
    to_millis(Utc::now())
}

/// The `seq` and raw lease token of a claimed row, readable even when the rest does not decode.
pub(crate) fn lease_of(row: &SqliteRow) -> Result<(i64, Option<String>), StoreError> {
    let get = |e: sqlx::Error| map_sqlx("decode event", e);
    Ok((row.try_get(0).map_err(get)?, row.try_get(16).map_err(get)?))
}

/// Decodes a row whose columns are [`COLUMNS`](crate::queries::COLUMNS), in that order.
pub(crate) fn decode(row: &SqliteRow) -> Result<EventRecord, StoreError> {
    let raw_id: &str = row.try_get(1).map_err(|e| map_sqlx("decode event", e))?;
    let corrupt = |message: String| StoreError::Corrupt {
        id: raw_id.to_owned(),
        message,
    };
    // SQLite keeps whatever a hand-written UPDATE put in a column (text in an INTEGER column): a
    // value of the wrong type is the row's damage, named by its column, not a database error.
    let get = |e: sqlx::Error| match e {
        sqlx::Error::ColumnDecode { index, source } => {
            outbox_core::kit::column_damage(raw_id, crate::queries::COLUMNS, &index, source)
        }
        other => map_sqlx("decode event", other),
    };
    let id = Uuid::parse_str(raw_id).map_err(|e| corrupt(format!("id: {e}")))?;
    let status: &str = row.try_get(11).map_err(get)?;
    let status =
        EventStatus::parse(status).ok_or_else(|| corrupt(format!("status: unknown {status:?}")))?;
    let payload: &str = row.try_get(3).map_err(get)?;
    let payload = Payload::from_json_str(payload).map_err(|e| corrupt(format!("payload: {e}")))?;
    let results: &str = row.try_get(13).map_err(get)?;
    let handler_results: HandlerResults =
        serde_json::from_str(results).map_err(|e| corrupt(format!("handler_results: {e}")))?;
    let token: Option<&str> = row.try_get(16).map_err(get)?;
    let lease_token = token
        .map(|t| Uuid::parse_str(t).map_err(|e| corrupt(format!("lease_token: {e}"))))
        .transpose()?;
    let time = |index: usize| -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(row
            .try_get::<Option<i64>, _>(index)
            .map_err(get)?
            .map(from_millis))
    };
    let required = |index: usize, name: &str| -> Result<DateTime<Utc>, StoreError> {
        time(index)?.ok_or_else(|| corrupt(format!("{name}: NULL")))
    };
    let attempts: i64 = row.try_get(9).map_err(get)?;
    let attempts = u32::try_from(attempts)
        .map_err(|_| corrupt(format!("attempts: {attempts} is out of range")))?;
    Ok(EventRecord {
        id,
        event_type: row.try_get(2).map_err(get)?,
        payload,
        correlation_id: row.try_get(4).map_err(get)?,
        ordering_key: row.try_get(5).map_err(get)?,
        idempotency_key: row.try_get(6).map_err(get)?,
        created_at: required(7, "created_at")?,
        available_at: required(8, "available_at")?,
        attempts,
        backoff_until: time(10)?,
        status,
        processed_at: time(12)?,
        handler_results,
        locked_by: row.try_get(14).map_err(get)?,
        locked_until: time(15)?,
        lease_token,
        traceparent: row.try_get(17).map_err(get)?,
    })
}
