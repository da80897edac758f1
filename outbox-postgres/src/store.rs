//! [`PgStore`]: the `Store` implementation, and enqueue inside the caller's own transaction (C1).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outbox_core::{
    ClaimRequest, ClaimedEvent, Completion, Enqueued, EventRecord, EventStatus, Lease, NewEvent,
    Store, StoreCapabilities, StoreError, StoreStats, WakeupStream,
};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::config::PgStoreBuilder;
use crate::error::map_sqlx;
use crate::queries::Queries;
use crate::row::decode;

/// An outbox on a PostgreSQL table. Cheap to clone (a pool handle and the prepared SQL).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use outbox_core::NewEvent;
/// use outbox_postgres::PgStore;
///
/// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/app").await?;
/// let store = PgStore::new(pool.clone());
/// store.migrate().await?;
///
/// let mut tx = pool.begin().await?;
/// sqlx::query("INSERT INTO users (email) VALUES ($1)").bind("ada@example.com").execute(&mut *tx).await?;
/// store.enqueue_in(&mut tx, NewEvent::new("UserInvited", serde_json::json!({"email": "ada@example.com"}))).await?;
/// tx.commit().await?; // the user and the event exist together, or neither does
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    queries: Arc<Queries>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.queries.schema)
            .field("table", &self.queries.table)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PgStore {
    /// A store on `public.outbox_events`.
    pub fn new(pool: PgPool) -> Self {
        Self::from_parts(pool, Arc::new(Queries::new("public", "outbox_events")))
    }

    /// A builder to choose the schema and table.
    pub fn builder(pool: PgPool) -> PgStoreBuilder {
        PgStoreBuilder::new(pool)
    }

    pub(crate) fn from_parts(pool: PgPool, queries: Arc<Queries>) -> Self {
        Self { pool, queries }
    }

    /// The pool this store uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates or updates the schema, table, indexes and notify trigger (C10). Idempotent and safe to
    /// run from many processes at once (serialized by an advisory lock). The statements are those of
    /// [`schema_sql`](crate::schema_sql).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let q = &self.queries;
        // One simple-query string runs as one implicit transaction; the advisory lock serializes
        // concurrent migrations of this table. Names were validated, so they are safe to inline.
        let mut script = format!(
            "SELECT pg_advisory_xact_lock(hashtext('outbox-migrate:{}.{}'));\n",
            q.schema, q.table
        );
        script.push_str(&crate::schema::schema_sql(&q.schema, &q.table).join(";\n"));
        sqlx::raw_sql(&script)
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("migrate", e))?;
        Ok(())
    }

    /// Enqueues one event inside the caller's transaction or connection (C1): pass `&mut tx` of a
    /// `sqlx::Transaction<'_, Postgres>`. The event becomes claimable when the caller commits and
    /// never exists if it rolls back.
    pub async fn enqueue_in(
        &self,
        conn: &mut PgConnection,
        event: NewEvent,
    ) -> Result<Enqueued, StoreError> {
        let mut out = self.enqueue_batch_in(conn, vec![event]).await?;
        out.pop()
            .ok_or_else(|| StoreError::invalid("no result for the enqueued event"))
    }

    /// Enqueues many events inside the caller's transaction in one round trip (two when some
    /// idempotency keys already exist).
    pub async fn enqueue_batch_in(
        &self,
        conn: &mut PgConnection,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        insert(&self.queries, conn, events).await
    }
}

async fn insert(
    q: &Queries,
    conn: &mut PgConnection,
    events: Vec<NewEvent>,
) -> Result<Vec<Enqueued>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    for event in &events {
        event.validate()?;
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let payloads: Vec<&serde_json::Value> = events.iter().map(|e| &e.payload).collect();
    let correlations: Vec<Option<&str>> =
        events.iter().map(|e| e.correlation_id.as_deref()).collect();
    let orderings: Vec<Option<&str>> = events.iter().map(|e| e.ordering_key.as_deref()).collect();
    let keys: Vec<Option<&str>> = events
        .iter()
        .map(|e| e.idempotency_key.as_deref())
        .collect();
    let available: Vec<Option<DateTime<Utc>>> = events.iter().map(|e| e.available_at).collect();
    let inserted: HashSet<Uuid> = sqlx::query_scalar::<_, Uuid>(&q.insert)
        .bind(&ids)
        .bind(&types)
        .bind(&payloads)
        .bind(&correlations)
        .bind(&orderings)
        .bind(&keys)
        .bind(&available)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| map_sqlx("enqueue", e))?
        .into_iter()
        .collect();
    if inserted.len() == events.len() {
        return Ok(ids
            .into_iter()
            .map(|id| Enqueued {
                id,
                duplicate: false,
            })
            .collect());
    }
    let skipped_keys: Vec<&str> = events
        .iter()
        .filter(|e| !inserted.contains(&e.id))
        .filter_map(|e| e.idempotency_key.as_deref())
        .collect();
    let existing: HashMap<String, Uuid> = sqlx::query(&q.existing_keys)
        .bind(&skipped_keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| map_sqlx("enqueue: look up idempotency keys", e))?
        .iter()
        .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<Uuid, _>(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(|e| map_sqlx("enqueue: decode idempotency keys", e))?;
    events
        .iter()
        .map(|e| {
            if inserted.contains(&e.id) {
                return Ok(Enqueued { id: e.id, duplicate: false });
            }
            e.idempotency_key
                .as_ref()
                .and_then(|k| existing.get(k))
                .map(|id| Enqueued { id: *id, duplicate: true })
                .ok_or_else(|| StoreError::Conflict {
                    message: format!(
                        "event {} was not stored and no event holds its idempotency key (a concurrent transaction may still be deciding)",
                        e.id
                    ),
                })
        })
        .collect()
}

#[async_trait]
impl Store for PgStore {
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::default()
            .with_wakeups(true)
            .with_transactional_enqueue(true)
    }

    async fn enqueue_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| map_sqlx("enqueue: connect", e))?;
        insert(&self.queries, &mut conn, events).await
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        // Not kept as a prepared statement: a generic plan cached while the table was small can
        // stay slow once a backlog builds up; a fresh plan per claim costs far less.
        let rows = sqlx::query(&self.queries.claim)
            .persistent(false)
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
        sqlx::query_scalar::<_, DateTime<Utc>>(&self.queries.renew)
            .bind(lease.event_id)
            .bind(lease.token)
            .bind(millis(extend))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_sqlx("renew lease", e))?
            .ok_or(StoreError::LeaseLost {
                event_id: lease.event_id,
            })
    }

    async fn complete(&self, lease: &Lease, completion: Completion) -> Result<(), StoreError> {
        let results = serde_json::to_value(&completion.handler_results)
            .map_err(|e| StoreError::invalid(format!("handler results do not serialize: {e}")))?;
        let done = sqlx::query(&self.queries.complete)
            .bind(lease.event_id)
            .bind(lease.token)
            .bind(completion.status.as_str())
            .bind(results)
            .bind(i32::try_from(completion.attempts).unwrap_or(i32::MAX))
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

    async fn complete_many(&self, items: Vec<(Lease, Completion)>) -> Vec<Result<(), StoreError>> {
        if items.len() <= 1 {
            return outbox_core::complete_each(self, items).await;
        }
        let mut ids = Vec::with_capacity(items.len());
        let mut tokens = Vec::with_capacity(items.len());
        let mut statuses = Vec::with_capacity(items.len());
        let mut results = Vec::with_capacity(items.len());
        let mut attempts = Vec::with_capacity(items.len());
        let mut delays = Vec::with_capacity(items.len());
        let mut invalid = std::collections::HashMap::new();
        for (lease, completion) in &items {
            match serde_json::to_value(&completion.handler_results) {
                Ok(value) => results.push(value),
                Err(e) => {
                    invalid.insert(
                        lease.event_id,
                        format!("handler results do not serialize: {e}"),
                    );
                    continue;
                }
            }
            ids.push(lease.event_id);
            tokens.push(lease.token);
            statuses.push(completion.status.as_str());
            attempts.push(i32::try_from(completion.attempts).unwrap_or(i32::MAX));
            delays.push(completion.retry_delay.map(millis));
        }
        let done: Result<Vec<Uuid>, StoreError> = sqlx::query_scalar(&self.queries.complete_many)
            .bind(ids)
            .bind(tokens)
            .bind(statuses)
            .bind(results)
            .bind(attempts)
            .bind(delays)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("complete", e));
        let done: std::collections::HashSet<Uuid> = match done {
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
                } else if done.contains(&lease.event_id) {
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
            .bind(id)
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
        let results = serde_json::to_value(&results)
            .map_err(|e| StoreError::invalid(format!("handler results do not serialize: {e}")))?;
        let done = sqlx::query(&self.queries.requeue)
            .bind(id)
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
        let row = sqlx::query(&self.queries.stats)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_sqlx("stats", e))?;
        let count = |i: usize| -> Result<u64, StoreError> {
            let n: i64 = row.try_get(i).map_err(|e| map_sqlx("stats: decode", e))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        let lag: f64 = row.try_get(5).map_err(|e| map_sqlx("stats: decode", e))?;
        Ok(StoreStats::new(
            count(0)?,
            count(1)?,
            count(2)?,
            count(3)?,
            count(4)?,
            Duration::try_from_secs_f64(lag.max(0.0)).unwrap_or_default(),
        ))
    }

    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError> {
        crate::wakeup::subscribe(&self.pool, &self.queries.channel)
            .await
            .map(Some)
    }
}

impl PgStore {
    async fn purge(
        &self,
        status: EventStatus,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(&self.queries.purge)
            .bind(status.as_str())
            .bind(older_than)
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("purge", e))?;
        Ok(done.rows_affected())
    }
}
