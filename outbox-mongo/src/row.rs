//! Encoding events as documents and decoding them back. Payload and handler results are stored as
//! JSON strings so every JSON value round-trips exactly (BSON has no unsigned 64-bit integers).

use chrono::{DateTime, Utc};
use mongodb::bson::{self, Bson, Document, doc};
use outbox_core::model::{HandlerResults, Payload};
use outbox_core::{EventRecord, EventStatus, NewEvent, StoreError};
use uuid::Uuid;

/// The `locked_until` / `backoff_until` value meaning "none": the epoch, always in the past.
pub(crate) fn never() -> bson::DateTime {
    bson::DateTime::from_millis(0)
}

/// The `due_at` of a parked event (waiting behind an older event of its ordering key): never due.
pub(crate) fn parked() -> bson::DateTime {
    bson::DateTime::MAX
}

pub(crate) fn to_bson_time(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

fn from_bson_time(t: bson::DateTime) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(t.timestamp_millis()).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The document stored for a new event at `now`, with its payload already serialized.
pub(crate) fn encode_new(event: &NewEvent, payload: String, now: DateTime<Utc>) -> Document {
    let available = to_bson_time(event.available_at.unwrap_or(now));
    let mut document = doc! {
        "_id": event.id.to_string(),
        "event_type": &event.event_type,
        "payload": payload,
        "created_at": to_bson_time(now),
        "available_at": available,
        "due_at": available,
        "attempts": 0_i64,
        "backoff_until": never(),
        "status": "pending",
        "handler_results": "{}",
        "locked_until": never(),
    };
    for (field, value) in [
        ("correlation_id", &event.correlation_id),
        ("ordering_key", &event.ordering_key),
        ("idempotency_key", &event.idempotency_key),
        ("traceparent", &event.traceparent),
    ] {
        if let Some(value) = value {
            document.insert(field, value);
        }
    }
    document
}

pub(crate) fn decode(document: &Document) -> Result<EventRecord, StoreError> {
    let raw_id = document.get_str("_id").unwrap_or_default().to_owned();
    let corrupt = |message: String| StoreError::Corrupt {
        id: raw_id.clone(),
        message,
    };
    let text = |name: &str| {
        document
            .get_str(name)
            .map_err(|e| corrupt(format!("{name}: {e}")))
    };
    let optional = |name: &str| match document.get(name) {
        Some(Bson::String(s)) => Some(s.clone()),
        _ => None,
    };
    let time = |name: &str| {
        document
            .get_datetime(name)
            .copied()
            .map_err(|e| corrupt(format!("{name}: {e}")))
    };
    let set_time = |name: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        match document.get(name) {
            Some(Bson::DateTime(t)) if t.timestamp_millis() > 0 => Ok(Some(from_bson_time(*t))),
            Some(Bson::DateTime(_) | Bson::Null) | None => Ok(None),
            Some(other) => Err(corrupt(format!("{name}: unexpected {other}"))),
        }
    };
    let attempts = match document.get("attempts") {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => i64::from(*n),
        other => return Err(corrupt(format!("attempts: {other:?}"))),
    };
    let status =
        EventStatus::parse(text("status")?).ok_or_else(|| corrupt("unknown status".into()))?;
    let handler_results: HandlerResults = serde_json::from_str(text("handler_results")?)
        .map_err(|e| corrupt(format!("handler_results: {e}")))?;
    Ok(EventRecord {
        id: Uuid::parse_str(&raw_id).map_err(|e| corrupt(format!("_id: {e}")))?,
        event_type: text("event_type")?.to_owned(),
        payload: Payload::from_json_str(text("payload")?)
            .map_err(|e| corrupt(format!("payload: {e}")))?,
        correlation_id: optional("correlation_id"),
        ordering_key: optional("ordering_key"),
        idempotency_key: optional("idempotency_key"),
        created_at: from_bson_time(time("created_at")?),
        available_at: from_bson_time(time("available_at")?),
        attempts: u32::try_from(attempts)
            .map_err(|_| corrupt(format!("attempts: {attempts} is out of range")))?,
        backoff_until: set_time("backoff_until")?,
        status,
        processed_at: set_time("processed_at")?,
        handler_results,
        locked_by: optional("locked_by"),
        locked_until: set_time("locked_until")?,
        lease_token: optional("lease_token")
            .map(|t| Uuid::parse_str(&t).map_err(|e| corrupt(format!("lease_token: {e}"))))
            .transpose()?,
        traceparent: optional("traceparent"),
    })
}
