//! [`SqliteStore`]: the `Store` implementation, and enqueue inside the caller's own transaction (C1).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outbox_core::kit::{CompletionBatch, corrupt_reason, renewal_results};
use outbox_core::model::CorruptEvent;
use outbox_core::store::{
    ClaimRequest, ClaimedEvent, Completion, Lease, StoreCapabilities, StoreStats, TypeStats,
    WakeupStream,
};
use outbox_core::store::{ClaimStore, EnqueueIn, EnqueueStore, InspectStore, RepairStore};
use outbox_core::{Enqueued, EventRecord, EventStatus, Limits, NewEvent, StoreError};
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use crate::config::{SqliteStoreBuilder, open_pool};
use crate::error::map_sqlx;
use crate::queries::Queries;
use crate::row::{decode, from_millis, lease_of, now_millis, to_millis};
use crate::schema::SCHEMA_VERSION;

/// Runs a multi-statement script on one connection.
async fn run_script(conn: &mut SqliteConnection, script: String) -> Result<(), sqlx::Error> {
    sqlx::Executor::execute(conn, script.as_str()).await?;
    Ok(())
}

/// An outbox in a SQLite database. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use outbox_core::prelude::*;
/// use outbox_core::NewEvent;
/// use outbox_sqlite::SqliteStore;
///
/// let store = SqliteStore::open("app.db").await?; // WAL, busy timeout, table migrated
/// let mut tx = store.pool().begin().await?;
/// sqlx::query("INSERT INTO users (email) VALUES (?1)").bind("ada@example.com").execute(&mut *tx).await?;
/// store.enqueue_in(&mut tx, NewEvent::new("UserInvited", serde_json::json!({"email": "ada@example.com"}))).await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    queries: Arc<Queries>,
    limits: Limits,
    /// Taken around the store's own writes (claims, renewals, completions, set-asides, enqueues
    /// outside a caller's transaction), shared by every clone. SQLite admits one writer at a time
    /// and makes the others retry after sleeps that grow to tens of milliseconds; queueing this
    /// process's writers here instead turns that busy-waiting into a hand-off. Writers in other
    /// processes, and callers' own transactions, still meet the busy timeout.
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("table", &self.queries.table)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// How long ago (`now`, ms) the oldest due event became due (`oldest`, ms); zero when none.
fn age(now: i64, oldest: Option<i64>) -> Duration {
    oldest.map_or(Duration::ZERO, |t| {
        Duration::from_millis(u64::try_from(now - t).unwrap_or(0))
    })
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` with settings fit for several
    /// processes (WAL, 10 s busy timeout), and creates the table `outbox_events`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let store = Self::new(open_pool(path.as_ref()).await?);
        store.migrate().await?;
        Ok(store)
    }

    /// A store on table `outbox_events` of a pool you configured, with the default [`Limits`].
    pub fn new(pool: SqlitePool) -> Self {
        Self::from_parts(
            pool,
            Arc::new(Queries::new("outbox_events")),
            Limits::default(),
        )
    }

    /// A builder to choose the table name.
    pub fn builder(pool: SqlitePool) -> SqliteStoreBuilder {
        SqliteStoreBuilder::new(pool)
    }

    pub(crate) fn from_parts(pool: SqlitePool, queries: Arc<Queries>, limits: Limits) -> Self {
        Self {
            pool,
            queries,
            limits,
            writer: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The limits enqueued events are checked against (C11).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The pool this store uses.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The statements of this store's table.
    pub(crate) fn queries(&self) -> &Queries {
        &self.queries
    }

    /// Creates the table, indexes and trigger if missing (C10) and records the schema version in
    /// `<table>_schema`; idempotent, and a no-op when the recorded version is current. A table of
    /// the 0.1 layout is rebuilt into the current one, keeping every row. The statements are those
    /// of [`schema_sql`](crate::schema_sql).
    pub async fn migrate(&self) -> Result<(), StoreError> {
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
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let store = outbox_sqlite::SqliteStore::open(dir.path().join("app.db")).await?;
    /// store.verify().await?;
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    pub async fn verify(&self) -> Result<(), StoreError> {
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
    pub async fn schema_version(&self) -> Result<Option<i64>, StoreError> {
        match sqlx::query_scalar::<_, Option<i64>>(&self.queries.schema_version)
            .fetch_one(&self.pool)
            .await
        {
            Ok(version) => Ok(version),
            Err(sqlx::Error::Database(db)) if db.message().contains("no such table") => Ok(None),
            Err(e) => Err(map_sqlx("read the schema version", e)),
        }
    }

    /// Sets aside a claimed row that does not decode (C11), fenced by its lease token.
    async fn set_aside(
        &self,
        row: &sqlx::sqlite::SqliteRow,
        err: &StoreError,
    ) -> Result<(), StoreError> {
        let (seq, token) = lease_of(row)?;
        let reason = corrupt_reason(err);
        tracing::error!(
            seq,
            reason,
            "undecodable outbox event set aside with status \"corrupt\""
        );
        let _writing = self.writer.lock().await;
        sqlx::query(&self.queries.set_aside)
            .bind(now_millis())
            .bind(seq)
            .bind(&reason)
            .bind(token)
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("claim: set aside an undecodable event", e))?;
        Ok(())
    }
}

/// Enqueue in the caller's transaction (C1): pass `&mut *tx` of a `sqlx::Transaction<'_, Sqlite>`
/// (or any `SqliteConnection`).
#[async_trait]
impl EnqueueIn for SqliteStore {
    type Conn = SqliteConnection;

    async fn enqueue_batch_in(
        &self,
        conn: &mut SqliteConnection,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let payloads = events
            .iter()
            .map(|e| self.limits.encode(e))
            .collect::<Result<Vec<String>, StoreError>>()?;
        let now = now_millis();
        let mut out = Vec::with_capacity(events.len());
        for (event, payload) in events.into_iter().zip(payloads) {
            let done = sqlx::query(&self.queries.insert)
                .bind(now)
                .bind(event.id.to_string())
                .bind(&event.event_type)
                .bind(payload)
                .bind(&event.correlation_id)
                .bind(&event.ordering_key)
                .bind(&event.idempotency_key)
                .bind(event.available_at.map_or(now, to_millis))
                .bind(&event.traceparent)
                .execute(&mut *conn)
                .await
                .map_err(|e| map_sqlx("enqueue", e))?;
            if done.rows_affected() == 1 {
                out.push(Enqueued {
                    id: event.id,
                    duplicate: false,
                });
                continue;
            }
            let key = event.idempotency_key.as_deref().unwrap_or_default();
            let existing: String = sqlx::query_scalar(&self.queries.existing_key)
                .bind(key)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| map_sqlx("enqueue: look up idempotency key", e))?;
            let id = Uuid::parse_str(&existing).map_err(|e| StoreError::Corrupt {
                id: existing.clone(),
                message: e.to_string(),
            })?;
            out.push(Enqueued {
                id,
                duplicate: true,
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl ClaimStore for SqliteStore {
    fn capabilities(&self) -> StoreCapabilities {
        // SQLite cannot announce commits to other connections: workers poll.
        StoreCapabilities::default().with_transactional_enqueue(true)
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let rows = {
            let _writing = self.writer.lock().await;
            sqlx::query(&self.queries.claim)
                .bind(now_millis())
                .bind(i64::try_from(request.limit).unwrap_or(i64::MAX))
                .bind(&request.worker_id)
                .bind(millis(request.lease))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| map_sqlx("claim: lease", e))?
        };
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            match decode(row).and_then(ClaimedEvent::from_record) {
                Ok(event) => claimed.push(event),
                // A poison row is set aside on its own; the rest of the batch goes on (C11).
                Err(err) => self.set_aside(row, &err).await?,
            }
        }
        // RETURNING gives no order: due order, then creation order (C2).
        claimed.sort_by_key(|c| {
            let r = &c.record;
            (
                r.backoff_until
                    .map_or(r.available_at, |b| b.max(r.available_at)),
                r.created_at,
            )
        });
        Ok(claimed)
    }

    async fn renew_many(
        &self,
        leases: Vec<Lease>,
        extend: Duration,
    ) -> Vec<Result<DateTime<Utc>, StoreError>> {
        if leases.is_empty() {
            return Vec::new();
        }
        let items: Vec<serde_json::Value> = leases
            .iter()
            .map(|l| {
                serde_json::json!({
                    "id": l.event_id.to_string(),
                    "token": l.token.simple().to_string(),
                })
            })
            .collect();
        let writing = self.writer.lock().await;
        let renewed: Result<Vec<(String, i64)>, StoreError> = sqlx::query_as(&self.queries.renew)
            .bind(now_millis())
            .bind(millis(extend))
            .bind(serde_json::Value::Array(items).to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("renew lease", e));
        drop(writing);
        match renewed {
            Ok(rows) => {
                let renewed: HashMap<Uuid, DateTime<Utc>> = rows
                    .into_iter()
                    .filter_map(|(token, until)| {
                        Some((Uuid::parse_str(&token).ok()?, from_millis(until)))
                    })
                    .collect();
                renewal_results(&leases, &renewed)
            }
            Err(err) => leases.iter().map(|_| Err(err.replicate())).collect(),
        }
    }

    /// All completions in one `UPDATE … FROM json_each(…)` statement: SQLite has one writer at a
    /// time, so one statement for N completions costs far less than N.
    async fn complete_many(&self, items: &[(Lease, Completion)]) -> Vec<Result<(), StoreError>> {
        if items.is_empty() {
            return Vec::new();
        }
        let tokens: HashMap<Uuid, Uuid> = items
            .iter()
            .map(|(lease, _)| (lease.event_id, lease.token))
            .collect();
        let batch = CompletionBatch::new(items);
        let rows: Vec<serde_json::Value> = batch
            .rows()
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.event_id.to_string(),
                    "token": r.token.simple().to_string(),
                    "status": r.status.as_str(),
                    "results": r.results_json,
                    "attempts": r.attempts,
                    "delay": r.retry_delay_ms,
                })
            })
            .collect();
        let writing = self.writer.lock().await;
        let done: Result<Vec<String>, StoreError> = sqlx::query_scalar(&self.queries.complete)
            .bind(now_millis())
            .bind(serde_json::Value::Array(rows).to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("complete", e));
        drop(writing);
        match done {
            // RETURNING names the updated rows' ids (SQLite cannot return the FROM side's token):
            // each applied id stands for the token it was sent with.
            Ok(ids) => {
                let applied: HashSet<Uuid> = ids
                    .iter()
                    .filter_map(|id| tokens.get(&Uuid::parse_str(id).ok()?).copied())
                    .collect();
                batch.results(&applied)
            }
            Err(err) => batch.failed(&err),
        }
    }

    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError> {
        Ok(None)
    }

    fn transactions(&self) -> Option<Arc<dyn outbox_core::store::Transactions>> {
        Some(outbox_core::store::transactions_of(self.clone()))
    }
}

#[async_trait]
impl EnqueueStore for SqliteStore {
    async fn enqueue_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        let _writing = self.writer.lock().await;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| map_sqlx("enqueue: begin", e))?;
        let out = self.enqueue_batch_in(&mut tx, events).await?;
        tx.commit()
            .await
            .map_err(|e| map_sqlx("enqueue: commit", e))?;
        Ok(out)
    }
}

#[async_trait]
impl InspectStore for SqliteStore {
    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let Some(row) = sqlx::query(&self.queries.get)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_sqlx("get", e))?
        else {
            return Ok(None);
        };
        let status: &str = row.try_get(11).map_err(|e| map_sqlx("get", e))?;
        if status == outbox_core::kit::CORRUPT_STATUS {
            let reason: Option<String> = row.try_get(18).map_err(|e| map_sqlx("get", e))?;
            return Err(StoreError::Corrupt {
                id: id.to_string(),
                message: format!(
                    "set aside because it does not decode ({}); fix it and call requeue_corrupt",
                    reason.unwrap_or_default()
                ),
            });
        }
        decode(&row).map(Some)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(&self.queries.dead_letters)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("dead letters", e))?;
        Ok(outbox_core::kit::decodable(
            "dead letters",
            rows.iter().map(decode),
        ))
    }

    async fn corrupt_events(&self, limit: usize) -> Result<Vec<CorruptEvent>, StoreError> {
        let rows: Vec<(String, String, Option<String>, Option<i64>)> =
            sqlx::query_as(&self.queries.corrupt_events)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| map_sqlx("corrupt events", e))?;
        Ok(rows
            .into_iter()
            .map(|(id, event_type, reason, at)| {
                CorruptEvent::new(id, reason.unwrap_or_default())
                    .with_event_type(Some(event_type))
                    .with_set_aside_at(at.map(from_millis))
            })
            .collect())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = now_millis();
        let row = sqlx::query(&self.queries.stats)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_sqlx("stats", e))?;
        let count = |i: usize| -> Result<u64, StoreError> {
            let n: i64 = row.try_get(i).map_err(|e| map_sqlx("stats: decode", e))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        let oldest: Option<i64> = row.try_get(6).map_err(|e| map_sqlx("stats: decode", e))?;
        let lag = age(now, oldest);
        Ok(
            StoreStats::new(count(0)?, count(1)?, count(2)?, count(3)?, count(4)?, lag)
                .with_corrupt(count(5)?),
        )
    }

    async fn stats_by_type(&self) -> Result<Vec<TypeStats>, StoreError> {
        let now = now_millis();
        let rows = sqlx::query(&self.queries.stats_by_type)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("stats by type", e))?;
        rows.iter()
            .map(|row| {
                let decode = |e| map_sqlx("stats by type: decode", e);
                let count = |i: usize| -> Result<u64, StoreError> {
                    let n: i64 = row.try_get(i).map_err(decode)?;
                    Ok(u64::try_from(n).unwrap_or(0))
                };
                let event_type: String = row.try_get(0).map_err(decode)?;
                let oldest: Option<i64> = row.try_get(5).map_err(decode)?;
                Ok(TypeStats::new(event_type)
                    .with_counts(count(1)?, count(2)?, count(3)?, count(4)?)
                    .with_oldest_due_age(age(now, oldest)))
            })
            .collect()
    }

    async fn key_head(&self, key: &str) -> Result<Option<EventRecord>, StoreError> {
        sqlx::query(&self.queries.key_head)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_sqlx("key head", e))?
            .as_ref()
            .map(decode)
            .transpose()
    }

    async fn lag(&self) -> Result<Duration, StoreError> {
        let now = now_millis();
        let oldest: Option<i64> = sqlx::query_scalar(&self.queries.lag)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_sqlx("lag", e))?;
        Ok(age(now, oldest))
    }
}

#[async_trait]
impl RepairStore for SqliteStore {
    async fn requeue_dead(&self, id: Uuid) -> Result<bool, StoreError> {
        let Some(record) = self
            .get(id)
            .await?
            .filter(|r| r.status == EventStatus::Dead)
        else {
            return Ok(false);
        };
        let mut results = record.handler_results;
        outbox_core::kit::reset_unfinished_handlers(&mut results);
        let results = serde_json::to_string(&results)
            .map_err(|e| StoreError::invalid(format!("handler results do not serialize: {e}")))?;
        let done = sqlx::query(&self.queries.requeue_dead)
            .bind(now_millis())
            .bind(id.to_string())
            .bind(results)
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("requeue", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge_dead(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        self.purge(EventStatus::Dead, older_than).await
    }

    async fn purge_processed(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        self.purge(EventStatus::Processed, older_than).await
    }

    async fn requeue_corrupt(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.queries.requeue_corrupt)
            .bind(now_millis())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("requeue corrupt", e))?;
        Ok(done.rows_affected() == 1)
    }
}

impl SqliteStore {
    async fn purge(
        &self,
        status: EventStatus,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(&self.queries.purge)
            .bind(status.as_str())
            .bind(to_millis(older_than))
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("purge", e))?;
        Ok(done.rows_affected())
    }
}
