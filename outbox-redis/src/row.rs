//! Decoding an event hash into an [`EventRecord`].

use chrono::{DateTime, Utc};
use outbox_core::{EventRecord, EventStatus, HandlerResults, StoreError};
use uuid::Uuid;

pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The fields an event is read from, in the order [`decode`] expects them (`HMGET` replies and the
/// claim script's replies follow it).
pub(crate) const FIELDS: [&str; 16] = [
    "id",
    "event_type",
    "payload",
    "correlation_id",
    "ordering_key",
    "idempotency_key",
    "created_at",
    "available_at",
    "attempts",
    "backoff_until",
    "handler_results",
    "status",
    "processed_at",
    "locked_by",
    "locked_until",
    "lease_token",
];

/// How many of [`FIELDS`], from the first, a claim reads and returns: the others (status,
/// processed time, lease holder, expiry and token) are known to the claimer.
pub(crate) const CLAIM_READS: usize = 11;

/// The claim script's list of fields, how many it reads (`CLAIM_READS`), and each field's position
/// in the list (`AT.attempts`), as Lua.
pub(crate) fn fields_lua() -> String {
    let quoted: Vec<String> = FIELDS.iter().map(|f| format!("'{f}'")).collect();
    let positions: Vec<String> = FIELDS
        .iter()
        .enumerate()
        .map(|(i, f)| format!("{f} = {}", i + 1))
        .collect();
    format!(
        "local FIELDS = {{ {} }}\nlocal CLAIM_READS = {CLAIM_READS}\nlocal AT = {{ {} }}",
        quoted.join(", "),
        positions.join(", ")
    )
}

/// Decodes an event's fields, in the order of [`FIELDS`] (a missing field is `None`).
pub(crate) fn decode(values: &[Option<String>]) -> Result<EventRecord, StoreError> {
    let text = |i: usize| values.get(i).and_then(Option::as_deref).unwrap_or("");
    let raw_id = text(0);
    let corrupt = |message: String| StoreError::Corrupt {
        id: raw_id.to_owned(),
        message,
    };
    let optional = |i: usize| Some(text(i).to_owned()).filter(|s| !s.is_empty());
    let millis = |i: usize| -> Result<Option<DateTime<Utc>>, StoreError> {
        match text(i) {
            "" => Ok(None),
            s => s
                .parse::<i64>()
                .map(|ms| Some(from_millis(ms)))
                .map_err(|e| corrupt(format!("{}: {e}", FIELDS[i]))),
        }
    };
    let required = |i: usize| millis(i)?.ok_or_else(|| corrupt(format!("{}: missing", FIELDS[i])));
    let id = Uuid::parse_str(raw_id).map_err(|e| corrupt(format!("id: {e}")))?;
    let status =
        EventStatus::parse(text(11)).ok_or_else(|| corrupt(format!("status: {:?}", text(11))))?;
    let payload = serde_json::from_str(text(2)).map_err(|e| corrupt(format!("payload: {e}")))?;
    let handler_results: HandlerResults =
        serde_json::from_str(text(10)).map_err(|e| corrupt(format!("handler_results: {e}")))?;
    // A finished event keeps the lease fields of its last claim in the hash (completions do not
    // spend writes clearing them): they mean something only while the event is pending.
    let pending = status == EventStatus::Pending;
    let lease_token = optional(15)
        .filter(|_| pending)
        .map(|t| Uuid::parse_str(&t).map_err(|e| corrupt(format!("lease_token: {e}"))))
        .transpose()?;
    Ok(EventRecord {
        id,
        event_type: text(1).to_owned(),
        payload,
        correlation_id: optional(3),
        ordering_key: optional(4),
        idempotency_key: optional(5),
        created_at: required(6)?,
        available_at: required(7)?,
        attempts: text(8)
            .parse()
            .map_err(|e| corrupt(format!("attempts: {e}")))?,
        backoff_until: millis(9)?.filter(|_| pending),
        status,
        processed_at: millis(12)?,
        handler_results,
        locked_by: optional(13).filter(|_| pending),
        locked_until: millis(14)?.filter(|_| pending),
        lease_token,
    })
}
