//! Version 1: the handler `notify` lives in module `billing`. It fails the first attempt for one
//! order in five, so version 2 inherits results recorded by version 1.

use outbox_core::{HandlerContext, HandlerError, handler};
use rolling_deploy::{OrderPlaced, pool, record_run};

mod billing {
    use super::*;

    #[handler(event = "OrderPlaced")]
    async fn notify(event: OrderPlaced, ctx: HandlerContext) -> Result<(), HandlerError> {
        if event.order % 5 == 0 && ctx.attempt == 1 {
            return Err(HandlerError::retry("mail server busy"));
        }
        let (pool, schema) = pool()?;
        record_run(pool, schema, ctx.event_id, &ctx.handler, "v1")
            .await
            .map_err(|e| HandlerError::retry(e.to_string()))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    rolling_deploy::run("v1").await
}
