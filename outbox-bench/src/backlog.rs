//! Scenario 5: draining due events while the outbox also holds many events that are not due —
//! scheduled for tomorrow, backing off after a failure (a downstream outage), or waiting behind an
//! older event of their ordering key. Each rate is compared with a plain drain of the same number
//! of events measured in the same run: a claim's cost must not grow with events that are not due.

use std::time::{Duration, Instant};

use chrono::Utc;
use outbox_core::store::{ClaimRequest, Completion};
use outbox_core::{EventStatus, NewEvent, Store};

use crate::report::{Check, Measured, Row};
use crate::scenario::{drain_with_workers, noop_registry, worker_config};
use crate::target::{Bench, Target, event};
use crate::{BenchError, Sizes};

const PROCESSORS: usize = 2;

/// Runs the plain drain, then the scheduled, back-off and keyed backlogs.
pub(crate) async fn backlog(
    target: &dyn Target,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
    checks: &mut Vec<Check>,
) -> Result<(), BenchError> {
    let n = sizes.backlog_due;
    let plain = target.fresh("bl_plain").await?;
    plain.prefill(n).await?;
    let claim_ms = claim_time(plain.store().as_ref()).await?;
    let (plain_measured, _) = drain(plain.as_ref(), n, sizes, &worker_config(sizes)).await?;
    plain.cleanup().await;
    let mut plain_row = Row::throughput(
        "backlog",
        "none (plain drain)",
        n as u64,
        plain_measured,
        None,
    );
    plain_row.notes = format!("claim of 100 and its give-back: {claim_ms:.1} ms");
    rows.push(plain_row);

    for variant in [
        Backlog::Scheduled,
        Backlog::BackingOff,
        Backlog::Keyed,
        Backlog::KeyedClaimed,
    ] {
        let lib = target.fresh(variant.tag()).await?;
        let not_due = variant.prepare(lib.as_ref(), sizes).await?;
        let claim_ms = claim_time(lib.store().as_ref()).await?;
        let config = worker_config(sizes).with_hand_off_keys(variant != Backlog::KeyedClaimed);
        let (measured, round_trips) =
            drain(lib.as_ref(), variant.due(sizes), sizes, &config).await?;
        let stats = lib.store().stats().await?;
        checks.push(Check {
            what: format!(
                "backlog ({}): the due events processed, the others untouched",
                variant.describe(sizes)
            ),
            passed: stats.pending == not_due && stats.dead == 0,
            detail: format!(
                "pending {} (expected {not_due}), dead {}",
                stats.pending, stats.dead
            ),
        });
        let mut row = Row::throughput(
            "backlog",
            &variant.describe(sizes),
            variant.due(sizes) as u64,
            measured,
            Some(plain_measured_for(plain_measured, n, variant.due(sizes))),
        );
        row.notes = format!(
            "raw = the plain drain above; claim of 100 and its give-back: {claim_ms:.1} ms; {round_trips}"
        );
        rows.push(row);
        lib.cleanup().await;
    }
    Ok(())
}

/// The plain drain's measurement scaled to `events` (same rate), so the ratio column compares rates.
fn plain_measured_for(plain: Measured, plain_events: usize, events: usize) -> Measured {
    let scale = events as f64 / plain_events.max(1) as f64;
    Measured {
        seconds: plain.seconds * scale,
        cpu_seconds: plain.cpu_seconds * scale,
        server_cpu_seconds: plain.server_cpu_seconds.map(|s| s * scale),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backlog {
    Scheduled,
    BackingOff,
    /// Keyed, the key's next event taken over at completion where the store offers it.
    Keyed,
    /// Keyed, every event claimed (`WorkerConfig::hand_off_keys` off): the comparison.
    KeyedClaimed,
}

impl Backlog {
    fn tag(self) -> &'static str {
        match self {
            Self::Scheduled => "bl_sched",
            Self::BackingOff => "bl_backoff",
            Self::Keyed => "bl_keyed",
            Self::KeyedClaimed => "bl_keyed_claimed",
        }
    }

    fn describe(self, sizes: &Sizes) -> String {
        match self {
            Self::Scheduled => format!("{} scheduled for tomorrow", sizes.backlog_scheduled),
            Self::BackingOff => format!("{} in retry back-off", sizes.backlog_backoff),
            Self::Keyed => format!("all keyed, {} ordering keys", sizes.keys),
            Self::KeyedClaimed => format!(
                "all keyed, {} ordering keys, no hand-off (every event claimed)",
                sizes.keys
            ),
        }
    }

    /// How many due events the variant drains.
    fn due(self, sizes: &Sizes) -> usize {
        match self {
            Self::Keyed | Self::KeyedClaimed => sizes.keyed_events,
            _ => sizes.backlog_due,
        }
    }

    /// Fills the outbox; returns how many events must still be pending after the drain.
    async fn prepare(self, lib: &dyn Bench, sizes: &Sizes) -> Result<u64, BenchError> {
        let store = lib.store();
        match self {
            Self::Scheduled => {
                let tomorrow = Utc::now() + chrono::Duration::days(1);
                enqueue_all(store.as_ref(), sizes.backlog_scheduled, |n| {
                    event(n).deliver_at(tomorrow)
                })
                .await?;
                lib.prefill(sizes.backlog_due).await?;
                Ok(sizes.backlog_scheduled as u64)
            }
            Self::BackingOff => {
                enqueue_all(store.as_ref(), sizes.backlog_backoff, event).await?;
                back_off_everything(store.as_ref(), sizes.backlog_backoff).await?;
                lib.prefill(sizes.backlog_due).await?;
                Ok(sizes.backlog_backoff as u64)
            }
            Self::Keyed | Self::KeyedClaimed => {
                let keys = sizes.keys.max(1);
                enqueue_all(store.as_ref(), sizes.keyed_events, |n| {
                    event(n).ordering_key(format!("key-{}", n % keys))
                })
                .await?;
                lib.settle().await?;
                Ok(0)
            }
        }
    }
}

async fn enqueue_all(
    store: &dyn Store,
    n: usize,
    make: impl Fn(usize) -> NewEvent,
) -> Result<(), BenchError> {
    let mut next = 0;
    while next < n {
        let end = (next + 1000).min(n);
        store
            .enqueue_batch((next..end).map(&make).collect())
            .await?;
        next = end;
    }
    Ok(())
}

/// Claims every event and puts it back with an hour of back-off, as a downstream outage would.
async fn back_off_everything(store: &dyn Store, n: usize) -> Result<(), BenchError> {
    let mut done = 0;
    while done < n {
        let claimed = store
            .claim(&ClaimRequest::new("outage", 1000, Duration::from_secs(60)))
            .await?;
        if claimed.is_empty() {
            return Err(BenchError::Setup(format!(
                "only {done} of {n} events could be put in back-off"
            )));
        }
        done += claimed.len();
        let items = claimed
            .into_iter()
            .map(|c| {
                let completion = Completion {
                    status: EventStatus::Pending,
                    handler_results: c.record.handler_results.clone(),
                    attempts: c.record.attempts,
                    retry_delay: Some(Duration::from_secs(3600)),
                };
                (c.lease, completion)
            })
            .collect::<Vec<_>>();
        for result in store.complete_many(&items).await {
            result?;
        }
    }
    Ok(())
}

/// The mean time of one claim of 100 plus the completion that gives the leases back, over 10
/// rounds, in ms (an upper bound of the claim's own time).
async fn claim_time(store: &dyn Store) -> Result<f64, BenchError> {
    let started = Instant::now();
    let rounds = 10;
    for _ in 0..rounds {
        let claimed = store
            .claim(&ClaimRequest::new("timer", 100, Duration::from_secs(60)))
            .await?;
        let items = claimed
            .into_iter()
            .map(|c| {
                let completion = Completion {
                    status: EventStatus::Pending,
                    handler_results: c.record.handler_results.clone(),
                    attempts: c.record.attempts.saturating_sub(1),
                    retry_delay: None,
                };
                (c.lease, completion)
            })
            .collect::<Vec<_>>();
        for result in store.complete_many(&items).await {
            result?;
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds))
}

async fn drain(
    lib: &dyn Bench,
    n: usize,
    sizes: &Sizes,
    config: &outbox_core::WorkerConfig,
) -> Result<(Measured, String), BenchError> {
    let registry = noop_registry()?;
    drain_with_workers(&lib.store(), &registry, PROCESSORS, config, n, sizes).await
}
