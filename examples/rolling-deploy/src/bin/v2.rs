//! Version 2: `notify` moved to module `notifications` (same function name, so the same handler),
//! and the new event type `OrderShipped` with its handler `ship_notice`.

use outbox_core::{Event, HandlerContext, HandlerError, handler};
use rolling_deploy::{OrderPlaced, pool, record_run};
use serde::{Deserialize, Serialize};

/// New in version 2.
#[derive(Debug, Serialize, Deserialize, Event)]
struct OrderShipped {
    order: u64,
}

mod notifications {
    use super::*;

    #[handler(event = "OrderPlaced")]
    async fn notify(event: OrderPlaced, ctx: HandlerContext) -> Result<(), HandlerError> {
        let _ = event.order;
        let (pool, schema) = pool()?;
        record_run(pool, schema, ctx.event_id, &ctx.handler, "v2")
            .await
            .map_err(|e| HandlerError::retry(e.to_string()))
    }
}

#[handler(event = "OrderShipped")]
async fn ship_notice(event: OrderShipped, ctx: HandlerContext) -> Result<(), HandlerError> {
    let _ = event.order;
    let (pool, schema) = pool()?;
    record_run(pool, schema, ctx.event_id, &ctx.handler, "v2")
        .await
        .map_err(|e| HandlerError::retry(e.to_string()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    rolling_deploy::run("v2").await
}
