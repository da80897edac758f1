//! [`SqliteStore`]: the `Store` implementation, and enqueue inside the caller's own transaction (C1).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outbox_core::{
    ClaimRequest, ClaimedEvent, Completion, Enqueued, EventRecord, EventStatus, Lease, NewEvent,
    Store, StoreCapabilities, StoreError, StoreStats, WakeupStream,
};
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use crate::config::{SqliteStoreBuilder, open_pool};
use crate::error::map_sqlx;
use crate::queries::Queries;
use crate::row::{decode, from_millis, now_millis, to_millis};

/// An outbox in a SQLite database. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
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

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` with settings fit for several
    /// processes (WAL, 10 s busy timeout), and creates the table `outbox_events`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let store = Self::new(open_pool(path.as_ref()).await?);
        store.migrate().await?;
        Ok(store)
    }

    /// A store on table `outbox_events` of a pool you configured.
    pub fn new(pool: SqlitePool) -> Self {
        Self::from_parts(pool, Arc::new(Queries::new("outbox_events")))
    }

    /// A builder to choose the table name.
    pub fn builder(pool: SqlitePool) -> SqliteStoreBuilder {
        SqliteStoreBuilder::new(pool)
    }

    pub(crate) fn from_parts(pool: SqlitePool, queries: Arc<Queries>) -> Self {
        Self { pool, queries }
    }

    /// The pool this store uses.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Creates the table and indexes if missing (C10); idempotent. The statements are those of
    /// [`schema_sql`](crate::schema_sql).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let script = crate::schema::schema_sql(&self.queries.table).join(";\n");
        sqlx::raw_sql(&script)
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("migrate", e))?;
        Ok(())
    }

    /// Enqueues one event inside the caller's transaction (pass `&mut tx`). It becomes claimable when
    /// the caller commits and never exists if it rolls back.
    pub async fn enqueue_in(
        &self,
        conn: &mut SqliteConnection,
        event: NewEvent,
    ) -> Result<Enqueued, StoreError> {
        let mut out = self.enqueue_batch_in(conn, vec![event]).await?;
        out.pop()
            .ok_or_else(|| StoreError::invalid("no result for the enqueued event"))
    }

    /// Enqueues many events inside the caller's transaction.
    pub async fn enqueue_batch_in(
        &self,
        conn: &mut SqliteConnection,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        for event in &events {
            event.validate()?;
        }
        let now = now_millis();
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let payload = serde_json::to_string(&event.payload)
                .map_err(|e| StoreError::invalid(format!("payload does not serialize: {e}")))?;
            let done = sqlx::query(&self.queries.insert)
                .bind(event.id.to_string())
                .bind(&event.event_type)
                .bind(payload)
                .bind(&event.correlation_id)
                .bind(&event.ordering_key)
                .bind(&event.idempotency_key)
                .bind(now)
                .bind(event.available_at.map_or(now, to_millis))
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
impl Store for SqliteStore {
    fn capabilities(&self) -> StoreCapabilities {
        // SQLite cannot announce commits to other connections: workers poll.
        StoreCapabilities::default().with_transactional_enqueue(true)
    }

    async fn enqueue_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
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

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&self.queries.claim)
            .bind(now_millis())
            .bind(i64::try_from(request.limit).unwrap_or(i64::MAX))
            .bind(&request.worker_id)
            .bind(millis(request.lease))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("claim", e))?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row
                .try_get("seq")
                .map_err(|e| map_sqlx("claim: decode", e))?;
            let record = decode(row)?;
            let (Some(token), Some(locked_until)) = (record.lease_token, record.locked_until)
            else {
                return Err(StoreError::Corrupt {
                    id: record.id.to_string(),
                    message: "claimed without a lease".into(),
                });
            };
            claimed.push((
                seq,
                ClaimedEvent {
                    lease: Lease {
                        event_id: record.id,
                        token,
                    },
                    locked_until,
                    record,
                },
            ));
        }
        claimed.sort_by_key(|(seq, _)| *seq);
        Ok(claimed.into_iter().map(|(_, c)| c).collect())
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        extend: Duration,
    ) -> Result<DateTime<Utc>, StoreError> {
        sqlx::query_scalar::<_, i64>(&self.queries.renew)
            .bind(now_millis())
            .bind(lease.event_id.to_string())
            .bind(lease.token.simple().to_string())
            .bind(millis(extend))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_sqlx("renew lease", e))?
            .map(from_millis)
            .ok_or(StoreError::LeaseLost {
                event_id: lease.event_id,
            })
    }

    async fn complete(&self, lease: &Lease, completion: Completion) -> Result<(), StoreError> {
        let results = serde_json::to_string(&completion.handler_results)
            .map_err(|e| StoreError::invalid(format!("handler results do not serialize: {e}")))?;
        let done = sqlx::query(&self.queries.complete)
            .bind(now_millis())
            .bind(lease.event_id.to_string())
            .bind(lease.token.simple().to_string())
            .bind(completion.status.as_str())
            .bind(results)
            .bind(i64::from(completion.attempts))
            .bind(completion.retry_delay.map(millis))
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("complete", e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::LeaseLost {
                event_id: lease.event_id,
            });
        }
        Ok(())
    }

    /// All completions in one `UPDATE … FROM json_each(…)` statement: SQLite has one writer at a
    /// time, so one statement for N completions costs far less than N.
    async fn complete_many(&self, items: Vec<(Lease, Completion)>) -> Vec<Result<(), StoreError>> {
        if items.len() <= 1 {
            return outbox_core::complete_each(self, items).await;
        }
        let mut invalid = std::collections::HashMap::new();
        let mut batch = Vec::with_capacity(items.len());
        for (lease, completion) in &items {
            match serde_json::to_string(&completion.handler_results) {
                Ok(results) => batch.push(serde_json::json!({
                    "id": lease.event_id.to_string(),
                    "token": lease.token.simple().to_string(),
                    "status": completion.status.as_str(),
                    "results": results,
                    "attempts": completion.attempts,
                    "delay": completion.retry_delay.map(millis),
                })),
                Err(e) => {
                    invalid.insert(
                        lease.event_id,
                        format!("handler results do not serialize: {e}"),
                    );
                }
            }
        }
        let done: Result<Vec<String>, StoreError> = sqlx::query_scalar(&self.queries.complete_many)
            .bind(now_millis())
            .bind(serde_json::Value::Array(batch).to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("complete", e));
        let done: std::collections::HashSet<String> = match done {
            Ok(ids) => ids.into_iter().collect(),
            Err(err) => {
                // One failure for the whole statement: nothing was applied, every item failed alike.
                return items.iter().map(|_| Err(err.replicate())).collect();
            }
        };
        items
            .iter()
            .map(|(lease, _)| {
                if let Some(message) = invalid.remove(&lease.event_id) {
                    Err(StoreError::invalid(message))
                } else if done.contains(&lease.event_id.to_string()) {
                    Ok(())
                } else {
                    Err(StoreError::LeaseLost {
                        event_id: lease.event_id,
                    })
                }
            })
            .collect()
    }

    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let row = sqlx::query(&self.queries.get)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_sqlx("get", e))?;
        row.as_ref().map(decode).transpose()
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        sqlx::query(&self.queries.dead_letters)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("dead letters", e))?
            .iter()
            .map(decode)
            .collect()
    }

    async fn requeue_dead(&self, id: Uuid) -> Result<bool, StoreError> {
        let Some(record) = self
            .get(id)
            .await?
            .filter(|r| r.status == EventStatus::Dead)
        else {
            return Ok(false);
        };
        let mut results = record.handler_results;
        outbox_core::reset_unfinished_handlers(&mut results);
        let results = serde_json::to_string(&results)
            .map_err(|e| StoreError::invalid(format!("handler results do not serialize: {e}")))?;
        let done = sqlx::query(&self.queries.requeue)
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
        let oldest: Option<i64> = row.try_get(5).map_err(|e| map_sqlx("stats: decode", e))?;
        let lag = oldest.map_or(Duration::ZERO, |t| {
            Duration::from_millis(u64::try_from(now - t).unwrap_or(0))
        });
        Ok(StoreStats::new(
            count(0)?,
            count(1)?,
            count(2)?,
            count(3)?,
            count(4)?,
            lag,
        ))
    }

    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError> {
        Ok(None)
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
