//! The SQL of every store operation, built once per table from validated names.

/// A stable channel name for `schema.table` (PostgreSQL truncates identifiers at 63 bytes, so long
/// names are hashed).
pub(crate) fn channel_name(schema: &str, table: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in schema.bytes().chain([b'.']).chain(table.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("outbox_{hash:016x}")
}

/// Every statement, with the table name filled in.
#[derive(Debug)]
pub(crate) struct Queries {
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) channel: String,
    pub(crate) insert: String,
    pub(crate) existing_keys: String,
    pub(crate) claim: String,
    pub(crate) renew: String,
    pub(crate) complete: String,
    pub(crate) complete_many: String,
    pub(crate) get: String,
    pub(crate) dead_letters: String,
    pub(crate) requeue: String,
    pub(crate) purge: String,
    pub(crate) stats: String,
}

const COLUMNS: &str = "id, event_type, payload, correlation_id, ordering_key, idempotency_key, created_at, \
     available_at, attempts, backoff_until, status, processed_at, handler_results, locked_by, locked_until, lease_token";

impl Queries {
    pub(crate) fn new(schema: &str, table: &str) -> Self {
        let t = format!("\"{schema}\".\"{table}\"");
        let due = "e.status = 'pending' AND e.available_at <= now() \
                   AND (e.backoff_until IS NULL OR e.backoff_until <= now()) \
                   AND (e.locked_until IS NULL OR e.locked_until <= now())";
        Self {
            schema: schema.to_owned(),
            table: table.to_owned(),
            channel: channel_name(schema, table),
            // One round trip for any number of events; a repeated idempotency key stores nothing.
            insert: format!(
                "INSERT INTO {t} (id, event_type, payload, correlation_id, ordering_key, idempotency_key, available_at)
                 SELECT i, ty, p, c, o, k, COALESCE(a, now())
                 FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
                      WITH ORDINALITY AS x(i, ty, p, c, o, k, a, n)
                 ORDER BY n
                 ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                 RETURNING id"
            ),
            existing_keys: format!("SELECT idempotency_key, id FROM {t} WHERE idempotency_key = ANY($1)"),
            // Lease a batch in one statement, through the function `<table>_claim` that
            // `migrate` creates (see schema.rs for why it is a function).
            claim: format!("SELECT * FROM \"{schema}\".\"{table}_claim\"($1, $2, $3)"),
            renew: format!(
                "UPDATE {t} SET locked_until = now() + $3::bigint * interval '1 millisecond'
                 WHERE id = $1 AND lease_token = $2 AND status = 'pending'
                 RETURNING locked_until"
            ),
            complete: format!(
                "UPDATE {t}
                 SET status = $3, handler_results = $4, attempts = $5,
                     backoff_until = CASE WHEN $6::bigint IS NULL THEN NULL
                                          ELSE now() + $6::bigint * interval '1 millisecond' END,
                     processed_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END,
                     lease_token = NULL, locked_by = NULL, locked_until = NULL
                 WHERE id = $1 AND lease_token = $2 AND status = 'pending'
                   AND set_config('synchronous_commit', 'off', true) IS NOT NULL"
            ),
            // Many completions in one statement, each fenced by its own token.
            complete_many: format!(
                "UPDATE {t} e
                 SET status = u.status, handler_results = u.results, attempts = u.attempts,
                     backoff_until = CASE WHEN u.delay IS NULL THEN NULL
                                          ELSE now() + u.delay * interval '1 millisecond' END,
                     processed_at = CASE WHEN u.status = 'pending' THEN NULL ELSE now() END,
                     lease_token = NULL, locked_by = NULL, locked_until = NULL
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::int[], $6::bigint[])
                      AS u(id, token, status, results, attempts, delay)
                 WHERE e.id = u.id AND e.lease_token = u.token AND e.status = 'pending'
                   AND set_config('synchronous_commit', 'off', true) IS NOT NULL
                 RETURNING e.id"
            ),
            get: format!("SELECT {COLUMNS} FROM {t} WHERE id = $1"),
            dead_letters: format!("SELECT {COLUMNS} FROM {t} WHERE status = 'dead' ORDER BY seq LIMIT $1"),
            requeue: format!(
                "UPDATE {t} SET status = 'pending', attempts = 0, backoff_until = NULL, available_at = now(),
                     processed_at = NULL, handler_results = $2
                 WHERE id = $1 AND status = 'dead'"
            ),
            purge: format!("DELETE FROM {t} WHERE status = $1 AND processed_at < $2"),
            stats: format!(
                "SELECT
                    count(*) FILTER (WHERE e.status = 'pending'),
                    count(*) FILTER (WHERE {due}),
                    count(*) FILTER (WHERE e.status = 'pending' AND e.locked_until > now()),
                    count(*) FILTER (WHERE e.status = 'processed'),
                    count(*) FILTER (WHERE e.status = 'dead'),
                    COALESCE(EXTRACT(EPOCH FROM now() - min(GREATEST(e.available_at, COALESCE(e.backoff_until, e.available_at)))
                        FILTER (WHERE {due}))::float8, 0)
                 FROM {t} e"
            ),
        }
    }
}
