//! Decoding rows (columns in the order of [`COLUMNS`](crate::queries::COLUMNS)) into
//! [`EventRecord`]s.

use chrono::{DateTime, Utc};
use outbox_core::model::{HandlerResults, Payload};
use outbox_core::{EventRecord, EventStatus, StoreError};
use serde_json::value::RawValue;
use sqlx::postgres::{PgRow, PgValueFormat};
use sqlx::types::Json;
use sqlx::{Row, ValueRef};
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
    let id: Uuid = row
        .try_get_unchecked(0)
        .map_err(|e| map_sqlx("decode event", e))?;
    let corrupt = |message: String| StoreError::Corrupt {
        id: id.to_string(),
        message,
    };
    // A value of the column's type that no event can hold (a timestamp of `infinity`) is the
    // row's damage, named by its column: the event is set aside, not the table called broken.
    let get = |e: sqlx::Error| match e {
        sqlx::Error::ColumnDecode { index, source } => outbox_core::kit::column_damage(
            &id.to_string(),
            crate::queries::COLUMNS,
            &index,
            source,
        ),
        other => map_sqlx("decode event", other),
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
        payload: Payload::from_raw(
            row.try_get_unchecked::<Json<Box<RawValue>>, _>(2)
                .map_err(get)?
                .0,
        )
        .map_err(|e| corrupt(format!("payload: {e}")))?,
        correlation_id: row.try_get_unchecked(3).map_err(get)?,
        ordering_key: row.try_get_unchecked(4).map_err(get)?,
        idempotency_key: row.try_get_unchecked(5).map_err(get)?,
        created_at: timestamp(row, 6)
            .map_err(get)?
            .ok_or_else(|| corrupt("created_at: null".to_owned()))?,
        available_at: timestamp(row, 7)
            .map_err(get)?
            .ok_or_else(|| corrupt("available_at: null".to_owned()))?,
        attempts,
        backoff_until: timestamp(row, 9).map_err(get)?,
        status,
        processed_at: timestamp(row, 11).map_err(get)?,
        handler_results,
        locked_by: row.try_get_unchecked(13).map_err(get)?,
        locked_until: timestamp(row, 14).map_err(get)?,
        lease_token: row.try_get_unchecked(15).map_err(get)?,
        traceparent: row.try_get_unchecked(16).map_err(get)?,
    })
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` column. Its binary form is microseconds since 2000-01-01 UTC: converted here
/// with one division, where sqlx's decoding adds a `chrono` duration to a date (about 400
/// instructions per timestamp, three per claimed event; callgrind) and panics on `infinity` or a
/// value beyond chrono's range — here those are errors (the event is set aside as corrupt). The
/// text format, which claims do not use, goes through sqlx.
fn timestamp(row: &PgRow, index: usize) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let value = row.try_get_raw(index)?;
    if value.is_null() {
        return Ok(None);
    }
    if value.format() == PgValueFormat::Text {
        return row.try_get_unchecked(index);
    }
    value
        .as_bytes()
        .ok()
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map(i64::from_be_bytes)
        .filter(|&micros| micros != i64::MAX && micros != i64::MIN)
        .and_then(|micros| micros.checked_add(POSTGRES_EPOCH_MICROS))
        .and_then(DateTime::from_timestamp_micros)
        .map(Some)
        .ok_or_else(|| sqlx::Error::ColumnDecode {
            index: index.to_string(),
            source: "not a timestamp within chrono's range (infinity?)".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct conversion agrees with sqlx's on instants around both epochs, far in the past
    /// and future, and refuses `infinity` (sqlx panics on it).
    #[tokio::test]
    async fn timestamps_decode_as_sqlx_decodes_them() {
        let url = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL must point at a PostgreSQL server (./scripts/services.sh)");
        let pool = sqlx::PgPool::connect(&url).await.expect("connect");
        let instants = [
            "2000-01-01 00:00:00+00",
            "1999-12-31 23:59:59.999999+00",
            "1970-01-01 00:00:00+00",
            "1969-12-31 23:59:59.000001+00",
            "2026-12-05 18:30:01.123456+00",
            "0044-03-15 12:00:00+00",
            "9999-12-31 23:59:59.999999+00",
            "200000-01-01 00:00:00+00",
        ];
        for text in instants {
            let row = sqlx::query("SELECT $1::timestamptz, NULL::timestamptz")
                .bind(text)
                .fetch_one(&pool)
                .await
                .expect("select");
            let ours = timestamp(&row, 0).expect("decodes");
            let theirs: Option<DateTime<Utc>> = row.try_get(0).expect("sqlx decodes");
            assert_eq!(ours, theirs, "{text}");
            assert!(ours.is_some(), "{text}");
            assert_eq!(timestamp(&row, 1).expect("null decodes"), None);
        }
        let row = sqlx::query("SELECT 'infinity'::timestamptz")
            .fetch_one(&pool)
            .await
            .expect("select");
        let refused = timestamp(&row, 0).expect_err("infinity is no DateTime");
        assert!(refused.to_string().contains("infinity"), "{refused}");
    }
}
