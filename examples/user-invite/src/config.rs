//! The service's settings, read from the environment with defaults for this machine.

use std::net::SocketAddr;
use std::time::Duration;

/// A setting that could not be used; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}={value:?}: {reason}")]
pub(crate) struct ConfigError {
    name: &'static str,
    value: String,
    reason: String,
}

/// Everything the service reads from its environment.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
    pub(crate) database_url: String,
    /// `NATS_URL` (default `nats://127.0.0.1:4222`).
    pub(crate) nats_url: String,
    /// `LISTEN_ADDR` (default `127.0.0.1:3000`).
    pub(crate) listen: SocketAddr,
    /// `INVITE_SCHEMA`: the PostgreSQL schema of the users, emails and outbox tables (default `invites`).
    pub(crate) schema: String,
    /// `INVITE_STREAM`: the JetStream stream (default `INVITES`); messages go to `<stream>.user_invited`.
    pub(crate) stream: String,
    /// `INVITE_CONSUMER`: the durable JetStream consumer that fills `directory` from the stream,
    /// and its inbox's name (default `invite-directory`).
    pub(crate) consumer: String,
    /// `OUTBOX_LEASE_SECS`: how long a claimed event stays leased without renewal (default 30).
    pub(crate) lease: Duration,
    /// `OUTBOX_MAX_IN_FLIGHT`: events processed at once (default 32).
    pub(crate) max_in_flight: usize,
    /// `SHUTDOWN_GRACE_SECS`: how long in-flight handlers may finish at shutdown (default 10).
    pub(crate) shutdown_grace: Duration,
    /// `EMAIL_DELAY_MS`: simulated mail-server latency (default 0).
    pub(crate) email_delay: Duration,
    /// How often the outbox gauges of `/metrics` are sampled from the store.
    pub(crate) metrics_sample: Duration,
    /// The password of the `admin` user for the dashboard at `/admin/outbox` (HTTP basic
    /// authentication); without it the dashboard is not served.
    pub(crate) admin_password: Option<String>,
}

fn var(name: &'static str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn parsed<T: std::str::FromStr>(name: &'static str, default: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let value = var(name, default);
    value.parse().map_err(|e: T::Err| ConfigError {
        name,
        reason: e.to_string(),
        value,
    })
}

impl Config {
    /// Reads and validates the environment.
    pub(crate) fn from_env() -> Result<Self, ConfigError> {
        let schema = var("INVITE_SCHEMA", "invites");
        outbox_core::kit::validate_name("schema", &schema).map_err(|e| ConfigError {
            name: "INVITE_SCHEMA",
            value: schema.clone(),
            reason: e.to_string(),
        })?;
        let stream = var("INVITE_STREAM", "INVITES");
        outbox_core::kit::validate_name("stream", &stream).map_err(|e| ConfigError {
            name: "INVITE_STREAM",
            value: stream.clone(),
            reason: e.to_string(),
        })?;
        let consumer = var("INVITE_CONSUMER", "invite-directory");
        if consumer.is_empty()
            || !consumer
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError {
                name: "INVITE_CONSUMER",
                value: consumer,
                reason: "use letters, digits, '-' and '_'".to_owned(),
            });
        }
        Ok(Self {
            database_url: var("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
            nats_url: var("NATS_URL", "nats://127.0.0.1:4222"),
            listen: parsed("LISTEN_ADDR", "127.0.0.1:3000")?,
            schema,
            stream,
            consumer,
            lease: Duration::from_secs(parsed("OUTBOX_LEASE_SECS", "30")?),
            max_in_flight: parsed("OUTBOX_MAX_IN_FLIGHT", "32")?,
            shutdown_grace: Duration::from_secs(parsed("SHUTDOWN_GRACE_SECS", "10")?),
            email_delay: Duration::from_millis(parsed("EMAIL_DELAY_MS", "0")?),
            metrics_sample: Duration::from_millis(parsed("METRICS_SAMPLE_MS", "15000")?),
            admin_password: std::env::var("ADMIN_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty()),
        })
    }

    /// The subject `publish` sends to.
    pub(crate) fn subject(&self) -> String {
        format!("{}.user_invited", self.stream)
    }
}
