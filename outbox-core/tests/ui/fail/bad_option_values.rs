use outbox_core::{EventRecord, HandlerContext, HandlerError, handler};

#[handler(event = "A", timeout = "soon")]
async fn bad_timeout(_record: EventRecord, _ctx: HandlerContext) -> Result<(), HandlerError> {
    Ok(())
}

#[handler(event = "A", max_attempts = 0)]
async fn zero_attempts(_record: EventRecord, _ctx: HandlerContext) -> Result<(), HandlerError> {
    Ok(())
}

#[handler(event = "")]
async fn empty_event(_record: EventRecord, _ctx: HandlerContext) -> Result<(), HandlerError> {
    Ok(())
}

#[handler(event = "A", event = "B")]
async fn twice(_record: EventRecord, _ctx: HandlerContext) -> Result<(), HandlerError> {
    Ok(())
}

#[handler(event = "A", renamed_from = "")]
async fn empty_rename(_record: EventRecord, _ctx: HandlerContext) -> Result<(), HandlerError> {
    Ok(())
}

#[handler(event = "A", name = "same", renamed_from = "same")]
async fn renamed_to_itself(_record: EventRecord, _ctx: HandlerContext) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
