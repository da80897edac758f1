//! What a backend provides to the benchmark: fresh outboxes, and the raw-database baselines that
//! do the same work without the library.

use std::sync::Arc;

use async_trait::async_trait;
use outbox_core::{NewEvent, Store};
use serde_json::json;

use crate::BenchError;

use std::time::Duration;

/// Keeps a snapshot open while alive (see [`Bench::hold_snapshot`]).
pub type SnapshotHold = Box<dyn std::any::Any + Send>;

/// The event type every benchmark event has.
pub const EVENT_TYPE: &str = "BenchEvent";

/// The payload of benchmark event `n` (about 150 bytes of JSON).
pub fn payload(n: usize) -> serde_json::Value {
    json!({ "n": n, "email": format!("user{n}@example.com"), "note": "x".repeat(96) })
}

/// Benchmark event `n`.
pub fn event(n: usize) -> NewEvent {
    NewEvent::new(EVENT_TYPE, payload(n))
}

/// Enqueues benchmark events `0..n` into `store`, 1,000 per batch.
pub async fn prefill_store(store: &dyn Store, n: usize) -> Result<(), BenchError> {
    let mut next = 0;
    while next < n {
        let end = (next + 1000).min(n);
        store
            .enqueue_batch((next..end).map(event).collect())
            .await?;
        next = end;
    }
    Ok(())
}

/// A backend under test.
#[async_trait]
pub trait Target: Send + Sync {
    /// `postgres`, `redis`, `mongo` or `sqlite`.
    fn name(&self) -> &'static str;
    /// A new, empty, migrated outbox of its own (table, database or key prefix).
    async fn fresh(&self, tag: &str) -> Result<Box<dyn Bench>, BenchError>;

    /// A new outbox that deletes processed events instead of keeping them, for backends that offer
    /// the choice (`None` otherwise).
    async fn fresh_deleting(&self, tag: &str) -> Result<Option<Box<dyn Bench>>, BenchError> {
        let _ = tag;
        Ok(None)
    }
}

/// One outbox instance and the raw operations of the same shape on its database.
#[async_trait]
pub trait Bench: Send + Sync {
    /// The library's store.
    fn store(&self) -> Arc<dyn Store>;

    /// `transactions` caller transactions of `per_transaction` events each, enqueued through the
    /// library inside the caller's own transaction.
    async fn outbox_enqueue(
        &self,
        transactions: usize,
        per_transaction: usize,
    ) -> Result<(), BenchError>;

    /// The same transactions writing the same rows (documents, commands) without the library.
    async fn raw_enqueue(
        &self,
        transactions: usize,
        per_transaction: usize,
    ) -> Result<(), BenchError>;

    /// Fills the outbox with `n` pending events for the library's drain, then [settles](Self::settle) it.
    async fn prefill(&self, n: usize) -> Result<(), BenchError> {
        prefill_store(self.store().as_ref(), n).await?;
        self.settle().await
    }

    /// Brings a freshly filled outbox to the state a drain of a long-lived one starts from, the
    /// way the peer script prepares its own queue (PostgreSQL: `VACUUM ANALYZE`, which sets the
    /// rows' hint bits and the statistics). Not measured. Nothing on other backends.
    async fn settle(&self) -> Result<(), BenchError> {
        Ok(())
    }

    /// Fills the raw baseline's structure with `n` pending events (the outbox's own table where the
    /// shapes are the same).
    async fn raw_prefill(&self, n: usize) -> Result<(), BenchError> {
        self.prefill(n).await
    }

    /// Drains the raw structure with `processors` concurrent loops of the minimal
    /// lease-then-complete statements, `batch` events per lease; returns the events completed.
    async fn raw_drain(&self, processors: usize, batch: usize) -> Result<u64, BenchError>;

    /// Backend facts worth reporting after a scenario (table size, dead tuples).
    async fn facts(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// What the server needs after purges when it does not do it by itself (PostgreSQL with
    /// autovacuum off: `VACUUM`); returns what it did, if anything.
    async fn maintain(&self) -> Option<String> {
        None
    }

    /// The outbox's size on the server (table and indexes, file, server memory), when known.
    async fn size_bytes(&self) -> Option<u64> {
        None
    }

    /// Opens a `REPEATABLE READ` transaction on a connection of its own and keeps its snapshot
    /// until the returned guard is dropped, as a long report, `pg_dump` or an idle-in-transaction
    /// session would (PostgreSQL; `None` elsewhere).
    async fn hold_snapshot(&self) -> Result<Option<SnapshotHold>, BenchError> {
        Ok(None)
    }

    /// One walk of the whole due index as a claim without a window makes it, when nothing is
    /// due: how long it took and how many buffers it read (PostgreSQL).
    async fn full_walk(&self) -> Option<(Duration, u64)> {
        None
    }

    /// Runs the server's cleanup now (PostgreSQL: `VACUUM`), as a maintenance cycle would.
    async fn vacuum_now(&self) -> Option<String> {
        None
    }

    /// Removes what this outbox created.
    async fn cleanup(&self) {}
}
