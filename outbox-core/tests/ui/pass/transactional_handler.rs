use outbox_core::{Event, EventRecord, HandlerContext, HandlerError, State, handler};
use outbox_core::store::StoreTransaction;
use serde::{Deserialize, Serialize};

/// Stands in for a store's transaction type (`outbox_postgres::PgTx`, …).
struct AppTx {
    rows: Vec<u64>,
}
impl StoreTransaction for AppTx {}

#[derive(Debug, Serialize, Deserialize, Event)]
struct OrderPaid {
    id: u64,
}

#[handler(transactional)]
async fn record(order: OrderPaid, tx: &mut AppTx) -> Result<(), HandlerError> {
    tx.rows.push(order.id);
    Ok(())
}

#[handler(event = "OrderPaid", name = "audit", transactional, max_attempts = 3)]
async fn audit(
    record: EventRecord,
    ctx: HandlerContext,
    tx: &mut AppTx,
    prefix: State<String>,
) -> Result<serde_json::Value, HandlerError> {
    tx.rows.push(u64::from(ctx.attempt));
    Ok(serde_json::json!({ "audited": format!("{}{}", *prefix, record.id) }))
}

fn main() {
    let handlers: Vec<_> = outbox_core::handlers::Registry::builder()
        .with_registered_for(&["OrderPaid"])
        .build()
        .expect("a registry")
        .handlers()
        .map(|h| (h.name().to_owned(), h.transaction().map(|t| t.type_name)))
        .collect();
    assert_eq!(handlers.len(), 2);
    assert!(handlers.iter().all(|(_, t)| t.is_some_and(|t| t.ends_with("AppTx"))));
}
