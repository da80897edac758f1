//! Mapping of sqlx/SQLite errors to the contract's `StoreError`.

use outbox_core::StoreError;

/// Converts a sqlx error into a [`StoreError`], naming the operation that failed.
///
/// `SQLITE_BUSY`/`SQLITE_LOCKED` (another process held the write lock past the busy timeout) and
/// I/O or pool errors are transient; a missing table is a `Schema` problem.
pub(crate) fn map_sqlx(operation: &str, err: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match &err {
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => StoreError::Unavailable {
            message: format!("{operation}: {err}"),
            source: Some(Box::new(err)),
        },
        E::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = format!("{operation}: {} (code {code})", db.message());
            // Primary result codes: 5 SQLITE_BUSY, 6 SQLITE_LOCKED (extended codes keep them in the low byte).
            let primary = code.parse::<i64>().map(|c| c & 0xff).unwrap_or(-1);
            if primary == 5 || primary == 6 {
                StoreError::Conflict { message }
            } else if db.message().contains("no such table")
                || db.message().contains("no such column")
            {
                StoreError::Schema {
                    message: format!("{message}; run `SqliteStore::migrate()` first"),
                }
            } else if primary == 10 || primary == 13 || primary == 14 {
                // SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN
                StoreError::Unavailable {
                    message,
                    source: Some(Box::new(err)),
                }
            } else {
                StoreError::Other {
                    message,
                    source: Some(Box::new(err)),
                }
            }
        }
        _ => StoreError::Other {
            message: format!("{operation}: {err}"),
            source: Some(Box::new(err)),
        },
    }
}
