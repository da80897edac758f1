//! Typed events: the [`Event`] trait and the link-time list of declared event types.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A typed event with a stable type name, stored as a JSON payload.
///
/// Derive it; the type name defaults to the struct's name and can be set with
/// `#[outbox(name = "…")]`. Keep the name stable: it is what stored events are dispatched by.
///
/// ```
/// use outbox_core::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize, Event)]
/// struct UserInvited {
///     email: String,
/// }
///
/// #[derive(Debug, Serialize, Deserialize, Event)]
/// #[outbox(name = "billing.InvoicePaid")]
/// struct InvoicePaid {
///     invoice: u64,
/// }
///
/// assert_eq!(UserInvited::EVENT_TYPE, "UserInvited");
/// assert_eq!(InvoicePaid::EVENT_TYPE, "billing.InvoicePaid");
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable type name stored with each event (for example `"UserInvited"`).
    const EVENT_TYPE: &'static str;
}

/// A declared event type, collected at link time from every `#[derive(Event)]` so startup can report
/// event types without handlers and handlers for undeclared types (contract H6).
#[derive(Debug)]
pub struct EventDeclaration {
    /// The event type name.
    pub event_type: &'static str,
    /// The Rust type that declares it.
    pub rust_type: &'static str,
}

inventory::collect!(EventDeclaration);

/// Every event type declared with `#[derive(Event)]` in this binary, sorted and deduplicated.
///
/// ```
/// use outbox_core::Event;
/// #[derive(serde::Serialize, serde::Deserialize, Event)]
/// struct Ping {}
///
/// assert!(outbox_core::model::declared_event_types().contains(&"Ping"));
/// ```
pub fn declared_event_types() -> Vec<&'static str> {
    let mut types: Vec<&'static str> = inventory::iter::<EventDeclaration>
        .into_iter()
        .map(|d| d.event_type)
        .collect();
    types.sort_unstable();
    types.dedup();
    types
}
