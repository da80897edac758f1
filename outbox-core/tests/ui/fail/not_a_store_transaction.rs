use outbox_core::{Event, HandlerError, handler};
use serde::{Deserialize, Serialize};

/// Not a store transaction (Redis has none, for example).
struct Pipeline;

#[derive(Debug, Serialize, Deserialize, Event)]
struct OrderPaid {
    id: u64,
}

#[handler(transactional)]
async fn in_a_pipeline(order: OrderPaid, pipe: &mut Pipeline) -> Result<(), HandlerError> {
    let _ = (order, pipe);
    Ok(())
}

fn main() {}
