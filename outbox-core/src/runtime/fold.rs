//! Folding one delivery's handler outcomes into the event's next state (P1–P4). Pure, so every
//! retry/dead-letter rule is unit-tested without a store.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::error::{HandlerError, Retry};
use crate::model::record::{EventRecord, EventStatus, HandlerResults, HandlerState};
use crate::runtime::processor::{Dispatch, HandlerOutcome};
use crate::runtime::retry::RetryPolicy;
use crate::store::Completion;

/// What to do with an event whose type has no registered handler in this worker (contract P4).
///
/// The default leaves it pending with a growing back-off: in a rolling deploy, a worker of the old
/// version may claim an event type only the new version handles; the event waits for a worker that
/// has the handler instead of being lost. It does not block other events (except later ones of its
/// ordering key).
///
/// ```
/// use outbox_core::NoHandlerPolicy;
/// use std::time::Duration;
/// assert_eq!(
///     NoHandlerPolicy::default(),
///     NoHandlerPolicy::Backoff { initial: Duration::from_secs(5), max: Duration::from_secs(600) }
/// );
/// ```
///
/// In configuration: `{ "backoff": { "initial": "5s", "max": "10m" } }`,
/// `{ "leave_pending": "30s" }` or `"mark_processed"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum NoHandlerPolicy {
    /// Leave it pending and look again after a delay that doubles with each claim, from `initial`
    /// up to `max` (the default: 5 s to 10 min).
    Backoff {
        /// The delay after the first claim.
        #[serde(with = "humantime_serde")]
        initial: Duration,
        /// The longest delay.
        #[serde(with = "humantime_serde")]
        max: Duration,
    },
    /// Leave it pending and look again after this fixed delay (the claim's attempt is given back).
    LeavePending(#[serde(with = "humantime_serde")] Duration),
    /// Mark it processed and log a warning. The event is then never delivered: choose this only
    /// when events of unknown types are meant to be dropped.
    MarkProcessed,
}

/// The default policy's first wait and its cap.
const NO_HANDLER_BACKOFF: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(600));

impl Default for NoHandlerPolicy {
    fn default() -> Self {
        let (initial, max) = NO_HANDLER_BACKOFF;
        Self::Backoff { initial, max }
    }
}

impl NoHandlerPolicy {
    /// How long an event waits for a worker that has its handler, after `attempts` claims.
    fn wait(self, attempts: u32) -> Duration {
        let (initial, max) = match self {
            Self::Backoff { initial, max } => (initial, max),
            Self::LeavePending(delay) => return delay,
            Self::MarkProcessed => NO_HANDLER_BACKOFF,
        };
        let doublings = attempts.saturating_sub(1).min(30);
        initial.saturating_mul(1 << doublings).min(max)
    }
}

/// The rules a fold applies, from the worker's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FoldRules<'a> {
    /// Retries and back-off of failed handlers.
    pub(crate) retry: &'a RetryPolicy,
    /// What to do when the type has no handler here.
    pub(crate) no_handler: NoHandlerPolicy,
    /// How long a recorded handler may stay unregistered before it gives up.
    pub(crate) missing_handler_grace: Duration,
}

/// Computes the completion for `record` after `dispatch`.
///
/// `expected_handlers` names every handler that must eventually settle (the processor's handlers
/// for this type); handlers already in the record or in the outcomes count too. A recorded handler
/// that has not settled, is not expected here and did not report is *missing*: this worker cannot
/// run it, so the event waits (with back-off) for a worker that can, and after
/// `missing_handler_grace` the handler gives up with a reason naming it.
pub(crate) fn fold_outcome(
    record: &EventRecord,
    dispatch: &Dispatch,
    expected_handlers: &[String],
    rules: &FoldRules<'_>,
    now: DateTime<Utc>,
) -> Completion {
    let mut results = record.handler_results.clone();
    let outcomes = match dispatch {
        Dispatch::NoHandlers => return without_handlers(record, results, rules),
        Dispatch::Ran(outcomes) => outcomes,
    };

    let mut retry_delay: Option<Duration> = None;
    let mut wait_for = |d: Duration| retry_delay = Some(retry_delay.map_or(d, |r| r.max(d)));
    for outcome in outcomes {
        let state = results.entry(outcome.handler.clone()).or_default();
        if state.is_settled() {
            continue;
        }
        if let Some(delay) = record_attempt(state, outcome, rules, now) {
            wait_for(delay);
        }
    }

    // Recorded handlers this worker does not have (renamed without `renamed_from`, removed, or
    // only known to another version in a rolling deploy).
    for (name, state) in &mut results {
        let reported = outcomes.iter().any(|o| &o.handler == name);
        if state.is_settled() || reported || expected_handlers.contains(name) {
            continue;
        }
        let since = *state.missing_since.get_or_insert(now);
        let missing_for = (now - since).to_std().unwrap_or_default();
        if missing_for >= rules.missing_handler_grace {
            state.gave_up = true;
            state.last_error = Some(format!(
                "handler `{name}` is not registered in the workers that claimed this event since {since}; \
                 register it (or declare its new name with `renamed_from`) and re-queue the event"
            ));
        } else {
            wait_for(
                rules
                    .no_handler
                    .wait(record.attempts)
                    .min(rules.missing_handler_grace - missing_for),
            );
        }
    }

    // Pending while an expected handler or a recorded one has not settled.
    let unsettled = expected_handlers
        .iter()
        .any(|n| !results.get(n).is_some_and(HandlerState::is_settled))
        || results.values().any(|s| !s.is_settled());
    let status = if unsettled {
        EventStatus::Pending
    } else if results.values().any(|s| s.gave_up) {
        EventStatus::Dead
    } else {
        EventStatus::Processed
    };
    let retry_delay = match status {
        // The guard against hot loops: an event that goes back to the queue always waits, even when
        // nothing reported a delay (a handler stopped before it reported, say).
        EventStatus::Pending => Some(retry_delay.unwrap_or_else(|| rules.retry.delay_after(1))),
        _ => None,
    };
    Completion {
        status,
        handler_results: results,
        attempts: record.attempts,
        retry_delay,
    }
}

/// The completion of an event no handler of this worker is registered for, by the policy.
fn without_handlers(
    record: &EventRecord,
    results: HandlerResults,
    rules: &FoldRules<'_>,
) -> Completion {
    match rules.no_handler {
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
        policy @ NoHandlerPolicy::Backoff { .. } => Completion {
            status: EventStatus::Pending,
            handler_results: results,
            attempts: record.attempts,
            retry_delay: Some(policy.wait(record.attempts)),
        },
    }
}

/// Records one handler's attempt in its state: success with its output, or the failure — given up
/// on (permanent, or out of attempts) or retried after the delay this returns.
fn record_attempt(
    state: &mut HandlerState,
    outcome: &HandlerOutcome,
    rules: &FoldRules<'_>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    state.attempts = state.attempts.saturating_add(1);
    state.missing_since = None;
    // An output no store could read back is the handler's permanent failure (C11).
    let mut output = outcome.result.as_ref().ok().cloned().flatten();
    let refused = crate::kit::storable::check_output(&mut output)
        .err()
        .map(HandlerError::permanent);
    let result = match (&outcome.result, &refused) {
        (Ok(_), Some(refused)) => Err(refused),
        (Ok(_), None) => Ok(()),
        (Err(err), _) => Err(err),
    };
    match result {
        Ok(()) => {
            state.succeeded_at = Some(now);
            state.output = output;
            state.last_error = None;
        }
        Err(err) => {
            state.last_error = Some(err.message().to_owned());
            let max = outcome.max_attempts.unwrap_or(rules.retry.max_attempts);
            let delay = match err.retry_hint() {
                Retry::Never => None,
                _ if state.attempts >= max => None,
                Retry::WithBackoff => Some(rules.retry.delay_after(state.attempts)),
                Retry::After(delay) => Some(delay),
            };
            match delay {
                None => state.gave_up = true,
                Some(d) => return Some(d),
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::error::HandlerError;
    use crate::model::record::{HandlerState, NewEvent};
    use crate::runtime::processor::HandlerOutcome;

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

    fn fold(record: &EventRecord, dispatch: &Dispatch, expected: &[&str]) -> Completion {
        fold_with(
            record,
            dispatch,
            expected,
            NoHandlerPolicy::default(),
            Utc::now(),
        )
    }

    fn fold_with(
        record: &EventRecord,
        dispatch: &Dispatch,
        expected: &[&str],
        no_handler: NoHandlerPolicy,
        now: DateTime<Utc>,
    ) -> Completion {
        let policy = policy();
        let rules = FoldRules {
            retry: &policy,
            no_handler,
            missing_handler_grace: Duration::from_secs(3600),
        };
        fold_outcome(record, dispatch, &names(expected), &rules, now)
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
        let c = fold(
            &record(),
            &ran(vec![("a", Ok(())), ("b", Ok(()))]),
            &["a", "b"],
        );
        assert_eq!(c.status, EventStatus::Processed);
        assert!(c.handler_results["a"].succeeded_at.is_some());
        assert_eq!(c.retry_delay, None);
    }

    #[test]
    fn one_failure_keeps_success_of_the_other_and_backs_off() {
        let c = fold(
            &record(),
            &ran(vec![("a", Ok(())), ("b", Err(HandlerError::retry("x")))]),
            &["a", "b"],
        );
        assert_eq!(c.status, EventStatus::Pending);
        assert_eq!(c.retry_delay, Some(Duration::from_secs(2)));
        assert!(c.handler_results["a"].succeeded_at.is_some());
        assert_eq!(c.handler_results["b"].last_error.as_deref(), Some("x"));
    }

    #[test]
    fn permanent_failure_is_dead_once_others_settle() {
        let c = fold(
            &record(),
            &ran(vec![
                ("a", Err(HandlerError::permanent("bad"))),
                ("b", Err(HandlerError::retry("x"))),
            ]),
            &["a", "b"],
        );
        assert_eq!(c.status, EventStatus::Pending, "b can still make progress");
        let mut next = record();
        next.handler_results = c.handler_results;
        let c = fold(&next, &ran(vec![("b", Ok(()))]), &["a", "b"]);
        assert_eq!(c.status, EventStatus::Dead);
    }

    #[test]
    fn attempts_exhausted_gives_up() {
        let mut r = record();
        r.handler_results.entry("a".into()).or_default().attempts = 2;
        let c = fold(&r, &ran(vec![("a", Err(HandlerError::retry("x")))]), &["a"]);
        assert_eq!(c.status, EventStatus::Dead);
        assert!(c.handler_results["a"].gave_up);
        assert_eq!(c.handler_results["a"].attempts, 3);
    }

    #[test]
    fn retry_after_hint_wins_over_backoff() {
        let c = fold(
            &record(),
            &ran(vec![(
                "a",
                Err(HandlerError::retry_after("later", Duration::from_secs(60))),
            )]),
            &["a"],
        );
        assert_eq!(c.retry_delay, Some(Duration::from_secs(60)));
    }

    /// The guard: a pending completion in which nothing reported still waits (no hot loop).
    #[test]
    fn pending_without_any_report_still_waits() {
        let c = fold(&record(), &ran(vec![("a", Ok(()))]), &["a", "b"]);
        assert_eq!(c.status, EventStatus::Pending);
        assert_eq!(c.retry_delay, Some(Duration::from_secs(2)));
        let c = fold(&record(), &Dispatch::Ran(Vec::new()), &["a"]);
        assert_eq!(
            (c.status, c.retry_delay),
            (EventStatus::Pending, Some(Duration::from_secs(2)))
        );
    }

    #[test]
    fn no_handler_policies() {
        let mut r = record();
        for (attempts, want) in [(1, 5), (2, 10), (4, 40), (20, 600)] {
            r.attempts = attempts;
            let c = fold(&r, &Dispatch::NoHandlers, &[]);
            assert_eq!(
                (c.status, c.retry_delay, c.attempts),
                (
                    EventStatus::Pending,
                    Some(Duration::from_secs(want)),
                    attempts
                ),
                "default back-off after {attempts} claims"
            );
        }
        let c = fold_with(
            &record(),
            &Dispatch::NoHandlers,
            &[],
            NoHandlerPolicy::MarkProcessed,
            Utc::now(),
        );
        assert_eq!(c.status, EventStatus::Processed);
        let c = fold_with(
            &record(),
            &Dispatch::NoHandlers,
            &[],
            NoHandlerPolicy::LeavePending(Duration::from_secs(7)),
            Utc::now(),
        );
        assert_eq!(
            (c.status, c.retry_delay, c.attempts),
            (EventStatus::Pending, Some(Duration::from_secs(7)), 0)
        );
    }

    /// A recorded handler this worker does not have: the event waits with back-off (it used to be
    /// claimable again at once, forever), and after the grace period the handler gives up.
    #[test]
    fn missing_recorded_handler_waits_then_gives_up() {
        let mut r = record();
        r.handler_results.insert(
            "old::send".into(),
            HandlerState {
                attempts: 1,
                last_error: Some("smtp down".into()),
                ..HandlerState::default()
            },
        );
        let now = Utc::now();
        let c = fold_with(
            &r,
            &ran(vec![("audit", Ok(()))]),
            &["audit"],
            NoHandlerPolicy::default(),
            now,
        );
        assert_eq!(c.status, EventStatus::Pending);
        assert_eq!(c.retry_delay, Some(Duration::from_secs(5)));
        assert_eq!(c.handler_results["old::send"].missing_since, Some(now));
        assert!(c.handler_results["audit"].succeeded_at.is_some());

        let mut later = r.clone();
        later.handler_results = c.handler_results;
        later.attempts = 2;
        let c = fold_with(
            &later,
            &Dispatch::Ran(Vec::new()),
            &["audit"],
            NoHandlerPolicy::default(),
            now + chrono::Duration::minutes(61),
        );
        assert_eq!(c.status, EventStatus::Dead);
        let state = &c.handler_results["old::send"];
        assert!(state.gave_up);
        assert!(
            state
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("`old::send` is not registered")),
            "{state:?}"
        );
    }

    #[test]
    fn a_handler_that_runs_again_is_no_longer_missing() {
        let mut r = record();
        r.handler_results.insert(
            "send".into(),
            HandlerState {
                attempts: 1,
                missing_since: Some(Utc::now()),
                ..HandlerState::default()
            },
        );
        let c = fold(&r, &ran(vec![("send", Ok(()))]), &["send"]);
        assert_eq!(c.status, EventStatus::Processed);
        assert_eq!(c.handler_results["send"].missing_since, None);
    }
}
