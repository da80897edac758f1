//! Quickstart: invite users — each an insert of the user row plus a `UserInvited` event in one
//! transaction, one of them rolled back — then run a worker, watch the handlers (one fails once and
//! is retried), shut down gracefully and print the final state.
//!
//! `cargo run -p quickstart` uses a SQLite file in a temporary directory; with `DATABASE_URL` set it
//! uses that PostgreSQL database (schema `outbox_quickstart`, recreated on each run).

mod backend;

use std::time::Duration;

use outbox_core::{
    Event, HandlerContext, HandlerError, RetryPolicy, Worker, WorkerConfig, handler,
};
use serde::{Deserialize, Serialize};

// Link the crate whose `audit_log` handler also listens to `UserInvited`.
use audit_handlers as _;

/// The event: a user was invited.
#[derive(Debug, Serialize, Deserialize, Event)]
pub(crate) struct UserInvited {
    /// Who was invited.
    pub(crate) email: String,
}

/// Sends the welcome email (here: prints it). The event id is the idempotency key a real mailer
/// would get, so a redelivery never sends twice.
#[handler(event = "UserInvited", name = "send_welcome_email")]
async fn send_welcome_email(event: UserInvited, ctx: HandlerContext) -> Result<(), HandlerError> {
    println!(
        "  [send_welcome_email] to {} (event {}, attempt {})",
        event.email, ctx.event_id, ctx.attempt
    );
    Ok(())
}

/// Adds the user to the CRM; the CRM is "down" for the first attempt of every event.
#[handler(event = "UserInvited", name = "add_to_crm", max_attempts = 3)]
async fn add_to_crm(
    event: UserInvited,
    ctx: HandlerContext,
) -> Result<serde_json::Value, HandlerError> {
    if ctx.attempt == 1 {
        println!(
            "  [add_to_crm] {} -> CRM unavailable, will retry",
            event.email
        );
        return Err(HandlerError::retry("CRM unavailable"));
    }
    println!(
        "  [add_to_crm] {} -> added (attempt {})",
        event.email, ctx.attempt
    );
    Ok(serde_json::json!({ "crm_id": format!("crm-{}", event.email) }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .init();
    let scratch = tempfile::tempdir()?;
    let app = backend::App::connect(scratch.path()).await?;
    println!("store: {}\n", app.describe());

    for (email, commit) in [
        ("ada@example.com", true),
        ("grace@example.com", true),
        ("mallory@example.com", false),
        ("linus@example.com", true),
    ] {
        app.invite(email, commit).await?;
        if commit {
            println!("invited {email} (user row + event committed together)");
        } else {
            println!("invited {email} (rolled back: neither the user nor the event exists)");
        }
    }

    println!("\nstarting the worker…");
    let store = app.store();
    let config = WorkerConfig::default()
        .with_poll_interval(Duration::from_millis(50))
        .with_retry(
            RetryPolicy::default()
                .with_initial_delay(Duration::from_millis(200))
                .with_jitter(0.2),
        );
    let worker = Worker::builder(store.clone())
        .config(config)
        .build()?
        .start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.stats().await?.pending > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = worker.shutdown().await;

    let stats = store.stats().await?;
    let users = app.users().await?;
    let audited = audit_handlers::AUDIT_LOG
        .lock()
        .map_err(|_| "audit lock poisoned")?
        .len();
    println!("\nfinal state:");
    println!("  users:      {users:?}");
    println!(
        "  events:     {} processed, {} dead, {} pending",
        stats.processed, stats.dead, stats.pending
    );
    println!(
        "  handlers:   {} succeeded, {} failed and were retried; audit_log (another crate) saw {audited} events",
        report.metrics.handler_succeeded, report.metrics.handler_failed
    );
    println!(
        "  shutdown:   graceful, {} events were in flight",
        report.in_flight_at_shutdown
    );
    if !(stats.processed == 3
        && stats.dead == 0
        && stats.pending == 0
        && audited == 3
        && users.len() == 3)
    {
        return Err(format!("unexpected final state: {stats:?}, users {users:?}").into());
    }
    println!("\nall 3 committed invitations were delivered; the rolled-back one never existed.");
    Ok(())
}
