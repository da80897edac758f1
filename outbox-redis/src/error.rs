//! Mapping of Redis errors to the contract's `StoreError`.

use outbox_core::StoreError;

/// Connection loss, refusals, timeouts and a loading/busy server are transient, and so are a
/// cluster's answers while a shard is down or moving (a `MOVED` that outlived the client's
/// retries names a master it cannot reach); a script's own `OUTBOX_INVALID` reply is an invalid
/// request.
pub(crate) fn map_redis(operation: &str, err: redis::RedisError) -> StoreError {
    let message = format!("{operation}: {err}");
    if err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || matches!(
            err.kind(),
            redis::ErrorKind::BusyLoadingError
                | redis::ErrorKind::TryAgain
                | redis::ErrorKind::ClusterDown
                | redis::ErrorKind::MasterDown
                | redis::ErrorKind::Moved
                | redis::ErrorKind::Ask
                | redis::ErrorKind::ClusterConnectionNotFound
                | redis::ErrorKind::ReadOnly
        )
    {
        return StoreError::Unavailable {
            message,
            source: Some(Box::new(err)),
        };
    }
    if err.to_string().contains("OUTBOX_INVALID") {
        return StoreError::InvalidRequest { message };
    }
    StoreError::Other {
        message,
        source: Some(Box::new(err)),
    }
}
