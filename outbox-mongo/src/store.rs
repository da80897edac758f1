//! [`MongoStore`]: the `Store` implementation, and enqueue inside the caller's session transaction.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{Document, doc};
use mongodb::{Client, ClientSession, Collection};
use outbox_core::store::{ClaimRequest, ClaimedEvent, Completion, Lease, WakeupStream};
use outbox_core::store::{ClaimStore, EnqueueIn, EnqueueStore};
use outbox_core::{Enqueued, EventStatus, Limits, NewEvent, StoreError};
use uuid::Uuid;

use crate::config::MongoStoreBuilder;
use crate::error::{DUPLICATE_KEY, code, map_mongo};
use crate::row::{decode, encode_new, never, to_bson_time};

/// The status of documents set aside because they do not decode (see [`MongoStore::set_aside`]).
pub(crate) const CORRUPT: &str = outbox_core::kit::CORRUPT_STATUS;

/// Documents set aside (status `corrupt`) or of a status the store never writes (written by hand
/// or another program, not swept yet): what `corrupt_events`, `stats` and `requeue_corrupt` see
/// as set aside, through the status index's bounds.
pub(crate) fn set_aside() -> Document {
    doc! { "status": not_live() }
}

/// Any status but the three a live event has.
pub(crate) fn not_live() -> Document {
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
    pub(crate) client: Client,
    pub(crate) events: Collection<Document>,
    pub(crate) limits: Limits,
    /// When claims last looked for pending documents without a due time (ms since the epoch),
    /// shared by the clones of this handle.
    pub(crate) last_sweep: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

/// A document the server refused to lease, and why.
pub(crate) struct LeaseRefused {
    pub(crate) id: String,
    pub(crate) err: StoreError,
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("namespace", &self.events.namespace().to_string())
            .finish_non_exhaustive()
    }
}

pub(crate) fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
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
pub(crate) fn due_filter(now: DateTime<Utc>) -> Document {
    doc! { "status": "pending", "due_at": { "$lte": to_bson_time(now) } }
}

#[async_trait]
impl ClaimStore for MongoStore {
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
