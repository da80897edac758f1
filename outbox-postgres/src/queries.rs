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
    pub(crate) schema_version: String,
    pub(crate) insert: String,
    pub(crate) insert_one: String,
    pub(crate) insert_unkeyed: String,
    pub(crate) existing_keys: String,
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
    /// Seconds since the oldest due, unleased event became due (0 when none): one entry of the
    /// due-time index.
    pub(crate) lag: String,
    /// The oldest open snapshot's age and the table's dead row versions.
    pub(crate) held_back: String,
    /// Per event type: pending, due, leased, dead, seconds since the oldest due event became due.
    pub(crate) stats_by_type: String,
    /// The pending head of an ordering key's line (C5: creation order, re-queued to the back).
    pub(crate) key_head: String,
    /// A handler's success, in its own transaction, fenced by the lease (X1).
    pub(crate) record_success: String,
    /// A received message id, once per consumer (the inbox).
    pub(crate) inbox_record: String,
    /// Forget a consumer's ids received before a time.
    pub(crate) inbox_purge: String,
}

/// The columns an [`EventRecord`](outbox_core::EventRecord) is decoded from, in the order
/// `row::decode` reads them.
pub(crate) const COLUMNS: &str = "id, event_type, payload, correlation_id, ordering_key, idempotency_key, created_at, \
     available_at, attempts, backoff_until, status, processed_at, handler_results, locked_by, locked_until, lease_token, \
     traceparent";

impl Queries {
    // Long by design: one SQL statement per field, built once per store; each is a few lines of
    // SQL.
    pub(crate) fn new(schema: &str, table: &str) -> Self {
        let t = format!("\"{schema}\".\"{table}\"");
        let f = |name: &str| format!("\"{schema}\".\"{table}_{name}\"");
        // A re-queued event waits behind a pending event of its key, if there is one (the
        // deferred trigger settles it at commit).
        let requeued_due_at = format!(
            "CASE WHEN ordering_key IS NOT NULL AND EXISTS (
                SELECT 1 FROM {t} o WHERE o.ordering_key = {t}.ordering_key AND o.status = 'pending')
             THEN 'infinity'::timestamptz ELSE now() END"
        );
        let oldest_due_age = format!(
            "COALESCE((SELECT EXTRACT(EPOCH FROM now() - d.due_at)::float8 FROM {t} d
                       WHERE d.status = 'pending' AND d.due_at <= now()
                       ORDER BY d.due_at, d.seq LIMIT 1), 0)"
        );
        // How long the oldest snapshot another session holds has been open: while it is, no row
        // version deleted or updated since can be cleaned up (see claim_window.rs). Sessions of
        // other roles show their snapshot only to roles with `pg_read_all_stats`.
        let oldest_snapshot =
            "COALESCE((SELECT EXTRACT(EPOCH FROM now() - min(a.xact_start))::float8
                       FROM pg_stat_activity a
                       WHERE a.backend_xmin IS NOT NULL AND a.pid <> pg_backend_pid()), 0)";
        // A re-queued event goes to the back of its key's line (see schema.rs).
        let next_seq = format!("nextval(pg_get_serial_sequence('{t}', 'seq'))");
        Self {
            schema: schema.to_owned(),
            table: table.to_owned(),
            channel: channel_name(schema, table),
            schema_version: format!("SELECT max(version) FROM {}", f("schema")),
            // One round trip for any number of events; a repeated idempotency key stores nothing.
            // An event whose key already has a pending event (or an earlier one in this batch) is
            // inserted parked; the deferred trigger settles it at commit.
            insert: format!(
                "INSERT INTO {t} (id, event_type, payload, correlation_id, ordering_key, idempotency_key,
                                  available_at, due_at, traceparent)
                 SELECT i, ty, p::jsonb, c, o, k, COALESCE(a, now()),
                        CASE WHEN o IS NOT NULL AND (row_number() OVER (PARTITION BY o ORDER BY n) > 1
                                  OR EXISTS (SELECT 1 FROM {t} q WHERE q.ordering_key = x.o AND q.status = 'pending'))
                             THEN 'infinity'::timestamptz ELSE COALESCE(a, now()) END, tp
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
                             $8::text[])
                      WITH ORDINALITY AS x(i, ty, p, c, o, k, a, tp, n)
                 ORDER BY n
                 ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                 RETURNING id"
            ),
            // A batch without ordering keys needs no parking, so no window either.
            insert_unkeyed: format!(
                "INSERT INTO {t} (id, event_type, payload, correlation_id, ordering_key, idempotency_key,
                                  available_at, due_at, traceparent)
                 SELECT i, ty, p::jsonb, c, NULL, k, COALESCE(a, now()), COALESCE(a, now()), tp
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
                             $8::text[])
                      WITH ORDINALITY AS x(i, ty, p, c, o, k, a, tp, n)
                 ORDER BY n
                 ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                 RETURNING id"
            ),
            // The same for one event, without arrays or a window: as cheap as a plain INSERT
            // (the array form cost a one-event transaction 15-20 %).
            insert_one: format!(
                "INSERT INTO {t} (id, event_type, payload, correlation_id, ordering_key, idempotency_key,
                                  available_at, due_at, traceparent)
                 VALUES ($1, $2, $3::jsonb, $4, $5, $6, COALESCE($7, now()),
                         CASE WHEN $5::text IS NOT NULL AND EXISTS (
                                  SELECT 1 FROM {t} q WHERE q.ordering_key = $5::text AND q.status = 'pending')
                              THEN 'infinity'::timestamptz ELSE COALESCE($7, now()) END, $8)
                 ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                 RETURNING id"
            ),
            existing_keys: format!("SELECT idempotency_key, id FROM {t} WHERE idempotency_key = ANY($1)"),
            // Lease a batch in one call, through the function `<table>_claim` that `migrate`
            // creates (see schema.rs).
            claim: format!("SELECT {COLUMNS} FROM {}($1, $2, $3, $4)", f("claim")),
            // Many renewals in one statement, each fenced by its own token.
            renew: format!(
                "UPDATE {t} e
                 SET locked_until = now() + $3::bigint * interval '1 millisecond',
                     due_at = now() + $3::bigint * interval '1 millisecond'
                 FROM UNNEST($1::uuid[], $2::uuid[]) AS u(id, token)
                 WHERE e.id = u.id AND e.lease_token = u.token AND e.status = 'pending'
                 RETURNING u.token, e.locked_until"
            ),
            // Answers with the exceptions only: the handed-off events (the columns of
            // `COLUMNS`, then a NULL) and the tokens sent that the function did not apply (NULLs,
            // then the token in `lost`; usually none), rather than a row per applied completion
            // (decoding those cost the client about 2,800 instructions per event).
            complete: format!(
                "WITH r AS MATERIALIZED (
                     SELECT applied, handed FROM {}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10))
                 SELECT {handed_columns}, NULL::uuid AS lost FROM r WHERE r.applied IS NULL
                 UNION ALL
                 SELECT {no_columns}, s.token FROM unnest($2::uuid[]) AS s(token)
                 WHERE NOT EXISTS (SELECT 1 FROM r WHERE r.applied = s.token)",
                f("finish"),
                handed_columns = COLUMNS
                    .split(", ")
                    .map(|c| format!("(r.handed).{c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                no_columns = vec!["NULL"; COLUMNS.split(", ").count()].join(", "),
            ),
            set_aside: format!("SELECT {}($1, $2, $3)", f("set_aside")),
            get: format!("SELECT {COLUMNS}, corrupt_reason FROM {t} WHERE id = $1"),
            dead_letters: format!(
                "SELECT {COLUMNS} FROM {t} WHERE status = 'dead' ORDER BY seq LIMIT $1"
            ),
            corrupt_events: format!(
                "SELECT id, event_type, corrupt_reason, processed_at FROM {t}
                 WHERE status = 'corrupt' ORDER BY seq LIMIT $1"
            ),
            requeue_dead: format!(
                "UPDATE {t} SET status = 'pending', attempts = 0, backoff_until = NULL, available_at = now(),
                     processed_at = NULL, handler_results = $2::jsonb, due_at = {requeued_due_at},
                     seq = {next_seq}
                 WHERE id = $1 AND status = 'dead'"
            ),
            requeue_corrupt: format!(
                "UPDATE {t} SET status = 'pending', corrupt_reason = NULL, processed_at = NULL,
                     backoff_until = NULL, available_at = now(), lease_token = NULL, locked_by = NULL,
                     locked_until = NULL, due_at = {requeued_due_at}, seq = {next_seq}
                 WHERE id = $1 AND status = 'corrupt'"
            ),
            purge: format!("DELETE FROM {t} WHERE status = $1 AND processed_at < $2"),
            // Counts scan the table; the lag reads one entry of the due index.
            stats: format!(
                "SELECT
                    count(*) FILTER (WHERE e.status = 'pending'),
                    count(*) FILTER (WHERE e.status = 'pending' AND e.due_at <= now()),
                    count(*) FILTER (WHERE e.status = 'pending' AND e.locked_until > now()),
                    count(*) FILTER (WHERE e.status = 'processed'),
                    count(*) FILTER (WHERE e.status = 'dead'),
                    count(*) FILTER (WHERE e.status = 'corrupt'),
                    ({oldest_due_age}),
                    ({oldest_snapshot}),
                    (SELECT COALESCE(max(n_dead_tup), 0) FROM pg_stat_user_tables
                     WHERE relid = '{t}'::regclass)
                 FROM {t} e"
            ),
            lag: format!("SELECT {oldest_due_age}"),
            held_back: format!(
                "SELECT ({oldest_snapshot}),
                    (SELECT COALESCE(max(n_dead_tup), 0) FROM pg_stat_user_tables
                     WHERE relid = '{t}'::regclass)"
            ),
            // Two index scans, pending rows (the due index) and dead ones (the failed index):
            // processed rows are never read (a scan of the whole table cost 211 ms with a million
            // processed events kept).
            stats_by_type: format!(
                "SELECT u.event_type, sum(u.p)::bigint, sum(u.d)::bigint, sum(u.l)::bigint,
                    sum(u.x)::bigint,
                    COALESCE(EXTRACT(EPOCH FROM now() - min(u.due))::float8, 0)
                 FROM (
                    SELECT e.event_type, 1 AS p, (e.due_at <= now())::int AS d,
                           COALESCE((e.locked_until > now())::int, 0) AS l, 0 AS x,
                           CASE WHEN e.due_at <= now() THEN e.due_at END AS due
                    FROM {t} e WHERE e.status = 'pending'
                    UNION ALL
                    SELECT e.event_type, 0, 0, 0, 1, NULL FROM {t} e WHERE e.status = 'dead'
                 ) u
                 GROUP BY u.event_type ORDER BY u.event_type"
            ),
            key_head: format!(
                "SELECT {COLUMNS} FROM {t}
                 WHERE ordering_key = $1 AND status = 'pending' ORDER BY seq LIMIT 1"
            ),
            record_success: format!(
                "UPDATE {t} SET handler_results = jsonb_set(handler_results, ARRAY[$3::text], $4::jsonb, true)
                 WHERE id = $1 AND lease_token = $2 AND status = 'pending'"
            ),
            inbox_record: format!(
                "INSERT INTO {inbox} (consumer, message_id) VALUES ($1, $2)
                 ON CONFLICT (consumer, message_id) DO NOTHING",
                inbox = f("inbox")
            ),
            inbox_purge: format!(
                "DELETE FROM {inbox} WHERE consumer = $1 AND received_at < $2",
                inbox = f("inbox")
            ),
        }
    }
}
