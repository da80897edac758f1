//! [`SqliteStore`]: the `Store` implementation, and enqueue inside the caller's own transaction (C1).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outbox_core::kit::{CompletionBatch, corrupt_reason, millis, renewal_results};
use outbox_core::store::{ClaimRequest, ClaimedEvent, Completion, Lease, WakeupStream};
use outbox_core::store::{ClaimStore, EnqueueIn, EnqueueStore, Schema};
use outbox_core::{Enqueued, Limits, NewEvent, StoreError};
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;

use crate::config::{SqliteStoreBuilder, open_pool};
use crate::error::map_sqlx;
use crate::queries::Queries;
use crate::row::{decode, from_millis, lease_of, now_millis, to_millis};

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
    pub(crate) pool: SqlitePool,
    pub(crate) queries: Arc<Queries>,
    pub(crate) limits: Limits,
    /// Taken around the store's own writes (claims, renewals, completions, set-asides, enqueues
    /// outside a caller's transaction), shared by every clone. SQLite admits one writer at a time
    /// and makes the others retry after sleeps that grow to tens of milliseconds; queueing this
    /// process's writers here instead turns that busy-waiting into a hand-off. Writers in other
    /// processes, and callers' own transactions, still meet the busy timeout.
    pub(crate) writer: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("table", &self.queries.table)
            .finish_non_exhaustive()
    }
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

impl SqliteStore {}
