use outbox_core::{Event, HandlerContext, HandlerError, handler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Event)]
struct OrderPlaced {
    id: u64,
}

#[handler(batch = 0)]
async fn zero(orders: Vec<OrderPlaced>) -> Result<(), HandlerError> {
    let _ = orders;
    Ok(())
}

#[handler(batch = 10)]
async fn not_a_vec(order: OrderPlaced) -> Result<(), HandlerError> {
    let _ = order;
    Ok(())
}

#[handler(batch = 10)]
async fn with_context(orders: Vec<OrderPlaced>, ctx: HandlerContext) -> Result<(), HandlerError> {
    let _ = (orders, ctx);
    Ok(())
}

#[handler(linger = "5ms")]
async fn linger_alone(order: OrderPlaced) -> Result<(), HandlerError> {
    let _ = order;
    Ok(())
}

#[handler(batch = 10)]
async fn bad_return(orders: Vec<OrderPlaced>) -> Vec<u8> {
    let _ = orders;
    Vec::new()
}

fn main() {}
