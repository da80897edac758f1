use outbox_core::{EventRecord, HandlerContext, HandlerError, handler};

// After the event only `HandlerContext` and `State<T>` parameters are accepted.
#[handler(event = "A")]
async fn takes_a_number(_record: EventRecord, _ctx: HandlerContext, extra: u32) -> Result<(), HandlerError> {
    let _ = extra;
    Ok(())
}

// State is shared between the worker's tasks: it must be `Send + Sync`.
#[handler(event = "A")]
async fn not_shareable(
    _record: EventRecord,
    _counter: outbox_core::State<std::rc::Rc<u8>>,
) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
