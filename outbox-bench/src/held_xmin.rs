//! Scenario `held-xmin` (PostgreSQL, on request): the latency workload — a producer committing one
//! event per transaction at a fixed rate, two workers with wake-ups — while another connection
//! holds one `REPEATABLE READ` snapshot open for the whole run, as a long report, `pg_dump`, an
//! idle-in-transaction session or a replica with `hot_standby_feedback` does. No row version the
//! outbox deletes or updates meanwhile can be cleaned up. Reported per 10-second window (by commit
//! time): commit→handler p50, p99 and max; and sampled every 10 s: how long one walk of the whole
//! due index takes and how many buffers it reads (what a claim without its window would cost),
//! the table's dead tuples and size. Run for outbox keeping processed events and deleting them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outbox_core::handlers::Registry;
use outbox_core::{Handler, HandlerError, StoreExt};
use uuid::Uuid;

use crate::report::{Check, Row};
use crate::scenario::{percentile, start_workers, worker_config};
use crate::target::{Bench, EVENT_TYPE, Target, event};
use crate::{BenchError, Sizes};

/// How often the trend is sampled, and the width of a latency window.
const WINDOW: Duration = Duration::from_secs(10);

/// One sample of the table while the snapshot is held.
#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    walk: Option<(Duration, u64)>,
    facts: String,
}

/// Runs the scenario for outbox keeping and deleting processed events.
pub(crate) async fn held_xmin(
    target: &dyn Target,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
    checks: &mut Vec<Check>,
) -> Result<(), BenchError> {
    let keep = target.fresh("xmin_keep").await?;
    run_one(keep, "keep processed", sizes, rows, checks).await?;
    if let Some(delete) = target.fresh_deleting("xmin_delete").await? {
        run_one(delete, "delete processed", sizes, rows, checks).await?;
    }
    if sizes.peer {
        // The peer's failure is reported in its row: outbox's rows stand on their own.
        rows.push(graphile(sizes).unwrap_or_else(|e| {
            let mut row = Row::empty("held-xmin", "graphile-worker 0.17", 0);
            row.notes = format!("graphile-worker run failed: {e}");
            row
        }));
    }
    Ok(())
}

/// graphile-worker's run of the same workload on the same server (`scripts/peer-graphile-latency.sh`).
fn graphile(sizes: &Sizes) -> Result<Row, BenchError> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/peer-graphile-latency.sh"
    );
    let output = std::process::Command::new(script)
        .arg(sizes.held_xmin_rate.to_string())
        .arg(sizes.held_xmin_seconds.to_string())
        .output()
        .map_err(|e| BenchError::Setup(format!("cannot run {script}: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let peer: serde_json::Value = serde_json::from_str(line).map_err(|e| {
        BenchError::Setup(format!(
            "graphile-worker run failed ({e}): {line}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    })?;
    let f = |k: &str| peer[k].as_f64().unwrap_or(f64::NAN);
    let windows: Vec<String> = peer["windows"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|w| {
                    format!(
                        "{}s: p50 {:.1} p99 {:.1} max {:.0}",
                        w["from_s"],
                        w["p50"].as_f64().unwrap_or(f64::NAN),
                        w["p99"].as_f64().unwrap_or(f64::NAN),
                        w["max"].as_f64().unwrap_or(f64::NAN)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let trend: Vec<String> = peer["trend"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut row = Row::empty(
        "held-xmin",
        "graphile-worker 0.17 (1 process, concurrency 24)",
        peer["jobs"].as_u64().unwrap_or(0),
    );
    row.outbox_per_s = Some(f("per_s"));
    row.latency_ms = Some([f("p50"), f("p99"), f("max")]);
    row.notes = format!(
        "the same workload (add_job, one job per transaction) on the same server, snapshot held; \
         worst 10-s window p99 {:.1} ms; windows: [{}]; trend: [{}]; at the end, snapshot held: \
         table+indexes {:.1} MB, dead tuples {}; after VACUUM: {:.1} MB, dead tuples {}",
        f("worst_window_p99"),
        windows.join("; "),
        trend.join("; "),
        f("held_mb"),
        peer["held_dead"],
        f("vacuumed_mb"),
        peer["vacuumed_dead"],
    );
    Ok(row)
}

// Long by design: one measured run read top to bottom (set up, hold the snapshot, produce, drain,
// sample, report); splitting it would scatter the protocol BENCHMARKS.md describes.
async fn run_one(
    lib: Box<dyn Bench>,
    variant: &str,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
    checks: &mut Vec<Check>,
) -> Result<(), BenchError> {
    let total = (f64::from(sizes.held_xmin_rate) * sizes.held_xmin_seconds) as usize;
    let store = lib.store();
    let started: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let seen = Arc::clone(&started);
    let registry = Registry::builder()
        .handler(Handler::raw(
            EVENT_TYPE,
            "timestamp",
            move |record, _ctx| {
                let seen = Arc::clone(&seen);
                async move {
                    let now = Instant::now();
                    if let Ok(mut map) = seen.lock() {
                        map.entry(record.id).or_insert(now);
                    }
                    Ok::<_, HandlerError>(())
                }
            },
        ))
        .build()?;
    let config = worker_config(sizes);
    let workers = start_workers(&store, &registry, 2, &config)?;
    let Some(hold) = lib.hold_snapshot().await? else {
        return Err(BenchError::Setup(
            "the held-xmin scenario needs a backend with snapshots (postgres)".to_owned(),
        ));
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let began = Instant::now();
    let sample_every = WINDOW.min(
        Duration::from_secs_f64(sizes.held_xmin_seconds / 4.0).max(Duration::from_millis(100)),
    );
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let lib: Arc<dyn Bench> = Arc::from(lib);
    let sampler = {
        let (lib, samples) = (Arc::clone(&lib), Arc::clone(&samples));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(sample_every);
            loop {
                tick.tick().await;
                let walk = lib.full_walk().await;
                let facts = lib
                    .facts()
                    .await
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                if let Ok(mut s) = samples.lock() {
                    s.push(Sample {
                        at: began.elapsed(),
                        walk,
                        facts,
                    });
                }
            }
        })
    };

    let committed: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let errors = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs_f64(1.0 / f64::from(sizes.held_xmin_rate));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    for n in 0..total {
        ticker.tick().await;
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        let (store, committed, errors) =
            (store.clone(), Arc::clone(&committed), Arc::clone(&errors));
        tokio::spawn(async move {
            match store.enqueue(event(n)).await {
                Ok(enqueued) => {
                    if let Ok(mut map) = committed.lock() {
                        map.insert(enqueued.id, Instant::now());
                    }
                }
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
    }
    let produce_seconds = began.elapsed().as_secs_f64();
    let deadline = Instant::now() + sizes.timeout;
    loop {
        let done = started.lock().map(|m| m.len()).unwrap_or(0);
        if done >= total - errors.load(Ordering::Relaxed) as usize || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sampler.abort();
    let before_release = lib.facts().await;
    drop(hold);
    let walk_after_release = lib.full_walk().await;
    let vacuum = lib.vacuum_now().await;
    let after_vacuum = lib.facts().await;
    let walk_after_vacuum = lib.full_walk().await;
    let mut handled = 0;
    for w in workers {
        handled += w.shutdown().await.metrics.processed;
    }

    // Latency per window of commit time.
    let committed = committed.lock().map(|m| m.clone()).unwrap_or_default();
    let started = started.lock().map(|m| m.clone()).unwrap_or_default();
    let mut all = Vec::new();
    let mut windows: Vec<Vec<f64>> = Vec::new();
    for (id, at) in &committed {
        let Some(start) = started.get(id) else {
            continue;
        };
        let ms = start.saturating_duration_since(*at).as_secs_f64() * 1000.0;
        let w = (at.saturating_duration_since(began).as_secs_f64() / WINDOW.as_secs_f64()) as usize;
        if windows.len() <= w {
            windows.resize(w + 1, Vec::new());
        }
        windows[w].push(ms);
        all.push(ms);
    }
    all.sort_by(f64::total_cmp);
    let per_window: Vec<String> = windows
        .iter_mut()
        .enumerate()
        .map(|(i, w)| {
            w.sort_by(f64::total_cmp);
            format!(
                "{}s: p50 {:.1} p99 {:.1} max {:.0}",
                i * WINDOW.as_secs() as usize,
                percentile(w, 50.0),
                percentile(w, 99.0),
                w.last().copied().unwrap_or(0.0)
            )
        })
        .collect();
    let worst_window_p99 = windows
        .iter()
        .map(|w| percentile(w, 99.0))
        .fold(0.0, f64::max);
    let trend: Vec<String> = samples
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            format!(
                "{:.0}s: full walk {} ({}), {}",
                s.at.as_secs_f64(),
                s.walk.map_or("—".to_owned(), |(d, _)| format!(
                    "{:.1} ms",
                    d.as_secs_f64() * 1e3
                )),
                s.walk
                    .map_or("—".to_owned(), |(_, b)| format!("{b} buffers")),
                s.facts
            )
        })
        .collect();
    let fmt_facts = |f: &[(String, String)]| {
        f.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fmt_walk = |w: Option<(Duration, u64)>| {
        w.map_or("—".to_owned(), |(d, b)| {
            format!("{:.1} ms / {b} buffers", d.as_secs_f64() * 1e3)
        })
    };

    checks.push(Check {
        what: format!("held-xmin ({variant}): every committed event reached its handler"),
        passed: all.len() == total
            && errors.load(Ordering::Relaxed) == 0
            && handled >= total as u64,
        detail: format!(
            "{} of {total} measured, {} enqueue errors, {handled} processed",
            all.len(),
            errors.load(Ordering::Relaxed)
        ),
    });
    let mut row = Row::empty("held-xmin", variant, total as u64);
    row.outbox_per_s = Some(total as f64 / produce_seconds.max(1e-9));
    row.latency_ms = Some([
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        all.last().copied().unwrap_or(0.0),
    ]);
    row.notes = format!(
        "target {}/s for {:.0} s with one snapshot held throughout; worst 10-s window p99 {:.1} ms; \
         windows: [{}]; trend: [{}]; at the end, snapshot held: {}; after release: full walk {}; \
         after {}: {}, full walk {}",
        sizes.held_xmin_rate,
        sizes.held_xmin_seconds,
        worst_window_p99,
        per_window.join("; "),
        trend.join("; "),
        fmt_facts(&before_release),
        fmt_walk(walk_after_release),
        vacuum.as_deref().unwrap_or("no maintenance"),
        fmt_facts(&after_vacuum),
        fmt_walk(walk_after_vacuum),
    );
    rows.push(row);
    lib.cleanup().await;
    Ok(())
}
