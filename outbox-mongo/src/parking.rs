//! Ordering keys and poison documents on MongoDB: parking the events behind a key's head (C5),
//! setting undecodable documents aside (C11), and the sweeps and purges that go with them.

use crate::error::map_mongo;
use crate::row::{never, parked, to_bson_time};

use crate::store::{CORRUPT, LeaseRefused, MongoStore, due_filter};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ReturnDocument;
use outbox_core::StoreError;
use outbox_core::kit::corrupt_reason;
use outbox_core::store::TypeStats;
use std::time::Duration;
use uuid::Uuid;

impl MongoStore {
    /// How long the oldest due, unleased event has been due at `now` (zero when none): the front
    /// of the `due_order` index (status, due time, id).
    pub(crate) async fn oldest_due_age(&self, now: DateTime<Utc>) -> Result<Duration, StoreError> {
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
    pub(crate) async fn count_due_key_heads(
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
    pub(crate) async fn lease_one(
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
    pub(crate) async fn set_aside_unleased(
        &self,
        id: &str,
        err: &StoreError,
    ) -> Result<(), StoreError> {
        self.set_aside_matching(doc! { "_id": id, "status": "pending" }, id, err)
            .await
    }

    /// Pending documents without a due time are out of every claim's reach (claims walk the due
    /// index), and so are documents whose status is none the store writes: each is set aside with
    /// the reason, so none stays forever unseen. Run by
    /// claims that came back short, at most once per [`SWEEP_EVERY`] per store handle.
    pub(crate) async fn sweep_undue(&self) -> Result<(), StoreError> {
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
    pub(crate) async fn set_aside_found(
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
    pub(crate) async fn set_aside(
        &self,
        id: &str,
        token: Uuid,
        err: &StoreError,
    ) -> Result<(), StoreError> {
        self.set_aside_matching(
            doc! { "_id": id, "lease_token": token.to_string() },
            id,
            err,
        )
        .await
    }

    pub(crate) async fn set_aside_matching(
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
    pub(crate) async fn older_pending(&self, key: &str, id: &str) -> Result<bool, StoreError> {
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
    pub(crate) async fn park(
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
    pub(crate) async fn unpark_head(&self, key: &str) -> Result<(), StoreError> {
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

    pub(crate) async fn unpark(
        &self,
        id: &str,
        due: mongodb::bson::DateTime,
    ) -> Result<(), StoreError> {
        self.events
            .update_one(
                doc! { "_id": id, "status": "pending", "due_at": parked() },
                doc! { "$set": { "due_at": due } },
            )
            .await
            .map_err(|e| map_mongo("un-park", e))?;
        Ok(())
    }
}

/// How often claims that come back short look for pending documents without a due time.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

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
