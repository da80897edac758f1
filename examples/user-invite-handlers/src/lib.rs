//! The user-invite service's event and its two handlers, in a crate of their own: the binary that
//! links this crate finds `send_email` and `publish` through `#[handler]` registration.
//!
//! Handlers are free functions, so what they need (the database pool, the JetStream context) is
//! installed once at startup with [`install`]; until then they ask to be retried.
//!
//! ```
//! use user_invite_handlers::UserInvited;
//! let event = outbox_core::NewEvent::from_event(&UserInvited { user_id: 1, email: "ada@example.com".into() }).unwrap();
//! assert_eq!(event.event_type, "UserInvited");
//! ```

use std::sync::OnceLock;
use std::time::Duration;

use async_nats::jetstream;
use outbox_core::{Event, HandlerContext, HandlerError, handler};
use outbox_postgres::PgTx;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// A user was invited: emitted by `POST /invite` in the transaction that inserts the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
pub struct UserInvited {
    /// The new user's id (`users.id`).
    pub user_id: i64,
    /// Where the invitation goes.
    pub email: String,
}

/// What the handlers use, installed once at startup.
#[derive(Debug, Clone)]
pub struct Services {
    /// The service's database (its tables live there).
    pub pool: PgPool,
    /// The schema of the service's tables (validated).
    pub schema: String,
    /// JetStream, for `publish`.
    pub jetstream: jetstream::Context,
    /// The subject `publish` sends to (captured by the service's stream).
    pub subject: String,
    /// Simulated mail-server latency of `send_email`.
    pub email_delay: Duration,
}

static SERVICES: OnceLock<Services> = OnceLock::new();

/// Installs the handlers' services; returns `false` when they were installed already.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let nats = async_nats::connect("nats://127.0.0.1:4222").await?;
/// user_invite_handlers::install(user_invite_handlers::Services {
///     pool,
///     schema: "invites".into(),
///     jetstream: async_nats::jetstream::new(nats),
///     subject: "INVITES.user_invited".into(),
///     email_delay: std::time::Duration::ZERO,
/// });
/// # Ok(()) }
/// ```
pub fn install(services: Services) -> bool {
    SERVICES.set(services).is_ok()
}

fn services() -> Result<&'static Services, HandlerError> {
    SERVICES
        .get()
        .ok_or_else(|| HandlerError::retry("handler services are not installed yet"))
}

/// The SQL creating the service's tables in `schema` (idempotent). `schema` must be a valid name
/// (`outbox_core::kit::validate_name`).
///
/// ```
/// let sql = user_invite_handlers::schema_sql("invites");
/// assert!(sql.contains("invites.sent_emails"));
/// ```
pub fn schema_sql(schema: &str) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.users (
             id         BIGSERIAL PRIMARY KEY,
             email      TEXT NOT NULL UNIQUE,
             created_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );
         CREATE TABLE IF NOT EXISTS {schema}.sent_emails (
             event_id       UUID PRIMARY KEY,
             user_id        BIGINT NOT NULL,
             email          TEXT NOT NULL,
             body           TEXT NOT NULL,
             correlation_id TEXT,
             sent_at        TIMESTAMPTZ NOT NULL DEFAULT now()
         );
         CREATE TABLE IF NOT EXISTS {schema}.directory (
             event_id    UUID NOT NULL,
             user_id     BIGINT NOT NULL,
             email       TEXT NOT NULL,
             received_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );"
    )
}

/// Sends the invitation email, recorded in `sent_emails` — in the outbox's transaction
/// (contract X1): the row and this handler's success commit together, so a redelivered event (a
/// crash, a lost lease, another handler's retry) never writes a second row, with no
/// de-duplication key of its own. A failure rolls the row back and the handler runs again.
#[handler(
    event = "UserInvited",
    max_attempts = 10,
    timeout = "15s",
    transactional
)]
pub async fn send_email(
    event: UserInvited,
    tx: &mut PgTx,
    ctx: HandlerContext,
) -> Result<(), HandlerError> {
    let services = services()?;
    if !services.email_delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(services.email_delay) => {}
            () = ctx.cancellation.cancelled() => return Err(HandlerError::retry("cancelled while sending")),
        }
    }
    let body = format!("Hello {}, you are invited. Reply to accept.", event.email);
    sqlx::query(&format!(
        "INSERT INTO {}.sent_emails (event_id, user_id, email, body, correlation_id)
         VALUES ($1, $2, $3, $4, $5)",
        services.schema
    ))
    .bind(ctx.event_id)
    .bind(event.user_id)
    .bind(&event.email)
    .bind(&body)
    .bind(ctx.correlation_id.as_deref())
    .execute(&mut **tx)
    .await
    .map_err(|e| HandlerError::retry(format!("recording the email failed: {e}")))?;
    // Logged on the event itself (`outbox show <id>`, the dashboard) as well as to the process log.
    ctx.info(format!("invitation email sent to {}", event.email));
    Ok(())
}

/// Relays the event to the JetStream stream, with the event id as the message id: JetStream's
/// de-duplication absorbs a redelivery inside the stream's duplicate window. Its output (stored
/// with the event, returned by `POST /invite?wait=…`) is the message's place in the stream.
#[handler(event = "UserInvited", max_attempts = 10, timeout = "15s")]
pub async fn publish(
    event: UserInvited,
    ctx: HandlerContext,
) -> Result<serde_json::Value, HandlerError> {
    let services = services()?;
    let payload = serde_json::to_vec(&serde_json::json!({
        "event_id": ctx.event_id,
        "user_id": event.user_id,
        "email": event.email,
        "correlation_id": ctx.correlation_id,
    }))
    .map_err(|e| HandlerError::permanent(format!("cannot encode the message: {e}")))?;
    let publish = jetstream::context::Publish::build()
        .message_id(ctx.event_id.to_string())
        .payload(payload.into());
    let ack = services
        .jetstream
        .send_publish(services.subject.clone(), publish)
        .await
        .map_err(|e| HandlerError::retry(format!("publishing to JetStream failed: {e}")))?
        .await
        .map_err(|e| HandlerError::retry(format!("JetStream did not acknowledge: {e}")))?;
    if ack.duplicate {
        tracing::info!(
            sequence = ack.sequence,
            "JetStream absorbed a redelivered message"
        );
    } else {
        tracing::info!(sequence = ack.sequence, "event relayed to JetStream");
    }
    Ok(serde_json::json!({ "stream": ack.stream, "sequence": ack.sequence }))
}
