use std::sync::Mutex;

use outbox_core::{EventRecord, HandlerContext, HandlerError, State, handler};

struct Db {
    rows: Mutex<Vec<String>>,
}

struct Mailer;

// State and the context in any order after the event; several states.
#[handler(event = "A")]
async fn record_it(
    record: EventRecord,
    db: State<Db>,
    ctx: HandlerContext,
    _mailer: State<Mailer>,
) -> Result<(), HandlerError> {
    db.rows
        .lock()
        .map_err(|_| HandlerError::retry("poisoned"))?
        .push(format!("{} {}", record.id, ctx.attempt));
    Ok(())
}

fn main() {}
