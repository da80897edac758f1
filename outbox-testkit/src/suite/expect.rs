//! The record a store must read back after each transition, field by field: clauses build an
//! [`Expected`] from what they sent (the enqueued event, the claim, the completion) and compare
//! every read path's [`EventRecord`] with it, so a store that gets *any* field wrong at *any*
//! entry point fails with the field named — not only the field a clause is about.

use std::time::Duration;

use chrono::{DateTime, Utc};
use outbox_core::model::{HandlerResults, HandlerState};
use outbox_core::store::{ClaimedEvent, Completion};
use outbox_core::{EventRecord, EventStatus, NewEvent};
use uuid::Uuid;

use crate::harness::Failure;

/// Stores keep timestamps at millisecond precision or better; a read-back instant may differ
/// from the one sent by this much.
const PRECISION: chrono::TimeDelta = chrono::TimeDelta::milliseconds(2);

/// How far a store's clock (its "now", read on the database server) may stand from the test's.
/// A store that gets an instant wrong gets it wrong by a delay or a lease — seconds, not this.
const CLOCK_SLACK: chrono::TimeDelta = chrono::TimeDelta::milliseconds(250);

/// An interval an instant the store chose (its own "now", plus a delay) must fall in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    slack: chrono::TimeDelta,
}

impl Window {
    /// Between two instants the clause read around the call (the store read its own clock in
    /// between).
    pub(crate) fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        Self {
            from,
            to,
            slack: CLOCK_SLACK,
        }
    }

    /// Exactly `at`, an instant the clause sent or the store reported (up to the stores'
    /// precision).
    pub(crate) fn at(at: DateTime<Utc>) -> Self {
        Self {
            from: at,
            to: at,
            slack: PRECISION,
        }
    }

    /// This window moved later by `delay`.
    pub(crate) fn plus(self, delay: Duration) -> Self {
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        Self {
            from: self.from + delay,
            to: self.to + delay,
            slack: self.slack,
        }
    }

    /// Whether `t` lies in the window, widened by the stores' precision.
    pub(crate) fn contains(&self, t: DateTime<Utc>) -> bool {
        t >= self.from - self.slack && t <= self.to + self.slack
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.from == self.to {
            write!(f, "{}", self.from)
        } else {
            write!(f, "[{}, {}]", self.from, self.to)
        }
    }
}

/// The lease a record must show while it is claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpectedLease {
    worker: String,
    token: Uuid,
    until: Window,
}

/// What a store must read back for one event: every field of [`EventRecord`].
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    id: Uuid,
    event_type: String,
    payload: serde_json::Value,
    correlation_id: Option<String>,
    ordering_key: Option<String>,
    idempotency_key: Option<String>,
    traceparent: Option<String>,
    created: Window,
    available: Window,
    attempts: u32,
    /// Compared while the event is pending (a finished event's back-off means nothing).
    backoff: Option<Window>,
    status: EventStatus,
    processed: Option<Window>,
    handler_results: HandlerResults,
    lease: Option<ExpectedLease>,
}

impl Expected {
    /// `event` as enqueued between `before` and `after`: pending, never attempted, no lease.
    pub(crate) fn enqueued(event: &NewEvent, before: DateTime<Utc>, after: DateTime<Utc>) -> Self {
        let created = Window::between(before, after);
        Self {
            id: event.id,
            event_type: event.event_type.clone(),
            payload: event.payload.clone(),
            correlation_id: event.correlation_id.clone(),
            ordering_key: event.ordering_key.clone(),
            idempotency_key: event.idempotency_key.clone(),
            traceparent: event.traceparent.clone(),
            created,
            available: event.available_at.map_or(created, Window::at),
            attempts: 0,
            backoff: None,
            status: EventStatus::Pending,
            processed: None,
            handler_results: HandlerResults::new(),
            lease: None,
        }
    }

    /// The event's id.
    pub(crate) fn id(&self) -> Uuid {
        self.id
    }

    /// Claimed by `worker` for `lease` between `before` and `after`, as `claimed` says: one more
    /// attempt, leased with the claim's token. Fails when the claim itself does not read back as
    /// expected (its record, lease and expiry).
    pub(crate) fn claimed(
        &mut self,
        worker: &str,
        lease: Duration,
        claimed: &ClaimedEvent,
        (before, after): (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<(), Failure> {
        self.attempts = self.attempts.saturating_add(1);
        let until = Window::between(before, after).plus(lease);
        self.lease = Some(ExpectedLease {
            worker: worker.to_owned(),
            token: claimed.lease.token,
            until,
        });
        let mut wrong = Vec::new();
        if claimed.lease.event_id != self.id {
            wrong.push(format!(
                "the lease names event {}, not {}",
                claimed.lease.event_id, self.id
            ));
        }
        if !until.contains(claimed.locked_until) {
            wrong.push(format!(
                "locked_until {} is not the claim's time plus the lease ({until})",
                claimed.locked_until
            ));
        }
        if claimed.lease.token == self.id {
            wrong.push("the lease token is the event id".to_owned());
        }
        // The claim's own expiry is what the record must show.
        if let Some(l) = &mut self.lease {
            l.until = Window::at(claimed.locked_until);
        }
        report(self.id, "the claim", wrong)?;
        self.check(&claimed.record, "the claimed record")
    }

    /// `completion` applied between `before` and `after`.
    pub(crate) fn completed(
        &mut self,
        completion: &Completion,
        (before, after): (DateTime<Utc>, DateTime<Utc>),
    ) {
        let at = Window::between(before, after);
        self.status = completion.status;
        self.handler_results = completion.handler_results.clone();
        self.attempts = completion.attempts;
        self.backoff = completion.retry_delay.map(|d| at.plus(d));
        self.processed = (completion.status != EventStatus::Pending).then_some(at);
        self.lease = None;
    }

    /// A lease renewed until `until`, as the renewal reported.
    pub(crate) fn renewed(&mut self, until: DateTime<Utc>) {
        if let Some(l) = &mut self.lease {
            l.until = Window::at(until);
        }
    }

    /// A dead event re-queued between `before` and `after`: pending again, attempts and failed
    /// handlers reset (successes kept), no back-off, claimable now.
    pub(crate) fn requeued(&mut self, (before, after): (DateTime<Utc>, DateTime<Utc>)) {
        self.status = EventStatus::Pending;
        self.attempts = 0;
        self.backoff = None;
        self.processed = None;
        self.lease = None;
        outbox_core::kit::reset_unfinished_handlers(&mut self.handler_results);
        // The schedule is met: the store may keep the old one or move it to the re-queue.
        self.available = Window::between(self.available.from.min(before), after);
        self.available.slack = self.available.slack.max(CLOCK_SLACK);
    }

    /// Compares every field of `record` (read through `path`) with the expectation.
    pub(crate) fn check(&self, record: &EventRecord, path: &str) -> Result<(), Failure> {
        let mut wrong = Vec::new();
        let mut field =
            |name: &str, ok: bool, expected: &dyn std::fmt::Debug, got: &dyn std::fmt::Debug| {
                if !ok {
                    wrong.push(format!("{name}: expected {expected:?}, got {got:?}"));
                }
            };
        field("id", record.id == self.id, &self.id, &record.id);
        field(
            "event_type",
            record.event_type == self.event_type,
            &self.event_type,
            &record.event_type,
        );
        field(
            "payload",
            record.payload == self.payload,
            &self.payload,
            &record.payload,
        );
        for (name, expected, got) in [
            (
                "correlation_id",
                &self.correlation_id,
                &record.correlation_id,
            ),
            ("ordering_key", &self.ordering_key, &record.ordering_key),
            (
                "idempotency_key",
                &self.idempotency_key,
                &record.idempotency_key,
            ),
            ("traceparent", &self.traceparent, &record.traceparent),
        ] {
            field(name, expected == got, expected, got);
        }
        field(
            "created_at",
            self.created.contains(record.created_at),
            &self.created.to_string(),
            &record.created_at,
        );
        field(
            "available_at",
            self.available.contains(record.available_at),
            &self.available.to_string(),
            &record.available_at,
        );
        field(
            "attempts",
            record.attempts == self.attempts,
            &self.attempts,
            &record.attempts,
        );
        field(
            "status",
            record.status == self.status,
            &self.status,
            &record.status,
        );
        if self.status == EventStatus::Pending {
            let ok = match (&self.backoff, record.backoff_until) {
                (None, None) => true,
                (Some(w), Some(t)) => w.contains(t),
                // A back-off that already ended means the same as none.
                (None, Some(t)) => t <= Utc::now(),
                (Some(_), None) => false,
            };
            field(
                "backoff_until",
                ok,
                &self.backoff.map(|w| w.to_string()),
                &record.backoff_until,
            );
        }
        let ok = match (&self.processed, record.processed_at) {
            (None, None) => true,
            (Some(w), Some(t)) => w.contains(t),
            _ => false,
        };
        field(
            "processed_at",
            ok,
            &self.processed.map(|w| w.to_string()),
            &record.processed_at,
        );
        let results = results_differ(&self.handler_results, &record.handler_results);
        field(
            &format!("handler_results ({})", results.as_deref().unwrap_or("")),
            results.is_none(),
            &self.handler_results,
            &record.handler_results,
        );
        match &self.lease {
            Some(l) => {
                let ok = record.locked_by.as_deref() == Some(l.worker.as_str())
                    && record.lease_token == Some(l.token)
                    && record.locked_until.is_some_and(|t| l.until.contains(t));
                field(
                    "lease (locked_by, lease_token, locked_until)",
                    ok,
                    &(&l.worker, l.token, l.until.to_string()),
                    &(&record.locked_by, record.lease_token, record.locked_until),
                );
            }
            None if self.status == EventStatus::Pending => field(
                "lease (locked_by, lease_token, locked_until)",
                record.lease_token.is_none() && record.locked_until.is_none(),
                &"none",
                &(&record.locked_by, record.lease_token, record.locked_until),
            ),
            // A finished event's lease means nothing (some stores keep the last one).
            None => {}
        }
        report(self.id, path, wrong)
    }
}

fn report(id: Uuid, path: &str, wrong: Vec<String>) -> Result<(), Failure> {
    if wrong.is_empty() {
        return Ok(());
    }
    Err(Failure::new(format!(
        "{path} of event {id} does not read back as the contract says — {}",
        wrong.join("; ")
    )))
}

fn same_instant(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= PRECISION,
        _ => false,
    }
}

/// Why two sets of handler results differ (timestamps compared to the stores' precision), or
/// `None` when they are the same.
fn results_differ(expected: &HandlerResults, got: &HandlerResults) -> Option<String> {
    let names = |r: &HandlerResults| r.keys().cloned().collect::<Vec<_>>();
    if names(expected) != names(got) {
        return Some(format!(
            "handlers {:?} instead of {:?}",
            names(got),
            names(expected)
        ));
    }
    for (name, e) in expected {
        let g = &got[name];
        let same = |a: &HandlerState, b: &HandlerState| {
            a.attempts == b.attempts
                && a.last_error == b.last_error
                && a.gave_up == b.gave_up
                && a.output == b.output
                && a.logs_dropped == b.logs_dropped
                && same_instant(a.succeeded_at, b.succeeded_at)
                && same_instant(a.missing_since, b.missing_since)
                && a.logs.len() == b.logs.len()
                && a.logs.iter().zip(&b.logs).all(|(x, y)| {
                    x.level == y.level
                        && x.attempt == y.attempt
                        && x.message == y.message
                        && same_instant(Some(x.at), Some(y.at))
                })
        };
        if !same(e, g) {
            return Some(format!("handler {name:?} differs"));
        }
    }
    None
}
