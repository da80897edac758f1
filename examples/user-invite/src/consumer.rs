//! The other end of the JetStream relay: reads the `UserInvited` messages back from the stream
//! and adds each invited user to `directory`, exactly once per message. The message id is
//! recorded in the inbox (contract X1) in the transaction that inserts the row, so a message
//! delivered again — an acknowledgement lost to a crash, a consumer replayed from the start —
//! finds its id there and changes nothing.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use outbox_core::store::TransactionalStore;
use outbox_core::{Inbox, Receipt};
use outbox_postgres::PgStore;
use serde::Deserialize;
use uuid::Uuid;

/// What `publish` sends (the fields the directory keeps).
#[derive(Debug, Deserialize)]
struct Relayed {
    event_id: Uuid,
    user_id: i64,
    email: String,
}

/// Where the consumer reads and writes.
pub(crate) struct Consumer {
    pub(crate) store: PgStore,
    pub(crate) jetstream: jetstream::Context,
    pub(crate) stream: String,
    /// The durable consumer's name (also the inbox's consumer name).
    pub(crate) name: String,
    pub(crate) schema: String,
}

/// How often received ids older than the inbox's retention are forgotten.
const PURGE_EVERY: Duration = Duration::from_secs(600);

impl Consumer {
    /// Consumes until the task is aborted, reconnecting after errors.
    pub(crate) fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let inbox = match Inbox::new(self.store.clone(), self.name.clone()) {
                // Longer than any redelivery: JetStream redelivers unacknowledged messages for as
                // long as the consumer exists.
                Ok(inbox) => inbox.retention(Duration::from_secs(7 * 24 * 3600)),
                Err(err) => {
                    tracing::error!(error = %err, "the consumer's inbox is misconfigured");
                    return;
                }
            };
            loop {
                if let Err(err) = self.consume(&inbox).await {
                    tracing::warn!(error = %err, "the JetStream consumer stopped; restarting in 1 s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    async fn consume(
        &self,
        inbox: &Inbox<PgStore>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let stream = self.jetstream.get_stream(&self.stream).await?;
        let consumer = stream
            .get_or_create_consumer(
                &self.name,
                pull::Config {
                    durable_name: Some(self.name.clone()),
                    ack_wait: Duration::from_secs(10),
                    ..Default::default()
                },
            )
            .await?;
        let mut messages = consumer.messages().await?;
        let mut purged_at = tokio::time::Instant::now();
        while let Some(message) = messages.next().await {
            let message = message?;
            match self.apply(inbox, &message).await {
                Ok(receipt) => {
                    if receipt.is_duplicate() {
                        tracing::info!("a message received before was delivered again; skipped");
                    }
                    message.ack().await?;
                }
                Err(Failure::Malformed(reason)) => {
                    tracing::error!(%reason, "a malformed message cannot be applied; dropped");
                    message.ack_with(AckKind::Term).await?;
                }
                Err(Failure::Store(err)) => {
                    tracing::warn!(error = %err, "applying a message failed; it will be redelivered");
                    message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await?;
                }
            }
            if purged_at.elapsed() >= PURGE_EVERY {
                purged_at = tokio::time::Instant::now();
                match inbox.purge_expired().await {
                    Ok(n) => tracing::info!(forgotten = n, "inbox purged"),
                    Err(err) => tracing::warn!(error = %err, "purging the inbox failed"),
                }
            }
        }
        Ok(())
    }

    /// Records the message in the inbox and, the first time, adds the user to the directory — in
    /// one transaction.
    async fn apply(
        &self,
        inbox: &Inbox<PgStore>,
        message: &jetstream::Message,
    ) -> Result<Receipt, Failure> {
        let relayed: Relayed = serde_json::from_slice(&message.payload)
            .map_err(|e| Failure::Malformed(format!("not a relayed invite: {e}")))?;
        // The message id `publish` set (the event id); the payload's, for a message without one.
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map_or_else(|| relayed.event_id.to_string(), ToString::to_string);
        let mut tx = self.store.begin().await.map_err(Failure::Store)?;
        let receipt = inbox
            .receive_in(&mut tx, &id)
            .await
            .map_err(Failure::Store)?;
        if receipt == Receipt::First {
            sqlx::query(&format!(
                "INSERT INTO {}.directory (event_id, user_id, email) VALUES ($1, $2, $3)",
                self.schema
            ))
            .bind(relayed.event_id)
            .bind(relayed.user_id)
            .bind(&relayed.email)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                Failure::Store(outbox_core::StoreError::unavailable(format!(
                    "inserting into the directory failed: {e}"
                )))
            })?;
        }
        self.store.commit(tx).await.map_err(Failure::Store)?;
        Ok(receipt)
    }
}

/// Why a message was not applied.
enum Failure {
    /// It can never be applied.
    Malformed(String),
    /// The database failed: try again.
    Store(outbox_core::StoreError),
}
