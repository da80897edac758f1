//! Scenario 8 (only when named): what the operator's gauges cost on a big table. The outbox keeps
//! `--gauge-processed` processed events (1,000,000 by default) and 100 due ones; `lag()`,
//! `stats()` and `stats_by_type()` are each called once to warm up, then 20 times, timed.

use std::time::{Duration, Instant};

use crate::report::{Check, Row};
use crate::scenario::{drain_with_workers, noop_registry, percentile, worker_config};
use crate::target::{Target, event};
use crate::{BenchError, Sizes};

const CALLS: usize = 20;
const DUE: usize = 100;

pub(crate) async fn gauges(
    target: &dyn Target,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
    checks: &mut Vec<Check>,
) -> Result<(), BenchError> {
    let n = sizes.gauge_processed;
    let lib = target.fresh("gauges").await?;
    lib.prefill(n).await?;
    let store = lib.store();
    let registry = noop_registry()?;
    drain_with_workers(&store, &registry, 2, &worker_config(sizes), n, sizes).await?;
    store.enqueue_batch((0..DUE).map(event).collect()).await?;
    // Let the due events age a little, so the lag is not zero.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let (lag_ms, lag) = time_calls(|| async { Ok(store.lag().await?) }).await?;
    let (stats_ms, stats) = time_calls(|| async { Ok(store.stats().await?) }).await?;
    let (by_type_ms, by_type) = time_calls(|| async { Ok(store.stats_by_type().await?) }).await?;
    let processed = stats.processed;
    let due_by_type: u64 = by_type.iter().map(|t| t.due).sum();
    checks.push(Check {
        what: "gauges: stats_by_type() counts the due events and leaves processed ones out"
            .to_owned(),
        passed: due_by_type == DUE as u64 && by_type.iter().all(|t| t.pending == t.due),
        detail: format!("{by_type:?}"),
    });
    checks.push(Check {
        what: "gauges: lag() sees the due events, stats() counts every processed one".to_owned(),
        passed: lag >= Duration::from_millis(50) && processed == n as u64,
        detail: format!("lag {lag:?}, processed {processed} of {n}"),
    });
    let kept = format!("with {n} processed events kept");
    for (call, ms) in [
        ("lag()", lag_ms),
        ("stats()", stats_ms),
        ("stats_by_type()", by_type_ms),
    ] {
        rows.push(Row {
            latency_ms: Some(ms),
            notes: format!("{CALLS} calls, {DUE} events due"),
            ..Row::empty("gauges", &format!("{call} {kept}"), n as u64)
        });
    }
    // Where the server's own maintenance is off (PostgreSQL without autovacuum), the index the lag
    // reads still holds an entry per finished event's old row version: time it again once the
    // maintenance a production server runs by itself has run.
    if let Some(maintenance) = lib.maintain().await {
        let (lag_ms, _) = time_calls(|| async { Ok(store.lag().await?) }).await?;
        let (by_type_ms, _) = time_calls(|| async { Ok(store.stats_by_type().await?) }).await?;
        for (call, ms) in [("lag()", lag_ms), ("stats_by_type()", by_type_ms)] {
            rows.push(Row {
                latency_ms: Some(ms),
                notes: format!("{CALLS} calls, {DUE} events due; {maintenance}"),
                ..Row::empty(
                    "gauges",
                    &format!("{call} {kept}, after maintenance"),
                    n as u64,
                )
            });
        }
    }
    lib.cleanup().await;
    Ok(())
}

/// Calls `f` [`CALLS`] times: p50, p99 and max milliseconds, and the last call's answer.
async fn time_calls<T, F, Fut>(mut f: F) -> Result<([f64; 3], T), BenchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BenchError>>,
{
    let mut ms = Vec::with_capacity(CALLS);
    let mut last = f().await?;
    for _ in 0..CALLS {
        let started = Instant::now();
        last = f().await?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let times = [
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        *ms.last().unwrap_or(&0.0),
    ];
    Ok((times, last))
}
