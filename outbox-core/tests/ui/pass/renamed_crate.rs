extern crate outbox_core as outbox;

#[derive(serde::Serialize, serde::Deserialize, outbox::Event)]
#[outbox(crate = "outbox", name = "orders.Placed")]
struct OrderPlaced {
    id: u64,
}

#[outbox::handler(event = "orders.Placed", crate = "outbox")]
async fn on_order(event: OrderPlaced, _ctx: outbox::HandlerContext) -> Result<(), outbox::HandlerError> {
    let _ = event.id;
    Ok(())
}

fn main() {
    use outbox::Event;
    assert_eq!(OrderPlaced::EVENT_TYPE, "orders.Placed");
    assert!(outbox::model::declared_event_types().contains(&"orders.Placed"));
}
