//! Decoding rows (columns in the order of [`COLUMNS`](crate::queries::COLUMNS)) into
//! [`EventRecord`]s.

use chrono::{DateTime, Utc};
use outbox_core::{EventRecord, EventStatus, HandlerResults, StoreError};
use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::map_sqlx;

/// The id and lease token of a claimed row, readable even when the rest does not decode.
pub(crate) fn lease_of(row: &PgRow) -> Result<(Uuid, Option<Uuid>), StoreError> {
    let get = |e: sqlx::Error| map_sqlx("decode event", e);
    Ok((row.try_get(0).map_err(get)?, row.try_get(15).map_err(get)?))
}

/// The position of the completion statement's `lost` column, after those of
/// [`COLUMNS`](crate::queries::COLUMNS): a lease token the statement did not apply.
pub(crate) const LOST: usize = 17;

/// Decodes a row of [`COLUMNS`](crate::queries::COLUMNS). Columns are read by position without
/// sqlx's per-column type check: every statement that returns them selects the table's own
/// columns, of the types `migrate` creates (the schema version the store checks at start vouches
/// for them); the check cost about 1,700 instructions per claimed event (callgrind). A value that
/// does not decode still fails here, and the event is set aside as corrupt.
pub(crate) fn decode(row: &PgRow) -> Result<EventRecord, StoreError> {
    let get = |e: sqlx::Error| map_sqlx("decode event", e);
    let id: Uuid = row.try_get_unchecked(0).map_err(get)?;
    let corrupt = |message: String| StoreError::Corrupt {
        id: id.to_string(),
        message,
    };
    let status: &str = row.try_get_unchecked(10).map_err(get)?;
    let status =
        EventStatus::parse(status).ok_or_else(|| corrupt(format!("status: unknown {status:?}")))?;
    let results: Json<&RawValue> = row.try_get_unchecked(12).map_err(get)?;
    let handler_results: HandlerResults = serde_json::from_str(results.0.get())
        .map_err(|e| corrupt(format!("handler_results: {e}")))?;
    let attempts: i32 = row.try_get_unchecked(8).map_err(get)?;
    let attempts = u32::try_from(attempts)
        .map_err(|_| corrupt(format!("attempts: {attempts} is negative")))?;
    Ok(EventRecord {
        id,
        event_type: row.try_get_unchecked(1).map_err(get)?,
        payload: row
            .try_get_unchecked::<Json<Box<RawValue>>, _>(2)
            .map_err(get)?
            .0
            .into(),
        correlation_id: row.try_get_unchecked(3).map_err(get)?,
        ordering_key: row.try_get_unchecked(4).map_err(get)?,
        idempotency_key: row.try_get_unchecked(5).map_err(get)?,
        created_at: row.try_get_unchecked::<DateTime<Utc>, _>(6).map_err(get)?,
        available_at: row.try_get_unchecked::<DateTime<Utc>, _>(7).map_err(get)?,
        attempts,
        backoff_until: row.try_get_unchecked(9).map_err(get)?,
        status,
        processed_at: row.try_get_unchecked(11).map_err(get)?,
        handler_results,
        locked_by: row.try_get_unchecked(13).map_err(get)?,
        locked_until: row.try_get_unchecked(14).map_err(get)?,
        lease_token: row.try_get_unchecked(15).map_err(get)?,
        traceparent: row.try_get_unchecked(16).map_err(get)?,
    })
}
