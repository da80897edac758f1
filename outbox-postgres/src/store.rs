//! [`PgStore`]: the `Store` implementation, and enqueue inside the caller's own transaction (C1).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outbox_core::kit::{CompletionBatch, corrupt_reason, millis, renewal_results};
use outbox_core::store::{ClaimRequest, ClaimedEvent, Completion, HandOff, Lease, WakeupStream};
use outbox_core::store::{ClaimStore, EnqueueIn, EnqueueStore};
use outbox_core::{Enqueued, Limits, NewEvent, StoreError};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::claim_window::ClaimWindow;
use crate::config::{PgStoreBuilder, Retention};
use crate::error::map_sqlx;
use crate::queries::Queries;
use crate::row::{decode, lease_of};

/// An outbox on a PostgreSQL table. Cheap to clone (a pool handle and the prepared SQL).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use outbox_core::prelude::*;
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
    pub(crate) pool: PgPool,
    pub(crate) queries: Arc<Queries>,
    pub(crate) limits: Limits,
    pub(crate) retention: Retention,
    /// Whether claims walk the whole due index or a window of it (shared by clones).
    pub(crate) claim_window: Arc<ClaimWindow>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.queries.schema)
            .field("table", &self.queries.table)
            .field("retention", &self.retention)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// A store on `public.outbox_events`, keeping processed events, with the default
    /// [`Limits`].
    pub fn new(pool: PgPool) -> Self {
        Self::from_parts(
            pool,
            Arc::new(Queries::new("public", "outbox_events")),
            Limits::default(),
            Retention::default(),
        )
    }

    /// A builder to choose the schema and table.
    pub fn builder(pool: PgPool) -> PgStoreBuilder {
        PgStoreBuilder::new(pool)
    }

    pub(crate) fn from_parts(
        pool: PgPool,
        queries: Arc<Queries>,
        limits: Limits,
        retention: Retention,
    ) -> Self {
        Self {
            pool,
            queries,
            limits,
            retention,
            claim_window: Arc::default(),
        }
    }

    /// The statements of this store's table.
    pub(crate) fn queries(&self) -> &Queries {
        &self.queries
    }

    /// The pool this store uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema and table names of this store.
    ///
    /// ```no_run
    /// # fn demo(pool: sqlx::PgPool) -> Result<(), outbox_core::ConfigError> {
    /// let store = outbox_postgres::PgStore::builder(pool).schema("billing").build()?;
    /// assert_eq!(store.names(), ("billing", "outbox_events"));
    /// # Ok(()) }
    /// ```
    pub fn names(&self) -> (&str, &str) {
        (&self.queries.schema, &self.queries.table)
    }

    /// Reclaims the space of the rows that claims, completions and purges left behind
    /// (`VACUUM (ANALYZE)` of the outbox table), and refreshes the planner's statistics.
    /// PostgreSQL's autovacuum does this by itself; call it after purges on a server where
    /// autovacuum is off, or the table grows without bound (each event leaves about three dead row
    /// versions: claim, completion, purge).
    ///
    /// ```no_run
    /// # async fn demo(store: outbox_postgres::PgStore) -> Result<(), outbox_core::StoreError> {
    /// use outbox_core::prelude::*;
    /// use outbox_core::Store;
    /// store.purge_processed(chrono::Utc::now() - chrono::Duration::hours(1)).await?;
    /// store.vacuum().await?;
    /// # Ok(()) }
    /// ```
    pub async fn vacuum(&self) -> Result<(), StoreError> {
        let q = &self.queries;
        sqlx::raw_sql(&format!(
            "VACUUM (ANALYZE) \"{}\".\"{}\"",
            q.schema, q.table
        ))
        .execute(&self.pool)
        .await
        .map_err(|e| map_sqlx("vacuum", e))?;
        Ok(())
    }

    /// The limits enqueued events are checked against (C11).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// Enqueue in the caller's transaction (C1): pass `&mut *tx` of a `sqlx::Transaction<'_, Postgres>`
/// (or any `PgConnection`). Many events take one round trip (two when some idempotency keys already
/// exist).
#[async_trait]
impl EnqueueIn for PgStore {
    type Conn = PgConnection;

    async fn enqueue_batch_in(
        &self,
        conn: &mut PgConnection,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        insert(&self.queries, &self.limits, conn, events).await
    }
}

pub(crate) async fn insert(
    q: &Queries,
    limits: &Limits,
    conn: &mut PgConnection,
    events: Vec<NewEvent>,
) -> Result<Vec<Enqueued>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let payloads = events
        .iter()
        .map(|e| limits.encode(e))
        .collect::<Result<Vec<String>, StoreError>>()?;
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let inserted: HashSet<Uuid> = if let [event] = events.as_slice() {
        sqlx::query_scalar::<_, Uuid>(&q.insert_one)
            .bind(event.id)
            .bind(&event.event_type)
            .bind(&payloads[0])
            .bind(event.correlation_id.as_deref())
            .bind(event.ordering_key.as_deref())
            .bind(event.idempotency_key.as_deref())
            .bind(event.available_at)
            .bind(event.traceparent.as_deref())
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| map_sqlx("enqueue", e))?
            .into_iter()
            .collect()
    } else {
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let correlations: Vec<Option<&str>> =
            events.iter().map(|e| e.correlation_id.as_deref()).collect();
        let orderings: Vec<Option<&str>> =
            events.iter().map(|e| e.ordering_key.as_deref()).collect();
        let keys: Vec<Option<&str>> = events
            .iter()
            .map(|e| e.idempotency_key.as_deref())
            .collect();
        let available: Vec<Option<DateTime<Utc>>> = events.iter().map(|e| e.available_at).collect();
        let traceparents: Vec<Option<&str>> =
            events.iter().map(|e| e.traceparent.as_deref()).collect();
        let keyed = orderings.iter().any(Option::is_some);
        sqlx::query_scalar::<_, Uuid>(if keyed { &q.insert } else { &q.insert_unkeyed })
            .bind(&ids)
            .bind(&types)
            .bind(&payloads)
            .bind(&correlations)
            .bind(&orderings)
            .bind(&keys)
            .bind(&available)
            .bind(&traceparents)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| map_sqlx("enqueue", e))?
            .into_iter()
            .collect()
    };
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
impl ClaimStore for PgStore {
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        // A prepared statement (one round trip per claim, not two): it only calls the claim
        // function, whose own statements PL/pgSQL plans (with custom plans while a generic one
        // would cost more), so a plan cached here cannot go stale as the table grows.
        let began = tokio::time::Instant::now();
        let walk = self.claim_window.next(began, Utc::now());
        let rows = sqlx::query(&self.queries.claim)
            .bind(i64::try_from(request.limit).unwrap_or(i64::MAX))
            .bind(&request.worker_id)
            .bind(millis(request.lease))
            .bind(walk.since())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("claim", e))?;
        let took = began.elapsed();
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            match decode(row).and_then(ClaimedEvent::from_record) {
                Ok(event) => claimed.push(event),
                // A poison row is set aside on its own; the rest of the batch goes on (C11).
                Err(err) => self.set_aside(row, &err).await?,
            }
        }
        outbox_core::kit::sort_in_due_order(&mut claimed);
        // The earliest due time taken (a lease-expired event's was later than this: a lower
        // floor walks more, never less).
        let earliest = claimed
            .iter()
            .map(|c| {
                let r = &c.record;
                r.backoff_until
                    .map_or(r.available_at, |b| b.max(r.available_at))
            })
            .min();
        self.claim_window
            .record(walk, began, took, rows.len(), earliest);
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
        let ids: Vec<Uuid> = leases.iter().map(|l| l.event_id).collect();
        let tokens: Vec<Uuid> = leases.iter().map(|l| l.token).collect();
        let renewed = sqlx::query_as::<_, (Uuid, DateTime<Utc>)>(&self.queries.renew)
            .bind(ids)
            .bind(tokens)
            .bind(millis(extend))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("renew lease", e));
        match renewed {
            Ok(rows) => renewal_results(&leases, &rows.into_iter().collect()),
            Err(err) => leases.iter().map(|_| Err(err.replicate())).collect(),
        }
    }

    async fn complete_many(&self, items: &[(Lease, Completion)]) -> Vec<Result<(), StoreError>> {
        self.complete_rows(items, None).await.results
    }

    async fn complete_and_hand_off(
        &self,
        items: &[(Lease, Completion)],
        next: &ClaimRequest,
    ) -> HandOff {
        self.complete_rows(items, Some(next)).await
    }

    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError> {
        crate::wakeup::subscribe(&self.pool, &self.queries.channel)
            .await
            .map(Some)
    }

    fn transactions(&self) -> Option<Arc<dyn outbox_core::store::Transactions>> {
        Some(outbox_core::store::transactions_of(self.clone()))
    }
}

#[async_trait]
impl EnqueueStore for PgStore {
    async fn enqueue_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| map_sqlx("enqueue: connect", e))?;
        insert(&self.queries, &self.limits, &mut conn, events).await
    }
}

/// A non-negative number of seconds as a duration.
pub(crate) fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or_default()
}

impl PgStore {
    /// Writes completions in one call of the completion function; with `next`, the function also
    /// leases the finished keys' next events to `next.worker_id` (see `schema.rs`).
    async fn complete_rows(
        &self,
        items: &[(Lease, Completion)],
        next: Option<&ClaimRequest>,
    ) -> HandOff {
        if items.is_empty() {
            return HandOff::new(Vec::new(), Vec::new());
        }
        let batch = CompletionBatch::new(items);
        let rows = batch.rows();
        let ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
        let tokens: Vec<Uuid> = rows.iter().map(|r| r.token).collect();
        let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
        let results: Vec<&str> = rows.iter().map(|r| r.results_json.as_str()).collect();
        let attempts: Vec<i32> = rows
            .iter()
            .map(|r| i32::try_from(r.attempts).unwrap_or(i32::MAX))
            .collect();
        let delays: Vec<Option<i64>> = rows.iter().map(|r| r.retry_delay_ms).collect();
        let answer = sqlx::query(&self.queries.complete)
            .bind(ids)
            .bind(tokens)
            .bind(statuses)
            .bind(results)
            .bind(attempts)
            .bind(delays)
            .bind(self.retention == Retention::DeleteProcessed)
            .bind(next.map(|n| n.worker_id.as_str()))
            .bind(next.map_or(0, |n| millis(n.lease)))
            .bind(next.map_or(0, |n| i32::try_from(n.limit).unwrap_or(i32::MAX)))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("complete", e));
        let rows = match answer {
            Ok(rows) => rows,
            Err(err) => return HandOff::new(batch.failed(&err), Vec::new()),
        };
        let mut lost = HashSet::new();
        let mut next_events = Vec::new();
        for row in &rows {
            if let Ok(Some(token)) = row.try_get::<Option<Uuid>, _>(crate::row::LOST) {
                lost.insert(token);
                continue;
            }
            match decode(row).and_then(ClaimedEvent::from_record) {
                Ok(event) => next_events.push(event),
                Err(err) => {
                    // A poison row is set aside on its own (C11); the completions stand.
                    if let Err(e) = self.set_aside(row, &err).await {
                        tracing::error!(error = %e, "setting aside a handed-off event failed; it is redelivered after its lease");
                    }
                }
            }
        }
        HandOff::new(batch.results_except(&lost), next_events)
    }

    /// Sets aside a claimed row that does not decode (C11), fenced by its lease token.
    async fn set_aside(
        &self,
        row: &sqlx::postgres::PgRow,
        err: &StoreError,
    ) -> Result<(), StoreError> {
        let (id, token) = lease_of(row)?;
        let reason = corrupt_reason(err);
        tracing::error!(event_id = %id, reason, "undecodable outbox event set aside with status \"corrupt\"");
        sqlx::query(&self.queries.set_aside)
            .bind(id)
            .bind(token)
            .bind(&reason)
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("claim: set aside an undecodable event", e))?;
        Ok(())
    }
}
