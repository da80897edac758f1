//! Folding one delivery's handler outcomes into the event's next state (P1–P4). Pure, so every
//! retry/dead-letter rule is unit-tested without a store.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Retry;
use crate::processor::Dispatch;
use crate::record::{EventRecord, EventStatus};
use crate::retry::RetryPolicy;
use crate::store::Completion;

/// What to do with an event whose type has no registered handler (contract P4).
///
/// ```
/// use outbox_core::NoHandlerPolicy;
/// assert_eq!(NoHandlerPolicy::default(), NoHandlerPolicy::MarkProcessed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoHandlerPolicy {
    /// Mark it processed and log a warning.
    #[default]
    MarkProcessed,
    /// Leave it pending and look again after this delay (for a deployment that adds the handler
    /// later). It does not block other events, except later ones with the same ordering key.
    LeavePending(Duration),
}

/// Computes the completion for `record` after `dispatch`.
///
/// `expected_handlers` names every handler that must eventually settle (the processor's handlers
/// for this type); handlers already in the record or in the outcomes count too.
pub(crate) fn fold_outcome(
    record: &EventRecord,
    dispatch: &Dispatch,
    expected_handlers: &[String],
    policy: &RetryPolicy,
    no_handler: NoHandlerPolicy,
    now: DateTime<Utc>,
) -> Completion {
    let mut results = record.handler_results.clone();
    let outcomes = match dispatch {
        Dispatch::NoHandlers => {
            return match no_handler {
                NoHandlerPolicy::MarkProcessed => Completion {
                    status: EventStatus::Processed,
                    handler_results: results,
                    attempts: record.attempts,
                    retry_delay: None,
                },
                NoHandlerPolicy::LeavePending(delay) => Completion {
                    status: EventStatus::Pending,
                    handler_results: results,
                    attempts: record.attempts.saturating_sub(1),
                    retry_delay: Some(delay),
                },
            };
        }
        Dispatch::Ran(outcomes) => outcomes,
    };

    let mut retry_delay: Option<Duration> = None;
    for outcome in outcomes {
        let state = results.entry(outcome.handler.clone()).or_default();
        if state.is_settled() {
            continue;
        }
        state.attempts = state.attempts.saturating_add(1);
        match &outcome.result {
            Ok(output) => {
                state.succeeded_at = Some(now);
                state.output = output.clone();
                state.last_error = None;
            }
            Err(err) => {
                state.last_error = Some(err.message().to_owned());
                let max = outcome.max_attempts.unwrap_or(policy.max_attempts);
                let delay = match err.retry_hint() {
                    Retry::Never => None,
                    _ if state.attempts >= max => None,
                    Retry::WithBackoff => Some(policy.delay_after(state.attempts)),
                    Retry::After(delay) => Some(delay),
                };
                match delay {
                    None => state.gave_up = true,
                    Some(d) => retry_delay = Some(retry_delay.map_or(d, |r| r.max(d))),
                }
            }
        }
    }

    let names: BTreeSet<&str> = expected_handlers
        .iter()
        .map(String::as_str)
        .chain(results.keys().map(String::as_str))
        .collect();
    let unsettled = names
        .iter()
        .any(|n| !results.get(*n).is_some_and(|s| s.is_settled()));
    let status = if unsettled {
        EventStatus::Pending
    } else if results.values().any(|s| s.gave_up) {
        EventStatus::Dead
    } else {
        EventStatus::Processed
    };
    Completion {
        status,
        handler_results: results,
        attempts: record.attempts,
        retry_delay: if status == EventStatus::Pending {
            retry_delay
        } else {
            None
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::error::HandlerError;
    use crate::processor::HandlerOutcome;
    use crate::record::NewEvent;

    fn record() -> EventRecord {
        let mut r = NewEvent::new("T", serde_json::json!({})).into_record(Utc::now());
        r.attempts = 1;
        r
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::default()
            .with_max_attempts(3)
            .with_initial_delay(Duration::from_secs(2))
            .with_random(Arc::new(|| 1.0))
    }

    fn ran(outcomes: Vec<(&str, Result<(), HandlerError>)>) -> Dispatch {
        Dispatch::Ran(
            outcomes
                .into_iter()
                .map(|(name, r)| HandlerOutcome {
                    handler: name.into(),
                    result: r.map(|()| None),
                    max_attempts: None,
                })
                .collect(),
        )
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn all_success_is_processed() {
        let c = fold_outcome(
            &record(),
            &ran(vec![("a", Ok(())), ("b", Ok(()))]),
            &names(&["a", "b"]),
            &policy(),
            NoHandlerPolicy::default(),
            Utc::now(),
        );
        assert_eq!(c.status, EventStatus::Processed);
        assert!(c.handler_results["a"].succeeded_at.is_some());
    }

    #[test]
    fn one_failure_keeps_success_of_the_other_and_backs_off() {
        let c = fold_outcome(
            &record(),
            &ran(vec![("a", Ok(())), ("b", Err(HandlerError::retry("x")))]),
            &names(&["a", "b"]),
            &policy(),
            NoHandlerPolicy::default(),
            Utc::now(),
        );
        assert_eq!(c.status, EventStatus::Pending);
        assert_eq!(c.retry_delay, Some(Duration::from_secs(2)));
        assert!(c.handler_results["a"].succeeded_at.is_some());
        assert_eq!(c.handler_results["b"].last_error.as_deref(), Some("x"));
    }

    #[test]
    fn permanent_failure_is_dead_once_others_settle() {
        let c = fold_outcome(
            &record(),
            &ran(vec![
                ("a", Err(HandlerError::permanent("bad"))),
                ("b", Err(HandlerError::retry("x"))),
            ]),
            &names(&["a", "b"]),
            &policy(),
            NoHandlerPolicy::default(),
            Utc::now(),
        );
        assert_eq!(c.status, EventStatus::Pending, "b can still make progress");
        let mut next = record();
        next.handler_results = c.handler_results;
        let c = fold_outcome(
            &next,
            &ran(vec![("b", Ok(()))]),
            &names(&["a", "b"]),
            &policy(),
            NoHandlerPolicy::default(),
            Utc::now(),
        );
        assert_eq!(c.status, EventStatus::Dead);
    }

    #[test]
    fn attempts_exhausted_gives_up() {
        let mut r = record();
        r.handler_results.entry("a".into()).or_default().attempts = 2;
        let c = fold_outcome(
            &r,
            &ran(vec![("a", Err(HandlerError::retry("x")))]),
            &names(&["a"]),
            &policy(),
            NoHandlerPolicy::default(),
            Utc::now(),
        );
        assert_eq!(c.status, EventStatus::Dead);
        assert!(c.handler_results["a"].gave_up);
        assert_eq!(c.handler_results["a"].attempts, 3);
    }

    #[test]
    fn retry_after_hint_wins_over_backoff() {
        let c = fold_outcome(
            &record(),
            &ran(vec![(
                "a",
                Err(HandlerError::retry_after("later", Duration::from_secs(60))),
            )]),
            &names(&["a"]),
            &policy(),
            NoHandlerPolicy::default(),
            Utc::now(),
        );
        assert_eq!(c.retry_delay, Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_handler_that_did_not_report_keeps_the_event_pending() {
        let c = fold_outcome(
            &record(),
            &ran(vec![("a", Ok(()))]),
            &names(&["a", "b"]),
            &policy(),
            NoHandlerPolicy::default(),
            Utc::now(),
        );
        assert_eq!(c.status, EventStatus::Pending);
        assert_eq!(c.retry_delay, None);
    }

    #[test]
    fn no_handler_policies() {
        let c = fold_outcome(
            &record(),
            &Dispatch::NoHandlers,
            &[],
            &policy(),
            NoHandlerPolicy::MarkProcessed,
            Utc::now(),
        );
        assert_eq!(c.status, EventStatus::Processed);
        let c = fold_outcome(
            &record(),
            &Dispatch::NoHandlers,
            &[],
            &policy(),
            NoHandlerPolicy::LeavePending(Duration::from_secs(5)),
            Utc::now(),
        );
        assert_eq!(
            (c.status, c.retry_delay),
            (EventStatus::Pending, Some(Duration::from_secs(5)))
        );
    }
}
