//! The user-invite service: an HTTP API and an outbox worker in one binary, on PostgreSQL, relaying
//! events to NATS JetStream. See the README section "Example service: user-invite".
//!
//! Startup creates the tables, the outbox and the stream when missing; SIGINT or SIGTERM stops the
//! HTTP server (in-flight requests finish), then the worker (in-flight handlers finish within the
//! grace period or are cancelled; every outcome is persisted), then exits 0.

mod config;
mod consumer;
mod routes;
mod telemetry;

use std::process::ExitCode;
use std::time::Duration;

use async_nats::jetstream;
use metrics_exporter_prometheus::PrometheusBuilder;
use outbox_core::prelude::*;
use outbox_core::{Worker, WorkerConfig};
use outbox_postgres::PgStore;
use sqlx::postgres::PgPoolOptions;

use crate::config::Config;
use crate::routes::{AppState, router};

#[tokio::main]
async fn main() -> ExitCode {
    let traces = match telemetry::init() {
        Ok(traces) => traces,
        Err(err) => {
            eprintln!("user-invite: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    };
    if let Some(provider) = traces {
        if let Err(err) = provider.shutdown() {
            eprintln!("user-invite: flushing traces failed: {err}");
        }
    }
    code
}

// Long by design: an example read top to bottom, the whole service set up in one place.
async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    let pool = PgPoolOptions::new()
        // Each running transactional handler (`send_email`) holds a connection while it runs.
        .max_connections(u32::try_from(config.max_in_flight + 6).unwrap_or(40).min(40))
        .acquire_timeout(Duration::from_secs(5))
        .connect(&config.database_url)
        .await
        .map_err(|e| {
            format!("cannot connect to PostgreSQL (DATABASE_URL): {e}; start it with ./scripts/services.sh")
        })?;
    sqlx::raw_sql(&user_invite_handlers::schema_sql(&config.schema))
        .execute(&pool)
        .await
        .map_err(|e| format!("creating the service's tables failed: {e}"))?;
    let store = PgStore::builder(pool.clone())
        .schema(&config.schema)
        .table("outbox")
        .build()?;
    store.migrate().await?;

    let nats = async_nats::connect(&config.nats_url).await.map_err(|e| {
        format!(
            "cannot connect to NATS at {} (NATS_URL): {e}",
            config.nats_url
        )
    })?;
    let jetstream = jetstream::new(nats);
    jetstream
        .get_or_create_stream(jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: vec![config.subject()],
            // Redeliveries inside this window are absorbed by message id.
            duplicate_window: Duration::from_secs(30 * 60),
            ..Default::default()
        })
        .await
        .map_err(|e| {
            format!(
                "creating the JetStream stream {} failed: {e}",
                config.stream
            )
        })?;
    // The consumer side: the stream's messages applied to `directory` exactly once (the inbox).
    let consumer = consumer::Consumer {
        store: store.clone(),
        jetstream: jetstream.clone(),
        stream: config.stream.clone(),
        name: config.consumer.clone(),
        schema: config.schema.clone(),
    }
    .spawn();
    user_invite_handlers::install(user_invite_handlers::Services {
        pool: pool.clone(),
        schema: config.schema.clone(),
        jetstream,
        subject: config.subject(),
        email_delay: config.email_delay,
    });

    let worker = Worker::builder(store.clone())
        .config(
            WorkerConfig::default()
                .with_lease(config.lease)
                .with_max_in_flight(config.max_in_flight)
                .with_shutdown_grace(config.shutdown_grace),
        )
        .build()?
        .start();

    // Metrics: the worker counts through the `metrics` facade; this recorder renders them for
    // Prometheus at /metrics, and the sampler adds per-type gauges read from the store.
    let prometheus = PrometheusBuilder::new()
        .set_buckets(&[
            0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .map_err(|e| format!("metrics buckets: {e}"))?
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder failed: {e}"))?;
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let sampler = outbox_core::runtime::telemetry::spawn_gauge_sampler(
        std::sync::Arc::new(store.clone()),
        config.metrics_sample,
    );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {} (LISTEN_ADDR): {e}", config.listen))?;
    tracing::info!(addr = %config.listen, schema = %config.schema, stream = %config.stream, "user-invite listening");
    let app = router(
        AppState {
            pool,
            store,
            schema: config.schema.clone(),
        },
        prometheus,
        config.admin_password.clone(),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;

    sampler.abort();
    consumer.abort();
    tracing::info!("HTTP server stopped; stopping the outbox worker");
    let report = worker.shutdown().await;
    tracing::info!(
        in_flight = report.in_flight_at_shutdown,
        aborted = report.aborted_after_grace,
        processed = report.metrics.processed,
        "outbox worker stopped"
    );
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}
