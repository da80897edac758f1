use outbox_core::{EventRecord, HandlerContext, HandlerError, handler};

#[handler(name = "x")]
async fn no_event(_record: EventRecord, _ctx: HandlerContext) -> Result<(), HandlerError> {
    Ok(())
}

#[handler]
async fn bare(_record: EventRecord, _ctx: HandlerContext) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
