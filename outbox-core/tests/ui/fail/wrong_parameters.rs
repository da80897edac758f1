use outbox_core::{EventRecord, HandlerContext, HandlerError, handler};

#[handler(event = "A")]
async fn none() -> Result<(), HandlerError> {
    Ok(())
}

#[handler(event = "A")]
async fn three(_record: EventRecord, _ctx: HandlerContext, extra: u32) -> Result<(), HandlerError> {
    let _ = extra;
    Ok(())
}

#[handler(event = "A")]
async fn generic<T>(_record: EventRecord) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
