//! Procedural macros for outbox. Use them through `outbox-core`, which re-exports them:
//! `#[outbox_core::handler(event = "…")]` and `#[derive(outbox_core::Event)]`.
//!
//! Parsing lives in [`handler_attr`] and [`event_derive`], code generation in [`expand`]; this file
//! only wires them to the compiler.

use proc_macro::TokenStream;

mod event_derive;
mod expand;
mod handler_attr;

/// Registers an async fn as a handler for an event type, at link time.
///
/// See `outbox_core::handler` for the full documentation.
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::handler(attr.into(), item.into()).into()
}

/// Implements `outbox_core::Event` and declares the event type.
///
/// See `outbox_core::Event` for the full documentation.
#[proc_macro_derive(Event, attributes(outbox))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    event_derive::derive(input.into()).into()
}
