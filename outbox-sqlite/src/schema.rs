//! The DDL [`migrate`](outbox_core::store::Schema::migrate) runs. Every statement is
//! idempotent; a table of the 0.1 layout is rebuilt into this one (see [`upgrade_sql`]).
//!
//! The queue is laid out as on PostgreSQL: `due_at` is when a pending event may next be claimed
//! (its schedule, the end of its back-off, its lease's expiry, or [`PARKED`] while it waits behind an
//! older pending event of its ordering key), and claims walk the index on `(due_at, seq)` of pending
//! events only. SQLite has one writer at a time, so the enqueue decides exactly whether an event is
//! parked, and a trigger un-parks the key's oldest pending event when one finishes, in the same
//! statement.

use crate::error::map_sqlx;

use crate::store::SqliteStore;
use async_trait::async_trait;
use outbox_core::store::Schema;
use outbox_core::{EventRecord, StoreError};
use sqlx::SqliteConnection;

/// The version of the schema this crate writes and expects, recorded in `<table>_schema`.
pub const SCHEMA_VERSION: i64 = 4;

/// The `due_at` of a parked event: never due until un-parked.
pub(crate) const PARKED: i64 = i64::MAX;

/// What `migrate()` creates beside the table, by suffix of the table's name (`<table>_<suffix>`):
/// what [`verify`](outbox_core::store::Schema::verify) looks for.
pub(crate) const INDEXES: &[&str] = &["due", "pending_ordering", "idempotency", "finished"];
/// The triggers, by suffix.
pub(crate) const TRIGGERS: &[&str] = &["unpark"];
/// The table's columns besides the record's own ([`EventRecord::FIELDS`](outbox_core::EventRecord::FIELDS)):
/// creation order, due time, why an event was set aside.
pub(crate) const STORAGE_COLUMNS: &[&str] = &["seq", "due_at", "corrupt_reason"];

fn columns(table: &str) -> String {
    format!(
        "    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
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
    status          TEXT    NOT NULL DEFAULT 'pending',
    processed_at    INTEGER,
    handler_results TEXT    NOT NULL DEFAULT '{{}}',
    locked_by       TEXT,
    locked_until    INTEGER,
    lease_token     TEXT,
    due_at          INTEGER NOT NULL,
    corrupt_reason  TEXT,
    traceparent     TEXT,
    CONSTRAINT \"{table}_status_check\" CHECK (status IN ('pending', 'processed', 'dead', 'corrupt'))"
    )
}

/// The DDL for `table`, in order.
///
/// ```
/// let ddl = outbox_sqlite::schema_sql("outbox_events");
/// assert!(ddl[0].starts_with("CREATE TABLE IF NOT EXISTS \"outbox_events\""));
/// ```
pub fn schema_sql(table: &str) -> Vec<String> {
    let t = format!("\"{table}\"");
    vec![
        format!("CREATE TABLE IF NOT EXISTS {t} (\n{}\n)", columns(table)),
        // Claims walk due rows only: due order, then creation order.
        format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_due\" ON {t} (due_at, seq) WHERE status = 'pending'"
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
        // When an event of a key finishes (processed, dead, set aside), its key's oldest pending
        // event becomes claimable, in the same statement.
        format!(
            "CREATE TRIGGER IF NOT EXISTS \"{table}_unpark\" AFTER UPDATE OF status ON {t}
WHEN OLD.status = 'pending' AND NEW.status <> 'pending' AND NEW.ordering_key IS NOT NULL
BEGIN
    UPDATE {t} SET due_at = max(available_at, coalesce(backoff_until, 0), coalesce(locked_until, 0))
    WHERE seq = (SELECT o.seq FROM {t} o
                 WHERE o.ordering_key = NEW.ordering_key AND o.status = 'pending'
                 ORDER BY o.seq LIMIT 1)
      AND due_at = {PARKED};
END"
        ),
        // The inbox (X1): message ids consumers received (ms since the epoch), kept for their
        // retention.
        format!(
            "CREATE TABLE IF NOT EXISTS \"{table}_inbox\" (
    consumer    TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, message_id)
) WITHOUT ROWID"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_inbox_received_at\" ON \"{table}_inbox\" (consumer, received_at)"
        ),
        format!("CREATE TABLE IF NOT EXISTS \"{table}_schema\" (version INTEGER NOT NULL)"),
        format!(
            "DELETE FROM \"{table}_schema\"; INSERT INTO \"{table}_schema\" (version) VALUES ({SCHEMA_VERSION})"
        ),
    ]
}

/// Rebuilds a table of the 0.1 layout (no `due_at`; a status check without `corrupt`, which SQLite
/// cannot alter in place) into the current one, keeping every row and its `seq`. Pending events
/// behind an older pending event of their key are parked. Runs in one transaction.
pub(crate) fn upgrade_sql(table: &str) -> String {
    let t = format!("\"{table}\"");
    let old = format!("\"{table}_v1\"");
    format!(
        "ALTER TABLE {t} RENAME TO {old};
DROP INDEX IF EXISTS \"{table}_pending_seq\";
DROP INDEX IF EXISTS \"{table}_pending_ordering\";
DROP INDEX IF EXISTS \"{table}_idempotency\";
DROP INDEX IF EXISTS \"{table}_finished\";
CREATE TABLE {t} (\n{columns}\n);
INSERT INTO {t} (seq, id, event_type, payload, correlation_id, ordering_key, idempotency_key,
    created_at, available_at, attempts, backoff_until, status, processed_at, handler_results,
    locked_by, locked_until, lease_token, due_at)
SELECT seq, id, event_type, payload, correlation_id, ordering_key, idempotency_key,
    created_at, available_at, attempts, backoff_until, status, processed_at, handler_results,
    locked_by, locked_until, lease_token,
    CASE WHEN status = 'pending' AND ordering_key IS NOT NULL AND EXISTS (
             SELECT 1 FROM {old} o WHERE o.ordering_key = e.ordering_key AND o.status = 'pending'
                                    AND o.seq < e.seq)
         THEN {PARKED}
         ELSE max(available_at, coalesce(backoff_until, 0), coalesce(locked_until, 0)) END
FROM {old} e;
DROP TABLE {old}",
        columns = columns(table)
    )
}

/// The table and indexes of the outbox (C10).
#[async_trait]
impl Schema for SqliteStore {
    /// Creates the table, indexes and trigger if missing (C10) and records the schema version in
    /// `<table>_schema`; idempotent, and a no-op when the recorded version is current. A table of
    /// the 0.1 layout is rebuilt into the current one, keeping every row. The statements are those
    /// of [`schema_sql`](crate::schema_sql).
    async fn migrate(&self) -> Result<(), StoreError> {
        let q = &self.queries;
        match self.schema_version().await? {
            Some(version) if version == SCHEMA_VERSION => return Ok(()),
            Some(version) if version > SCHEMA_VERSION => {
                return Err(StoreError::Schema {
                    message: format!(
                        "table {} has schema version {version}, written by a newer outbox; this build knows versions up to {SCHEMA_VERSION}",
                        q.table
                    ),
                });
            }
            _ => {}
        }
        let existing: Option<String> = sqlx::query_scalar(&q.table_sql)
            .bind(&q.table)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_sqlx("migrate: read the table", e))?;
        let mut script = String::new();
        match existing {
            Some(sql) if !sql.contains("due_at") => {
                script.push_str(&crate::schema::upgrade_sql(&q.table));
                script.push_str(";\n");
            }
            // Schema version 2 (before trace propagation).
            Some(sql) if !sql.contains("traceparent") => {
                script.push_str(&format!(
                    "ALTER TABLE \"{}\" ADD COLUMN traceparent TEXT;\n",
                    q.table
                ));
            }
            _ => {}
        }
        script.push_str(&crate::schema::schema_sql(&q.table).join(";\n"));
        // One transaction: a failure leaves the table as it was. The connection is closed rather
        // than returned to the pool when a statement failed, so no transaction is left open on it.
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| map_sqlx("migrate: connect", e))?;
        let script = format!("BEGIN IMMEDIATE;\n{script};\nCOMMIT;");
        let done = run_script(&mut conn, script).await;
        if done.is_err() {
            conn.close_on_drop();
        }
        done.map_err(|e| map_sqlx("migrate", e))
    }

    /// Checks that the schema `migrate()` creates is in place and current, reading only
    /// `sqlite_master` and the table's column list. The error names everything missing.
    ///
    /// ```
    /// # use outbox_core::prelude::*;
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let store = outbox_sqlite::SqliteStore::open(dir.path().join("app.db")).await?;
    /// store.verify().await?;
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    async fn verify(&self) -> Result<(), StoreError> {
        let table = &self.queries.table;
        let with_suffix = |names: &[&str]| -> Vec<String> {
            names.iter().map(|n| format!("{table}_{n}")).collect()
        };
        let names: Vec<(String, String)> =
            sqlx::query_as("SELECT type, name FROM sqlite_master WHERE tbl_name = ?1")
                .bind(table)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| map_sqlx("verify the schema", e))?;
        if !names
            .iter()
            .any(|(kind, name)| kind == "table" && name == table)
        {
            return Err(StoreError::Schema {
                message: format!(
                    "the outbox table {table} does not exist: run migrate() to create it"
                ),
            });
        }
        let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?1)")
            .bind(table)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("verify the schema", e))?;
        let has = |kind: &str, name: &str| names.iter().any(|(k, n)| k == kind && n == name);
        let mut missing: Vec<String> = EventRecord::FIELDS
            .iter()
            .chain(crate::schema::STORAGE_COLUMNS)
            .filter(|c| !columns.iter().any(|have| have == *c))
            .map(|c| format!("column {c}"))
            .collect();
        for (kind, wanted) in [
            ("index", with_suffix(crate::schema::INDEXES)),
            ("trigger", with_suffix(crate::schema::TRIGGERS)),
        ] {
            missing.extend(
                wanted
                    .into_iter()
                    .filter(|name| !has(kind, name))
                    .map(|name| format!("{kind} {name}")),
            );
        }
        match self.schema_version().await? {
            Some(SCHEMA_VERSION) => {}
            Some(version) => {
                missing.push(format!("schema version {SCHEMA_VERSION} (found {version})"))
            }
            None => missing.push(format!("the version table {table}_schema")),
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(StoreError::schema_incomplete(table, &missing))
    }

    /// The schema version recorded for this table, `None` when it was never migrated (or was
    /// created by outbox 0.1, which recorded none).
    async fn schema_version(&self) -> Result<Option<i64>, StoreError> {
        match sqlx::query_scalar::<_, Option<i64>>(&self.queries.schema_version)
            .fetch_one(&self.pool)
            .await
        {
            Ok(version) => Ok(version),
            Err(sqlx::Error::Database(db)) if db.message().contains("no such table") => Ok(None),
            Err(e) => Err(map_sqlx("read the schema version", e)),
        }
    }

    fn ddl(&self) -> Option<Vec<String>> {
        Some(crate::schema::schema_sql(&self.queries.table))
    }
}

/// Runs a multi-statement script on one connection.
async fn run_script(conn: &mut SqliteConnection, script: String) -> Result<(), sqlx::Error> {
    sqlx::Executor::execute(conn, script.as_str()).await?;
    Ok(())
}
