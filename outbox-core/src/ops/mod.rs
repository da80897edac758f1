//! Operations: answers for the people who run an outbox. [`explain`] says why an event is where
//! it is and what it waits for (`outbox explain`, the dashboard). Waiting for one event's
//! outcome is [`StoreExt::wait_for`](crate::StoreExt::wait_for): it only reads the store.
//!
//! ```
//! use outbox_core::NewEvent;
//! use outbox_core::ops::explain;
//!
//! let now = outbox_core::chrono::Utc::now();
//! let record = NewEvent::new("UserInvited", outbox_core::serde_json::json!({})).into_record(now);
//! println!("{}", explain(&record, None, now).summary);
//! ```

mod explain;

pub use explain::{Blocker, Explanation, explain};
