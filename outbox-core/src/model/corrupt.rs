//! Poison rows (contract C11): stored events that cannot be decoded are set aside one by one, with
//! the same status and reason format on every backend, and listed as [`CorruptEvent`]s.

use chrono::{DateTime, Utc};

use crate::model::error::StoreError;

/// The status every backend stores for an event set aside because it does not decode.
pub const CORRUPT_STATUS: &str = "corrupt";

/// A stored event that could not be decoded and was set aside instead of failing its claim batch.
///
/// Fix the stored data by hand, then put it back in the queue with
/// [`RepairStore::requeue_corrupt`](crate::store::RepairStore::requeue_corrupt); if it still does not decode it is set
/// aside again at its next claim.
///
/// ```
/// use outbox_core::model::CorruptEvent;
/// let found = CorruptEvent::new("0190…", "handler_results: invalid type: sequence, expected a map");
/// assert_eq!(found.id, "0190…");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CorruptEvent {
    /// The event's id exactly as stored (it may itself be what is broken).
    pub id: String,
    /// The stored event type, when it could be read.
    pub event_type: Option<String>,
    /// Why decoding failed: `<field>: <error>`, the message of the [`StoreError::Corrupt`] the
    /// claim met.
    pub reason: String,
    /// When it was set aside.
    pub set_aside_at: Option<DateTime<Utc>>,
}

impl CorruptEvent {
    /// A set-aside event with its id and reason.
    pub fn new(id: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            event_type: None,
            reason: reason.into(),
            set_aside_at: None,
        }
    }

    /// Adds the stored event type.
    pub fn with_event_type(mut self, event_type: Option<String>) -> Self {
        self.event_type = event_type;
        self
    }

    /// Adds when it was set aside.
    pub fn with_set_aside_at(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.set_aside_at = at;
        self
    }
}

/// The reason stored for a decode failure: the message of a [`StoreError::Corrupt`], or the whole
/// error for any other kind.
///
/// ```
/// use outbox_core::StoreError;
/// use outbox_core::kit::corrupt_reason;
/// let err = StoreError::Corrupt { id: "x".into(), message: "payload: expected value".into() };
/// assert_eq!(corrupt_reason(&err), "payload: expected value");
/// ```
pub fn corrupt_reason(err: &StoreError) -> String {
    match err {
        StoreError::Corrupt { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// A column of a stored row that holds a value no event can have (text in an integer column, a
/// timestamp of `infinity`), as the row's damage: [`StoreError::Corrupt`] naming the column, so the
/// event is set aside (C11) instead of the store being called broken. `index` is the column's
/// position in `columns` (a comma-separated list, as a `SELECT` names them), as a driver reports it.
///
/// ```
/// use outbox_core::StoreError;
/// use outbox_core::kit::column_damage;
/// let err = column_damage("0190…", "id, event_type, attempts", "2", "mismatched types");
/// assert!(matches!(&err, StoreError::Corrupt { message, .. } if message == "attempts: mismatched types"));
/// ```
pub fn column_damage(
    id: &str,
    columns: &str,
    index: &str,
    source: impl std::fmt::Display,
) -> StoreError {
    let column = index
        .trim_matches('"')
        .parse::<usize>()
        .ok()
        .and_then(|i| columns.split(',').nth(i))
        .map_or_else(|| index.to_owned(), |name| name.trim().to_owned());
    StoreError::Corrupt {
        id: id.to_owned(),
        message: format!("{column}: {source}"),
    }
}

/// The records of a listing (dead letters, a page of events) that decode; each one that does not
/// is logged with its reason and left out, so one bad row never hides the others (C11). A claim
/// sets such a row aside; a listing only reads.
///
/// ```
/// use outbox_core::{EventRecord, NewEvent, StoreError};
/// use outbox_core::kit::decodable;
/// let good = NewEvent::new("T", serde_json::json!({})).into_record(chrono::Utc::now());
/// let bad: Result<EventRecord, StoreError> =
///     Err(StoreError::Corrupt { id: "x".into(), message: "payload: not JSON".into() });
/// let listed = decodable("dead letters", [Ok(good.clone()), bad]);
/// assert_eq!(listed.len(), 1);
/// assert_eq!(listed[0].id, good.id);
/// ```
pub fn decodable(
    listing: &str,
    rows: impl IntoIterator<Item = Result<crate::model::EventRecord, StoreError>>,
) -> Vec<crate::model::EventRecord> {
    rows.into_iter()
        .filter_map(|row| match row {
            Ok(record) => Some(record),
            Err(err) => {
                let id = match &err {
                    StoreError::Corrupt { id, .. } => id.clone(),
                    _ => String::new(),
                };
                tracing::error!(
                    listing,
                    event_id = %crate::model::text::untrusted(&id),
                    reason = %crate::model::text::untrusted(&corrupt_reason(&err)),
                    "a stored event does not decode; left out of the listing (a claim sets it aside)"
                );
                None
            }
        })
        .collect()
}
