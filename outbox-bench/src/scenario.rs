//! The four scenarios, written once against [`Target`]: enqueue, drain, latency, fan-out with
//! failures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outbox_core::handlers::Registry;
use outbox_core::{
    Handler, HandlerError, RetryPolicy, Store, StoreExt, Worker, WorkerConfig, WorkerHandle,
};
use uuid::Uuid;

use crate::report::{Check, Measured, Row, process_cpu_seconds, server_cpu_seconds};
use crate::target::{EVENT_TYPE, Target, event};
use crate::{BenchError, Sizes};

/// Runs `f` and measures its wall and process CPU time.
async fn measure<T, F: Future<Output = Result<T, BenchError>>>(
    f: F,
) -> Result<(T, Measured), BenchError> {
    let cpu = process_cpu_seconds();
    let server = server_cpu_seconds();
    let started = Instant::now();
    let out = f.await?;
    let measured = Measured {
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: process_cpu_seconds() - cpu,
        server_cpu_seconds: server_cpu_seconds()
            .zip(server)
            .map(|(after, before)| after - before)
            .filter(|used| *used >= 0.0),
    };
    Ok((out, measured))
}

/// Scenario 1: enqueue, one event per caller transaction and batches of 100.
pub async fn enqueue(
    target: &dyn Target,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
    checks: &mut Vec<Check>,
) -> Result<(), BenchError> {
    for (variant, transactions, per) in [
        ("1 event per tx", sizes.enqueue_single, 1),
        ("100 events per tx", sizes.enqueue_batches, 100),
    ] {
        let events = (transactions * per) as u64;
        // Raw first, then the library, each into an outbox of its own; alternate once more and keep
        // the better of two runs each, to damp the machine's noise.
        let mut best_raw: Option<Measured> = None;
        let mut best_outbox: Option<Measured> = None;
        for round in 0..2 {
            let raw = target.fresh(&format!("enq_raw{round}")).await?;
            let ((), m) = measure(raw.raw_enqueue(transactions, per)).await?;
            raw.cleanup().await;
            best_raw = Some(best_raw.map_or(m, |b| if m.seconds < b.seconds { m } else { b }));
            let lib = target.fresh(&format!("enq_lib{round}")).await?;
            let ((), m) = measure(lib.outbox_enqueue(transactions, per)).await?;
            let stats = lib.store().stats().await?;
            checks.push(Check {
                what: format!("enqueue ({variant}, round {round}): every event stored"),
                passed: stats.pending == events,
                detail: format!("{} pending of {events}", stats.pending),
            });
            lib.cleanup().await;
            best_outbox =
                Some(best_outbox.map_or(m, |b| if m.seconds < b.seconds { m } else { b }));
        }
        if let (Some(outbox), raw) = (best_outbox, best_raw) {
            rows.push(Row::throughput("enqueue", variant, events, outbox, raw));
        }
    }
    Ok(())
}

pub(crate) fn noop_registry() -> Result<Registry, BenchError> {
    Ok(Registry::builder()
        .handler(Handler::raw(EVENT_TYPE, "noop", |_record, _ctx| async {
            Ok::<_, HandlerError>(())
        }))
        .build()?)
}

pub(crate) fn start_workers(
    store: &Arc<dyn Store>,
    registry: &Registry,
    processors: usize,
    config: &WorkerConfig,
) -> Result<Vec<WorkerHandle>, BenchError> {
    (0..processors)
        .map(|p| {
            Ok(Worker::builder(store.clone())
                .registry(registry.clone())
                .config(config.clone().with_worker_id(format!("bench-{p}")))
                .build()?
                .start())
        })
        .collect()
}

async fn wait_processed(
    workers: &[WorkerHandle],
    target: u64,
    timeout: Duration,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let done: u64 = workers
            .iter()
            .map(|w| w.metrics().processed + w.metrics().dead)
            .sum();
        if done >= target {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!(
                "{done} of {target} events finished in {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Starts `processors` workers, measures until `n` events finished, then shuts them down.
pub(crate) async fn drain_with_workers(
    store: &Arc<dyn Store>,
    registry: &Registry,
    processors: usize,
    config: &WorkerConfig,
    n: usize,
    sizes: &Sizes,
) -> Result<(Measured, String), BenchError> {
    let (workers, measured) = measure(async {
        let workers = start_workers(store, registry, processors, config)?;
        wait_processed(&workers, n as u64, sizes.timeout).await?;
        Ok(workers)
    })
    .await?;
    let (mut claims, mut claimed, mut batches) = (0, 0, 0);
    for w in workers {
        let m = w.shutdown().await.metrics;
        claims += m.claims;
        claimed += m.claimed;
        batches += m.completion_batches;
    }
    let round_trips = format!(
        "{:.0} ev/claim, {:.0} ev/completion batch",
        claimed as f64 / claims.max(1) as f64,
        claimed as f64 / batches.max(1) as f64
    );
    Ok((measured, round_trips))
}

pub(crate) fn worker_config(sizes: &Sizes) -> WorkerConfig {
    WorkerConfig::default()
        .with_batch_size(sizes.batch)
        .with_max_in_flight(sizes.batch * 4)
}

/// Scenario 2: drain a pre-filled outbox with 1, 2 and 4 processors and a no-op handler.
pub async fn drain(
    target: &dyn Target,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
    checks: &mut Vec<Check>,
) -> Result<(), BenchError> {
    let n = sizes.drain_events;
    let registry = noop_registry()?;
    for &processors in &sizes.processors {
        let raw = target.fresh(&format!("drain_raw{processors}")).await?;
        raw.raw_prefill(n).await?;
        let (done, raw_measured) = measure(raw.raw_drain(processors, sizes.batch)).await?;
        checks.push(Check {
            what: format!("raw drain P={processors}: every event completed once"),
            passed: done == n as u64,
            detail: format!("{done} of {n}"),
        });
        raw.cleanup().await;

        let lib = target.fresh(&format!("drain_lib{processors}")).await?;
        lib.prefill(n).await?;
        let store = lib.store();
        let config = worker_config(sizes);
        let (measured, round_trips) =
            drain_with_workers(&store, &registry, processors, &config, n, sizes).await?;
        let stats = store.stats().await?;
        checks.push(Check {
            what: format!("drain P={processors}: every event processed, none left"),
            passed: stats.processed == n as u64 && stats.pending == 0 && stats.dead == 0,
            detail: format!(
                "processed {}, pending {}, dead {}",
                stats.processed, stats.pending, stats.dead
            ),
        });
        let mut row = Row::throughput(
            "drain",
            &format!("P={processors}"),
            n as u64,
            measured,
            Some(raw_measured),
        );
        row.notes = notes(lib.as_ref(), &round_trips).await;
        rows.push(row);
        lib.cleanup().await;
    }
    // Where the backend can delete processed events on completion, the same drain that way, with 2
    // processors (or the largest count asked for, when 2 is not among them).
    let processors = if sizes.processors.contains(&2) {
        2
    } else {
        sizes.processors.iter().copied().max().unwrap_or(2)
    };
    if let Some(lib) = target.fresh_deleting("drain_del").await? {
        lib.prefill(n).await?;
        let store = lib.store();
        let (measured, round_trips) = drain_with_workers(
            &store,
            &registry,
            processors,
            &worker_config(sizes),
            n,
            sizes,
        )
        .await?;
        let stats = store.stats().await?;
        checks.push(Check {
            what: format!("drain P={processors}, delete processed: none left pending or dead"),
            passed: stats.pending == 0 && stats.dead == 0 && stats.processed == 0,
            detail: format!(
                "processed kept {}, pending {}, dead {}",
                stats.processed, stats.pending, stats.dead
            ),
        });
        let mut row = Row::throughput(
            "drain",
            &format!("P={processors}, delete processed"),
            n as u64,
            measured,
            None,
        );
        row.notes = notes(lib.as_ref(), &round_trips).await;
        rows.push(row);
        lib.cleanup().await;
    }
    Ok(())
}

/// The backend's facts after a run, and how many events each round trip carried.
async fn notes(lib: &dyn crate::target::Bench, round_trips: &str) -> String {
    let mut notes: Vec<String> = lib
        .facts()
        .await
        .into_iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    notes.push(round_trips.to_owned());
    notes.join(", ")
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Scenario 3: commit→handler-start latency with a producer at a fixed rate, wake-ups on and off.
// Long by design: one measured scenario read top to bottom (producer, worker, samples,
// percentiles).
pub async fn latency(
    target: &dyn Target,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
    checks: &mut Vec<Check>,
) -> Result<(), BenchError> {
    let total = (sizes.latency_rate as f64 * sizes.latency_seconds) as usize;
    for wakeups in [true, false] {
        let variant = if wakeups { "wake-ups" } else { "polling only" };
        let lib = target
            .fresh(if wakeups { "lat_wake" } else { "lat_poll" })
            .await?;
        let store = lib.store();
        let committed: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
        let started: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
        let seen = started.clone();
        let registry = Registry::builder()
            .handler(Handler::raw(
                EVENT_TYPE,
                "timestamp",
                move |record, _ctx| {
                    let seen = seen.clone();
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
        let config = worker_config(sizes).with_wakeups(wakeups);
        let workers = start_workers(&store, &registry, 2, &config)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let period = Duration::from_secs_f64(1.0 / sizes.latency_rate as f64);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
        let errors = Arc::new(AtomicU64::new(0));
        let cpu = process_cpu_seconds();
        let began = Instant::now();
        for n in 0..total {
            ticker.tick().await;
            let permit = in_flight
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| BenchError::Setup(e.to_string()))?;
            let store = store.clone();
            let committed = committed.clone();
            let errors = errors.clone();
            tokio::spawn(async move {
                match store.enqueue(event(n)).await {
                    Ok(enqueued) => {
                        let now = Instant::now();
                        if let Ok(mut map) = committed.lock() {
                            map.insert(enqueued.id, now);
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
        wait_processed(&workers, total as u64, sizes.timeout).await?;
        let cpu_seconds = process_cpu_seconds() - cpu;
        for w in workers {
            w.shutdown().await;
        }
        let committed = committed.lock().map(|m| m.clone()).unwrap_or_default();
        let started = started.lock().map(|m| m.clone()).unwrap_or_default();
        let mut delays: Vec<f64> = committed
            .iter()
            .filter_map(|(id, at)| {
                started
                    .get(id)
                    .map(|s| s.saturating_duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect();
        delays.sort_by(f64::total_cmp);
        checks.push(Check {
            what: format!("latency ({variant}): every committed event reached its handler"),
            passed: delays.len() == total && errors.load(Ordering::Relaxed) == 0,
            detail: format!(
                "{} of {total} measured, {} enqueue errors",
                delays.len(),
                errors.load(Ordering::Relaxed)
            ),
        });
        let mut row = Row::throughput(
            "latency",
            variant,
            total as u64,
            Measured {
                seconds: produce_seconds,
                cpu_seconds,
                server_cpu_seconds: None,
            },
            None,
        );
        row.outbox_per_s = Some(total as f64 / produce_seconds.max(1e-9));
        row.latency_ms = Some([
            percentile(&delays, 50.0),
            percentile(&delays, 99.0),
            delays.last().copied().unwrap_or(0.0),
        ]);
        row.notes = format!(
            "target rate {}/s, poll interval {:?}",
            sizes.latency_rate, config.poll_interval
        );
        rows.push(row);
        lib.cleanup().await;
    }
    Ok(())
}

/// Whether the first attempt of (`event`, `handler`) fails: 5 % of them, deterministically.
fn fails_first(event: Uuid, handler: usize) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in event.as_bytes().iter().copied().chain([handler as u8]) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % 20 == 0
}

/// Scenario 4: three handlers per event, 5 % transient failures; throughput and final state.
pub async fn fanout(
    target: &dyn Target,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
    checks: &mut Vec<Check>,
) -> Result<(), BenchError> {
    let n = sizes.fanout_events;
    let processors = 2;
    let raw = target.fresh("fan_raw").await?;
    raw.raw_prefill(n).await?;
    let (_, raw_measured) = measure(raw.raw_drain(processors, sizes.batch)).await?;
    raw.cleanup().await;

    let lib = target.fresh("fan_lib").await?;
    lib.prefill(n).await?;
    let store = lib.store();
    type Counts = Arc<Mutex<HashMap<(Uuid, usize), u32>>>;
    let successes: Counts = Arc::default();
    let failures = Arc::new(AtomicU64::new(0));
    let mut builder = Registry::builder();
    for handler in 0..3 {
        let successes = successes.clone();
        let failures = failures.clone();
        builder = builder.handler(Handler::raw(
            EVENT_TYPE,
            format!("fan{handler}"),
            move |record, ctx| {
                let successes = successes.clone();
                let failures = failures.clone();
                async move {
                    if ctx.attempt == 1 && fails_first(record.id, handler) {
                        failures.fetch_add(1, Ordering::Relaxed);
                        return Err(HandlerError::retry("injected transient failure"));
                    }
                    if let Ok(mut map) = successes.lock() {
                        *map.entry((record.id, handler)).or_default() += 1;
                    }
                    Ok(())
                }
            },
        ));
    }
    let registry = builder.build()?;
    let config = worker_config(sizes).with_retry(
        RetryPolicy::default()
            .with_initial_delay(Duration::from_millis(20))
            .with_max_delay(Duration::from_millis(200)),
    );
    let (measured, round_trips) =
        drain_with_workers(&store, &registry, processors, &config, n, sizes).await?;
    let stats = store.stats().await?;
    let successes = successes.lock().map(|m| m.clone()).unwrap_or_default();
    let doubled = successes.values().filter(|c| **c > 1).count();
    checks.push(Check {
        what: "fan-out: no event lost (all processed, none dead or pending)".to_owned(),
        passed: stats.processed == n as u64 && stats.pending == 0 && stats.dead == 0,
        detail: format!(
            "processed {}, pending {}, dead {}",
            stats.processed, stats.pending, stats.dead
        ),
    });
    checks.push(Check {
        what: "fan-out: every handler succeeded exactly once per event".to_owned(),
        passed: successes.len() == 3 * n && doubled == 0,
        detail: format!(
            "{} (event, handler) successes of {}, {doubled} recorded twice, {} injected failures",
            successes.len(),
            3 * n,
            failures.load(Ordering::Relaxed)
        ),
    });
    let mut row = Row::throughput(
        "fan-out",
        "3 handlers, 5 % fail once, P=2",
        n as u64,
        measured,
        Some(raw_measured),
    );
    row.notes = format!("raw = lease-then-complete, one no-op pass; {round_trips}");
    rows.push(row);
    lib.cleanup().await;
    Ok(())
}
