//! The DDL the store runs in [`PgStore::migrate`](crate::PgStore::migrate): one table, four indexes,
//! one statement-level notify trigger. Every statement is idempotent.

/// The DDL for `schema.table`, in order. `channel` is the `LISTEN/NOTIFY` channel.
///
/// ```
/// let ddl = outbox_postgres::schema_sql("public", "outbox_events");
/// assert!(ddl.iter().any(|s| s.contains("CREATE TABLE IF NOT EXISTS \"public\".\"outbox_events\"")));
/// ```
pub fn schema_sql(schema: &str, table: &str) -> Vec<String> {
    let t = format!("\"{schema}\".\"{table}\"");
    let channel = crate::queries::channel_name(schema, table);
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""),
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (
    seq             BIGSERIAL   NOT NULL,
    id              UUID        PRIMARY KEY,
    event_type      TEXT        NOT NULL,
    payload         JSONB       NOT NULL,
    correlation_id  TEXT,
    ordering_key    TEXT,
    idempotency_key TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    available_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts        INTEGER     NOT NULL DEFAULT 0,
    backoff_until   TIMESTAMPTZ,
    status          TEXT        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processed', 'dead')),
    processed_at    TIMESTAMPTZ,
    handler_results JSONB       NOT NULL DEFAULT '{{}}'::jsonb,
    locked_by       TEXT,
    locked_until    TIMESTAMPTZ,
    lease_token     UUID
)"
        ),
        // Claims walk only pending rows, in creation order.
        format!("CREATE INDEX IF NOT EXISTS \"{table}_pending_seq\" ON {t} (seq) WHERE status = 'pending'"),
        // The ordering-key check looks for an older pending event of the same key.
        format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_pending_ordering\" ON {t} (ordering_key, seq) \
             WHERE status = 'pending' AND ordering_key IS NOT NULL"
        ),
        format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS \"{table}_idempotency\" ON {t} (idempotency_key) \
             WHERE idempotency_key IS NOT NULL"
        ),
        // Dead-letter listing and purges by age.
        format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_finished\" ON {t} (status, processed_at) WHERE status <> 'pending'"
        ),
        format!(
            "CREATE OR REPLACE FUNCTION \"{schema}\".\"{table}_notify\"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{channel}', '');
    RETURN NULL;
END $$"
        ),
        // One notification per INSERT statement (and PostgreSQL folds identical ones per transaction),
        // not one per row. Created only when missing: re-creating it would lock the table at every start.
        format!(
            "DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgname = '{table}_notify' AND tgrelid = '{t}'::regclass) THEN
        CREATE TRIGGER \"{table}_notify\" AFTER INSERT ON {t}
            FOR EACH STATEMENT EXECUTE FUNCTION \"{schema}\".\"{table}_notify\"();
    END IF;
END $$"
        ),
    ]
}
