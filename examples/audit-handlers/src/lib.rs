//! Handlers that live in their own crate. A binary that references this crate (even only with
//! `use audit_handlers as _;`) gets them in `Registry::global()`; one that never references it does
//! not link it, and its handlers are not registered.

use std::sync::Mutex;

use outbox_core::{EventRecord, HandlerContext, HandlerError, handler};

/// What the audit handler saw, in order: `(event type, event id)`.
pub static AUDIT_LOG: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Records every `UserInvited` in the audit log, taking the raw record (no typed struct needed).
#[handler(event = "UserInvited", name = "audit_log")]
async fn audit_log(record: EventRecord, _ctx: HandlerContext) -> Result<(), HandlerError> {
    AUDIT_LOG
        .lock()
        .map_err(|_| HandlerError::retry("audit log lock poisoned"))?
        .push((record.event_type.clone(), record.id.to_string()));
    Ok(())
}
