//! The model: what an event is, as an application writes it ([`NewEvent`], [`Event`]) and as a
//! store keeps it ([`EventRecord`], its [`EventStatus`] and per-handler [`HandlerState`]s), the
//! [`Payload`], the [`Limits`] every store enforces, the per-event log entries, events set aside
//! as undecodable, and the errors the contract speaks.
//!
//! Everything else in the crate builds on this module; it imports nothing from the rest.
//!
//! ```
//! use outbox_core::model::{EventStatus, NewEvent};
//!
//! let record = NewEvent::new("UserInvited", outbox_core::serde_json::json!({ "id": 7 }))
//!     .ordering_key("user-7")
//!     .into_record(outbox_core::chrono::Utc::now());
//! assert_eq!(record.status, EventStatus::Pending);
//! ```

pub(crate) mod corrupt;
pub(crate) mod error;
pub(crate) mod event;
pub(crate) mod limits;
pub(crate) mod logs;
pub(crate) mod payload;
pub(crate) mod record;
pub mod text;
pub(crate) mod timestamp;
pub(crate) mod trace;

pub use corrupt::{CORRUPT_STATUS, CorruptEvent};
pub use error::{BoxError, ConfigError, HandlerError, RegistryError, Retry, StoreError};
pub use event::{Event, declared_event_types};
pub use limits::{Limits, MAX_JSON_DEPTH, MAX_KEY_BYTES, MAX_PAYLOAD_BYTES};
pub use logs::{LogEntry, LogLevel, MAX_LOG_BYTES, MAX_LOG_ENTRIES, MAX_MESSAGE_BYTES};
pub use payload::Payload;
pub use record::{EventRecord, EventStatus, HandlerResults, HandlerState, NewEvent};
