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
        // The claim: oldest due events first, skipping rows other claimers hold, only the oldest
        // pending event of each ordering key; completion durability relaxed for this transaction
        // only (a lost claim means a redelivery, never a lost event). It is a function so that it
        // is planned with bitmap scans and sorts off: right after a burst of inserts, before
        // autovacuum has analyzed the table, the planner would otherwise sort every pending row
        // for each claim (measured: 27 ms instead of 1 ms per claim of 100 with 50,000 pending).
        format!(
            "CREATE OR REPLACE FUNCTION \"{schema}\".\"{table}_claim\"(batch bigint, worker text, lease_ms bigint)
RETURNS SETOF {t} LANGUAGE sql VOLATILE
SET enable_bitmapscan = off SET enable_sort = off
AS $$
    WITH candidates AS (
        SELECT e.id FROM {t} e
        WHERE e.status = 'pending' AND e.available_at <= now()
          AND (e.backoff_until IS NULL OR e.backoff_until <= now())
          AND (e.locked_until IS NULL OR e.locked_until <= now())
          AND (e.ordering_key IS NULL OR NOT EXISTS (
              SELECT 1 FROM {t} o
              WHERE o.ordering_key = e.ordering_key AND o.status = 'pending' AND o.seq < e.seq))
        ORDER BY e.seq
        LIMIT batch
        FOR UPDATE OF e SKIP LOCKED
    )
    UPDATE {t} e
    SET attempts = e.attempts + 1,
        lease_token = gen_random_uuid(),
        locked_by = worker,
        locked_until = now() + lease_ms * interval '1 millisecond'
    FROM candidates c
    WHERE e.id = c.id AND set_config('synchronous_commit', 'off', true) IS NOT NULL
    RETURNING e.*
$$"
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
