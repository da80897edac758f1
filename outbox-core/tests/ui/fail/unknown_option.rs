use outbox_core::{EventRecord, HandlerContext, HandlerError, handler};

#[handler(event = "UserInvited", retries = 3)]
async fn h(_record: EventRecord, _ctx: HandlerContext) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
