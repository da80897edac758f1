//! Wake-ups through `LISTEN/NOTIFY` (C8), surviving a dropped listener connection.

use futures::stream;
use outbox_core::StoreError;
use outbox_core::store::WakeupStream;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::error::map_sqlx;

/// Listens on `channel`. A lost connection yields one wake-up (so the worker polls to catch up on
/// what it missed) and the listener reconnects on the next read; a failed reconnect ends the stream,
/// and the worker subscribes again after a back-off.
pub(crate) async fn subscribe(pool: &PgPool, channel: &str) -> Result<WakeupStream, StoreError> {
    let mut listener = PgListener::connect_with(pool)
        .await
        .map_err(|e| map_sqlx("connect listener", e))?;
    listener
        .listen(channel)
        .await
        .map_err(|e| map_sqlx("LISTEN", e))?;
    let wakeups = stream::unfold(listener, |mut listener| async move {
        match listener.try_recv().await {
            Ok(Some(_)) => Some(((), listener)),
            Ok(None) => {
                tracing::warn!("LISTEN connection lost; reconnecting, then catching up by polling");
                Some(((), listener))
            }
            Err(err) => {
                tracing::warn!(error = %err, "LISTEN connection failed; the worker polls until it resubscribes");
                None
            }
        }
    });
    Ok(Box::pin(wakeups))
}
