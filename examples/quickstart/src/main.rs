//! Quickstart: invite users, each in one transaction with its event; watch the handlers run, one
//! fail once and be retried; shut down gracefully and print the final state.
//!
//! Run it with `cargo run -p quickstart`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use outbox_core::{
    Event, HandlerContext, HandlerError, NewEvent, RetryPolicy, Store, Worker, WorkerConfig,
    handler,
};
use outbox_testkit::MemoryStore;
use serde::{Deserialize, Serialize};

// Link the crate whose `audit_log` handler also listens to `UserInvited`.
use audit_handlers as _;

/// The event: a user was invited.
#[derive(Debug, Serialize, Deserialize, Event)]
struct UserInvited {
    email: String,
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

/// The application's own data, written in the same transaction as the event.
static USERS: Mutex<BTreeMap<String, bool>> = Mutex::new(BTreeMap::new());

/// Inserts the user and enqueues `UserInvited` atomically; `commit = false` simulates a failure
/// that rolls both back.
fn invite(
    store: &MemoryStore,
    email: &str,
    commit: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut tx = store.begin();
    tx.enqueue(
        NewEvent::from_event(&UserInvited {
            email: email.into(),
        })?
        .correlation_id(format!("invite-{email}")),
    )?;
    if commit {
        let mut users = USERS.lock().map_err(|_| "users lock poisoned")?;
        tx.commit()?;
        users.insert(email.to_owned(), true);
        println!("invited {email} (committed)");
    } else {
        tx.rollback();
        println!("invited {email} (rolled back: neither the user nor the event exists)");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .init();
    let store = MemoryStore::new();
    for (email, commit) in [
        ("ada@example.com", true),
        ("grace@example.com", true),
        ("mallory@example.com", false),
        ("linus@example.com", true),
    ] {
        invite(&store, email, commit)?;
    }

    println!("\nstarting the worker…");
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
    let audited = audit_handlers::AUDIT_LOG
        .lock()
        .map_err(|_| "audit lock poisoned")?
        .len();
    println!("\nfinal state:");
    println!(
        "  users:      {:?}",
        USERS
            .lock()
            .map_err(|_| "users lock poisoned")?
            .keys()
            .collect::<Vec<_>>()
    );
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
    let ok = stats.processed == 3 && stats.dead == 0 && stats.pending == 0 && audited == 3;
    if !ok {
        return Err(format!("unexpected final state: {stats:?}").into());
    }
    println!("\nall 3 committed invitations were delivered; the rolled-back one never existed.");
    Ok(())
}
