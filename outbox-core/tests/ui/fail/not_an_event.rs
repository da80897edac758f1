use outbox_core::{HandlerContext, HandlerError, handler};

struct NotAnEvent;

#[handler(event = "A")]
async fn h(_event: NotAnEvent, _ctx: HandlerContext) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
