//! [`MongoStore`]: the `Store` implementation, and enqueue inside the caller's session transaction.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Client, ClientSession, Collection, IndexModel};
use outbox_core::kit::corrupt_reason;
use outbox_core::model::CorruptEvent;
use outbox_core::store::{
    ClaimRequest, ClaimedEvent, Completion, Lease, StoreCapabilities, StoreStats, TypeStats,
    WakeupStream,
};
use outbox_core::store::{ClaimStore, EnqueueIn, EnqueueStore, InspectStore, RepairStore};
use outbox_core::{Enqueued, EventRecord, EventStatus, Limits, NewEvent, StoreError};
use uuid::Uuid;

use crate::config::MongoStoreBuilder;
use crate::error::{DUPLICATE_KEY, code, map_mongo};
use crate::row::{decode, encode_new, never, parked, to_bson_time};

/// The status of documents set aside because they do not decode (see [`MongoStore::set_aside`]).
pub(crate) const CORRUPT: &str = outbox_core::kit::CORRUPT_STATUS;

/// Documents set aside (status `corrupt`) or of a status the store never writes (written by hand
/// or another program, not swept yet): what `corrupt_events`, `stats` and `requeue_corrupt` see
/// as set aside, through the status index's bounds.
fn set_aside() -> Document {
    doc! { "status": not_live() }
}

/// Any status but the three a live event has.
fn not_live() -> Document {
    doc! { "$nin": ["pending", "processed", "dead"] }
}

/// How many leases one claim sends at once.
const CLAIM_CONCURRENCY: usize = 16;

/// How often a plain batch enqueue retries its transaction after a write conflict.
const TRANSACTION_RETRIES: usize = 5;

/// An outbox in a MongoDB collection. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use outbox_core::prelude::*;
/// use outbox_core::NewEvent;
/// use outbox_mongo::MongoStore;
/// use mongodb::bson::doc;
///
/// let client = mongodb::Client::with_uri_str("mongodb://127.0.0.1:27017/?replicaSet=rs0").await?;
/// let store = MongoStore::builder(client.clone()).database("app").build()?;
/// store.migrate().await?;
///
/// let users = client.database("app").collection::<mongodb::bson::Document>("users");
/// let mut session = client.start_session().await?;
/// session.start_transaction().await?;
/// users.insert_one(doc! { "email": "ada@example.com" }).session(&mut session).await?;
/// store.enqueue_batch_in(&mut session, vec![NewEvent::new("UserInvited", serde_json::json!({"email": "ada@example.com"}))]).await?;
/// session.commit_transaction().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MongoStore {
    client: Client,
    events: Collection<Document>,
    limits: Limits,
    /// When claims last looked for pending documents without a due time (ms since the epoch),
    /// shared by the clones of this handle.
    last_sweep: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

/// How often claims that come back short look for pending documents without a due time.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// A document the server refused to lease, and why.
struct LeaseRefused {
    id: String,
    err: StoreError,
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("namespace", &self.events.namespace().to_string())
            .finish_non_exhaustive()
    }
}

fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl MongoStore {
    /// A builder to choose the database and collection.
    pub fn builder(client: Client) -> MongoStoreBuilder {
        MongoStoreBuilder::new(client)
    }

    pub(crate) fn from_parts(client: Client, events: Collection<Document>, limits: Limits) -> Self {
        Self {
            client,
            events,
            limits,
            last_sweep: std::sync::Arc::default(),
        }
    }

    /// The limits enqueued events are checked against (C11).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The client this store uses (to start the sessions you enqueue in).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The events collection.
    pub fn collection(&self) -> &Collection<Document> {
        &self.events
    }

    /// Creates the indexes if missing (C10); idempotent.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let index = |keys: Document, name: &str, mut options: IndexOptions| {
            options.name = Some(name.to_owned());
            IndexModel::builder().keys(keys).options(options).build()
        };
        // 0.1 had a "due" index on (status, due_at, locked_until); claims now sort by due time,
        // then id.
        if let Err(err) = self.events.drop_index("due").await {
            if code(&err) != Some(27) {
                tracing::debug!(error = %err, "could not drop the old \"due\" index");
            }
        }
        let indexes = vec![
            index(
                doc! { "status": 1, "due_at": 1, "_id": 1 },
                "due_order",
                IndexOptions::default(),
            ),
            index(
                doc! { "ordering_key": 1, "status": 1, "_id": 1 },
                "ordering",
                IndexOptions::default(),
            ),
            index(
                doc! { "idempotency_key": 1 },
                "idempotency",
                IndexOptions::builder()
                    .unique(true)
                    .partial_filter_expression(doc! { "idempotency_key": { "$type": "string" } })
                    .build(),
            ),
            index(
                doc! { "status": 1, "processed_at": 1 },
                "finished",
                IndexOptions::default(),
            ),
        ];
        self.events
            .create_indexes(indexes)
            .await
            .map_err(|e| map_mongo("migrate: create indexes", e))?;
        // The inbox's ids, purged by consumer and age.
        self.inbox()
            .create_index(index(
                doc! { "_id.c": 1, "at": 1 },
                "received_at",
                IndexOptions::default(),
            ))
            .await
            .map_err(|e| map_mongo("migrate: create the inbox index", e))?;
        Ok(())
    }

    async fn enqueue_one(&self, event: NewEvent) -> Result<Enqueued, StoreError> {
        let payload = self.limits.encode(&event)?;
        match self
            .events
            .insert_one(encode_new(&event, payload, Utc::now()))
            .await
        {
            Ok(_) => Ok(Enqueued {
                id: event.id,
                duplicate: false,
            }),
            Err(err) if code(&err) == Some(DUPLICATE_KEY) => {
                let key = event.idempotency_key.clone().unwrap_or_default();
                let existing = self
                    .events
                    .find_one(doc! { "idempotency_key": &key })
                    .await
                    .map_err(|e| map_mongo("enqueue: look up idempotency key", e))?
                    .ok_or_else(|| map_mongo("enqueue", err))?;
                let id = decode(&existing)?.id;
                Ok(Enqueued {
                    id,
                    duplicate: true,
                })
            }
            Err(err) => Err(map_mongo("enqueue", err)),
        }
    }

    async fn enqueue_in_own_transaction(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let mut last = None;
        for _ in 0..TRANSACTION_RETRIES {
            let mut session = self
                .client
                .start_session()
                .await
                .map_err(|e| map_mongo("enqueue: session", e))?;
            session
                .start_transaction()
                .await
                .map_err(|e| map_mongo("enqueue: start transaction", e))?;
            let result = match self.enqueue_batch_in(&mut session, events.clone()).await {
                Ok(out) => session
                    .commit_transaction()
                    .await
                    .map(|()| out)
                    .map_err(|e| map_mongo("enqueue: commit", e)),
                Err(err) => {
                    let _ = session.abort_transaction().await;
                    Err(err)
                }
            };
            match result {
                Err(err @ StoreError::Conflict { .. }) => last = Some(err),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Conflict {
            message: "enqueue: transaction kept conflicting".into(),
        }))
    }
}

/// Enqueues events inside the caller's session, which must be in a transaction to be atomic with
/// the caller's writes (C1). A concurrent transaction enqueueing the same idempotency key makes
/// this one fail with a write conflict (`StoreError::Conflict`, labelled
/// `TransientTransactionError` by the server): retry the whole transaction.

#[async_trait]
impl EnqueueIn for MongoStore {
    type Conn = ClientSession;

    async fn enqueue_batch_in(
        &self,
        session: &mut ClientSession,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let payloads = events
            .iter()
            .map(|e| self.limits.encode(e))
            .collect::<Result<Vec<String>, StoreError>>()?;
        let now = Utc::now();
        // Keys stored already (one query for the whole batch, inside the transaction).
        let keys: Vec<&str> = events
            .iter()
            .filter_map(|e| e.idempotency_key.as_deref())
            .collect();
        let mut known: HashMap<String, Uuid> = HashMap::new();
        if !keys.is_empty() {
            let existing: Vec<Document> = self
                .events
                .find(doc! { "idempotency_key": { "$in": keys } })
                .projection(doc! { "_id": 1, "idempotency_key": 1 })
                .session(&mut *session)
                .await
                .map_err(|e| map_mongo("enqueue: look up idempotency keys", e))?
                .stream(&mut *session)
                .try_collect()
                .await
                .map_err(|e| map_mongo("enqueue: look up idempotency keys", e))?;
            for document in existing {
                let id = document
                    .get_str("_id")
                    .ok()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        id: format!("{document}"),
                        message: "bad _id".into(),
                    })?;
                if let Ok(key) = document.get_str("idempotency_key") {
                    known.insert(key.to_owned(), id);
                }
            }
        }
        // Then one insert for every new event (a key repeated in the batch keeps its first event).
        let mut out = Vec::with_capacity(events.len());
        let mut documents = Vec::with_capacity(events.len());
        for (event, payload) in events.iter().zip(payloads) {
            if let Some(key) = &event.idempotency_key {
                if let Some(id) = known.get(key) {
                    out.push(Enqueued {
                        id: *id,
                        duplicate: true,
                    });
                    continue;
                }
                known.insert(key.clone(), event.id);
            }
            documents.push(encode_new(event, payload, now));
            out.push(Enqueued {
                id: event.id,
                duplicate: false,
            });
        }
        match documents.len() {
            0 => {}
            1 => {
                self.events
                    .insert_one(documents.remove(0))
                    .session(&mut *session)
                    .await
                    .map_err(|e| conflict_on_duplicate("enqueue", e))?;
            }
            _ => {
                self.events
                    .insert_many(documents)
                    .session(&mut *session)
                    .await
                    .map_err(|e| conflict_on_duplicate("enqueue", e))?;
            }
        }
        Ok(out)
    }
}

/// A duplicate idempotency key inside a transaction aborts it: report it as a retryable conflict.
fn conflict_on_duplicate(operation: &str, err: mongodb::error::Error) -> StoreError {
    if code(&err) == Some(DUPLICATE_KEY) {
        return StoreError::Conflict {
            message: format!(
                "{operation}: a concurrent transaction stored the same idempotency key; retry the transaction ({})",
                crate::error::describe("insert", &err)
            ),
        };
    }
    map_mongo(operation, err)
}

/// Pending events due now. A lease moves `due_at` to its expiry and a parked event's is far in the
/// future, so neither is due.
fn due_filter(now: DateTime<Utc>) -> Document {
    doc! { "status": "pending", "due_at": { "$lte": to_bson_time(now) } }
}

#[async_trait]
impl ClaimStore for MongoStore {
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::default()
            .with_wakeups(true)
            .with_transactional_enqueue(true)
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let locked_until = after(now, request.lease);
        // Candidates first, then each is leased by one atomic findOneAndUpdate that re-checks it is
        // still claimable: concurrent claimers race per document and exactly one wins.
        let candidates: Vec<Document> = self
            .events
            .find(due_filter(now))
            .sort(doc! { "due_at": 1, "_id": 1 })
            .limit(i64::try_from(request.limit.saturating_mul(4)).unwrap_or(i64::MAX))
            .projection(doc! { "_id": 1, "ordering_key": 1, "available_at": 1, "backoff_until": 1 })
            .await
            .map_err(|e| map_mongo("claim: find", e))?
            .try_collect()
            .await
            .map_err(|e| map_mongo("claim: find", e))?;
        // Keep the candidates that may be delivered now: the oldest pending event of each ordering
        // key only (C5), one per key per claim. A keyed event behind an older pending one is parked
        // (out of the due range) so later claims do not walk it again; the completion of its key's
        // last older event un-parks it.
        let mut eligible: Vec<String> = Vec::with_capacity(candidates.len());
        let mut keys_seen: HashSet<String> = HashSet::new();
        for candidate in &candidates {
            let Ok(id) = candidate.get_str("_id") else {
                continue;
            };
            if let Ok(key) = candidate.get_str("ordering_key") {
                if !keys_seen.insert(key.to_owned()) {
                    continue;
                }
                if self.older_pending(key, id).await? {
                    self.park(candidate, key, id, now).await?;
                    continue;
                }
            }
            eligible.push(id.to_owned());
        }
        // Lease them in chunks, one findOneAndUpdate per event with a fresh token, sent
        // concurrently. Each update re-checks in its filter that the event is still claimable and is
        // atomic per document, so of several claimers racing for one event exactly one wins; the
        // next chunk makes up for events lost to a race.
        let mut claimed = Vec::new();
        let mut rest = eligible.as_slice();
        while claimed.len() < request.limit && !rest.is_empty() {
            let (chunk, tail) = rest.split_at((request.limit - claimed.len()).min(rest.len()));
            rest = tail;
            let worker_id = request.worker_id.as_str();
            let leased: Vec<_> = futures::stream::iter(chunk.to_vec())
                .map(|id| self.lease_one(id, now, locked_until, worker_id))
                .buffered(CLAIM_CONCURRENCY)
                .collect()
                .await;
            for outcome in leased {
                let (id, token, document) = match outcome {
                    Ok(Some(leased)) => leased,
                    Ok(None) => continue,
                    // The server refused to lease this document for a reason of its own (an
                    // `attempts` that `$inc` cannot add to): set it aside, the claim goes on (C11).
                    Err(LeaseRefused { id, err }) if !err.is_transient() => {
                        let err = StoreError::Corrupt {
                            id: id.clone(),
                            message: format!(
                                "attempts or a lease field cannot be updated (written by hand?): {err}"
                            ),
                        };
                        self.set_aside_unleased(&id, &err).await?;
                        continue;
                    }
                    Err(LeaseRefused { err, .. }) => return Err(err),
                };
                match decode(&document) {
                    Ok(record) => claimed.push(ClaimedEvent {
                        lease: Lease {
                            event_id: record.id,
                            token,
                        },
                        locked_until,
                        record,
                    }),
                    // A poison document is set aside on its own; the batch goes on (C11).
                    Err(err) => self.set_aside(&id, token, &err).await?,
                }
            }
        }
        if claimed.len() < request.limit {
            self.sweep_undue().await?;
        }
        Ok(claimed)
    }

    fn transactions(&self) -> Option<std::sync::Arc<dyn outbox_core::store::Transactions>> {
        Some(outbox_core::store::transactions_of(self.clone()))
    }

    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError> {
        match self
            .events
            .watch()
            .pipeline(vec![doc! { "$match": { "operationType": "insert" } }])
            .await
        {
            Ok(stream) => {
                // The stream ends at its first error; the worker polls and subscribes again.
                let wakeups = stream
                    .take_while(|item| {
                        if let Err(err) = item {
                            tracing::warn!(error = %err, "change stream failed; polling until it is reopened");
                        }
                        futures::future::ready(item.is_ok())
                    })
                    .map(|_| ());
                Ok(Some(Box::pin(wakeups)))
            }
            Err(err) if code(&err) == Some(40573) || code(&err) == Some(40324) => {
                // Not a replica set (40573) or change streams unsupported: poll only.
                tracing::warn!(error = %err, "change streams are not available; workers poll");
                Ok(None)
            }
            Err(err) => Err(map_mongo("watch", err)),
        }
    }

    async fn renew_many(
        &self,
        leases: Vec<Lease>,
        extend: Duration,
    ) -> Vec<Result<DateTime<Utc>, StoreError>> {
        outbox_core::kit::each_concurrently(&leases, |lease| self.renew_one(lease, extend)).await
    }

    async fn complete_many(&self, items: &[(Lease, Completion)]) -> Vec<Result<(), StoreError>> {
        outbox_core::kit::each_concurrently(items, |(lease, completion)| {
            self.complete_one(lease, completion.clone())
        })
        .await
    }
}

#[async_trait]
impl EnqueueStore for MongoStore {
    async fn enqueue_batch(&self, mut events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        match events.len() {
            0 => Ok(Vec::new()),
            1 => Ok(vec![self.enqueue_one(events.remove(0)).await?]),
            _ => {
                for event in &events {
                    self.limits.check(event)?;
                }
                self.enqueue_in_own_transaction(events).await
            }
        }
    }
}

#[async_trait]
impl InspectStore for MongoStore {
    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let Some(document) = self
            .events
            .find_one(doc! { "_id": id.to_string() })
            .await
            .map_err(|e| map_mongo("get", e))?
        else {
            return Ok(None);
        };
        if document.get_str("status") == Ok(CORRUPT) {
            return Err(StoreError::Corrupt {
                id: id.to_string(),
                message: format!(
                    "set aside because it does not decode ({}); fix it and call requeue_corrupt",
                    document.get_str("corrupt_reason").unwrap_or_default()
                ),
            });
        }
        decode(&document).map(Some)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        // MongoDB reads a limit of 0 as "no limit".
        if limit == 0 {
            return Ok(Vec::new());
        }
        let documents: Vec<Document> = self
            .events
            .find(doc! { "status": "dead" })
            .sort(doc! { "_id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(|e| map_mongo("dead letters", e))?
            .try_collect()
            .await
            .map_err(|e| map_mongo("dead letters", e))?;
        Ok(outbox_core::kit::decodable(
            "dead letters",
            documents.iter().map(decode),
        ))
    }

    async fn corrupt_events(&self, limit: usize) -> Result<Vec<CorruptEvent>, StoreError> {
        // MongoDB reads a limit of 0 as "no limit".
        if limit == 0 {
            return Ok(Vec::new());
        }
        let documents: Vec<Document> = self
            .events
            .find(set_aside())
            .sort(doc! { "processed_at": 1, "_id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .projection(
                doc! { "_id": 1, "event_type": 1, "corrupt_reason": 1, "processed_at": 1, "status": 1 },
            )
            .await
            .map_err(|e| map_mongo("corrupt events", e))?
            .try_collect()
            .await
            .map_err(|e| map_mongo("corrupt events", e))?;
        Ok(documents
            .iter()
            .map(|d| {
                let id = match d.get("_id") {
                    Some(Bson::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                let reason = match d.get_str("corrupt_reason") {
                    Ok(reason) => reason.to_owned(),
                    // Not set aside yet (the next sweep will): a status the store never writes.
                    Err(_) => format!(
                        "status: unknown status {}",
                        d.get("status").cloned().unwrap_or(Bson::Null)
                    ),
                };
                CorruptEvent::new(id, reason)
                    .with_event_type(d.get_str("event_type").ok().map(str::to_owned))
                    .with_set_aside_at(d.get_datetime("processed_at").ok().map(|t| {
                        DateTime::<Utc>::from_timestamp_millis(t.timestamp_millis())
                            .unwrap_or_default()
                    }))
            })
            .collect())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = Utc::now();
        let count = |filter: Document| async move {
            self.events
                .count_documents(filter)
                .await
                .map_err(|e| map_mongo("stats: count", e))
        };
        let bnow = to_bson_time(now);
        let pending = count(doc! { "status": "pending" }).await?;
        let due = count(due_filter(now)).await?;
        let leased = count(doc! { "status": "pending", "locked_until": { "$gt": bnow } }).await?;
        let processed = count(doc! { "status": "processed" }).await?;
        let dead = count(doc! { "status": "dead" }).await?;
        let corrupt = count(set_aside()).await?;
        let lag = self.oldest_due_age(now).await?;
        Ok(StoreStats::new(pending, due, leased, processed, dead, lag).with_corrupt(corrupt))
    }

    async fn lag(&self) -> Result<Duration, StoreError> {
        self.oldest_due_age(Utc::now()).await
    }

    async fn stats_by_type(&self) -> Result<Vec<TypeStats>, StoreError> {
        let now = Utc::now();
        let bnow = to_bson_time(now);
        let pending = doc! { "$eq": ["$status", "pending"] };
        // Keyed events are counted as due below, only when they head their key: a keyed event
        // behind its head keeps its due time until a claim parks it.
        let unkeyed = doc! { "$eq": [{ "$ifNull": ["$ordering_key", Bson::Null] }, Bson::Null] };
        let due = doc! { "$and": [pending.clone(), unkeyed, { "$lte": ["$due_at", bnow] }] };
        let leased = doc! { "$and": [pending.clone(), { "$gt": ["$locked_until", bnow] }] };
        let one_if = |cond: &Document| doc! { "$sum": { "$cond": [cond.clone(), 1, 0] } };
        let pipeline = vec![
            doc! { "$match": { "status": { "$in": ["pending", "dead"] } } },
            doc! { "$group": {
                "_id": "$event_type",
                "pending": one_if(&pending),
                "due": one_if(&due),
                "leased": one_if(&leased),
                "dead": one_if(&doc! { "$eq": ["$status", "dead"] }),
                "oldest": { "$min": { "$cond": [due.clone(), "$due_at", Bson::Null] } },
            } },
            doc! { "$sort": { "_id": 1 } },
        ];
        let mut cursor = self
            .events
            .aggregate(pipeline)
            .await
            .map_err(|e| map_mongo("stats by type", e))?;
        let mut rows = Vec::new();
        while let Some(group) = cursor
            .try_next()
            .await
            .map_err(|e| map_mongo("stats by type", e))?
        {
            let count = |field: &str| -> u64 {
                match group.get(field) {
                    Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
                    Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
                    Some(Bson::Double(n)) if *n >= 0.0 => *n as u64,
                    _ => 0,
                }
            };
            let age = match group.get("oldest") {
                Some(Bson::DateTime(t)) => Duration::from_millis(
                    u64::try_from(now.timestamp_millis() - t.timestamp_millis()).unwrap_or(0),
                ),
                _ => Duration::ZERO,
            };
            let event_type = group.get_str("_id").unwrap_or_default();
            rows.push(
                TypeStats::new(event_type)
                    .with_counts(
                        count("pending"),
                        count("due"),
                        count("leased"),
                        count("dead"),
                    )
                    .with_oldest_due_age(age),
            );
        }
        self.count_due_key_heads(now, &mut rows).await?;
        Ok(rows)
    }

    async fn key_head(&self, key: &str) -> Result<Option<EventRecord>, StoreError> {
        self.events
            .find_one(doc! { "ordering_key": key, "status": "pending" })
            .sort(doc! { "_id": 1 })
            .await
            .map_err(|e| map_mongo("key head", e))?
            .as_ref()
            .map(decode)
            .transpose()
    }
}

#[async_trait]
impl RepairStore for MongoStore {
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
        let now = to_bson_time(Utc::now());
        let done = self
            .events
            .update_one(
                doc! { "_id": id.to_string(), "status": "dead" },
                doc! {
                    "$set": {
                        "status": "pending", "attempts": 0_i64, "backoff_until": never(), "available_at": now,
                        "due_at": now, "handler_results": results,
                    },
                    "$unset": { "processed_at": "" },
                },
            )
            .await
            .map_err(|e| map_mongo("requeue", e))?;
        Ok(done.modified_count == 1)
    }

    async fn requeue_corrupt(&self, id: &str) -> Result<bool, StoreError> {
        let now = to_bson_time(Utc::now());
        let done = self
            .events
            .update_one(
                doc! { "_id": id, "status": not_live() },
                doc! {
                    "$set": {
                        "status": "pending", "backoff_until": never(), "available_at": now,
                        "due_at": now, "locked_until": never(),
                    },
                    "$unset": { "processed_at": "", "corrupt_reason": "", "lease_token": "", "locked_by": "" },
                },
            )
            .await
            .map_err(|e| map_mongo("requeue corrupt", e))?;
        Ok(done.modified_count == 1)
    }

    async fn purge_dead(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        self.purge(EventStatus::Dead, older_than).await
    }

    async fn purge_processed(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        self.purge(EventStatus::Processed, older_than).await
    }
}

impl MongoStore {
    /// Renews one lease (C4): an item of `renew_many`.
    async fn renew_one(
        &self,
        lease: &Lease,
        extend: Duration,
    ) -> Result<DateTime<Utc>, StoreError> {
        let until = after(Utc::now(), extend);
        let done = self
            .events
            .update_one(
                doc! { "_id": lease.event_id.to_string(), "lease_token": lease.token.to_string(), "status": "pending" },
                doc! { "$set": { "locked_until": to_bson_time(until), "due_at": to_bson_time(until) } },
            )
            .await
            .map_err(|e| map_mongo("renew lease", e))?;
        if done.matched_count == 0 {
            return Err(StoreError::LeaseLost {
                event_id: lease.event_id,
            });
        }
        Ok(until)
    }

    /// Completes one lease (C3): an item of `complete_many`.
    async fn complete_one(&self, lease: &Lease, completion: Completion) -> Result<(), StoreError> {
        let now = Utc::now();
        let results = serde_json::to_string(&completion.handler_results)
            .map_err(|e| StoreError::invalid(format!("handler results do not serialize: {e}")))?;
        let backoff = completion.retry_delay.map(|d| after(now, d));
        let mut set = doc! {
            "status": completion.status.as_str(),
            "handler_results": results,
            "attempts": i64::from(completion.attempts),
            "locked_until": never(),
            "backoff_until": backoff.map_or(never(), to_bson_time),
        };
        let mut unset = doc! { "lease_token": "", "locked_by": "" };
        if completion.status == EventStatus::Pending {
            set.insert("due_at", to_bson_time(backoff.unwrap_or(now)));
            unset.insert("processed_at", "");
        } else {
            set.insert("processed_at", to_bson_time(now));
        }
        let before = self
            .events
            .find_one_and_update(
                doc! { "_id": lease.event_id.to_string(), "lease_token": lease.token.to_string(), "status": "pending" },
                doc! { "$set": set, "$unset": unset },
            )
            .projection(doc! { "ordering_key": 1 })
            .await
            .map_err(|e| map_mongo("complete", e))?
            .ok_or(StoreError::LeaseLost {
                event_id: lease.event_id,
            })?;
        if completion.status != EventStatus::Pending {
            if let Ok(key) = before.get_str("ordering_key") {
                self.unpark_head(key).await?;
            }
        }
        Ok(())
    }
}

/// When a parked event is claimable once un-parked: the later of its schedule and back-off.
fn natural_due(document: &Document) -> mongodb::bson::DateTime {
    let available = document
        .get_datetime("available_at")
        .copied()
        .unwrap_or_else(|_| never());
    let backoff = document
        .get_datetime("backoff_until")
        .copied()
        .unwrap_or_else(|_| never());
    available.max(backoff)
}

impl MongoStore {
    /// How long the oldest due, unleased event has been due at `now` (zero when none): the front
    /// of the `due_order` index (status, due time, id).
    async fn oldest_due_age(&self, now: DateTime<Utc>) -> Result<Duration, StoreError> {
        let oldest = self
            .events
            .find_one(due_filter(now))
            .sort(doc! { "due_at": 1, "_id": 1 })
            .projection(doc! { "due_at": 1 })
            .await
            .map_err(|e| map_mongo("lag", e))?;
        Ok(match oldest.as_ref().and_then(|d| d.get("due_at")) {
            Some(Bson::DateTime(t)) => Duration::from_millis(
                u64::try_from(now.timestamp_millis() - t.timestamp_millis()).unwrap_or(0),
            ),
            _ => Duration::ZERO,
        })
    }

    /// Adds to `rows` the keyed events due at `now` that head their key: per (type, key), the
    /// oldest due event, when no older event of its key is pending.
    async fn count_due_key_heads(
        &self,
        now: DateTime<Utc>,
        rows: &mut [TypeStats],
    ) -> Result<(), StoreError> {
        let mut filter = due_filter(now);
        filter.insert("ordering_key", doc! { "$type": "string" });
        let pipeline = vec![
            doc! { "$match": filter },
            doc! { "$sort": { "_id": 1 } },
            doc! { "$group": {
                "_id": { "t": "$event_type", "k": "$ordering_key" },
                "first": { "$first": "$_id" },
                "since": { "$first": "$due_at" },
            } },
        ];
        let groups: Vec<Document> = self
            .events
            .aggregate(pipeline)
            .await
            .map_err(|e| map_mongo("stats by type: keyed", e))?
            .try_collect()
            .await
            .map_err(|e| map_mongo("stats by type: keyed", e))?;
        for group in groups {
            let Ok(ids) = group.get_document("_id") else {
                continue;
            };
            let (Ok(event_type), Ok(key), Ok(first)) =
                (ids.get_str("t"), ids.get_str("k"), group.get_str("first"))
            else {
                continue;
            };
            if self.older_pending(key, first).await? {
                continue;
            }
            let Some(row) = rows.iter_mut().find(|r| r.event_type == event_type) else {
                continue;
            };
            row.due += 1;
            if let Ok(since) = group.get_datetime("since") {
                let age = Duration::from_millis(
                    u64::try_from(now.timestamp_millis() - since.timestamp_millis()).unwrap_or(0),
                );
                row.oldest_due_age = row.oldest_due_age.max(age);
            }
        }
        Ok(())
    }

    /// Leases one event if it is still claimable; `None` when another claimer got it first.
    async fn lease_one(
        &self,
        id: String,
        now: DateTime<Utc>,
        locked_until: DateTime<Utc>,
        worker_id: &str,
    ) -> Result<Option<(String, Uuid, Document)>, LeaseRefused> {
        let token = Uuid::now_v7();
        let mut filter = due_filter(now);
        filter.insert("_id", &id);
        let leased = self
            .events
            .find_one_and_update(
                filter,
                doc! {
                    "$set": {
                        "lease_token": token.to_string(),
                        "locked_by": worker_id,
                        "locked_until": to_bson_time(locked_until),
                        "due_at": to_bson_time(locked_until),
                    },
                    "$inc": { "attempts": 1_i64 },
                },
            )
            .return_document(ReturnDocument::After)
            .await;
        match leased {
            Ok(leased) => Ok(leased.map(|document| (id, token, document))),
            Err(e) => Err(LeaseRefused {
                id,
                err: map_mongo("claim: lease", e),
            }),
        }
    }

    /// Sets aside a pending document the claim could not lease (see [`set_aside`]).
    ///
    /// [`set_aside`]: Self::set_aside
    async fn set_aside_unleased(&self, id: &str, err: &StoreError) -> Result<(), StoreError> {
        self.set_aside_matching(doc! { "_id": id, "status": "pending" }, id, err)
            .await
    }

    /// Pending documents without a due time are out of every claim's reach (claims walk the due
    /// index), and so are documents whose status is none the store writes: each is set aside with
    /// the reason, so none stays forever unseen. Run by
    /// claims that came back short, at most once per [`SWEEP_EVERY`] per store handle.
    async fn sweep_undue(&self) -> Result<(), StoreError> {
        let now = Utc::now().timestamp_millis();
        let last = self.last_sweep.load(std::sync::atomic::Ordering::Relaxed);
        if now - last < i64::try_from(SWEEP_EVERY.as_millis()).unwrap_or(i64::MAX)
            || self
                .last_sweep
                .compare_exchange(
                    last,
                    now,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_err()
        {
            return Ok(());
        }
        self.set_aside_found(
            doc! { "status": "pending", "due_at": { "$not": { "$type": "date" } } },
            |_| "due_at: missing or not a date".to_owned(),
        )
        .await?;
        // A status no claim or listing reads (written by hand, by another program) would strand
        // its document: set aside too, through the status index's bounds.
        self.set_aside_found(
            doc! { "status": { "$nin": ["pending", "processed", "dead", CORRUPT] } },
            |status| format!("status: unknown status {status}"),
        )
        .await?;
        Ok(())
    }

    /// Sets aside up to 100 documents matching `filter` (a sweep's), each with the reason `why`
    /// gives for its status, provided its status did not change in between.
    async fn set_aside_found(
        &self,
        filter: Document,
        why: impl Fn(&Bson) -> String,
    ) -> Result<(), StoreError> {
        let found: Vec<Document> = self
            .events
            .find(filter)
            .projection(doc! { "_id": 1, "status": 1 })
            .limit(100)
            .await
            .map_err(|e| map_mongo("claim: sweep", e))?
            .try_collect()
            .await
            .map_err(|e| map_mongo("claim: sweep", e))?;
        for document in found {
            if let Ok(id) = document.get_str("_id") {
                let status = document.get("status").cloned().unwrap_or(Bson::Null);
                let err = StoreError::Corrupt {
                    id: id.to_owned(),
                    message: why(&status),
                };
                self.set_aside_matching(doc! { "_id": id, "status": status }, id, &err)
                    .await?;
            }
        }
        Ok(())
    }

    /// A leased document that does not decode (written by hand or by another program) would fail
    /// every claim that reaches it. It is set aside with status `corrupt` and the reason, kept for
    /// inspection ([`InspectStore::corrupt_events`](outbox_core::store::InspectStore::corrupt_events)), and no longer blocks its ordering key (C11).
    async fn set_aside(&self, id: &str, token: Uuid, err: &StoreError) -> Result<(), StoreError> {
        self.set_aside_matching(
            doc! { "_id": id, "lease_token": token.to_string() },
            id,
            err,
        )
        .await
    }

    async fn set_aside_matching(
        &self,
        filter: Document,
        id: &str,
        err: &StoreError,
    ) -> Result<(), StoreError> {
        let reason = corrupt_reason(err);
        tracing::error!(
            event_id = id,
            reason,
            "undecodable outbox document set aside with status \"corrupt\""
        );
        let before = self
            .events
            .find_one_and_update(
                filter,
                doc! {
                    "$set": { "status": CORRUPT, "corrupt_reason": &reason, "processed_at": to_bson_time(Utc::now()), "locked_until": never() },
                    "$unset": { "lease_token": "", "locked_by": "" },
                },
            )
            .projection(doc! { "ordering_key": 1 })
            .await
            .map_err(|e| map_mongo("claim: set aside an undecodable document", e))?;
        if let Some(key) = before.as_ref().and_then(|d| d.get_str("ordering_key").ok()) {
            self.unpark_head(key).await?;
        }
        Ok(())
    }

    /// Whether an event of `key` older than `id` is pending.
    async fn older_pending(&self, key: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .events
            .find_one(doc! { "ordering_key": key, "status": "pending", "_id": { "$lt": id } })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(|e| map_mongo("claim: ordering key", e))?
            .is_some())
    }

    /// Parks a keyed candidate that waits behind an older event of its key. The older one may have
    /// finished between the check and the park, and its completion may have looked for a parked
    /// event before this one was parked: so check again after parking, and un-park when nothing
    /// older is pending any more. Each step is atomic on its document, so one of the two sides
    /// always sees the other.
    async fn park(
        &self,
        candidate: &Document,
        key: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut filter = due_filter(now);
        filter.insert("_id", id);
        self.events
            .update_one(filter, doc! { "$set": { "due_at": parked() } })
            .await
            .map_err(|e| map_mongo("claim: park", e))?;
        if !self.older_pending(key, id).await? {
            self.unpark(id, natural_due(candidate)).await?;
        }
        Ok(())
    }

    /// Makes the oldest pending event of `key` claimable, if it is parked.
    async fn unpark_head(&self, key: &str) -> Result<(), StoreError> {
        let head = self
            .events
            .find_one(doc! { "ordering_key": key, "status": "pending" })
            .sort(doc! { "_id": 1 })
            .projection(doc! { "_id": 1, "due_at": 1, "available_at": 1, "backoff_until": 1 })
            .await
            .map_err(|e| map_mongo("complete: next of the ordering key", e))?;
        if let Some(head) = head {
            if head.get_datetime("due_at") == Ok(&parked()) {
                let id = head.get_str("_id").unwrap_or_default().to_owned();
                self.unpark(&id, natural_due(&head)).await?;
            }
        }
        Ok(())
    }

    async fn unpark(&self, id: &str, due: mongodb::bson::DateTime) -> Result<(), StoreError> {
        self.events
            .update_one(
                doc! { "_id": id, "status": "pending", "due_at": parked() },
                doc! { "$set": { "due_at": due } },
            )
            .await
            .map_err(|e| map_mongo("un-park", e))?;
        Ok(())
    }

    async fn purge(
        &self,
        status: EventStatus,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let done = self
            .events
            .delete_many(doc! { "status": status.as_str(), "processed_at": { "$lt": to_bson_time(older_than) } })
            .await
            .map_err(|e| map_mongo("purge", e))?;
        Ok(done.deleted_count)
    }
}
