//! The stored event record, its status and per-handler results, and the [`NewEvent`] builder.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::event::Event;
use crate::model::payload::Payload;

/// Where an event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Waiting for delivery (possibly leased, scheduled or backing off).
    Pending,
    /// Every handler succeeded (or there was none and the processor was told to drop it).
    Processed,
    /// At least one handler gave up; the event is a dead letter.
    Dead,
}

impl EventStatus {
    /// The lower-case name stored by backends.
    ///
    /// ```
    /// assert_eq!(outbox_core::EventStatus::Dead.as_str(), "dead");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processed => "processed",
            Self::Dead => "dead",
        }
    }

    /// Parses a stored status name.
    ///
    /// ```
    /// use outbox_core::EventStatus;
    /// assert_eq!(EventStatus::parse("processed"), Some(EventStatus::Processed));
    /// assert_eq!(EventStatus::parse("done"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(Self::Pending),
            "processed" => Some(Self::Processed),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }
}

impl std::fmt::Display for EventStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one handler has done with one event so far.
///
/// ```
/// let state = outbox_core::model::HandlerState::default();
/// assert!(!state.is_settled());
/// ```
///
/// Stored as JSON; fields that are unset (`None`, `false`) are left out, so a plain success is
/// `{"succeeded_at": "…", "attempts": 1}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HandlerState {
    /// When the handler succeeded; `None` while it has not.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::model::timestamp::serialize_option"
    )]
    pub succeeded_at: Option<DateTime<Utc>>,
    /// How many times the handler ran for this event.
    #[serde(default)]
    pub attempts: u32,
    /// The last failure's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Whether the handler stopped retrying (permanent error or attempts exhausted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gave_up: bool,
    /// The small JSON result a handler may return with its success (a message id, a receipt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// Since when workers that claimed the event did not have this handler registered (contract
    /// P4): set by the first such worker, cleared when the handler runs again. After the worker's
    /// `missing_handler_grace` the handler gives up.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::model::timestamp::serialize_option"
    )]
    pub missing_since: Option<DateTime<Utc>>,
    /// What the handler logged through its context, over its attempts, oldest first (contract
    /// L1; bounded per event, see [`MAX_LOG_ENTRIES`](crate::model::MAX_LOG_ENTRIES)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<crate::model::LogEntry>,
    /// How many of its oldest log entries were dropped to keep the event's logs bounded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub logs_dropped: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl HandlerState {
    /// Whether the handler will not run again for this event (it succeeded or gave up).
    pub fn is_settled(&self) -> bool {
        self.succeeded_at.is_some() || self.gave_up
    }
}

/// Per-handler results of one event, keyed by handler name.
pub type HandlerResults = BTreeMap<String, HandlerState>;

/// Makes every handler that has not succeeded eligible again (attempts 0, not given up), as a
/// dead-letter re-queue does: successes stay recorded, so only the failed handlers run again.
///
/// ```
/// use outbox_core::model::{HandlerResults, HandlerState};
/// use outbox_core::kit::reset_unfinished_handlers;
/// let mut results = HandlerResults::new();
/// let mut failed = HandlerState::default();
/// failed.attempts = 5;
/// failed.gave_up = true;
/// results.insert("email".into(), failed);
/// reset_unfinished_handlers(&mut results);
/// assert_eq!((results["email"].attempts, results["email"].gave_up), (0, false));
/// ```
pub fn reset_unfinished_handlers(results: &mut HandlerResults) {
    for state in results.values_mut().filter(|s| s.succeeded_at.is_none()) {
        state.attempts = 0;
        state.gave_up = false;
    }
}

/// Moves the result stored under a handler's former name `old` to its current name `new`, unless a
/// result under `new` exists already (then the old one is dropped: the current name wins).
///
/// ```
/// use outbox_core::model::{HandlerResults, HandlerState};
/// use outbox_core::kit::rename_handler;
/// let mut results = HandlerResults::new();
/// results.insert("mail::send".into(), HandlerState { attempts: 2, ..HandlerState::default() });
/// rename_handler(&mut results, "mail::send", "send");
/// assert_eq!(results["send"].attempts, 2);
/// assert!(!results.contains_key("mail::send"));
/// ```
pub fn rename_handler(results: &mut HandlerResults, old: &str, new: &str) {
    if let Some(state) = results.remove(old) {
        results.entry(new.to_owned()).or_insert(state);
    }
}

/// A stored event, as a store returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Time-ordered id (UUID v7); the handlers' idempotency key.
    pub id: Uuid,
    /// The event type name handlers are registered for.
    pub event_type: String,
    /// The JSON payload: dereferences to a `serde_json::Value` (parsed on first use when the
    /// store returned text); [`decode`](Self::decode) deserializes a typed event from it.
    pub payload: Payload,
    /// Optional correlation id carried into tracing spans and handler contexts.
    pub correlation_id: Option<String>,
    /// Events sharing a key are delivered one at a time in creation order.
    pub ordering_key: Option<String>,
    /// Unique key that makes enqueue idempotent.
    pub idempotency_key: Option<String>,
    /// When the event was enqueued.
    pub created_at: DateTime<Utc>,
    /// When the event becomes deliverable.
    pub available_at: DateTime<Utc>,
    /// How many times the event was claimed.
    pub attempts: u32,
    /// Not claimable before this time after a failed attempt.
    pub backoff_until: Option<DateTime<Utc>>,
    /// Where the event is in its life.
    pub status: EventStatus,
    /// When the event became processed (or dead).
    pub processed_at: Option<DateTime<Utc>>,
    /// What each handler has done so far.
    pub handler_results: HandlerResults,
    /// Who holds the lease, when leased.
    pub locked_by: Option<String>,
    /// Until when the lease holds.
    pub locked_until: Option<DateTime<Utc>>,
    /// The current claim's token; changes on every claim.
    pub lease_token: Option<Uuid>,
    /// The W3C `traceparent` of the span that enqueued the event, if any: handler spans continue
    /// that trace (feature `opentelemetry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl EventRecord {
    /// The record's field names, in declaration order: the columns (or hash fields) every store
    /// keeps for an event, besides its own bookkeeping (a sequence number, a due time, …).
    ///
    /// ```
    /// assert_eq!(outbox_core::EventRecord::FIELDS[0], "id");
    /// assert_eq!(outbox_core::EventRecord::FIELDS.len(), 17);
    /// ```
    pub const FIELDS: [&'static str; 17] = [
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
        "status",
        "processed_at",
        "handler_results",
        "locked_by",
        "locked_until",
        "lease_token",
        "traceparent",
    ];

    /// Deserializes the payload into a typed event.
    ///
    /// ```
    /// use outbox_core::{Event, NewEvent};
    /// #[derive(serde::Serialize, serde::Deserialize, Event)]
    /// struct UserInvited { email: String }
    ///
    /// let record = NewEvent::from_event(&UserInvited { email: "a@b.c".into() })
    ///     .unwrap()
    ///     .into_record(chrono::Utc::now());
    /// let event: UserInvited = record.decode().unwrap();
    /// assert_eq!(event.email, "a@b.c");
    /// ```
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, serde_json::Error> {
        self.payload.decode()
    }

    /// The first error recorded by a handler that gave up, for dead-letter reports.
    pub fn give_up_reason(&self) -> Option<(&str, &str)> {
        self.handler_results
            .iter()
            .find(|(_, s)| s.gave_up)
            .map(|(name, s)| (name.as_str(), s.last_error.as_deref().unwrap_or("")))
    }
}

/// An event to enqueue: type, payload and delivery options.
///
/// ```
/// use outbox_core::NewEvent;
/// use std::time::Duration;
///
/// let event = NewEvent::new("UserInvited", serde_json::json!({"email": "ada@example.com"}))
///     .correlation_id("req-42")
///     .ordering_key("user:ada")
///     .idempotency_key("invite:ada@example.com")
///     .deliver_after(Duration::from_secs(60));
/// assert_eq!(event.event_type, "UserInvited");
/// assert!(event.available_at.is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// The id the event will be stored under (UUID v7, generated when the builder is created).
    pub id: Uuid,
    /// The event type name.
    pub event_type: String,
    /// The JSON payload.
    pub payload: serde_json::Value,
    /// Optional correlation id.
    pub correlation_id: Option<String>,
    /// Optional ordering key (contract C5).
    pub ordering_key: Option<String>,
    /// Optional idempotency key (contract C6).
    pub idempotency_key: Option<String>,
    /// Scheduled delivery time; `None` means now.
    pub available_at: Option<DateTime<Utc>>,
    /// The W3C `traceparent` of the enqueuing span. With the feature `opentelemetry`,
    /// [`NewEvent::new`] fills it from the current `tracing` span's OpenTelemetry context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl NewEvent {
    /// A new event of `event_type` with a raw JSON payload.
    pub fn new(event_type: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            payload,
            correlation_id: None,
            ordering_key: None,
            idempotency_key: None,
            available_at: None,
            traceparent: crate::model::trace::current_traceparent(),
        }
    }

    /// A new event from a typed [`Event`], using its type name.
    ///
    /// ```
    /// use outbox_core::{Event, NewEvent};
    /// #[derive(serde::Serialize, serde::Deserialize, Event)]
    /// struct UserInvited { email: String }
    ///
    /// let event = NewEvent::from_event(&UserInvited { email: "ada@example.com".into() }).unwrap();
    /// assert_eq!(event.event_type, "UserInvited");
    /// assert_eq!(event.payload["email"], "ada@example.com");
    /// ```
    pub fn from_event<E: Event>(event: &E) -> Result<Self, serde_json::Error> {
        Ok(Self::new(E::EVENT_TYPE, serde_json::to_value(event)?))
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the ordering key.
    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the W3C `traceparent` (`00-<trace id>-<span id>-<flags>`) the handlers' spans
    /// continue; by default it is the enqueuing span's, with the feature `opentelemetry`.
    ///
    /// ```
    /// let event = outbox_core::NewEvent::new("T", serde_json::json!({}))
    ///     .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /// assert!(event.traceparent.is_some());
    /// ```
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Schedules delivery at `at`.
    pub fn deliver_at(mut self, at: DateTime<Utc>) -> Self {
        self.available_at = Some(at);
        self
    }

    /// Schedules delivery `delay` from now (by this process's clock).
    pub fn deliver_after(mut self, delay: Duration) -> Self {
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        self.available_at = Some(
            Utc::now()
                .checked_add_signed(delay)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        );
        self
    }

    /// Checks the event against the default [`Limits`](crate::model::Limits): a non-empty event type,
    /// non-empty keys, lengths, payload size and NUL characters (contract C11). Stores check
    /// their own configured limits before writing; this is for callers who want to know early.
    ///
    /// ```
    /// let bad = outbox_core::NewEvent::new("", serde_json::json!({}));
    /// assert!(bad.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), crate::model::StoreError> {
        crate::model::Limits::default().check(self)
    }

    /// The record a store creates from this event at time `now` (used by stores that build records
    /// in process; SQL stores use their own defaults).
    pub fn into_record(mut self, now: DateTime<Utc>) -> EventRecord {
        EventRecord {
            id: self.id,
            event_type: std::mem::take(&mut self.event_type),
            payload: std::mem::take(&mut self.payload).into(),
            correlation_id: self.correlation_id.take(),
            ordering_key: self.ordering_key.take(),
            idempotency_key: self.idempotency_key.take(),
            created_at: now,
            available_at: self.available_at.unwrap_or(now),
            attempts: 0,
            backoff_until: None,
            status: EventStatus::Pending,
            processed_at: None,
            handler_results: HandlerResults::new(),
            locked_by: None,
            locked_until: None,
            lease_token: None,
            traceparent: self.traceparent.take(),
        }
    }
}

/// A payload is taken apart with a stack of its own when the event is dropped: `serde_json`
/// drops nested values recursively, so an event whose payload nests tens of thousands of levels
/// (refused by [`Limits`](crate::model::Limits), but dropped by whoever refused it) would otherwise
/// overflow the stack and abort the process.
impl Drop for NewEvent {
    fn drop(&mut self) {
        if matches!(
            self.payload,
            serde_json::Value::Array(_) | serde_json::Value::Object(_)
        ) {
            dismantle(std::mem::take(&mut self.payload));
        }
    }
}

/// Drops `value` without recursion.
pub(crate) fn dismantle(value: serde_json::Value) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{EventRecord, NewEvent};

    #[test]
    fn fields_name_every_serialized_field() {
        let record = NewEvent::new("T", serde_json::json!({}))
            .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .into_record(chrono::Utc::now());
        let value = serde_json::to_value(&record).expect("a record serializes");
        let keys: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = EventRecord::FIELDS.to_vec();
        expected.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, expected);
    }
}
