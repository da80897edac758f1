//! The DDL [`SqliteStore::migrate`](crate::SqliteStore::migrate) runs. Every statement is idempotent.

/// The DDL for `table`, in order.
///
/// ```
/// let ddl = outbox_sqlite::schema_sql("outbox_events");
/// assert!(ddl[0].starts_with("CREATE TABLE IF NOT EXISTS \"outbox_events\""));
/// ```
pub fn schema_sql(table: &str) -> Vec<String> {
    let t = format!("\"{table}\"");
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    correlation_id  TEXT,
    ordering_key    TEXT,
    idempotency_key TEXT,
    created_at      INTEGER NOT NULL,
    available_at    INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    backoff_until   INTEGER,
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processed', 'dead')),
    processed_at    INTEGER,
    handler_results TEXT    NOT NULL DEFAULT '{{}}',
    locked_by       TEXT,
    locked_until    INTEGER,
    lease_token     TEXT
)"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_pending_seq\" ON {t} (seq) WHERE status = 'pending'"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_pending_ordering\" ON {t} (ordering_key, seq) \
             WHERE status = 'pending' AND ordering_key IS NOT NULL"
        ),
        format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS \"{table}_idempotency\" ON {t} (idempotency_key) \
             WHERE idempotency_key IS NOT NULL"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_finished\" ON {t} (status, processed_at) WHERE status <> 'pending'"
        ),
    ]
}
