//! The SQL of every store operation, built once per table from a validated name. Times are Unix
//! milliseconds passed in by the caller (one host shares one clock).

#[derive(Debug)]
pub(crate) struct Queries {
    pub(crate) table: String,
    pub(crate) insert: String,
    pub(crate) existing_key: String,
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

pub(crate) const COLUMNS: &str = "seq, id, event_type, payload, correlation_id, ordering_key, idempotency_key, \
     created_at, available_at, attempts, backoff_until, status, processed_at, handler_results, locked_by, \
     locked_until, lease_token";

impl Queries {
    pub(crate) fn new(table: &str) -> Self {
        let t = format!("\"{table}\"");
        // ?1 is always "now" in milliseconds.
        let due = "e.status = 'pending' AND e.available_at <= ?1 \
                   AND (e.backoff_until IS NULL OR e.backoff_until <= ?1) \
                   AND (e.locked_until IS NULL OR e.locked_until <= ?1)";
        Self {
            table: table.to_owned(),
            insert: format!(
                "INSERT INTO {t} (id, event_type, payload, correlation_id, ordering_key, idempotency_key, created_at, available_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
            ),
            existing_key: format!("SELECT id FROM {t} WHERE idempotency_key = ?1"),
            // One statement: SQLite takes the write lock when it starts, so concurrent claimers (in
            // any process) run one after the other and never see the same candidates.
            claim: format!(
                "UPDATE {t} SET attempts = attempts + 1,
                     lease_token = lower(hex(randomblob(16))),
                     locked_by = ?3,
                     locked_until = ?1 + ?4
                 WHERE seq IN (
                     SELECT e.seq FROM {t} e
                     WHERE {due}
                       AND (e.ordering_key IS NULL OR NOT EXISTS (
                           SELECT 1 FROM {t} o
                           WHERE o.ordering_key = e.ordering_key AND o.status = 'pending' AND o.seq < e.seq))
                     ORDER BY e.seq
                     LIMIT ?2)
                 RETURNING {COLUMNS}"
            ),
            renew: format!(
                "UPDATE {t} SET locked_until = ?1 + ?4
                 WHERE id = ?2 AND lease_token = ?3 AND status = 'pending'
                 RETURNING locked_until"
            ),
            complete: format!(
                "UPDATE {t}
                 SET status = ?4, handler_results = ?5, attempts = ?6,
                     backoff_until = CASE WHEN ?7 IS NULL THEN NULL ELSE ?1 + ?7 END,
                     processed_at = CASE WHEN ?4 = 'pending' THEN NULL ELSE ?1 END,
                     lease_token = NULL, locked_by = NULL, locked_until = NULL
                 WHERE id = ?2 AND lease_token = ?3 AND status = 'pending'"
            ),
            // Many completions in ONE statement (items as a JSON array), each fenced by its own
            // token: an autocommit statement never holds the write lock across awaits, so a stalled
            // process cannot block the others the way an open multi-statement transaction would.
            complete_many: format!(
                "UPDATE {t} AS e
                 SET status = j.status, handler_results = j.results, attempts = j.attempts,
                     backoff_until = CASE WHEN j.delay IS NULL THEN NULL ELSE ?1 + j.delay END,
                     processed_at = CASE WHEN j.status = 'pending' THEN NULL ELSE ?1 END,
                     lease_token = NULL, locked_by = NULL, locked_until = NULL
                 FROM (SELECT json_extract(value, '$.id') AS id,
                              json_extract(value, '$.token') AS token,
                              json_extract(value, '$.status') AS status,
                              json_extract(value, '$.results') AS results,
                              json_extract(value, '$.attempts') AS attempts,
                              json_extract(value, '$.delay') AS delay
                       FROM json_each(?2)) AS j
                 WHERE e.id = j.id AND e.lease_token = j.token AND e.status = 'pending'
                 RETURNING id"
            ),
            get: format!("SELECT {COLUMNS} FROM {t} WHERE id = ?1"),
            dead_letters: format!("SELECT {COLUMNS} FROM {t} WHERE status = 'dead' ORDER BY seq LIMIT ?1"),
            requeue: format!(
                "UPDATE {t} SET status = 'pending', attempts = 0, backoff_until = NULL, available_at = ?1,
                     processed_at = NULL, handler_results = ?3
                 WHERE id = ?2 AND status = 'dead'"
            ),
            purge: format!("DELETE FROM {t} WHERE status = ?1 AND processed_at < ?2"),
            stats: format!(
                "SELECT
                    COALESCE(SUM(e.status = 'pending'), 0),
                    COALESCE(SUM({due}), 0),
                    COALESCE(SUM(e.status = 'pending' AND e.locked_until > ?1), 0),
                    COALESCE(SUM(e.status = 'processed'), 0),
                    COALESCE(SUM(e.status = 'dead'), 0),
                    MIN(CASE WHEN {due} THEN MAX(e.available_at, COALESCE(e.backoff_until, e.available_at)) END)
                 FROM {t} e"
            ),
        }
    }
}
