use outbox_core::{EventRecord, HandlerContext, HandlerError, handler};

#[handler(event = "UserInvited")]
fn not_async(_record: EventRecord, _ctx: HandlerContext) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
