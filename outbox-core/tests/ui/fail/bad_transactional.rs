use outbox_core::{Event, HandlerError, handler};
use outbox_core::store::StoreTransaction;
use serde::{Deserialize, Serialize};

struct AppTx;
impl StoreTransaction for AppTx {}

#[derive(Debug, Serialize, Deserialize, Event)]
struct OrderPaid {
    id: u64,
}

#[handler(transactional)]
async fn no_transaction_parameter(order: OrderPaid) -> Result<(), HandlerError> {
    let _ = order;
    Ok(())
}

#[handler]
async fn flag_missing(order: OrderPaid, tx: &mut AppTx) -> Result<(), HandlerError> {
    let _ = (order, tx);
    Ok(())
}

#[handler(transactional)]
async fn two_transactions(order: OrderPaid, a: &mut AppTx, b: &mut AppTx) -> Result<(), HandlerError> {
    let _ = (order, a, b);
    Ok(())
}

#[handler(batch = 10, transactional)]
async fn batched(orders: Vec<OrderPaid>, tx: &mut AppTx) -> Result<(), HandlerError> {
    let _ = (orders, tx);
    Ok(())
}

#[handler(transactional = true)]
async fn with_value(order: OrderPaid, tx: &mut AppTx) -> Result<(), HandlerError> {
    let _ = (order, tx);
    Ok(())
}

fn main() {}
