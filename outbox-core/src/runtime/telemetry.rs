//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`): the worker
//! emits counters and histograms as it runs; [`spawn_gauge_sampler`] samples per-type gauges from
//! the store. Install any `metrics` recorder (a Prometheus exporter, StatsD, …) to collect them;
//! without one they cost a no-op call.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `outbox_claims_total` | counter | | claim calls |
//! | `outbox_events_claimed_total` | counter | | events claimed (hand-offs included) |
//! | `outbox_events_handed_off_total` | counter | | events taken over at their key's previous completion |
//! | `outbox_handler_runs_total` | counter | `handler`, `outcome` | handler runs, `succeeded` or `failed` |
//! | `outbox_events_processed_total` | counter | | events that became processed |
//! | `outbox_events_retried_total` | counter | | events sent back to retry |
//! | `outbox_events_dead_total` | counter | | events that became dead letters |
//! | `outbox_events_released_total` | counter | | claims given back at shutdown |
//! | `outbox_events_unhandled_total` | counter | | claims of types without a handler here |
//! | `outbox_leases_lost_total` | counter | | leases lost while processing |
//! | `outbox_leases_compromised_total` | counter | | of those, leases given up because no renewal was confirmed before their expiry |
//! | `outbox_store_errors_total` | counter | | store calls that failed |
//! | `outbox_completion_batches_total` | counter | | `complete_many` calls |
//! | `outbox_handler_duration_seconds` | histogram | `handler` | one handler run |
//! | `outbox_event_start_latency_seconds` | histogram | | due (commit, schedule or back-off end) → handlers start |
//! | `outbox_event_latency_seconds` | histogram | | due → outcome persisted |
//! | `outbox_lag_seconds` | gauge | | age of the oldest due event (sampled) |
//! | `outbox_pending`, `outbox_due`, `outbox_leased`, `outbox_dead` | gauge | `event_type` | per-type counts (sampled) |
//! | `outbox_type_lag_seconds` | gauge | `event_type` | per-type age of the oldest due event (sampled) |
//! | `outbox_oldest_snapshot_age_seconds`, `outbox_dead_rows`, `outbox_windowed_claims` | gauge | | what holds cleanup back, on stores where something can (PostgreSQL; sampled) |
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn outbox_core::Store>) {
//! // With a recorder installed (e.g. metrics-exporter-prometheus), sample gauges every 15 s:
//! let sampler = outbox_core::runtime::telemetry::spawn_gauge_sampler(store, std::time::Duration::from_secs(15));
//! # sampler.abort();
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::model::error::StoreError;
use crate::store::Store;

/// Registers the descriptions and units of every metric above with the installed recorder.
/// The worker calls it when it starts; calling it again is harmless.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("outbox_claims_total", "Claim calls made");
    describe_counter!("outbox_events_claimed_total", "Events claimed");
    describe_counter!(
        "outbox_events_handed_off_total",
        "Events leased to the worker by the completion of their ordering key's previous event"
    );
    describe_counter!(
        "outbox_handler_runs_total",
        "Handler runs, by handler and outcome"
    );
    describe_counter!(
        "outbox_events_processed_total",
        "Events that became processed"
    );
    describe_counter!(
        "outbox_events_retried_total",
        "Events sent back to be retried"
    );
    describe_counter!(
        "outbox_events_dead_total",
        "Events that became dead letters"
    );
    describe_counter!(
        "outbox_events_released_total",
        "Claims given back at shutdown"
    );
    describe_counter!(
        "outbox_events_unhandled_total",
        "Claims of event types without a handler"
    );
    describe_counter!("outbox_leases_lost_total", "Leases lost while processing");
    describe_counter!(
        "outbox_leases_compromised_total",
        "Leases given up because no renewal was confirmed before their expiry"
    );
    describe_counter!("outbox_store_errors_total", "Store calls that failed");
    describe_counter!("outbox_completion_batches_total", "complete_many calls");
    describe_histogram!(
        "outbox_handler_duration_seconds",
        Unit::Seconds,
        "One handler run"
    );
    describe_histogram!(
        "outbox_event_start_latency_seconds",
        Unit::Seconds,
        "From due (commit, schedule or back-off end) to the handlers' start"
    );
    describe_histogram!(
        "outbox_event_latency_seconds",
        Unit::Seconds,
        "From due to the outcome persisted"
    );
    describe_gauge!(
        "outbox_lag_seconds",
        Unit::Seconds,
        "Age of the oldest due event"
    );
    describe_gauge!("outbox_pending", "Pending events, by type");
    describe_gauge!("outbox_due", "Due, unleased events, by type");
    describe_gauge!("outbox_leased", "Leased events, by type");
    describe_gauge!("outbox_dead", "Dead letters, by type");
    describe_gauge!(
        "outbox_type_lag_seconds",
        Unit::Seconds,
        "Age of the oldest due event, by type"
    );
    describe_gauge!(
        "outbox_oldest_snapshot_age_seconds",
        Unit::Seconds,
        "Age of the oldest snapshot open in the database, which holds the outbox's cleanup back (PostgreSQL)"
    );
    describe_gauge!(
        "outbox_dead_rows",
        "Dead row versions in the outbox's table that cleanup has not removed (PostgreSQL)"
    );
    describe_gauge!(
        "outbox_windowed_claims",
        "1 while claims start just below what was last taken because full walks became slow (PostgreSQL)"
    );
}

/// Reads [`InspectStore::lag`](crate::store::InspectStore::lag),
/// [`InspectStore::stats_by_type`](crate::store::InspectStore::stats_by_type) and
/// [`InspectStore::held_back`](crate::store::InspectStore::held_back) once and sets the gauges. A
/// type that had events at the previous sample and has none now is set to zero.
pub async fn sample_gauges(store: &dyn Store, seen: &mut Vec<String>) -> Result<(), StoreError> {
    let lag = store.lag().await?;
    metrics::gauge!("outbox_lag_seconds").set(lag.as_secs_f64());
    let rows = store.stats_by_type().await?;
    for gone in seen
        .iter()
        .filter(|t| !rows.iter().any(|r| &r.event_type == *t))
    {
        for name in [
            "outbox_pending",
            "outbox_due",
            "outbox_leased",
            "outbox_dead",
        ] {
            metrics::gauge!(name, "event_type" => gone.clone()).set(0.0);
        }
        metrics::gauge!("outbox_type_lag_seconds", "event_type" => gone.clone()).set(0.0);
    }
    for row in &rows {
        let label = || ("event_type", row.event_type.clone());
        let set = |name: &'static str, value: f64| {
            let (k, v) = label();
            metrics::gauge!(name, k => v).set(value);
        };
        set("outbox_pending", row.pending as f64);
        set("outbox_due", row.due as f64);
        set("outbox_leased", row.leased as f64);
        set("outbox_dead", row.dead as f64);
        set("outbox_type_lag_seconds", row.oldest_due_age.as_secs_f64());
    }
    *seen = rows.into_iter().map(|r| r.event_type).collect();
    if let Some(held) = store.held_back().await? {
        metrics::gauge!("outbox_oldest_snapshot_age_seconds")
            .set(held.oldest_snapshot_age.as_secs_f64());
        metrics::gauge!("outbox_dead_rows").set(held.dead_rows as f64);
        metrics::gauge!("outbox_windowed_claims").set(f64::from(u8::from(held.windowed_claims)));
    }
    Ok(())
}

/// Samples the gauges every `every` until the returned task is aborted. A failed sample is
/// logged and counted in `outbox_store_errors_total`; the next one tries again.
pub fn spawn_gauge_sampler(store: Arc<dyn Store>, every: Duration) -> tokio::task::JoinHandle<()> {
    describe();
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(err) = sample_gauges(store.as_ref(), &mut seen).await {
                metrics::counter!("outbox_store_errors_total").increment(1);
                tracing::warn!(error = %err, "sampling outbox gauges failed");
            }
        }
    })
}
