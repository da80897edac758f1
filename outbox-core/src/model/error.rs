//! The errors the contract speaks: [`StoreError`] for storage, [`HandlerError`] for handlers,
//! [`ConfigError`] for invalid configuration and [`RegistryError`] for handler registration.

use std::time::Duration;

use uuid::Uuid;

/// Boxed error source carried by [`StoreError`] variants.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The one error every [`Store`](crate::store::Store) returns.
///
/// Backends keep their own private error types and convert into this one, choosing the variant that
/// tells the processor what to do: transient failures are retried after a back-off, [`LeaseLost`]
/// means another claimer owns the event now, everything else is reported.
///
/// [`LeaseLost`]: StoreError::LeaseLost
///
/// ```
/// use outbox_core::StoreError;
///
/// let err = StoreError::unavailable("connection refused");
/// assert!(err.is_transient());
/// assert!(!StoreError::LeaseLost { event_id: uuid::Uuid::nil() }.is_transient());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The caller's lease on this event expired and was taken over (or the event changed): the write
    /// was refused and nothing was changed (contract C3/C4).
    #[error("lease on event {event_id} is lost: it expired or another claimer holds it now")]
    LeaseLost {
        /// The event whose lease was lost.
        event_id: Uuid,
    },
    /// The event does not exist (or no longer exists).
    #[error("event {event_id} not found")]
    NotFound {
        /// The missing event.
        event_id: Uuid,
    },
    /// The database could not be reached or the operation timed out; retrying later can succeed.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What failed, without credentials.
        message: String,
        /// The driver's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A write conflicted with a concurrent one (serialization failure, write conflict); retrying can
    /// succeed.
    #[error("write conflict: {message}")]
    Conflict {
        /// What conflicted.
        message: String,
    },
    /// The request was invalid (bad argument, payload the store cannot hold); retrying will not help.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// Why it was refused.
        message: String,
    },
    /// The schema is missing or incompatible, or a constraint failed unexpectedly.
    #[error("schema problem: {message}")]
    Schema {
        /// What is wrong, and how to fix it when known.
        message: String,
    },
    /// A stored record could not be decoded.
    #[error("corrupt record {id}: {message}")]
    Corrupt {
        /// The record's id (or key) as stored.
        id: String,
        /// What could not be decoded.
        message: String,
    },
    /// Any other backend failure.
    #[error("store error: {message}")]
    Other {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl StoreError {
    /// A copy of this error, for each item of a batch that failed as a whole (as when one
    /// `ClaimStore::complete_many` statement fails): the same variant and message; a source error is
    /// kept as its text.
    ///
    /// ```
    /// let err = outbox_core::StoreError::unavailable("connection reset");
    /// let copies: Vec<_> = (0..3).map(|_| err.replicate()).collect();
    /// assert!(copies.iter().all(|e| e.is_transient() && e.to_string() == err.to_string()));
    /// ```
    pub fn replicate(&self) -> Self {
        let source = |s: &Option<BoxError>| s.as_ref().map(|s| BoxError::from(s.to_string()));
        match self {
            Self::LeaseLost { event_id } => Self::LeaseLost {
                event_id: *event_id,
            },
            Self::NotFound { event_id } => Self::NotFound {
                event_id: *event_id,
            },
            Self::Unavailable { message, source: s } => Self::Unavailable {
                message: message.clone(),
                source: source(s),
            },
            Self::Conflict { message } => Self::Conflict {
                message: message.clone(),
            },
            Self::InvalidRequest { message } => Self::InvalidRequest {
                message: message.clone(),
            },
            Self::Schema { message } => Self::Schema {
                message: message.clone(),
            },
            Self::Corrupt { id, message } => Self::Corrupt {
                id: id.clone(),
                message: message.clone(),
            },
            Self::Other { message, source: s } => Self::Other {
                message: message.clone(),
                source: source(s),
            },
        }
    }

    /// Whether retrying the same operation later can succeed (connection loss, timeouts, conflicts).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Conflict { .. })
    }

    /// Shorthand for [`StoreError::Unavailable`] without a source.
    ///
    /// ```
    /// let err = outbox_core::StoreError::unavailable("timed out");
    /// assert_eq!(err.to_string(), "store unavailable: timed out");
    /// ```
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// The [`StoreError::Schema`] a store's `verify()` answers when parts of its schema are
    /// missing or outdated, naming each (`"index outbox_events_due"`, `"schema version 2 (found
    /// 1)"`) and the fix.
    ///
    /// ```
    /// let err = outbox_core::StoreError::schema_incomplete(
    ///     "public.outbox_events",
    ///     &["index outbox_events_due".to_owned()],
    /// );
    /// assert!(err.to_string().contains("missing: index outbox_events_due"));
    /// ```
    pub fn schema_incomplete(table: &str, missing: &[String]) -> Self {
        Self::Schema {
            message: format!(
                "the outbox schema of {table} is not current; missing: {}. Run migrate() with a role that may change the schema",
                missing.join(", ")
            ),
        }
    }

    /// Shorthand for [`StoreError::InvalidRequest`].
    ///
    /// ```
    /// let err = outbox_core::StoreError::invalid("limit must be positive");
    /// assert!(!err.is_transient());
    /// ```
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
        }
    }

    /// Shorthand for [`StoreError::Other`] carrying a source error.
    ///
    /// ```
    /// let io = std::io::Error::other("disk full");
    /// let err = outbox_core::StoreError::other("write failed", io);
    /// assert!(std::error::Error::source(&err).is_some());
    /// ```
    pub fn other(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Other {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// Whether a failed handler may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Retry after the policy's exponential back-off.
    WithBackoff,
    /// Retry no earlier than this delay (for example a rate limit's `Retry-After`).
    After(Duration),
    /// Never retry: the failure is permanent (contract P3).
    Never,
}

/// The error a handler returns: a message, and whether retrying can help.
///
/// ```
/// use outbox_core::{HandlerError, Retry};
/// use std::time::Duration;
///
/// let transient = HandlerError::retry("SMTP server busy");
/// assert_eq!(transient.retry_hint(), Retry::WithBackoff);
///
/// let later = HandlerError::retry_after("rate limited", Duration::from_secs(30));
/// assert_eq!(later.retry_hint(), Retry::After(Duration::from_secs(30)));
///
/// let permanent = HandlerError::permanent("address does not exist");
/// assert!(permanent.is_permanent());
/// ```
///
/// Any error type converts with `?`, as a failure to retry with back-off (its message and the
/// messages of its sources, joined by `: `); a `serde_json::Error` converts as a permanent one,
/// since the same payload will not decode on a later attempt:
///
/// ```
/// use outbox_core::{HandlerError, Retry};
///
/// fn parse_port(text: &str) -> Result<u16, HandlerError> {
///     Ok(text.parse::<u16>()?) // std::num::ParseIntError, no map_err needed
/// }
/// let err = parse_port("http").unwrap_err();
/// assert_eq!(err.retry_hint(), Retry::WithBackoff);
/// assert_eq!(err.message(), "invalid digit found in string");
///
/// // Choose explicitly when retrying cannot help:
/// fn strict(text: &str) -> Result<u16, HandlerError> {
///     text.parse::<u16>().map_err(HandlerError::permanent_from)
/// }
/// assert!(strict("http").unwrap_err().is_permanent());
/// ```
///
/// Because of that conversion `HandlerError` does not itself implement
/// [`std::error::Error`] (the same choice `anyhow::Error` makes); it implements
/// [`Display`](std::fmt::Display), and [`HandlerError::into_error`] gives a boxed standard error
/// where one is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
    retry: Retry,
}

impl HandlerError {
    /// A failure that may succeed on a later attempt (retried with back-off).
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: Retry::WithBackoff,
        }
    }

    /// A failure to retry no earlier than `delay`.
    pub fn retry_after(message: impl Into<String>, delay: Duration) -> Self {
        Self {
            message: message.into(),
            retry: Retry::After(delay),
        }
    }

    /// A failure no retry can fix: recorded, and the handler gives up at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: Retry::Never,
        }
    }

    /// A permanent failure from any error, with the messages of the error and its sources:
    /// `.map_err(HandlerError::permanent_from)`.
    ///
    /// ```
    /// let err = outbox_core::HandlerError::permanent_from("x".parse::<i32>().unwrap_err());
    /// assert!(err.is_permanent());
    /// ```
    pub fn permanent_from(err: impl std::error::Error) -> Self {
        Self::permanent(error_chain(&err))
    }

    /// The failure's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether and when to retry.
    pub fn retry_hint(&self) -> Retry {
        self.retry
    }

    /// Whether retrying is pointless.
    pub fn is_permanent(&self) -> bool {
        self.retry == Retry::Never
    }

    /// This failure as a boxed standard error (its message), for code that needs one.
    ///
    /// ```
    /// let boxed: Box<dyn std::error::Error + Send + Sync> =
    ///     outbox_core::HandlerError::retry("busy").into_error();
    /// assert_eq!(boxed.to_string(), "busy");
    /// ```
    pub fn into_error(self) -> BoxError {
        self.message.into()
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// An error's message followed by its sources' messages, joined by `: `.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Many errors repeat their source's message in their own; do not print it twice.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

impl<E> From<E> for HandlerError
where
    E: std::error::Error + Send + Sync + 'static,
{
    /// Any error is a failure to retry with back-off, except a `serde_json::Error`: a payload that
    /// does not (de)serialize fails permanently, since retrying cannot change it.
    fn from(err: E) -> Self {
        let any: &dyn std::any::Any = &err;
        if let Some(json) = any.downcast_ref::<serde_json::Error>() {
            return Self::permanent(format!("payload does not match the event type: {json}"));
        }
        Self::retry(error_chain(&err))
    }
}

/// Invalid configuration, reported by `build()` methods before anything runs.
///
/// ```
/// let err = outbox_core::ConfigError::new("batch_size", "must be at least 1");
/// assert_eq!(err.to_string(), "invalid configuration `batch_size`: must be at least 1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration `{field}`: {reason}")]
pub struct ConfigError {
    /// The offending setting.
    pub field: String,
    /// Why it is invalid.
    pub reason: String,
}

impl ConfigError {
    /// A new configuration error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A problem with the set of registered handlers, found when a registry is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two handlers share a name for one event type.
    #[error(
        "two handlers named `{name}` for event type `{event_type}`: defined at {first} and at {second}; give one a distinct `name`"
    )]
    DuplicateHandler {
        /// The event type.
        event_type: String,
        /// The shared handler name.
        name: String,
        /// Where the first one is defined.
        first: String,
        /// Where the second one is defined.
        second: String,
    },
    /// A handler's typed event parameter declares a different event type than the handler's `event`.
    #[error(
        "handler `{name}` (at {location}) is registered for event type `{registered}` but its parameter is the event `{declared}`"
    )]
    EventTypeMismatch {
        /// The handler name.
        name: String,
        /// Where it is defined.
        location: String,
        /// The `event = "…"` it was registered for.
        registered: String,
        /// The type name its parameter declares.
        declared: String,
    },
    /// A handler option is invalid (empty name or event type, zero attempts or timeout).
    #[error("handler `{name}` (at {location}): {reason}")]
    InvalidHandler {
        /// The handler name.
        name: String,
        /// Where it is defined.
        location: String,
        /// What is wrong.
        reason: String,
    },
}
