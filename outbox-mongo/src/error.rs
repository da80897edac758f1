//! Mapping of MongoDB driver errors to the contract's `StoreError`.

use mongodb::error::{Error, ErrorKind, WriteFailure};
use outbox_core::StoreError;

/// Duplicate key (a unique index refused the write).
pub(crate) const DUPLICATE_KEY: i32 = 11000;
const WRITE_CONFLICT: i32 = 112;

/// The server error code of `err`, when it has one.
pub(crate) fn code(err: &Error) -> Option<i32> {
    match &*err.kind {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|e| e.first())
            .map(|w| w.code),
        _ => None,
    }
}

/// Network errors, server selection timeouts and errors labelled retryable are transient; write
/// conflicts (`TransientTransactionError`, code 112) are `Conflict`: retry the whole transaction.
pub(crate) fn map_mongo(operation: &str, err: Error) -> StoreError {
    let message = describe(operation, &err);
    if err.contains_label("TransientTransactionError") || code(&err) == Some(WRITE_CONFLICT) {
        return StoreError::Conflict { message };
    }
    let transient = matches!(
        &*err.kind,
        ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::ConnectionPoolCleared { .. }
    ) || err.contains_label("RetryableWriteError");
    if transient {
        return StoreError::Unavailable {
            message,
            source: Some(Box::new(err)),
        };
    }
    match code(&err) {
        Some(2 | 9 | 14 | 17 | 52 | 10334) => StoreError::InvalidRequest { message },
        _ => StoreError::Other {
            message,
            source: Some(Box::new(err)),
        },
    }
}

/// A one-line description: the server's code name and message for server errors (the driver's
/// own `Display` appends the raw reply document).
pub(crate) fn describe(operation: &str, err: &Error) -> String {
    let labels = |err: &Error| {
        let labels: Vec<&str> = err.labels().iter().map(String::as_str).collect();
        if labels.is_empty() {
            String::new()
        } else {
            format!(" [{}]", labels.join(", "))
        }
    };
    match &*err.kind {
        ErrorKind::Command(c) => {
            format!(
                "{operation}: {} ({}): {}{}",
                c.code_name,
                c.code,
                c.message,
                labels(err)
            )
        }
        ErrorKind::Write(WriteFailure::WriteError(w)) => {
            format!(
                "{operation}: write error {}: {}{}",
                w.code,
                w.message,
                labels(err)
            )
        }
        _ => format!("{operation}: {err}"),
    }
}
