use outbox_core::{EventRecord, HandlerError, handler};

#[handler(event = "A")]
async fn none() -> Result<(), HandlerError> {
    Ok(())
}

#[handler(event = "A")]
async fn generic<T>(_record: EventRecord) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
