//! Scenario 7 (on request): a steady state. A producer enqueues at a fixed rate for minutes while
//! two workers process and a purger removes processed events older than a minute; the outbox's size
//! is sampled along the way and must stay bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use outbox_core::{Store, StoreExt};

use crate::report::{Check, Measured, Row};
use crate::scenario::{noop_registry, start_workers, worker_config};
use crate::target::{Target, event};
use crate::{BenchError, Sizes};

/// How long processed events are kept before the purger removes them.
const KEEP_PROCESSED: Duration = Duration::from_secs(60);
const PURGE_EVERY: Duration = Duration::from_secs(10);

/// Runs the soak: `sizes.soak_rate` events/s for `sizes.soak_seconds`.
// Long by design: one measured soak run read top to bottom (producer, workers, purger, samples,
// report).
pub(crate) async fn soak(
    target: &dyn Target,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
    checks: &mut Vec<Check>,
) -> Result<(), BenchError> {
    let lib: Arc<dyn crate::target::Bench> = Arc::from(target.fresh("soak").await?);
    let store = lib.store();
    let workers = start_workers(&store, &noop_registry()?, 2, &worker_config(sizes))?;
    let produced = Arc::new(AtomicU64::new(0));
    let producing = Arc::new(AtomicBool::new(true));
    let purger = tokio::spawn(purge_until_stopped(
        Arc::clone(&lib),
        Arc::clone(&producing),
    ));
    let started = Instant::now();
    let total = Duration::from_secs_f64(sizes.soak_seconds);
    let sample_every = (total / 20).max(Duration::from_secs(5));
    let mut samples: Vec<(f64, Option<u64>, u64)> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let per_tick = (sizes.soak_rate / 100).max(1) as usize;
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n = 0;
    while started.elapsed() < total {
        ticker.tick().await;
        store
            .enqueue_batch((n..n + per_tick).map(event).collect())
            .await?;
        n += per_tick;
        produced.store(n as u64, Ordering::Relaxed);
        if started.elapsed() >= next_sample {
            let pending = store.stats().await?.pending;
            samples.push((
                started.elapsed().as_secs_f64(),
                lib.size_bytes().await,
                pending,
            ));
            next_sample += sample_every;
        }
    }
    let produce_seconds = started.elapsed().as_secs_f64();
    producing.store(false, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(120);
    let finished = loop {
        let done: u64 = workers.iter().map(|w| w.metrics().processed).sum();
        if done >= n as u64 || Instant::now() > deadline {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for w in workers {
        w.shutdown().await;
    }
    let maintenance = purger.await.ok().flatten();
    let sizes_mb: Vec<f64> = samples
        .iter()
        .filter_map(|(_, size, _)| size.map(|s| s as f64 / 1_048_576.0))
        .collect();
    let curve = samples
        .iter()
        .map(|(t, size, pending)| match size {
            Some(s) => format!(
                "{t:.0}s {:.1} MB/{pending} pending",
                *s as f64 / 1_048_576.0
            ),
            None => format!("{t:.0}s {pending} pending"),
        })
        .collect::<Vec<_>>()
        .join("; ");
    // Bounded: once warmed up (a retention period), the size stops growing.
    let half = sizes_mb.len() / 2;
    let (first, second) = sizes_mb.split_at(half);
    let peak = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let bounded = sizes_mb.len() < 4 || peak(second) <= peak(first) * 1.5;
    checks.push(Check {
        what: "soak: every event processed".to_owned(),
        passed: finished >= n as u64,
        detail: format!("{finished} of {n}"),
    });
    checks.push(Check {
        what: "soak: outbox size bounded (second half's peak ≤ 1.5 × first half's)".to_owned(),
        passed: bounded,
        detail: format!(
            "first half peak {:.1} MB, second half peak {:.1} MB",
            peak(first),
            peak(second)
        ),
    });
    let mut row = Row::throughput(
        "soak",
        &format!(
            "{} ev/s for {:.0} s, purge every {}s keeping {}s",
            sizes.soak_rate,
            sizes.soak_seconds,
            PURGE_EVERY.as_secs(),
            KEEP_PROCESSED.as_secs()
        ),
        n as u64,
        Measured {
            seconds: produce_seconds,
            cpu_seconds: 0.0,
            server_cpu_seconds: None,
        },
        None,
    );
    row.cpu_us_per_event = None;
    row.notes = match maintenance {
        Some(m) => format!("{m}; {curve}"),
        None => curve,
    };
    rows.push(row);
    lib.cleanup().await;
    Ok(())
}

/// Purges processed events older than [`KEEP_PROCESSED`] every [`PURGE_EVERY`], with whatever
/// maintenance the backend needs; returns what that maintenance was.
async fn purge_until_stopped(
    lib: Arc<dyn crate::target::Bench>,
    producing: Arc<AtomicBool>,
) -> Option<String> {
    let store: Arc<dyn Store> = lib.store();
    let mut maintenance = None;
    while producing.load(Ordering::Relaxed) {
        tokio::time::sleep(PURGE_EVERY).await;
        let cutoff = Utc::now() - chrono::Duration::from_std(KEEP_PROCESSED).unwrap_or_default();
        if let Err(err) = store.purge_processed(cutoff).await {
            eprintln!("soak: purge failed: {err}");
        }
        maintenance = lib.maintain().await.or(maintenance);
    }
    maintenance
}
