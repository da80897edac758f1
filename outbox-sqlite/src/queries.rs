//! The SQL of every store operation, built once per table from a validated name. Times are Unix
//! milliseconds passed in by the caller (one host shares one clock); `?1` is always "now".

use crate::schema::PARKED;

#[derive(Debug)]
pub(crate) struct Queries {
    pub(crate) table: String,
    pub(crate) table_sql: String,
    pub(crate) schema_version: String,
    pub(crate) insert: String,
    pub(crate) existing_key: String,
    pub(crate) claim: String,
    pub(crate) renew: String,
    pub(crate) complete: String,
    pub(crate) set_aside: String,
    pub(crate) get: String,
    pub(crate) dead_letters: String,
    pub(crate) corrupt_events: String,
    pub(crate) requeue_dead: String,
    pub(crate) requeue_corrupt: String,
    pub(crate) purge: String,
    pub(crate) stats: String,
    /// When the oldest due, unleased event became due (NULL when none): one entry of the due index.
    pub(crate) lag: String,
    /// Per event type: pending, due, leased, dead, when the oldest due event became due.
    pub(crate) stats_by_type: String,
    /// The pending head of an ordering key's line (C5: creation order, re-queued to the back).
    pub(crate) key_head: String,
    /// A handler's success, in its own transaction, fenced by the lease (X1): the handler's entry
    /// of `handler_results` replaced.
    pub(crate) record_success: String,
    /// A received message id, once per consumer (the inbox).
    pub(crate) inbox_record: String,
    /// Forget a consumer's ids received before a time.
    pub(crate) inbox_purge: String,
}

/// The columns an [`EventRecord`](outbox_core::EventRecord) is decoded from, in the order
/// `row::decode` reads them.
pub(crate) const COLUMNS: &str = "seq, id, event_type, payload, correlation_id, ordering_key, idempotency_key, \
     created_at, available_at, attempts, backoff_until, status, processed_at, handler_results, locked_by, \
     locked_until, lease_token, traceparent";

impl Queries {
    // Long by design: one SQL statement per field, built once per store; each is a few lines of
    // SQL.
    pub(crate) fn new(table: &str) -> Self {
        let t = format!("\"{table}\"");
        // A re-queued event waits behind a pending event of its key, if there is one.
        let oldest_due = format!(
            "SELECT d.due_at FROM {t} d WHERE d.status = 'pending' AND d.due_at <= ?1
             ORDER BY d.due_at, d.seq LIMIT 1"
        );
        let requeued_due_at = format!(
            "CASE WHEN ordering_key IS NOT NULL AND EXISTS (
                SELECT 1 FROM {t} o WHERE o.ordering_key = {t}.ordering_key AND o.status = 'pending')
             THEN {PARKED} ELSE ?1 END"
        );
        Self {
            table: table.to_owned(),
            table_sql: "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1".to_owned(),
            schema_version: format!("SELECT max(version) FROM \"{table}_schema\""),
            // The caller's transaction holds SQLite's write lock from its first write to its
            // commit, so whether an older event of the key is pending is known exactly here.
            insert: format!(
                "INSERT INTO {t} (id, event_type, payload, correlation_id, ordering_key, idempotency_key,
                                  created_at, available_at, due_at, traceparent)
                 VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?1, ?8,
                         CASE WHEN ?6 IS NOT NULL AND EXISTS (
                                  SELECT 1 FROM {t} o WHERE o.ordering_key = ?6 AND o.status = 'pending')
                              THEN {PARKED} ELSE ?8 END, ?9)
                 ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
            ),
            existing_key: format!("SELECT id FROM {t} WHERE idempotency_key = ?1"),
            // One statement: SQLite takes the write lock when it starts, so concurrent claimers (in
            // any process) run one after the other and never see the same candidates. No
            // ordering-key check is needed: with one writer at a time, the enqueue parks exactly
            // the events behind an older one of their key, so those are never due.
            claim: format!(
                // A count that is not a non-negative integer (written by hand) is left as it is,
                // so the decode sets the event aside instead of SQLite's arithmetic making one up.
                "UPDATE {t} SET attempts = CASE WHEN typeof(attempts) = 'integer' AND attempts >= 0
                                                THEN attempts + 1 ELSE attempts END,
                     lease_token = lower(hex(randomblob(16))),
                     locked_by = ?3,
                     locked_until = ?1 + ?4,
                     due_at = ?1 + ?4
                 WHERE seq IN (
                     SELECT e.seq FROM {t} e
                     WHERE e.status = 'pending' AND e.due_at <= ?1
                     ORDER BY e.due_at, e.seq
                     LIMIT ?2)
                 RETURNING {COLUMNS}"
            ),
            // Many renewals in ONE statement (leases as a JSON array), each fenced by its token.
            renew: format!(
                "UPDATE {t} AS e SET locked_until = ?1 + ?2, due_at = ?1 + ?2
                 FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.token') AS token
                       FROM json_each(?3)) AS j
                 WHERE e.id = j.id AND e.lease_token = j.token AND e.status = 'pending'
                 RETURNING lease_token, locked_until"
            ),
            // Many completions in ONE statement (items as a JSON array), each fenced by its own
            // token: an autocommit statement never holds the write lock across awaits, so a stalled
            // process cannot block the others the way an open multi-statement transaction would.
            complete: format!(
                "UPDATE {t} AS e
                 SET status = j.status, handler_results = j.results, attempts = j.attempts,
                     backoff_until = CASE WHEN j.delay IS NULL THEN NULL ELSE ?1 + j.delay END,
                     due_at = CASE WHEN j.status = 'pending' THEN ?1 + coalesce(j.delay, 0) ELSE e.due_at END,
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
            // Addressed by `seq`: the stored id itself may be what does not decode.
            set_aside: format!(
                "UPDATE {t} SET status = 'corrupt', corrupt_reason = ?3, processed_at = ?1,
                     lease_token = NULL, locked_by = NULL, locked_until = NULL
                 WHERE seq = ?2 AND lease_token IS ?4 AND status = 'pending'"
            ),
            get: format!("SELECT {COLUMNS}, corrupt_reason FROM {t} WHERE id = ?1"),
            dead_letters: format!(
                "SELECT {COLUMNS} FROM {t} WHERE status = 'dead' ORDER BY seq LIMIT ?1"
            ),
            corrupt_events: format!(
                "SELECT id, event_type, corrupt_reason, processed_at FROM {t}
                 WHERE status = 'corrupt' ORDER BY seq LIMIT ?1"
            ),
            requeue_dead: format!(
                "UPDATE {t} SET status = 'pending', attempts = 0, backoff_until = NULL, available_at = ?1,
                     processed_at = NULL, handler_results = ?3, due_at = {requeued_due_at}
                 WHERE id = ?2 AND status = 'dead'"
            ),
            requeue_corrupt: format!(
                "UPDATE {t} SET status = 'pending', corrupt_reason = NULL, processed_at = NULL,
                     backoff_until = NULL, available_at = ?1, lease_token = NULL, locked_by = NULL,
                     locked_until = NULL, due_at = {requeued_due_at}
                 WHERE id = ?2 AND status = 'corrupt'"
            ),
            purge: format!("DELETE FROM {t} WHERE status = ?1 AND processed_at < ?2"),
            // Counts scan the table; the lag reads one entry of the due index.
            stats: format!(
                "SELECT
                    COALESCE(SUM(e.status = 'pending'), 0),
                    COALESCE(SUM(e.status = 'pending' AND e.due_at <= ?1), 0),
                    COALESCE(SUM(e.status = 'pending' AND e.locked_until > ?1), 0),
                    COALESCE(SUM(e.status = 'processed'), 0),
                    COALESCE(SUM(e.status = 'dead'), 0),
                    COALESCE(SUM(e.status = 'corrupt'), 0),
                    ({oldest_due})
                 FROM {t} e"
            ),
            lag: format!("SELECT ({oldest_due})"),
            // Pending rows through the due index, dead ones through the finished index:
            // processed rows are never read.
            stats_by_type: format!(
                "SELECT u.event_type, SUM(u.p), SUM(u.d), SUM(u.l), SUM(u.x), MIN(u.due)
                 FROM (
                    SELECT e.event_type, 1 AS p, e.due_at <= ?1 AS d,
                           COALESCE(e.locked_until > ?1, 0) AS l, 0 AS x,
                           CASE WHEN e.due_at <= ?1 THEN e.due_at END AS due
                    FROM {t} e WHERE e.status = 'pending'
                    UNION ALL
                    SELECT e.event_type, 0, 0, 0, 1, NULL FROM {t} e WHERE e.status = 'dead'
                 ) u
                 GROUP BY u.event_type ORDER BY u.event_type"
            ),
            key_head: format!(
                "SELECT {COLUMNS} FROM {t}
                 WHERE ordering_key = ?1 AND status = 'pending' ORDER BY seq LIMIT 1"
            ),
            // Two merge patches: the first removes the handler's entry, the second sets it (a
            // JSON path could not name every handler).
            record_success: format!(
                "UPDATE {t} SET handler_results = json_patch(
                     json_patch(handler_results, json_object(?3, NULL)), json_object(?3, json(?4)))
                 WHERE id = ?1 AND lease_token = ?2 AND status = 'pending'"
            ),
            inbox_record: format!(
                "INSERT INTO \"{table}_inbox\" (consumer, message_id, received_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (consumer, message_id) DO NOTHING"
            ),
            inbox_purge: format!(
                "DELETE FROM \"{table}_inbox\" WHERE consumer = ?1 AND received_at < ?2"
            ),
        }
    }
}
