//! Per-event log entries (contract L1), as stored: what a handler logs through its context
//! ([`HandlerContext::log`](crate::handlers::HandlerContext::log)) is stored with the event, under the
//! handler's results, when the outcome is written — after success, failure, timeout or panic
//! alike. Bounded: an event keeps at most [`MAX_LOG_ENTRIES`] entries and [`MAX_LOG_BYTES`] of
//! messages; the oldest go first, counted in
//! [`HandlerState::logs_dropped`](crate::model::HandlerState::logs_dropped).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The most log entries one event keeps, over all its handlers.
pub const MAX_LOG_ENTRIES: usize = 100;
/// The most bytes of log messages one event keeps, over all its handlers.
pub const MAX_LOG_BYTES: usize = 64 * 1024;
/// A longer message is cut to this many bytes (at a character boundary) and marked with `…`.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;

/// How severe a log entry is.
///
/// ```
/// assert_eq!(outbox_core::model::LogLevel::Warn.as_str(), "warn");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Fine detail.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the handler got over.
    Warn,
    /// A failure.
    Error,
}

impl LogLevel {
    /// The lower-case name stored with the entry.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// One line a handler logged while it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When it was logged.
    #[serde(serialize_with = "crate::model::timestamp::serialize")]
    pub at: DateTime<Utc>,
    /// How severe it is.
    pub level: LogLevel,
    /// The handler's attempt that logged it, from 1.
    pub attempt: u32,
    /// What was logged.
    pub message: String,
}
