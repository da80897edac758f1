//! The DDL the store runs in [`migrate`](outbox_core::store::Schema::migrate): the events table, its
//! indexes, the claim / completion / set-aside functions, two triggers, the inbox table, and a
//! one-row table recording the schema version. Every statement is idempotent; a table of an older
//! schema is upgraded in place by the numbered steps of [`migrations`](crate::migrations).
//!
//! # How the queue is laid out
//!
//! - `due_at` is when a pending event may next be claimed: its `available_at` at enqueue, the end
//!   of its back-off after a failed attempt, the expiry of its lease while leased, and `infinity`
//!   while it waits behind an older pending event of its ordering key ("parked"). Claims walk the
//!   index `(due_at, seq) WHERE status = 'pending'` from the start and stop at the first row not yet
//!   due, so events that are scheduled, backing off, leased or parked cost a claim nothing.
//! - An event enqueued while an older event of its ordering key is pending is inserted parked. When
//!   an event of a key finishes (processed, dead, set aside), the completion un-parks the key's
//!   next pending event (the oldest created after it), in a second statement of its transaction so
//!   that it sees every parked event committed meanwhile. A re-queued dead letter takes a new
//!   `seq`: it goes to the back of its key's line.
//! - The one race left — a parked event committed while its key's last pending event finished —
//!   is closed at commit by a deferred constraint trigger: it locks the key's oldest other pending
//!   event (`FOR SHARE`, so that event's completion waits for this commit and then sees the parked
//!   one), or un-parks the event when there is none. A claim that still meets an event behind an
//!   older one of its key (two transactions enqueued the same key concurrently) parks it the same
//!   way.

use crate::error::map_sqlx;

use crate::store::PgStore;
use async_trait::async_trait;
use outbox_core::store::Schema;
use outbox_core::{EventRecord, StoreError};

/// The version of the schema this crate writes and expects, recorded in `<table>_schema`.
pub const SCHEMA_VERSION: i64 = 6;

/// What `migrate()` creates beside the table, by suffix of the table's name (`<table>_<suffix>`):
/// what [`verify`](outbox_core::store::Schema::verify) looks for.
pub(crate) const INDEXES: &[&str] = &[
    "due",
    "pending_ordering",
    "idempotency",
    "failed",
    "processed_at",
    "inbox_received_at",
];
/// The functions, by suffix.
pub(crate) const FUNCTIONS: &[&str] = &[
    "unpark",
    "claim",
    "finish",
    "set_aside",
    "settle_parked",
    "notify",
];
/// The triggers, by suffix.
pub(crate) const TRIGGERS: &[&str] = &["settle_parked", "notify"];
/// The table's columns besides the record's own ([`EventRecord::FIELDS`](outbox_core::EventRecord::FIELDS)):
/// creation order, due time, why an event was set aside.
pub(crate) const STORAGE_COLUMNS: &[&str] = &["seq", "due_at", "corrupt_reason"];

/// The DDL for `schema.table` on a database where nothing is recorded yet, in order: the schema
/// and table (current layout), every numbered migration (each a no-op on a table created at the
/// current layout; on a table of outbox 0.1 they upgrade it in place), the indexes, functions
/// and triggers, the inbox, and the version record.
///
/// ```
/// let ddl = outbox_postgres::schema_sql("public", "outbox_events");
/// assert!(ddl.iter().any(|s| s.contains("CREATE TABLE IF NOT EXISTS \"public\".\"outbox_events\"")));
/// ```
pub fn schema_sql(schema: &str, table: &str) -> Vec<String> {
    let t = format!("\"{schema}\".\"{table}\"");
    let mut ddl = vec![
        format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""),
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (
    seq             BIGSERIAL   NOT NULL,
    id              UUID        PRIMARY KEY,
    event_type      TEXT        NOT NULL,
    payload         JSONB       NOT NULL,
    correlation_id  TEXT,
    ordering_key    TEXT        COLLATE \"C\",
    idempotency_key TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    available_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts        INTEGER     NOT NULL DEFAULT 0,
    backoff_until   TIMESTAMPTZ,
    status          TEXT        NOT NULL DEFAULT 'pending',
    processed_at    TIMESTAMPTZ,
    handler_results JSONB       NOT NULL DEFAULT '{{}}'::jsonb,
    locked_by       TEXT,
    locked_until    TIMESTAMPTZ,
    lease_token     UUID,
    due_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    corrupt_reason  TEXT,
    traceparent     TEXT,
    CONSTRAINT \"{table}_status_check\" CHECK (status IN ('pending', 'processed', 'dead', 'corrupt'))
)"
        ),
    ];
    ddl.extend(crate::migrations::after(None, schema, table));
    ddl.extend(objects_sql(schema, table));
    ddl.extend(version_sql(schema, table));
    ddl
}

/// The DDL that brings `schema.table` from recorded schema `version` to [`SCHEMA_VERSION`]: the
/// numbered migrations after it, then the current indexes, functions and triggers.
pub(crate) fn upgrade_sql(schema: &str, table: &str, version: i64) -> Vec<String> {
    let mut ddl: Vec<String> = crate::migrations::after(Some(version), schema, table).collect();
    ddl.extend(objects_sql(schema, table));
    ddl.extend(version_sql(schema, table));
    ddl
}

/// The indexes, functions, triggers and inbox of the current schema, each created idempotently
/// (`IF NOT EXISTS`, `CREATE OR REPLACE`, or a trigger created only when missing).
fn objects_sql(schema: &str, table: &str) -> Vec<String> {
    [
        index_sql,
        claim_sql,
        finish_sql,
        parking_sql,
        notify_sql,
        inbox_sql,
    ]
    .iter()
    .flat_map(|part| part(schema, table))
    .collect()
}

/// The indexes: the due rows claims walk, each key's line, idempotency keys, failures, purges.
fn index_sql(schema: &str, table: &str) -> Vec<String> {
    let t = format!("\"{schema}\".\"{table}\"");
    vec![
        // Claims walk due rows only: due order, then creation order.
        format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_due\" ON {t} (due_at, seq) WHERE status = 'pending'"
        ),
        // The pending events of each ordering key, oldest first.
        format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_pending_ordering\" ON {t} (ordering_key, seq) \
             WHERE status = 'pending' AND ordering_key IS NOT NULL"
        ),
        format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS \"{table}_idempotency\" ON {t} (idempotency_key) \
             WHERE idempotency_key IS NOT NULL"
        ),
        // Dead letters and set-aside events (few), by age.
        format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_failed\" ON {t} (status, processed_at) \
             WHERE status IN ('dead', 'corrupt')"
        ),
        // Purges of processed events by age: a BRIN index costs a completion next to nothing
        // (with a B-tree entry per processed event instead, a server-side drain ran about 3 %
        // slower), and processed rows are written roughly in time order.
        format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_processed_at\" ON {t} USING brin (processed_at)"
        ),
    ]
}

/// The claim, and the un-parking of a key's next event that completions call.
fn claim_sql(schema: &str, table: &str) -> Vec<String> {
    let t = format!("\"{schema}\".\"{table}\"");
    let f = |name: &str| format!("\"{schema}\".\"{table}_{name}\"");
    let channel = crate::queries::channel_name(schema, table);
    let (unpark, claim) = (f("unpark"), f("claim"));
    vec![
        // Makes the next pending event of each key claimable, if it is parked: the oldest one
        // created after the event that just finished (`after`, its seq). Starting there, the index
        // scan does not walk the entries the key's earlier events left behind (a scan from the
        // key's start made a keyed drain about half as fast). Called by the completion functions
        // in a statement of its own, after the finished events were written.
        format!(
            "CREATE OR REPLACE FUNCTION {unpark}(keys text[], after bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    woken bigint;
BEGIN
    UPDATE {t} e SET due_at = GREATEST(e.available_at, e.backoff_until, e.locked_until)
    FROM unnest(keys, after) AS k(key, seq)
    CROSS JOIN LATERAL (
        SELECT o.id FROM {t} o
        WHERE o.ordering_key = k.key AND o.status = 'pending' AND o.seq > k.seq
        ORDER BY o.seq LIMIT 1) head
    WHERE e.id = head.id AND e.due_at = 'infinity';
    GET DIAGNOSTICS woken = ROW_COUNT;
    IF woken > 0 THEN
        PERFORM pg_notify('{channel}', '');
    END IF;
END $$"
        ),
        // The claim: leases up to `batch` due events in due order, parking any that turns out to
        // wait behind an older event of its key; durability relaxed for this transaction only (a
        // lost claim means a redelivery, never a lost event). Planned with bitmap scans and sorts
        // off: before autovacuum has analyzed a freshly filled table the planner would otherwise
        // sort every pending row at each claim (measured: 27 ms instead of 1 ms per claim of 100
        // with 50,000 pending).
        format!(
            "CREATE OR REPLACE FUNCTION {claim}(batch bigint, worker text, lease_ms bigint,
    walk_from timestamptz)
RETURNS SETOF {t} LANGUAGE plpgsql VOLATILE
SET enable_bitmapscan = off SET enable_sort = off
AS $$
DECLARE
    got bigint := 0;
    ids uuid[];
    parked bigint;
    lease interval := lease_ms * interval '1 millisecond';
    -- Where the walk of the due index starts: its beginning, or walk_from (see the store's
    -- claim_window module: past the dead entries a long transaction keeps).
    since timestamptz := COALESCE(walk_from, '-infinity'::timestamptz);
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    LOOP
        WITH candidates AS (
            SELECT e.id, e.seq, e.due_at, e.ordering_key FROM {t} e
            WHERE e.status = 'pending' AND e.due_at <= now() AND e.due_at >= since
            ORDER BY e.due_at, e.seq
            LIMIT batch - got
            FOR UPDATE OF e SKIP LOCKED
        ), checked AS (
            SELECT c.id, c.ordering_key IS NOT NULL AND EXISTS (
                SELECT 1 FROM {t} o
                WHERE o.ordering_key = c.ordering_key AND o.status = 'pending' AND o.seq < c.seq
                FOR SHARE OF o) AS blocked
            FROM candidates c
        ), parked_now AS (
            UPDATE {t} e SET due_at = 'infinity' FROM checked k WHERE k.blocked AND e.id = k.id
            RETURNING e.id
        )
        SELECT array_agg(k.id) FILTER (WHERE NOT k.blocked), (SELECT count(*) FROM parked_now)
        INTO ids, parked FROM checked k;
        IF ids IS NOT NULL THEN
            -- In no particular order: the client sorts the batch (ordering it here cost 10-15 %
            -- of the claim).
            RETURN QUERY UPDATE {t} e
                SET attempts = CASE WHEN e.attempts < 0 THEN e.attempts ELSE LEAST(e.attempts, 2147483646) + 1 END, lease_token = gen_random_uuid(), locked_by = worker,
                    locked_until = now() + lease, due_at = now() + lease
                WHERE e.id = ANY(ids)
                RETURNING e.*;
            got := got + cardinality(ids);
        END IF;
        EXIT WHEN parked = 0 OR got >= batch;
    END LOOP;
END $$"
        ),
    ]
}

/// The batched completion with its key hand-off.
// Long by design: the text of one PL/pgSQL function (one round trip per completion batch), and the
// comment that explains it.
fn finish_sql(schema: &str, table: &str) -> Vec<String> {
    let t = format!("\"{schema}\".\"{table}\"");
    let f = |name: &str| format!("\"{schema}\".\"{table}_{name}\"");
    let channel = crate::queries::channel_name(schema, table);
    let (unpark, finish) = (f("unpark"), f("finish"));
    // What a completion writes (the `u` row holds the outcome).
    let set_outcome =
        "status = u.status, handler_results = u.results::jsonb, attempts = u.attempts,
                backoff_until = CASE WHEN u.delay IS NULL THEN NULL
                                     ELSE now() + u.delay * interval '1 millisecond' END,
                due_at = CASE WHEN u.status = 'pending'
                              THEN now() + COALESCE(u.delay, 0) * interval '1 millisecond'
                              ELSE e.due_at END,
                processed_at = CASE WHEN u.status = 'pending' THEN NULL ELSE now() END,
                lease_token = NULL, locked_by = NULL, locked_until = NULL";
    vec![
        // Many completions in one call, each fenced by its own lease token; returns the tokens
        // applied (`applied`). With `delete_processed`, processed events without an idempotency
        // key are deleted instead of kept (events with one are kept: they hold the key). The
        // update that follows the delete skips the completions the delete applied before it
        // looks their rows up (it used to probe every row of the batch a second time). With a
        // `worker`, the next event of each key that finished is leased to it when it is due now
        // (at most `hand_max`), and returned as a row (`handed`): one write instead of an un-park
        // and a claim. Schema 5 replaced `<table>_complete`, which answered the handed rows as
        // `row_to_json` text (formatting them cost the server about a tenth of a keyed drain);
        // that one is left in place for processes of schema 4 still running during an upgrade.
        // Planned as lookups by id (nested loops over the batch, no scans of the table): on a
        // table never analyzed (autovacuum off) the planner took it for empty and joined the
        // batch by scanning it, which with a snapshot held elsewhere read every dead row version
        // kept since (measured: completions of 7-12 s, and a backlog of 200,000 events).
        format!(
            "CREATE OR REPLACE FUNCTION {finish}(ids uuid[], tokens uuid[], statuses text[],
    results text[], attempt_counts int[], delays bigint[], delete_processed boolean,
    worker text, lease_ms bigint, hand_max int)
RETURNS TABLE(applied uuid, handed {t}) LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    applied_tokens uuid[];
    keys text[];
    seqs bigint[];
    hand_ids uuid[];
    wake_ids uuid[];
    woken bigint;
    lease interval := lease_ms * interval '1 millisecond';
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    IF delete_processed THEN
        WITH u AS (
            SELECT * FROM unnest(ids, tokens, statuses, results, attempt_counts, delays)
                AS u(id, token, status, results, attempts, delay)
        ), deleted AS (
            DELETE FROM {t} e USING u
            WHERE u.status = 'processed' AND e.idempotency_key IS NULL
              AND e.id = u.id AND e.lease_token = u.token AND e.status = 'pending'
            RETURNING u.token, e.ordering_key, e.seq, u.status
        ), updated AS (
            UPDATE {t} e
            SET {set_outcome}
            FROM u
            WHERE u.token NOT IN (SELECT d.token FROM deleted d)
              AND e.id = u.id AND e.lease_token = u.token AND e.status = 'pending'
              AND NOT (u.status = 'processed' AND e.idempotency_key IS NULL)
            RETURNING u.token, e.ordering_key, e.seq, u.status
        ), done AS (
            SELECT * FROM deleted UNION ALL SELECT * FROM updated
        )
        SELECT array_agg(done.token),
               array_agg(done.ordering_key)
                   FILTER (WHERE done.ordering_key IS NOT NULL AND done.status <> 'pending'),
               array_agg(done.seq)
                   FILTER (WHERE done.ordering_key IS NOT NULL AND done.status <> 'pending')
        INTO applied_tokens, keys, seqs FROM done;
    ELSE
        WITH u AS (
            SELECT * FROM unnest(ids, tokens, statuses, results, attempt_counts, delays)
                AS u(id, token, status, results, attempts, delay)
        ), done AS (
            UPDATE {t} e
            SET {set_outcome}
            FROM u
            WHERE e.id = u.id AND e.lease_token = u.token AND e.status = 'pending'
            RETURNING u.token, e.ordering_key, e.seq, u.status
        )
        SELECT array_agg(done.token),
               array_agg(done.ordering_key)
                   FILTER (WHERE done.ordering_key IS NOT NULL AND done.status <> 'pending'),
               array_agg(done.seq)
                   FILTER (WHERE done.ordering_key IS NOT NULL AND done.status <> 'pending')
        INTO applied_tokens, keys, seqs FROM done;
    END IF;
    IF keys IS NOT NULL AND worker IS NOT NULL AND hand_max > 0 THEN
        -- Each finished key's next event, found once: up to `hand_max` of those due now are
        -- leased to `worker`, the others un-parked (as `{unpark}` does).
        SELECT array_agg(h.id) FILTER (WHERE h.ready AND h.rn <= hand_max),
               array_agg(h.id) FILTER (WHERE NOT h.ready OR h.rn > hand_max)
        INTO hand_ids, wake_ids
        FROM (
            SELECT head.id, head.ready, row_number() OVER (PARTITION BY head.ready) AS rn
            FROM unnest(keys, seqs) AS k(key, seq)
            CROSS JOIN LATERAL (
                SELECT o.id, o.due_at,
                       GREATEST(o.available_at, o.backoff_until) <= now() AS ready
                FROM {t} o
                WHERE o.ordering_key = k.key AND o.status = 'pending' AND o.seq > k.seq
                ORDER BY o.seq LIMIT 1) head
            WHERE head.due_at = 'infinity'
        ) h;
        IF hand_ids IS NOT NULL THEN
            RETURN QUERY
            UPDATE {t} e
            SET attempts = CASE WHEN e.attempts < 0 THEN e.attempts ELSE LEAST(e.attempts, 2147483646) + 1 END, lease_token = gen_random_uuid(), locked_by = worker,
                locked_until = now() + lease, due_at = now() + lease
            WHERE e.id = ANY(hand_ids) AND e.due_at = 'infinity'
            RETURNING NULL::uuid, e;
        END IF;
        IF wake_ids IS NOT NULL THEN
            UPDATE {t} e SET due_at = GREATEST(e.available_at, e.backoff_until, e.locked_until)
            WHERE e.id = ANY(wake_ids) AND e.due_at = 'infinity';
            GET DIAGNOSTICS woken = ROW_COUNT;
            IF woken > 0 THEN
                PERFORM pg_notify('{channel}', '');
            END IF;
        END IF;
    ELSIF keys IS NOT NULL THEN
        PERFORM {unpark}(keys, seqs);
    END IF;
    RETURN QUERY SELECT unnest(applied_tokens), NULL::{t};
END $$"
        ),
    ]
}

/// Setting aside an event that does not decode, and the commit-time trigger that settles a
/// parked event.
fn parking_sql(schema: &str, table: &str) -> Vec<String> {
    let t = format!("\"{schema}\".\"{table}\"");
    let f = |name: &str| format!("\"{schema}\".\"{table}_{name}\"");
    let channel = crate::queries::channel_name(schema, table);
    let (unpark, set_aside, settle) = (f("unpark"), f("set_aside"), f("settle_parked"));
    vec![
        // Sets aside a claimed event that does not decode (contract C11), fenced by its lease.
        format!(
            "CREATE OR REPLACE FUNCTION {set_aside}(event_id uuid, token uuid, reason text)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    key text;
    key_seq bigint;
BEGIN
    UPDATE {t} SET status = 'corrupt', corrupt_reason = reason, processed_at = now(),
        lease_token = NULL, locked_by = NULL, locked_until = NULL
    WHERE id = event_id AND lease_token = token AND status = 'pending'
    RETURNING ordering_key, seq INTO key, key_seq;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF key IS NOT NULL THEN
        PERFORM {unpark}(ARRAY[key], ARRAY[key_seq]);
    END IF;
    RETURN true;
END $$"
        ),
        // At commit of a transaction that enqueued (or re-queued) a parked event: keep it parked
        // behind a pending event of its key, locked so that event's completion runs after this
        // commit and un-parks it; or un-park it when its key has no other pending event.
        format!(
            "CREATE OR REPLACE FUNCTION {settle}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    other uuid;
BEGIN
    SELECT o.id INTO other FROM {t} o
    WHERE o.ordering_key = NEW.ordering_key AND o.status = 'pending' AND o.id <> NEW.id
    ORDER BY o.seq LIMIT 1
    FOR SHARE;
    IF other IS NULL THEN
        UPDATE {t} SET due_at = GREATEST(available_at, backoff_until, locked_until)
        WHERE id = NEW.id AND status = 'pending' AND due_at = 'infinity';
        IF FOUND THEN
            PERFORM pg_notify('{channel}', '');
        END IF;
    END IF;
    RETURN NULL;
END $$"
        ),
        format!(
            "DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgname = '{table}_settle_parked' AND tgrelid = '{t}'::regclass) THEN
        CREATE CONSTRAINT TRIGGER \"{table}_settle_parked\" AFTER INSERT OR UPDATE OF status ON {t}
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            WHEN (NEW.status = 'pending' AND NEW.due_at = 'infinity')
            EXECUTE FUNCTION {settle}();
    END IF;
END $$"
        ),
    ]
}

/// The wake-up notification at each enqueue statement.
fn notify_sql(schema: &str, table: &str) -> Vec<String> {
    let t = format!("\"{schema}\".\"{table}\"");
    let f = |name: &str| format!("\"{schema}\".\"{table}_{name}\"");
    let channel = crate::queries::channel_name(schema, table);
    let notify = f("notify");
    vec![
        format!(
            "CREATE OR REPLACE FUNCTION {notify}() RETURNS trigger LANGUAGE plpgsql AS $$
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
            FOR EACH STATEMENT EXECUTE FUNCTION {notify}();
    END IF;
END $$"
        ),
    ]
}

/// The inbox (X1).
fn inbox_sql(schema: &str, table: &str) -> Vec<String> {
    let f = |name: &str| format!("\"{schema}\".\"{table}_{name}\"");
    let inbox = f("inbox");
    vec![
        // The inbox (X1): message ids consumers received, kept for their retention.
        format!(
            "CREATE TABLE IF NOT EXISTS {inbox} (
    consumer    TEXT        NOT NULL,
    message_id  TEXT        NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
)"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_inbox_received_at\" ON {inbox} (consumer, received_at)"
        ),
    ]
}

/// Records [`SCHEMA_VERSION`] in `<table>_schema`.
fn version_sql(schema: &str, table: &str) -> Vec<String> {
    let version_table = format!("\"{schema}\".\"{table}_schema\"");
    vec![
        format!("CREATE TABLE IF NOT EXISTS {version_table} (version INTEGER NOT NULL)"),
        format!(
            "DELETE FROM {version_table}; INSERT INTO {version_table} (version) VALUES ({SCHEMA_VERSION})"
        ),
    ]
}

/// The table, indexes, functions and triggers of the outbox (C10).
#[async_trait]
impl Schema for PgStore {
    /// Creates or updates the schema, table, indexes, functions and triggers (C10), and records
    /// the schema version in `<table>_schema`. Idempotent and safe to run from many processes at
    /// once (serialized by an advisory lock). When the recorded version is current it runs no DDL
    /// at all, so a role with data permissions only can call it on every start. A table of the 0.1
    /// layout is upgraded in place. On a table with no recorded version the statements are those
    /// of [`schema_sql`](crate::schema_sql); on an older one, the numbered migrations after its
    /// version and the current functions, indexes and triggers.
    async fn migrate(&self) -> Result<(), StoreError> {
        let q = &self.queries;
        let recorded = self.schema_version().await?;
        let statements = match recorded {
            Some(version) if version == SCHEMA_VERSION => return Ok(()),
            Some(version) if version > SCHEMA_VERSION => {
                return Err(StoreError::Schema {
                    message: format!(
                        "{}.{} has schema version {version}, written by a newer outbox; this build knows versions up to {SCHEMA_VERSION}",
                        q.schema, q.table
                    ),
                });
            }
            Some(version) => {
                for step in crate::migrations::steps_after(Some(version)) {
                    tracing::info!(
                        table = %format!("{}.{}", q.schema, q.table),
                        version = step.version,
                        "outbox schema upgrade: {}",
                        step.summary
                    );
                }
                upgrade_sql(&q.schema, &q.table, version)
            }
            None => schema_sql(&q.schema, &q.table),
        };
        // One simple-query string runs as one implicit transaction; the advisory lock serializes
        // concurrent migrations of this table. Names were validated, so they are safe to inline.
        let mut script = format!(
            "SELECT pg_advisory_xact_lock(hashtext('outbox-migrate:{}.{}'));\n",
            q.schema, q.table
        );
        script.push_str(&statements.join(";\n"));
        sqlx::raw_sql(&script)
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("migrate", e))?;
        Ok(())
    }

    /// Checks that the schema `migrate()` creates is in place and current, reading only the system
    /// catalogs: a role with data permissions alone can call it (and `migrate()` itself runs no
    /// DDL when the recorded version is current). The error names everything missing.
    ///
    /// ```no_run
    /// # use outbox_core::prelude::*;
    /// # async fn demo(store: outbox_postgres::PgStore) -> Result<(), outbox_core::StoreError> {
    /// // At startup of a service whose role may not run DDL (the schema is migrated by a deploy step):
    /// store.verify().await?;
    /// # Ok(()) }
    /// ```
    async fn verify(&self) -> Result<(), StoreError> {
        let q = &self.queries;
        let with_suffix = |names: &[&str]| -> Vec<String> {
            names.iter().map(|n| format!("{}_{n}", q.table)).collect()
        };
        let (indexes, functions, triggers) = (
            with_suffix(crate::schema::INDEXES),
            with_suffix(crate::schema::FUNCTIONS),
            with_suffix(crate::schema::TRIGGERS),
        );
        let qualified = format!("\"{}\".\"{}\"", q.schema, q.table);
        let (exists, columns, found_indexes, found_functions, found_triggers): (
            bool,
            Vec<String>,
            Vec<String>,
            Vec<String>,
            Vec<String>,
        ) = sqlx::query_as(
            "SELECT to_regclass($1) IS NOT NULL,
                ARRAY(SELECT a.attname::text FROM pg_attribute a
                      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped),
                ARRAY(SELECT c.relname::text FROM pg_class c
                      JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = $2 AND c.relkind = 'i' AND c.relname = ANY($3)),
                ARRAY(SELECT p.proname::text FROM pg_proc p
                      JOIN pg_namespace n ON n.oid = p.pronamespace
                      WHERE n.nspname = $2 AND p.proname = ANY($4)),
                ARRAY(SELECT t.tgname::text FROM pg_trigger t
                      WHERE t.tgrelid = to_regclass($1) AND t.tgname = ANY($5))",
        )
        .bind(&qualified)
        .bind(&q.schema)
        .bind(&indexes)
        .bind(&functions)
        .bind(&triggers)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_sqlx("verify the schema", e))?;
        if !exists {
            return Err(StoreError::Schema {
                message: format!(
                    "the outbox table {}.{} does not exist: run migrate() with a role that may create it",
                    q.schema, q.table
                ),
            });
        }
        let mut missing: Vec<String> = Vec::new();
        let absent = |wanted: &[String], found: &[String]| -> Vec<String> {
            wanted
                .iter()
                .filter(|w| !found.contains(w))
                .cloned()
                .collect()
        };
        let wanted_columns: Vec<String> = EventRecord::FIELDS
            .iter()
            .chain(crate::schema::STORAGE_COLUMNS)
            .map(|c| (*c).to_owned())
            .collect();
        for (kind, names) in [
            ("column", absent(&wanted_columns, &columns)),
            ("index", absent(&indexes, &found_indexes)),
            ("function", absent(&functions, &found_functions)),
            ("trigger", absent(&triggers, &found_triggers)),
        ] {
            missing.extend(names.into_iter().map(|n| format!("{kind} {n}")));
        }
        match self.schema_version().await? {
            Some(SCHEMA_VERSION) => {}
            Some(version) => {
                missing.push(format!("schema version {SCHEMA_VERSION} (found {version})"))
            }
            None => missing.push(format!("the version table {}_schema", q.table)),
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(StoreError::schema_incomplete(
            &format!("{}.{}", q.schema, q.table),
            &missing,
        ))
    }

    /// The schema version recorded for this table, `None` when the table was never migrated (or
    /// was created by outbox 0.1, which recorded none).
    async fn schema_version(&self) -> Result<Option<i64>, StoreError> {
        match sqlx::query_scalar::<_, Option<i32>>(&self.queries.schema_version)
            .fetch_one(&self.pool)
            .await
        {
            Ok(version) => Ok(version.map(i64::from)),
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => Ok(None),
            Err(e) => Err(map_sqlx("read the schema version", e)),
        }
    }

    fn ddl(&self) -> Option<Vec<String>> {
        Some(crate::schema::schema_sql(
            &self.queries.schema,
            &self.queries.table,
        ))
    }
}
