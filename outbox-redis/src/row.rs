//! Decoding an event hash into an [`EventRecord`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use outbox_core::{EventRecord, EventStatus, HandlerResults, StoreError};
use uuid::Uuid;

pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Decodes an `HGETALL` reply.
pub(crate) fn decode(fields: &HashMap<String, String>) -> Result<EventRecord, StoreError> {
    let raw_id = fields.get("id").cloned().unwrap_or_default();
    let corrupt = |message: String| StoreError::Corrupt {
        id: raw_id.clone(),
        message,
    };
    let text = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
    let optional = |name: &str| Some(text(name).to_owned()).filter(|s| !s.is_empty());
    let millis = |name: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        match text(name) {
            "" => Ok(None),
            s => s
                .parse::<i64>()
                .map(|ms| Some(from_millis(ms)))
                .map_err(|e| corrupt(format!("{name}: {e}"))),
        }
    };
    let required = |name: &str| millis(name)?.ok_or_else(|| corrupt(format!("{name} missing")));
    let id = Uuid::parse_str(&raw_id).map_err(|e| corrupt(format!("id: {e}")))?;
    let status = EventStatus::parse(text("status"))
        .ok_or_else(|| corrupt(format!("status {:?}", text("status"))))?;
    let payload =
        serde_json::from_str(text("payload")).map_err(|e| corrupt(format!("payload: {e}")))?;
    let handler_results: HandlerResults = serde_json::from_str(text("handler_results"))
        .map_err(|e| corrupt(format!("handler_results: {e}")))?;
    let lease_token = optional("lease_token")
        .map(|t| Uuid::parse_str(&t).map_err(|e| corrupt(format!("lease_token: {e}"))))
        .transpose()?;
    Ok(EventRecord {
        id,
        event_type: text("event_type").to_owned(),
        payload,
        correlation_id: optional("correlation_id"),
        ordering_key: optional("ordering_key"),
        idempotency_key: optional("idempotency_key"),
        created_at: required("created_at")?,
        available_at: required("available_at")?,
        attempts: text("attempts")
            .parse()
            .map_err(|e| corrupt(format!("attempts: {e}")))?,
        backoff_until: millis("backoff_until")?,
        status,
        processed_at: millis("processed_at")?,
        handler_results,
        locked_by: optional("locked_by"),
        locked_until: millis("locked_until")?,
        lease_token,
    })
}
