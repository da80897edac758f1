//! The suite catches broken stores: each deliberately broken store below must fail the clause that
//! covers its flaw (and a suite that passed them would be worthless).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outbox_core::model::CorruptEvent;
use outbox_core::prelude::*;
use outbox_core::store::{
    ClaimRequest, ClaimedEvent, Completion, Finished, Lease, StoreStats, TypeStats, WakeupStream,
};
use outbox_core::store::{ClaimStore, EnqueueStore, InspectStore, RepairStore};
use outbox_core::{Enqueued, EventRecord, Limits, NewEvent, StoreError};
use outbox_testkit::{ClauseResult, MemoryFactory, StoreFactory, TestTransaction, Verdict, suite};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    /// Hands events it already leased to the next claimer too.
    DoubleClaim,
    /// Completes with whatever token is current, ignoring the caller's.
    IgnoresLeaseToken,
    /// Acknowledges every 25th enqueued event without storing it.
    LosesEvents,
    /// Forgets ordering keys.
    IgnoresOrderingKeys,
    /// Forgets idempotency keys.
    IgnoresIdempotencyKeys,
    /// Never extends a lease.
    RenewalIsNoop,
    /// Its transaction adapter commits on rollback: a rolled-back event survives.
    RollbackKeepsEvents,
    /// Writes transactional enqueues at once, outside the caller's transaction.
    IgnoresTransactions,
    /// Fails a whole claim when one of its events does not decode (the batch stays leased).
    FailsBatchOnPoison,
    /// Checks no input limits beyond NUL characters.
    NoInputLimits,
    /// Renews every lease of a batch with whatever token is current.
    RenewManyIgnoresTokens,
    /// Stores completions without their per-handler results (outputs, logs).
    DropsHandlerResults,
    /// Reads pending events back as processed.
    ReportsPendingAsFinished,
    /// Does not store the trace context.
    DropsTraceparent,
}

#[derive(Clone)]
struct Broken {
    inner: outbox_testkit::MemoryStore,
    flaw: Flaw,
    recent_claims: Arc<Mutex<Vec<ClaimedEvent>>>,
    enqueued: Arc<Mutex<u64>>,
    damaged: Arc<Mutex<Vec<Uuid>>>,
}

#[async_trait]
impl ClaimStore for Broken {
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
        let mut claimed = self.inner.claim(request).await?;
        if self.flaw == Flaw::FailsBatchOnPoison {
            let damaged = self.damaged.lock().expect("damage lock");
            if let Some(bad) = claimed.iter().find(|c| damaged.contains(&c.record.id)) {
                return Err(StoreError::Corrupt {
                    id: bad.record.id.to_string(),
                    message: "handler_results: invalid type".into(),
                });
            }
        }
        if self.flaw == Flaw::DoubleClaim {
            let mut recent = self.recent_claims.lock().expect("claims lock");
            let again: Vec<_> = recent
                .drain(..)
                .take(request.limit.saturating_sub(claimed.len()))
                .collect();
            recent.extend(claimed.iter().cloned());
            claimed.extend(again);
        }
        Ok(claimed)
    }

    async fn renew_many(
        &self,
        leases: Vec<Lease>,
        extend: Duration,
    ) -> Vec<Result<DateTime<Utc>, StoreError>> {
        let mut out = Vec::new();
        for lease in leases {
            let mut lease = lease;
            if self.flaw == Flaw::RenewManyIgnoresTokens {
                if let Ok(Some(current)) = self.inner.get(lease.event_id).await {
                    lease.token = current.lease_token.unwrap_or(lease.token);
                }
            }
            if self.flaw == Flaw::RenewalIsNoop {
                out.push(Ok(
                    Utc::now() + chrono::Duration::from_std(extend).unwrap_or_default()
                ));
                continue;
            }
            out.push(self.inner.renew_lease(&lease, extend).await);
        }
        out
    }

    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError> {
        self.inner.subscribe().await
    }

    async fn complete_many(&self, items: &[(Lease, Completion)]) -> Vec<Result<(), StoreError>> {
        outbox_core::kit::each_concurrently(items, |(lease, completion)| {
            self.complete_one(lease, completion.clone())
        })
        .await
    }
}

#[async_trait]
impl EnqueueStore for Broken {
    async fn enqueue_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        let mut kept = Vec::new();
        let mut out = Vec::new();
        for mut event in events {
            match self.flaw {
                Flaw::IgnoresOrderingKeys => event.ordering_key = None,
                Flaw::IgnoresIdempotencyKeys => event.idempotency_key = None,
                Flaw::DropsTraceparent => event.traceparent = None,
                Flaw::LosesEvents => {
                    let mut n = self.enqueued.lock().expect("counter lock");
                    *n += 1;
                    if *n % 25 == 0 {
                        out.push(Enqueued {
                            id: event.id,
                            duplicate: false,
                        });
                        continue;
                    }
                }
                _ => {}
            }
            kept.push(event);
        }
        out.extend(self.inner.enqueue_batch(kept).await?);
        Ok(out)
    }
}

#[async_trait]
impl InspectStore for Broken {
    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let mut record = self.inner.get(id).await?;
        if self.flaw == Flaw::ReportsPendingAsFinished {
            if let Some(r) = record.as_mut() {
                r.status = outbox_core::EventStatus::Processed;
            }
        }
        Ok(record)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.inner.dead_letters(limit).await
    }

    async fn corrupt_events(&self, limit: usize) -> Result<Vec<CorruptEvent>, StoreError> {
        self.inner.corrupt_events(limit).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.inner.stats().await
    }

    async fn stats_by_type(&self) -> Result<Vec<TypeStats>, StoreError> {
        self.inner.stats_by_type().await
    }

    async fn key_head(&self, key: &str) -> Result<Option<EventRecord>, StoreError> {
        self.inner.key_head(key).await
    }
}

#[async_trait]
impl RepairStore for Broken {
    async fn requeue_dead(&self, id: Uuid) -> Result<bool, StoreError> {
        self.inner.requeue_dead(id).await
    }

    async fn purge(
        &self,
        finished: Finished,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.inner.purge(finished, older_than).await
    }

    async fn requeue_corrupt(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.requeue_corrupt(id).await
    }
}

impl Broken {
    /// Completes one lease (C3): an item of `complete_many`.
    async fn complete_one(
        &self,
        lease: &Lease,
        mut completion: Completion,
    ) -> Result<(), StoreError> {
        if self.flaw == Flaw::DropsHandlerResults {
            completion.handler_results.clear();
        }
        if self.flaw == Flaw::IgnoresLeaseToken {
            if let Some(current) = self
                .inner
                .get(lease.event_id)
                .await?
                .and_then(|r| r.lease_token)
            {
                let forged = Lease {
                    event_id: lease.event_id,
                    token: current,
                };
                return self.inner.complete(&forged, completion).await;
            }
        }
        self.inner.complete(lease, completion).await
    }
}

struct BrokenFactory {
    flaw: Flaw,
    memory: MemoryFactory,
}

#[async_trait]
impl StoreFactory for BrokenFactory {
    type Store = Broken;
    async fn create(&self, namespace: &str) -> Result<Broken, StoreError> {
        let inner = if self.flaw == Flaw::NoInputLimits {
            outbox_testkit::MemoryStore::with_limits(
                Limits::default()
                    .with_max_event_type_bytes(usize::MAX)
                    .with_max_key_bytes(usize::MAX)
                    .with_max_payload_bytes(usize::MAX),
            )
        } else {
            self.memory.create(namespace).await?
        };
        Ok(Broken {
            inner,
            flaw: self.flaw,
            recent_claims: Arc::default(),
            enqueued: Arc::default(),
            damaged: Arc::default(),
        })
    }

    async fn damage(&self, store: &Broken, id: Uuid) -> Result<bool, StoreError> {
        if store.flaw == Flaw::FailsBatchOnPoison {
            store.damaged.lock().expect("damage lock").push(id);
            return Ok(true);
        }
        self.memory.damage(&store.inner, id).await
    }

    async fn repair(&self, store: &Broken, id: Uuid) -> Result<bool, StoreError> {
        store
            .damaged
            .lock()
            .expect("damage lock")
            .retain(|d| *d != id);
        self.memory.repair(&store.inner, id).await
    }

    async fn begin(&self, store: &Broken) -> Result<Option<Box<dyn TestTransaction>>, StoreError> {
        Ok(Some(Box::new(BrokenTransaction {
            tx: Some(store.inner.begin()),
            store: store.clone(),
        })))
    }
}

struct BrokenTransaction {
    tx: Option<outbox_testkit::MemoryTransaction>,
    store: Broken,
}

#[async_trait]
impl TestTransaction for BrokenTransaction {
    async fn enqueue(&mut self, event: NewEvent) -> Result<Enqueued, StoreError> {
        if self.store.flaw == Flaw::IgnoresTransactions {
            return self
                .store
                .inner
                .enqueue_batch(vec![event])
                .await
                .map(|mut v| v.remove(0));
        }
        let tx = self.tx.as_mut().expect("transaction open");
        Ok(Enqueued {
            id: tx.enqueue(event)?,
            duplicate: false,
        })
    }
    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.tx.take().expect("transaction open").commit().map(drop)
    }
    async fn rollback(mut self: Box<Self>) -> Result<(), StoreError> {
        let tx = self.tx.take().expect("transaction open");
        if self.store.flaw == Flaw::RollbackKeepsEvents {
            return tx.commit().map(drop);
        }
        tx.rollback();
        Ok(())
    }
}

fn factory(flaw: Flaw) -> BrokenFactory {
    BrokenFactory {
        flaw,
        memory: MemoryFactory::default(),
    }
}

fn block_on(f: impl std::future::Future<Output = ClauseResult>) -> ClauseResult {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

fn assert_caught(result: ClauseResult, flaw: Flaw) {
    match result {
        Err(failure) => println!("{flaw:?} caught: {failure}"),
        Ok(verdict) => panic!("the suite passed a store with flaw {flaw:?}: {verdict:?}"),
    }
}

#[test]
fn double_claims_are_caught() {
    let f = factory(Flaw::DoubleClaim);
    assert_caught(
        block_on(suite::c2_concurrent_claims_are_exclusive(&f)),
        Flaw::DoubleClaim,
    );
    assert_caught(
        block_on(suite::c2_claim_oldest_first(&f)),
        Flaw::DoubleClaim,
    );
}

#[test]
fn ignored_lease_tokens_are_caught() {
    let f = factory(Flaw::IgnoresLeaseToken);
    assert_caught(
        block_on(suite::c3_fenced_completion(&f)),
        Flaw::IgnoresLeaseToken,
    );
}

#[test]
fn lost_events_are_caught() {
    let f = factory(Flaw::LosesEvents);
    assert_caught(
        block_on(suite::c2_concurrent_claims_are_exclusive(&f)),
        Flaw::LosesEvents,
    );
    assert_caught(
        block_on(suite::p8_many_workers_stress(&f)),
        Flaw::LosesEvents,
    );
}

#[test]
fn ignored_ordering_keys_are_caught() {
    let f = factory(Flaw::IgnoresOrderingKeys);
    assert_caught(
        block_on(suite::c5_ordering_key(&f)),
        Flaw::IgnoresOrderingKeys,
    );
    assert_caught(
        block_on(suite::c5_ordering_under_concurrency(&f)),
        Flaw::IgnoresOrderingKeys,
    );
}

#[test]
fn ignored_idempotency_keys_are_caught() {
    let f = factory(Flaw::IgnoresIdempotencyKeys);
    assert_caught(
        block_on(suite::c6_idempotent_enqueue(&f)),
        Flaw::IgnoresIdempotencyKeys,
    );
}

#[test]
fn noop_renewals_are_caught() {
    let f = factory(Flaw::RenewalIsNoop);
    assert_caught(block_on(suite::c4_lease_renewal(&f)), Flaw::RenewalIsNoop);
}

#[test]
fn rollback_that_keeps_events_is_caught() {
    let f = factory(Flaw::RollbackKeepsEvents);
    assert_caught(
        block_on(suite::c1_transactional_enqueue(&f)),
        Flaw::RollbackKeepsEvents,
    );
}

#[test]
fn enqueue_outside_the_transaction_is_caught() {
    let f = factory(Flaw::IgnoresTransactions);
    assert_caught(
        block_on(suite::c1_transactional_enqueue(&f)),
        Flaw::IgnoresTransactions,
    );
}

#[test]
fn batches_failed_by_a_poison_row_are_caught() {
    let f = factory(Flaw::FailsBatchOnPoison);
    assert_caught(
        block_on(suite::c11_poison_rows(&f)),
        Flaw::FailsBatchOnPoison,
    );
}

#[test]
fn missing_input_limits_are_caught() {
    let f = factory(Flaw::NoInputLimits);
    assert_caught(block_on(suite::c11_input_limits(&f)), Flaw::NoInputLimits);
}

#[test]
fn batched_renewals_that_ignore_tokens_are_caught() {
    let f = factory(Flaw::RenewManyIgnoresTokens);
    assert_caught(
        block_on(suite::c4_batched_renewal(&f)),
        Flaw::RenewManyIgnoresTokens,
    );
}

#[test]
fn the_reference_store_passes_the_same_clauses() {
    let f = MemoryFactory::default();
    for result in [
        block_on(suite::c11_poison_rows(&f)),
        block_on(suite::c11_input_limits(&f)),
        block_on(suite::c4_batched_renewal(&f)),
        block_on(suite::c2_concurrent_claims_are_exclusive(&f)),
        block_on(suite::c3_fenced_completion(&f)),
        block_on(suite::c5_ordering_key(&f)),
        block_on(suite::c6_idempotent_enqueue(&f)),
        block_on(suite::c1_transactional_enqueue(&f)),
        block_on(suite::c4_lease_renewal(&f)),
    ] {
        assert_eq!(result, Ok(Verdict::Passed));
    }
}

#[test]
fn lost_outputs_and_logs_are_caught() {
    let f = factory(Flaw::DropsHandlerResults);
    assert_caught(
        block_on(suite::w1_wait_for_outcomes(&f)),
        Flaw::DropsHandlerResults,
    );
    assert_caught(
        block_on(suite::l1_per_event_logs(&f)),
        Flaw::DropsHandlerResults,
    );
    assert_caught(
        block_on(suite::b1_batch_handlers(&f)),
        Flaw::DropsHandlerResults,
    );
}

#[test]
fn outcomes_reported_too_early_are_caught() {
    let f = factory(Flaw::ReportsPendingAsFinished);
    assert_caught(
        block_on(suite::w1_wait_for_outcomes(&f)),
        Flaw::ReportsPendingAsFinished,
    );
    assert_caught(
        block_on(suite::w2_outcome_targets(&f)),
        Flaw::ReportsPendingAsFinished,
    );
}

#[test]
fn a_lost_trace_context_is_caught() {
    let f = factory(Flaw::DropsTraceparent);
    assert_caught(
        block_on(suite::c2_claim_returns_every_field(&f)),
        Flaw::DropsTraceparent,
    );
}

#[test]
fn the_suite_catches_every_broken_rule_on_the_memory_store() {
    outbox_testkit::broken::assert_suite_catches_every_break(MemoryFactory::default);
}
