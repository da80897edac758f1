use outbox_core::{Event, EventRecord, HandlerError, handler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Event)]
struct OrderPlaced {
    id: u64,
}

/// One outcome for the whole batch.
#[handler(batch = 100)]
async fn relay_orders(orders: Vec<OrderPlaced>) -> Result<(), HandlerError> {
    let _ = orders.len();
    Ok(())
}

/// One outcome per event, with outputs; raw records name their type.
#[handler(event = "OrderPlaced", name = "receipts", batch = 10, linger = "50ms")]
async fn receipts(records: Vec<EventRecord>) -> Vec<Result<serde_json::Value, HandlerError>> {
    records.iter().map(|r| Ok(serde_json::json!({ "id": r.id }))).collect()
}

fn main() {}
