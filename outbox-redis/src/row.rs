//! Decoding an event hash into an [`EventRecord`].

use chrono::{DateTime, Utc};
use outbox_core::model::{HandlerResults, Payload};
use outbox_core::{EventRecord, EventStatus, NewEvent, StoreError};
use uuid::Uuid;

pub(crate) use outbox_core::kit::from_millis;

/// The fields an event is read from, in the order [`decode`] expects them (`HMGET` replies and the
/// claim script's replies follow it).
///
/// An event's immutable part — id, type, correlation id, keys, creation time, trace context and
/// payload — is one field, `body` (see [`body_tail`]): a claim reads five fields and returns seven
/// values per event instead of thirteen and fifteen, which cut the server's and the client's CPU
/// per drained event. Events written before that layout keep one field per part (the fields after
/// `lease_token` below); [`decode`] reads both, and a claim moves an old event to the new layout in
/// place.
pub(crate) const FIELDS: [&str; 18] = [
    "body",
    "available_at",
    "attempts",
    "backoff_until",
    "handler_results",
    "status",
    "processed_at",
    "locked_by",
    "locked_until",
    "lease_token",
    // The layout before `body`.
    "id",
    "event_type",
    "payload",
    "correlation_id",
    "ordering_key",
    "idempotency_key",
    "created_at",
    "traceparent",
];

/// How many of [`FIELDS`], from the first, a claim reads and returns: the others (status,
/// processed time, lease holder, expiry and token) are known to the claimer, and the old layout's
/// fields are folded into `body` by the claim.
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

    pub(crate) const BODY: usize = position("body");
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

/// The part of the event's `body` the enqueue script does not write: `body` is
/// `[<created_at ms>,"<id>","<type>",<correlation id>,<ordering key>,<idempotency key>,<traceparent>]`,
/// a newline, then the payload's JSON; the script puts `[` and the server's time before this.
/// Absent optional parts are `null`. (JSON text never holds a raw newline inside the header, so
/// the first newline ends it.)
pub(crate) fn body_tail(event: &NewEvent, payload: &str) -> Result<String, StoreError> {
    let header = serde_json::to_string(&(
        event.id,
        &event.event_type,
        &event.correlation_id,
        &event.ordering_key,
        &event.idempotency_key,
        &event.traceparent,
    ))
    .map_err(|e| StoreError::invalid(format!("event {}: header: {e}", event.id)))?;
    let mut tail = String::with_capacity(header.len() + 1 + payload.len());
    tail.push(',');
    tail.push_str(&header[1..]);
    tail.push('\n');
    tail.push_str(payload);
    Ok(tail)
}

/// The header of a `body` (see [`body_tail`]).
type Header = (
    i64,
    Uuid,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The immutable part of an event, from its `body` or from the old layout's fields.
struct Immutable {
    id: Uuid,
    event_type: String,
    payload: Payload,
    correlation_id: Option<String>,
    ordering_key: Option<String>,
    idempotency_key: Option<String>,
    created_at: DateTime<Utc>,
    traceparent: Option<String>,
}

fn from_body(body: &str) -> Result<Immutable, String> {
    let (header, payload) = body
        .split_once('\n')
        .ok_or("body: no newline after the header")?;
    let (created_at, id, event_type, correlation_id, ordering_key, idempotency_key, traceparent): Header =
        serde_json::from_str(header).map_err(|e| format!("body header: {e}"))?;
    // Empty texts read back as absent, as in the old layout (which stored absent ones as empty).
    let given = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok(Immutable {
        id,
        event_type,
        payload: Payload::from_json_str(payload).map_err(|e| format!("payload: {e}"))?,
        correlation_id: given(correlation_id),
        ordering_key: given(ordering_key),
        idempotency_key: given(idempotency_key),
        created_at: from_millis(created_at),
        traceparent: given(traceparent),
    })
}

/// What a claimer knows of an event it has just leased, instead of reading it back: the event is
/// pending, not processed, and leased to it until `locked_until` with `token`.
pub(crate) struct Leased<'a> {
    pub(crate) worker: &'a str,
    pub(crate) locked_until: DateTime<Utc>,
    pub(crate) token: &'a str,
}

/// Decodes an event's fields, in the order of [`FIELDS`] (a missing field is `None`); with
/// `leased`, only the first [`CLAIM_READS`] are read and the rest is what the claimer knows.
// Long by design: one line per field of the event hash, in the order of `FIELDS`.
pub(crate) fn decode(
    values: &[Option<String>],
    leased: Option<&Leased<'_>>,
) -> Result<EventRecord, StoreError> {
    let text = |i: usize| values.get(i).and_then(Option::as_deref).unwrap_or("");
    let optional = |i: usize| Some(text(i).to_owned()).filter(|s| !s.is_empty());
    let millis = |i: usize| -> Result<Option<DateTime<Utc>>, String> {
        match text(i) {
            "" => Ok(None),
            s => s
                .parse::<i64>()
                .map(|ms| Some(from_millis(ms)))
                .map_err(|e| format!("{}: {e}", FIELDS[i])),
        }
    };
    let immutable = match values.get(at::BODY).and_then(Option::as_deref) {
        Some(body) => from_body(body),
        None => legacy(values),
    };
    // The id for the error: the body's, else the old layout's field, else what its header starts with.
    let fallback_id = || {
        let id = text(at::ID);
        if id.is_empty() {
            text(at::BODY)
                .split(',')
                .nth(1)
                .unwrap_or("")
                .trim_matches('"')
                .to_owned()
        } else {
            id.to_owned()
        }
    };
    let mutable = || -> Result<_, String> {
        let status = match leased {
            Some(_) => EventStatus::Pending,
            None => EventStatus::parse(text(at::STATUS))
                .ok_or_else(|| format!("status: {:?}", text(at::STATUS)))?,
        };
        let handler_results: HandlerResults = serde_json::from_str(text(at::HANDLER_RESULTS))
            .map_err(|e| format!("handler_results: {e}"))?;
        let attempts = text(at::ATTEMPTS)
            .parse()
            .map_err(|e| format!("attempts: {e}"))?;
        let available_at = millis(at::AVAILABLE_AT)?.ok_or("available_at: missing")?;
        Ok((status, handler_results, attempts, available_at))
    };
    let (event, (status, handler_results, attempts, available_at)) =
        match immutable.and_then(|event| Ok((event, mutable()?))) {
            Ok(decoded) => decoded,
            Err(message) => {
                return Err(StoreError::Corrupt {
                    id: fallback_id(),
                    message,
                });
            }
        };
    let corrupt = |message: String| StoreError::Corrupt {
        id: event.id.to_string(),
        message,
    };
    // A finished event keeps the lease fields of its last claim in the hash (completions do not
    // spend writes clearing them): they mean something only while the event is pending.
    let pending = status == EventStatus::Pending;
    let token = |t: &str| Uuid::parse_str(t).map_err(|e| corrupt(format!("lease_token: {e}")));
    let (processed_at, locked_by, locked_until, lease_token) = match leased {
        Some(lease) => (
            None,
            Some(lease.worker.to_owned()),
            Some(lease.locked_until),
            Some(token(lease.token)?),
        ),
        None => (
            millis(at::PROCESSED_AT).map_err(corrupt)?,
            optional(at::LOCKED_BY).filter(|_| pending),
            millis(at::LOCKED_UNTIL)
                .map_err(corrupt)?
                .filter(|_| pending),
            optional(at::LEASE_TOKEN)
                .filter(|_| pending)
                .map(|t| token(&t))
                .transpose()?,
        ),
    };
    Ok(EventRecord {
        id: event.id,
        event_type: event.event_type,
        payload: event.payload,
        correlation_id: event.correlation_id,
        ordering_key: event.ordering_key,
        idempotency_key: event.idempotency_key,
        created_at: event.created_at,
        available_at,
        attempts,
        backoff_until: millis(at::BACKOFF_UNTIL)
            .map_err(corrupt)?
            .filter(|_| pending),
        status,
        processed_at,
        handler_results,
        locked_by,
        locked_until,
        lease_token,
        traceparent: event.traceparent,
    })
}

/// The immutable part of an event written before `body`: one field per part, empty strings for
/// absent ones.
fn legacy(values: &[Option<String>]) -> Result<Immutable, String> {
    let text = |i: usize| values.get(i).and_then(Option::as_deref).unwrap_or("");
    let optional = |i: usize| Some(text(i).to_owned()).filter(|s| !s.is_empty());
    Ok(Immutable {
        id: Uuid::parse_str(text(at::ID)).map_err(|e| format!("id: {e}"))?,
        event_type: text(at::EVENT_TYPE).to_owned(),
        payload: Payload::from_json_str(text(at::PAYLOAD)).map_err(|e| format!("payload: {e}"))?,
        correlation_id: optional(at::CORRELATION_ID),
        ordering_key: optional(at::ORDERING_KEY),
        idempotency_key: optional(at::IDEMPOTENCY_KEY),
        created_at: match text(at::CREATED_AT) {
            "" => return Err("created_at: missing".to_owned()),
            s => from_millis(s.parse().map_err(|e| format!("created_at: {e}"))?),
        },
        traceparent: optional(at::TRACEPARENT),
    })
}
