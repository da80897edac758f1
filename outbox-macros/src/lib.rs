//! Procedural macros for outbox. Use them through `outbox-core`, which re-exports them:
//! `#[outbox_core::handler(event = "…")]` and `#[derive(outbox_core::Event)]`.
//!
//! Parsing lives in the modules `handler_attr` and `event_derive`, code generation in `expand`;
//! this file only wires them to the compiler.

use proc_macro::TokenStream;

mod event_derive;
mod expand;
mod handler_attr;

/// Registers an async fn as a handler for an event type, at link time: every worker built from the
/// global registry (`Worker::builder(store).build()`) runs it for each event of that type.
///
/// ```
/// use outbox_core::{Event, EventRecord, HandlerContext, HandlerError, handler};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize, Event)]
/// struct UserInvited {
///     email: String,
/// }
///
/// // Typed: the payload is deserialized (one that does not fit is a permanent failure).
/// #[handler(event = "UserInvited", max_attempts = 5, timeout = "30s")]
/// async fn send_welcome_email(event: UserInvited, ctx: HandlerContext) -> Result<(), HandlerError> {
///     println!("welcome {} (idempotency key {})", event.email, ctx.event_id);
///     Ok(())
/// }
///
/// // Raw: the whole record; a returned JSON value is stored with the success.
/// #[handler(event = "UserInvited", name = "audit", renamed_from = "audit_log")]
/// async fn audit(record: EventRecord) -> Result<serde_json::Value, HandlerError> {
///     Ok(serde_json::json!({ "audited": record.id }))
/// }
///
/// let registry = outbox_core::handlers::Registry::global().unwrap();
/// let names: Vec<&str> = registry.handlers_for("UserInvited").iter().map(|h| h.name()).collect();
/// assert_eq!(names, ["audit", "send_welcome_email"]);
/// ```
///
/// | option | meaning |
/// |---|---|
/// | `event = "…"` | the event type; optional when the event parameter is a type deriving `Event` (it must then agree with it, checked at compile time), required for raw records |
/// | `name = "…"` | the name its results are stored under; default: the function's name (not its path, so moving it renames nothing); unique per event type, a duplicate is a startup error naming both |
/// | `renamed_from = "…"` | the name its results were stored under before a rename: they move to the new name |
/// | `max_attempts = n` | attempts before it gives up (default: the worker's retry policy) |
/// | `timeout = "30s"` | per-run timeout (`ms`, `s`, `m`, `h`; default: the worker's) |
/// | `batch = n` | a batch handler: the function takes `Vec<Event>` (or `Vec<EventRecord>`) and handles up to `n` events per call (contract B1), returning one `Result` for all or a `Vec` of one per event; each event keeps its own result |
/// | `linger = "10ms"` | how long a batch waits to fill after its first event (default `10ms`; batch handlers only) |
/// | `crate = "…"` | the path of `outbox-core` when it is renamed in `Cargo.toml` |
///
/// The function is `async`, takes the event first (a type deriving `Event`, `EventRecord` or
/// `Arc<EventRecord>`), then any number of `HandlerContext` and `State<T>` parameters in any order
/// (`State<T>` receives the value given with `WorkerBuilder::state`; building a worker without it
/// fails naming `T`), and returns `Result<(), HandlerError>`,
/// `Result<serde_json::Value, HandlerError>` or `Result<Option<serde_json::Value>, HandlerError>`.
/// Anything else is a compile error on the offending token. A handler crate that the binary never
/// references is not linked, and its handlers are not found: reference it (`use my_handlers as _;`).
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::handler(attr.into(), item.into()).into()
}

/// Implements `outbox_core::Event` (the type name defaults to the struct's name; set it with
/// `#[outbox(name = "…")]`) and declares the type, so a worker can report event types that have no
/// handler in its binary.
///
/// ```
/// use outbox_core::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Event)]
/// #[outbox(name = "billing.InvoicePaid")]
/// struct InvoicePaid {
///     invoice: u64,
/// }
///
/// assert_eq!(InvoicePaid::EVENT_TYPE, "billing.InvoicePaid");
/// ```
#[proc_macro_derive(Event, attributes(outbox))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    event_derive::derive(input.into()).into()
}
