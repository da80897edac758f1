use outbox_core::{Event, EventRecord, HandlerContext, HandlerError, handler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Event)]
struct UserInvited {
    email: String,
}

#[handler(event = "UserInvited")]
async fn typed(event: UserInvited, ctx: HandlerContext) -> Result<(), HandlerError> {
    let _ = (event.email, ctx.event_id);
    Ok(())
}

#[handler(event = "UserInvited", name = "raw_audit", max_attempts = 3, timeout = "250ms")]
async fn raw(record: EventRecord, _ctx: HandlerContext) -> Result<serde_json::Value, HandlerError> {
    Ok(serde_json::json!({ "seen": record.id }))
}

#[handler(event = "UserInvited", timeout = "2m")]
pub(crate) async fn event_only(_event: UserInvited) -> Result<(), HandlerError> {
    Ok(())
}

// `event` may be left out when the parameter is a typed event: it is `UserInvited`'s.
#[handler(timeout = "2m")]
async fn inferred(_event: UserInvited) -> Result<(), HandlerError> {
    Ok(())
}

// A handler may return its own error type: it converts into a retryable `HandlerError`.
#[handler]
async fn own_error(_event: UserInvited) -> Result<(), std::io::Error> {
    Err(std::io::Error::other("disk full"))
}

mod moved {
    use super::*;

    // The default name is the function's name: moving it to this module kept it `relocated`.
    #[handler(event = "UserInvited", renamed_from = "old_relocated")]
    async fn relocated(_event: UserInvited) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {
    let registry = outbox_core::handlers::Registry::global().unwrap();
    let names: Vec<_> = registry.handlers_for("UserInvited").iter().map(|h| h.name().to_owned()).collect();
    assert_eq!(
        names,
        ["event_only", "inferred", "own_error", "raw_audit", "relocated", "typed"]
    );
    assert_eq!(
        registry.renames_for("UserInvited"),
        [("old_relocated".to_owned(), "relocated".to_owned())]
    );
    let raw = &registry.handlers_for("UserInvited")[3];
    assert_eq!(raw.max_attempts(), Some(3));
    assert_eq!(raw.timeout(), Some(std::time::Duration::from_millis(250)));
}
