//! A worker process for the SIGKILL test: `fault-worker <database url> <schema> <worker id>`.
//! Its handlers record each success as a row of `<schema>.runs`, committed at once, so a test can
//! count the side effects across processes that are killed mid-flight (each handler then takes 50 ms
//! more, so kills land while outcomes are unrecorded). A third handler, `ledger`, writes its row in
//! the outbox's transaction (X1) and lingers inside it, so kills land mid-transaction too.
//! SIGTERM stops it gracefully.

use std::time::Duration;

use outbox_core::handlers::Registry;
use outbox_core::{Handler, HandlerError, Worker};
use outbox_faults::{EVENT_TYPE, HANDLERS, TRANSACTIONAL_HANDLER, fails_on_purpose, worker_config};
use outbox_postgres::{PgStore, PgTx};

/// In-flight events per worker process (the test's duplicate bound is kills × this).
const IN_FLIGHT: usize = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(schema), Some(id)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: fault-worker <database url> <schema> <worker id>".into());
    };
    // Each running `ledger` holds a connection while its transaction is open.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect(&url)
        .await?;
    let store = PgStore::builder(pool.clone()).schema(&schema).build()?;
    let insert = format!("INSERT INTO \"{schema}\".runs (event_id, handler) VALUES ($1, $2)");
    let mut registry = Registry::builder();
    for handler in HANDLERS {
        let (pool, insert) = (pool.clone(), insert.clone());
        registry = registry.handler(Handler::raw(EVENT_TYPE, handler, move |record, ctx| {
            let (pool, insert) = (pool.clone(), insert.clone());
            async move {
                if fails_on_purpose(record.id, handler, ctx.attempt) {
                    return Err(HandlerError::retry("failing on purpose"));
                }
                sqlx::query(&insert)
                    .bind(record.id)
                    .bind(handler)
                    .execute(&pool)
                    .await
                    .map_err(|e| HandlerError::retry(e.to_string()))?;
                // The side effect is done; the outcome is not recorded yet. A kill now means a
                // redelivery, and a duplicate run.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(())
            }
        }));
    }
    let insert_in_tx = insert.clone();
    registry = registry.handler(Handler::transactional(
        EVENT_TYPE,
        TRANSACTIONAL_HANDLER,
        move |record, tx: &mut PgTx, ctx| {
            let insert = insert_in_tx.clone();
            Box::pin(async move {
                if fails_on_purpose(record.id, TRANSACTIONAL_HANDLER, ctx.attempt) {
                    return Err(HandlerError::retry("failing on purpose"));
                }
                sqlx::query(&insert)
                    .bind(record.id)
                    .bind(TRANSACTIONAL_HANDLER)
                    .execute(&mut **tx)
                    .await?;
                // Written, not committed: a kill now rolls the row back with the transaction.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, HandlerError>(())
            })
        },
    ));
    let config = worker_config(id.parse().unwrap_or(0), IN_FLIGHT)
        .with_lease(Duration::from_secs(2))
        .with_shutdown_grace(Duration::from_secs(2));
    let worker = Worker::builder(store)
        .registry(registry.build()?)
        .config(config)
        .build()?
        .start();
    println!("ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    term.recv().await;
    worker.shutdown().await;
    Ok(())
}
