//! Mapping of sqlx errors to the contract's `StoreError` (transient vs permanent).

use outbox_core::StoreError;

/// Converts a sqlx error into a [`StoreError`], naming the operation that failed.
///
/// Connection loss, pool timeouts and server shutdowns are transient (`Unavailable`); serialization
/// failures and deadlocks are `Conflict`; a missing table is a `Schema` problem; values PostgreSQL
/// cannot store (a NUL character in JSON) are `InvalidRequest`. Messages never carry credentials:
/// sqlx errors do not include the connection string.
pub(crate) fn map_sqlx(operation: &str, err: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match &err {
        E::Io(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::Tls(_)
        | E::Protocol(_) => StoreError::Unavailable {
            message: format!("{operation}: {err}"),
            source: Some(Box::new(err)),
        },
        E::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = format!("{operation}: {} (SQLSTATE {code})", db.message());
            match code.as_str() {
                "40001" | "40P01" | "55P03" => StoreError::Conflict { message },
                c if c.starts_with("08") || c.starts_with("57P") || c == "53300" => {
                    StoreError::Unavailable {
                        message,
                        source: Some(Box::new(err)),
                    }
                }
                "42P01" | "3F000" | "42703" => StoreError::Schema {
                    message: format!(
                        "{message}; run `PgStore::migrate()` to create or update the outbox table"
                    ),
                },
                "22P05" | "22021" | "22P02" | "54000" => StoreError::InvalidRequest { message },
                _ => StoreError::Other {
                    message,
                    source: Some(Box::new(err)),
                },
            }
        }
        E::ColumnDecode { .. } | E::Decode(_) | E::ColumnNotFound(_) | E::TypeNotFound { .. } => {
            StoreError::Schema {
                message: format!(
                    "{operation}: the outbox table does not have the expected shape: {err}"
                ),
            }
        }
        _ => StoreError::Other {
            message: format!("{operation}: {err}"),
            source: Some(Box::new(err)),
        },
    }
}
