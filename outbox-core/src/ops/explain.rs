//! Why an event is where it is: [`explain`] reads a record (and the head of its ordering key) and
//! says what it waits for, for operators (`outbox explain`, the dashboard).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::record::{EventRecord, EventStatus};

/// What an event is waiting for, or how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Blocker {
    /// Every handler succeeded at `at`.
    Processed {
        /// When it became processed.
        at: Option<DateTime<Utc>>,
    },
    /// A handler gave up; the event is a dead letter until re-queued.
    Dead {
        /// The first handler that gave up, and its last error.
        handler: Option<(String, String)>,
    },
    /// A worker holds its lease and is (or was, if it died) running its handlers.
    Leased {
        /// The worker holding the lease.
        by: String,
        /// When the lease runs out if not renewed.
        until: DateTime<Utc>,
    },
    /// Its ordering key's older event `head` must finish first (C5).
    WaitingBehind {
        /// The event at the head of the key's line.
        head: Uuid,
        /// The ordering key.
        key: String,
    },
    /// Scheduled for later.
    Scheduled {
        /// When it becomes deliverable.
        until: DateTime<Utc>,
    },
    /// A handler failed; it waits out the retry back-off.
    BackingOff {
        /// When the back-off ends.
        until: DateTime<Utc>,
    },
    /// Nothing holds it: the next claim by any worker takes it. If it stays here, no worker is
    /// claiming from this store.
    Due {
        /// Since when it has been due.
        since: DateTime<Utc>,
    },
}

/// The answer of [`explain`]: the blocker and the facts behind it, as lines for people.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Explanation {
    /// What holds the event (or how it ended).
    pub blocker: Blocker,
    /// One sentence saying so.
    pub summary: String,
    /// Supporting facts: per-handler state, handlers missing from the workers that claimed it.
    pub details: Vec<String>,
}

/// Says why `record` is not running now (or how it ended), at time `now`. `key_head` is the
/// pending head of the record's ordering key ([`InspectStore::key_head`](crate::store::InspectStore::key_head)), if it
/// has one; which handlers a given binary registers is not knowable from the store, so the
/// details say what the store knows: handlers that workers which claimed the event did not have.
///
/// ```
/// use outbox_core::ops::Blocker;
/// use outbox_core::NewEvent;
/// use outbox_core::ops::explain;
/// let now = outbox_core::chrono::Utc::now();
/// let later = now + outbox_core::chrono::Duration::minutes(5);
/// let record = NewEvent::new("T", outbox_core::serde_json::json!({}))
///     .deliver_at(later)
///     .into_record(now);
/// let why = explain(&record, None, now);
/// assert_eq!(why.blocker, Blocker::Scheduled { until: later });
/// assert!(why.summary.starts_with("scheduled"));
/// ```
pub fn explain(
    record: &EventRecord,
    key_head: Option<&EventRecord>,
    now: DateTime<Utc>,
) -> Explanation {
    let blocker = blocker(record, key_head, now);
    let summary = match &blocker {
        Blocker::Processed { at } => match at {
            Some(at) => format!("processed at {}", at.to_rfc3339()),
            None => "processed".to_owned(),
        },
        Blocker::Dead {
            handler: Some((name, error)),
        } => {
            format!("dead: handler {name} gave up: {error}; re-queue it to run again")
        }
        Blocker::Dead { handler: None } => "dead; re-queue it to run again".to_owned(),
        Blocker::Leased { by, until } => format!(
            "leased by {by} until {} (running, or redelivered after that if {by} died)",
            until.to_rfc3339()
        ),
        Blocker::WaitingBehind { head, key } => {
            format!("waiting behind {head}, the head of ordering key {key:?}, to finish")
        }
        Blocker::Scheduled { until } => format!("scheduled until {}", until.to_rfc3339()),
        Blocker::BackingOff { until } => {
            format!("backing off after a failure until {}", until.to_rfc3339())
        }
        Blocker::Due { since } => format!(
            "due since {}: the next claim takes it (if it stays due, no worker claims from this store)",
            since.to_rfc3339()
        ),
    };
    Explanation {
        blocker,
        summary,
        details: details(record),
    }
}

fn blocker(record: &EventRecord, key_head: Option<&EventRecord>, now: DateTime<Utc>) -> Blocker {
    match record.status {
        EventStatus::Processed => {
            return Blocker::Processed {
                at: record.processed_at,
            };
        }
        EventStatus::Dead => {
            return Blocker::Dead {
                handler: record
                    .give_up_reason()
                    .map(|(h, e)| (h.to_owned(), e.to_owned())),
            };
        }
        EventStatus::Pending => {}
    }
    if let (Some(by), Some(until)) = (&record.locked_by, record.locked_until) {
        if until > now {
            return Blocker::Leased {
                by: by.clone(),
                until,
            };
        }
    }
    if let (Some(key), Some(head)) = (&record.ordering_key, key_head) {
        if head.id != record.id {
            return Blocker::WaitingBehind {
                head: head.id,
                key: key.clone(),
            };
        }
    }
    if record.available_at > now {
        return Blocker::Scheduled {
            until: record.available_at,
        };
    }
    if let Some(until) = record.backoff_until.filter(|u| *u > now) {
        return Blocker::BackingOff { until };
    }
    let since = [
        Some(record.available_at),
        record.backoff_until,
        record.locked_until,
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(record.created_at);
    Blocker::Due { since }
}

fn details(record: &EventRecord) -> Vec<String> {
    let mut lines = vec![format!(
        "attempt {} of event type {}",
        record.attempts, record.event_type
    )];
    for (name, state) in &record.handler_results {
        let line = if let Some(at) = state.succeeded_at {
            format!("handler {name}: succeeded at {}", at.to_rfc3339())
        } else if let Some(since) = state.missing_since {
            format!(
                "handler {name}: not registered in the workers that claimed the event since {} \
                 (deploy a worker that has it)",
                since.to_rfc3339()
            )
        } else {
            let verdict = if state.gave_up { "gave up" } else { "not done" };
            let error = state
                .last_error
                .as_deref()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default();
            format!(
                "handler {name}: {verdict} after {} attempt(s){error}",
                state.attempts
            )
        };
        lines.push(line);
    }
    if record.handler_results.is_empty() {
        lines.push("no handler has run yet".to_owned());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::{Blocker, explain};
    use crate::model::record::{EventStatus, HandlerState, NewEvent};
    use chrono::{Duration, Utc};

    #[test]
    fn each_blocker_in_order() {
        let now = Utc::now();
        let mut record = NewEvent::new("T", serde_json::json!({}))
            .ordering_key("k")
            .into_record(now - Duration::seconds(10));
        assert_eq!(
            explain(&record, Some(&record.clone()), now).blocker,
            Blocker::Due {
                since: record.available_at
            }
        );
        let head = NewEvent::new("T", serde_json::json!({})).into_record(now);
        assert_eq!(
            explain(&record, Some(&head), now).blocker,
            Blocker::WaitingBehind {
                head: head.id,
                key: "k".into()
            }
        );
        record.backoff_until = Some(now + Duration::seconds(5));
        assert!(matches!(
            explain(&record, None, now).blocker,
            Blocker::BackingOff { .. }
        ));
        record.locked_by = Some("w1".into());
        record.locked_until = Some(now + Duration::seconds(30));
        assert!(
            explain(&record, None, now)
                .summary
                .starts_with("leased by w1")
        );
        record.status = EventStatus::Dead;
        record.handler_results.insert(
            "email".into(),
            HandlerState {
                attempts: 3,
                gave_up: true,
                last_error: Some("smtp down".into()),
                ..HandlerState::default()
            },
        );
        let why = explain(&record, None, now);
        assert!(
            why.summary.contains("email gave up: smtp down"),
            "{}",
            why.summary
        );
        assert!(why.details.iter().any(|d| d.contains("gave up after 3")));
    }
}
