//! Transactional handlers and the inbox on MongoDB (contract X1): [`MongoTx`], the session
//! transaction a handler runs in, and the store's [`TransactionalStore`] and [`InboxStore`]
//! implementations.
//!
//! A MongoDB transaction fails with a write conflict when it writes a document that another write
//! changed after the transaction's snapshot — and lease renewals write the event's document. So a
//! handler's transaction takes the event first: its first write sets `handler_tx_at` on the event,
//! fenced by the lease. From then on other writes to the event (a renewal, a competing claim) wait
//! for the transaction to end, and the runtime does not renew the lease meanwhile
//! ([`TransactionalStore::holds_event`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{Document, doc};
use mongodb::{ClientSession, Collection};
use outbox_core::StoreError;
use outbox_core::model::{HandlerResults, HandlerState};
use outbox_core::store::{InboxStore, Lease, StoreTransaction, TransactionalStore};

use crate::error::{DUPLICATE_KEY, code, map_mongo};
use crate::row::to_bson_time;
use crate::store::MongoStore;

/// A MongoDB session with a transaction started, for a transactional handler. It dereferences to
/// the [`ClientSession`], so a handler taking `tx: &mut MongoTx` writes with
/// `.session(&mut **tx)`.
///
/// ```
/// use mongodb::bson::doc;
/// use outbox_core::{EventRecord, HandlerError, State, handler};
/// use outbox_mongo::MongoTx;
///
/// #[handler(event = "UserInvited", transactional)]
/// async fn record_invite(
///     event: EventRecord,
///     tx: &mut MongoTx,
///     db: State<mongodb::Database>,
/// ) -> Result<(), HandlerError> {
///     db.collection::<mongodb::bson::Document>("invites_sent")
///         .insert_one(doc! { "event_id": event.id.to_string() })
///         .session(&mut **tx)
///         .await?;
///     Ok(()) // committed together with this handler's success
/// }
/// ```
pub struct MongoTx {
    session: ClientSession,
}

impl StoreTransaction for MongoTx {}

impl MongoTx {
    /// The session inside (its transaction is still open unless committed).
    pub fn into_session(self) -> ClientSession {
        self.session
    }
}

impl std::fmt::Debug for MongoTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoTx").finish_non_exhaustive()
    }
}

impl std::ops::Deref for MongoTx {
    type Target = ClientSession;
    fn deref(&self) -> &ClientSession {
        &self.session
    }
}

impl std::ops::DerefMut for MongoTx {
    fn deref_mut(&mut self) -> &mut ClientSession {
        &mut self.session
    }
}

/// The filter of a leased, pending event.
fn leased(lease: &Lease) -> Document {
    doc! {
        "_id": lease.event_id.to_string(),
        "lease_token": lease.token.to_string(),
        "status": "pending",
    }
}

impl MongoStore {
    /// The inbox collection: `<collection>_inbox` beside the events.
    pub(crate) fn inbox(&self) -> Collection<Document> {
        let namespace = self.collection().namespace();
        self.client()
            .database(&namespace.db)
            .collection(&format!("{}_inbox", namespace.coll))
    }
}

#[async_trait]
impl TransactionalStore for MongoStore {
    type Tx = MongoTx;

    async fn begin(&self) -> Result<MongoTx, StoreError> {
        let mut session = self
            .client()
            .start_session()
            .await
            .map_err(|e| map_mongo("start a handler's session", e))?;
        session
            .start_transaction()
            .await
            .map_err(|e| map_mongo("start a handler's transaction", e))?;
        Ok(MongoTx { session })
    }

    async fn begin_for(&self, lease: &Lease) -> Result<MongoTx, StoreError> {
        let mut tx = self.begin().await?;
        let taken = self
            .collection()
            .update_one(
                leased(lease),
                doc! { "$set": { "handler_tx_at": to_bson_time(Utc::now()) } },
            )
            .session(&mut tx.session)
            .await
            .map_err(|e| map_mongo("take the event in a handler's transaction", e))?;
        if taken.matched_count == 0 {
            return Err(StoreError::LeaseLost {
                event_id: lease.event_id,
            });
        }
        Ok(tx)
    }

    fn holds_event(&self) -> bool {
        true
    }

    async fn record_success_in(
        &self,
        tx: &mut MongoTx,
        lease: &Lease,
        handler: &str,
        state: &HandlerState,
    ) -> Result<bool, StoreError> {
        let Some(event) = self
            .collection()
            .find_one(leased(lease))
            .session(&mut tx.session)
            .await
            .map_err(|e| map_mongo("read the event in a handler's transaction", e))?
        else {
            return Ok(false);
        };
        let text = event.get_str("handler_results").unwrap_or("{}");
        let mut results: HandlerResults =
            serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
                id: lease.event_id.to_string(),
                message: format!("handler_results: {e}"),
            })?;
        results.insert(handler.to_owned(), state.clone());
        let results = serde_json::to_string(&results)
            .map_err(|e| StoreError::invalid(format!("handler state does not serialize: {e}")))?;
        let updated = self
            .collection()
            .update_one(
                leased(lease),
                doc! { "$set": { "handler_results": results } },
            )
            .session(&mut tx.session)
            .await
            .map_err(|e| map_mongo("record a handler's success in its transaction", e))?;
        Ok(updated.matched_count == 1)
    }

    async fn commit(&self, mut tx: MongoTx) -> Result<(), StoreError> {
        tx.session
            .commit_transaction()
            .await
            .map_err(|e| map_mongo("commit a handler's transaction", e))
    }

    async fn rollback(&self, mut tx: MongoTx) -> Result<(), StoreError> {
        tx.session
            .abort_transaction()
            .await
            .map_err(|e| map_mongo("roll back a transaction", e))
    }
}

#[async_trait]
impl InboxStore for MongoStore {
    /// A received id is a document `{_id: {c: consumer, m: message_id}, at}`. It is looked up
    /// first: inside a transaction a duplicate-key error would abort the caller's transaction.
    async fn inbox_record(
        &self,
        tx: &mut MongoTx,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        let id = doc! { "c": consumer, "m": message_id };
        let inbox = self.inbox();
        let seen = inbox
            .find_one(doc! { "_id": id.clone() })
            .session(&mut tx.session)
            .await
            .map_err(|e| map_mongo("look up a received message in the inbox", e))?;
        if seen.is_some() {
            return Ok(false);
        }
        match inbox
            .insert_one(doc! { "_id": id, "at": to_bson_time(Utc::now()) })
            .session(&mut tx.session)
            .await
        {
            Ok(_) => Ok(true),
            // Received by a transaction that committed after this one's snapshot.
            Err(err) if code(&err) == Some(DUPLICATE_KEY) => Err(StoreError::Conflict {
                message: "the message was received concurrently by another transaction: retry \
                          the transaction"
                    .to_owned(),
            }),
            Err(err) => Err(map_mongo("record a received message in the inbox", err)),
        }
    }

    async fn inbox_purge(&self, consumer: &str, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = self
            .inbox()
            .delete_many(doc! { "_id.c": consumer, "at": { "$lt": to_bson_time(before) } })
            .await
            .map_err(|e| map_mongo("purge the inbox", e))?;
        Ok(purged.deleted_count)
    }
}
