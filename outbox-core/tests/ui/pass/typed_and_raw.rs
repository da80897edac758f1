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

fn main() {
    let registry = outbox_core::Registry::global().unwrap();
    let names: Vec<_> = registry.handlers_for("UserInvited").iter().map(|h| h.name().to_owned()).collect();
    let here = module_path!();
    assert_eq!(names, ["raw_audit".to_owned(), format!("{here}::event_only"), format!("{here}::typed")]);
    let raw = &registry.handlers_for("UserInvited")[0];
    assert_eq!(raw.max_attempts(), Some(3));
    assert_eq!(raw.timeout(), Some(std::time::Duration::from_millis(250)));
}
