//! Decoding an event hash into an [`EventRecord`].

use chrono::{DateTime, Utc};
use outbox_core::{EventRecord, EventStatus, HandlerResults, StoreError};
use uuid::Uuid;

pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The fields an event is read from, in the order [`decode`] expects them (`HMGET` replies and the
/// claim script's replies follow it).
pub(crate) const FIELDS: [&str; 17] = [
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
    "traceparent",
    "status",
    "processed_at",
    "locked_by",
    "locked_until",
    "lease_token",
];

/// How many of [`FIELDS`], from the first, a claim reads and returns: the others (status,
/// processed time, lease holder, expiry and token) are known to the claimer.
pub(crate) const CLAIM_READS: usize = at::STATUS;

/// Each field's position in [`FIELDS`].
pub(crate) mod at {
    use super::FIELDS;

    const fn position(name: &str) -> usize {
        let mut i = 0;
        while i < FIELDS.len() {
            let (a, b) = (FIELDS[i].as_bytes(), name.as_bytes());
            if a.len() == b.len() {
                let mut j = 0;
                while j < a.len() && a[j] == b[j] {
                    j += 1;
                }
                if j == a.len() {
                    return i;
                }
            }
            i += 1;
        }
        panic!("not a field")
    }

    pub(crate) const ID: usize = position("id");
    pub(crate) const EVENT_TYPE: usize = position("event_type");
    pub(crate) const PAYLOAD: usize = position("payload");
    pub(crate) const CORRELATION_ID: usize = position("correlation_id");
    pub(crate) const ORDERING_KEY: usize = position("ordering_key");
    pub(crate) const IDEMPOTENCY_KEY: usize = position("idempotency_key");
    pub(crate) const CREATED_AT: usize = position("created_at");
    pub(crate) const AVAILABLE_AT: usize = position("available_at");
    pub(crate) const ATTEMPTS: usize = position("attempts");
    pub(crate) const BACKOFF_UNTIL: usize = position("backoff_until");
    pub(crate) const HANDLER_RESULTS: usize = position("handler_results");
    pub(crate) const TRACEPARENT: usize = position("traceparent");
    pub(crate) const STATUS: usize = position("status");
    pub(crate) const PROCESSED_AT: usize = position("processed_at");
    pub(crate) const LOCKED_BY: usize = position("locked_by");
    pub(crate) const LOCKED_UNTIL: usize = position("locked_until");
    pub(crate) const LEASE_TOKEN: usize = position("lease_token");
}

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
    let raw_id = text(at::ID);
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
    let status = EventStatus::parse(text(at::STATUS))
        .ok_or_else(|| corrupt(format!("status: {:?}", text(at::STATUS))))?;
    let payload =
        serde_json::from_str(text(at::PAYLOAD)).map_err(|e| corrupt(format!("payload: {e}")))?;
    let handler_results: HandlerResults = serde_json::from_str(text(at::HANDLER_RESULTS))
        .map_err(|e| corrupt(format!("handler_results: {e}")))?;
    // A finished event keeps the lease fields of its last claim in the hash (completions do not
    // spend writes clearing them): they mean something only while the event is pending.
    let pending = status == EventStatus::Pending;
    let lease_token = optional(at::LEASE_TOKEN)
        .filter(|_| pending)
        .map(|t| Uuid::parse_str(&t).map_err(|e| corrupt(format!("lease_token: {e}"))))
        .transpose()?;
    Ok(EventRecord {
        id,
        event_type: text(at::EVENT_TYPE).to_owned(),
        payload,
        correlation_id: optional(at::CORRELATION_ID),
        ordering_key: optional(at::ORDERING_KEY),
        idempotency_key: optional(at::IDEMPOTENCY_KEY),
        created_at: required(at::CREATED_AT)?,
        available_at: required(at::AVAILABLE_AT)?,
        attempts: text(at::ATTEMPTS)
            .parse()
            .map_err(|e| corrupt(format!("attempts: {e}")))?,
        backoff_until: millis(at::BACKOFF_UNTIL)?.filter(|_| pending),
        status,
        processed_at: millis(at::PROCESSED_AT)?,
        handler_results,
        locked_by: optional(at::LOCKED_BY).filter(|_| pending),
        locked_until: millis(at::LOCKED_UNTIL)?.filter(|_| pending),
        lease_token,
        traceparent: optional(at::TRACEPARENT),
    })
}
