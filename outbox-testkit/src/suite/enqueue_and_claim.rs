//! Enqueue and claim (contracts C1, C2): what a store must guarantee before any event is handled.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use outbox_core::model::HandlerResults;
use outbox_core::prelude::*;
use outbox_core::store::Completion;
use outbox_core::{EventStatus, NewEvent, StoreError, StoreExt};
use serde_json::json;
use uuid::Uuid;

use super::support::LONG;
use super::support::{claim, fetch, put, wait_until};
use crate::ensure;
use crate::harness::{ClauseResult, Failure, StoreFactory, Verdict, namespace};

/// C1: an event enqueued in a caller's transaction is claimable after commit, invisible before,
/// and never exists after rollback.
pub async fn c1_transactional_enqueue<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c1")).await?;
    let Some(mut tx) = factory.begin(&store).await? else {
        return Ok(Verdict::NotApplicable(
            "the factory's begin() returns None: the store has no enqueue in a caller's \
             transaction (a store implementing EnqueueIn + TransactionalStore returns \
             Some(outbox_testkit::begin_enqueue_in(store)) there)"
                .into(),
        ));
    };
    let committed = tx
        .enqueue(NewEvent::new("c1.Committed", json!({"n": 1})))
        .await?;
    // Checked with reads: on databases that serialize writers (SQLite) a claim would wait for the
    // open transaction instead of answering.
    ensure!(
        store.get(committed.id).await?.is_none(),
        "an uncommitted event was visible to another connection"
    );
    ensure!(
        store.stats().await?.pending == 0,
        "an uncommitted event was counted as pending"
    );
    tx.commit().await?;
    let claimed = store.claim(&claim(10, LONG)).await?;
    ensure!(
        claimed.len() == 1 && claimed[0].record.id == committed.id,
        "after commit exactly the committed event must be claimable, got {} events",
        claimed.len()
    );

    // Through the transaction, every field is stored as through `enqueue`, and an idempotency key
    // already stored is a duplicate there too.
    let stored = store
        .enqueue(NewEvent::new("c1.Keyed", json!({})).idempotency_key("c1-key"))
        .await?;
    let Some(mut tx) = factory.begin(&store).await? else {
        return Err(Failure::new("begin() returned None"));
    };
    let full = NewEvent::new("c1.Full", json!({"n": 9_007_199_254_740_993_u64}))
        .correlation_id("c1-corr")
        .ordering_key("c1-order")
        .idempotency_key("c1-other")
        .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .deliver_after(Duration::from_secs(3600));
    let in_tx = tx.enqueue(full.clone()).await?;
    tx.commit().await?;
    // A transaction of its own: on a partitioned store, one transaction holds one partition.
    let Some(mut tx) = factory.begin(&store).await? else {
        return Err(Failure::new("begin() returned None"));
    };
    let again = tx
        .enqueue(NewEvent::new("c1.Keyed", json!({"again": true})).idempotency_key("c1-key"))
        .await;
    tx.commit().await?;
    // A store may know the duplicate at once (then it reports the first id) or only at commit
    // (a pipeline); either way nothing new is stored.
    match again? {
        e if e.duplicate => ensure!(
            e.id == stored.id,
            "a duplicate inside a transaction must report the first event's id {}, got {}",
            stored.id,
            e.id
        ),
        e => ensure!(
            store.get(e.id).await?.is_none(),
            "an idempotency key already stored was stored again through a transaction: {}",
            e.id
        ),
    }
    ensure!(
        in_tx.id == full.id && !in_tx.duplicate,
        "a transactional enqueue must store the event under its own id, got {in_tx:?}"
    );
    let back = fetch(&store, full.id).await?;
    ensure!(
        back.payload == full.payload
            && back.correlation_id == full.correlation_id
            && back.ordering_key == full.ordering_key
            && back.idempotency_key == full.idempotency_key
            && back.traceparent == full.traceparent
            && full
                .available_at
                .is_some_and(|at| (back.available_at - at).num_milliseconds().abs() <= 2)
            && back.status == EventStatus::Pending
            && back.attempts == 0,
        "an event enqueued in a transaction must read back as enqueued: sent {full:?}, read \
         {back:?}"
    );

    let Some(mut tx) = factory.begin(&store).await? else {
        return Err(Failure::new("begin() returned None the second time"));
    };
    let rolled_back = tx
        .enqueue(NewEvent::new("c1.RolledBack", json!({})))
        .await?;
    tx.rollback().await?;
    ensure!(
        store.get(rolled_back.id).await?.is_none(),
        "a rolled-back event exists"
    );
    let claimed: Vec<Uuid> = store
        .claim(&claim(10, LONG))
        .await?
        .iter()
        .map(|c| c.record.id)
        .collect();
    ensure!(
        claimed == [stored.id],
        "only the committed keyed event may be claimable (the rolled-back one never existed, the \
         other is scheduled): got {claimed:?}"
    );
    Ok(Verdict::Passed)
}

/// C2: claims return due events oldest first, lease them with a fresh token and count the attempt.
pub async fn c2_claim_oldest_first<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c2order")).await?;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(put(&store, "c2.Order", json!({ "n": n })).await?);
    }
    let first = store.claim(&claim(3, LONG)).await?;
    let got: Vec<_> = first.iter().map(|c| c.record.id).collect();
    ensure!(
        got == ids[..3],
        "first claim must return the 3 oldest in order: expected {:?}, got {got:?}",
        &ids[..3]
    );
    for c in &first {
        ensure!(
            c.record.attempts == 1,
            "a first claim must count attempt 1, got {}",
            c.record.attempts
        );
        ensure!(c.lease.event_id == c.record.id, "lease names another event");
        ensure!(
            c.locked_until > Utc::now(),
            "lease already expired at claim"
        );
        let stored = fetch(&store, c.record.id).await?;
        ensure!(
            stored.lease_token == Some(c.lease.token),
            "stored lease token differs from the returned one"
        );
        ensure!(
            stored.locked_by.as_deref() == Some("conformance"),
            "locked_by not recorded: {:?}",
            stored.locked_by
        );
    }
    let tokens: HashSet<_> = first.iter().map(|c| c.lease.token).collect();
    ensure!(tokens.len() == 3, "lease tokens must differ per claim");
    let second = store.claim(&claim(10, LONG)).await?;
    let got: Vec<_> = second.iter().map(|c| c.record.id).collect();
    ensure!(
        got == ids[3..],
        "second claim must return the remaining 2, got {got:?}"
    );
    ensure!(
        store.claim(&claim(10, LONG)).await?.is_empty(),
        "leased events were claimed again"
    );
    let zero = store.claim(&claim(0, LONG)).await;
    ensure!(
        matches!(&zero, Ok(v) if v.is_empty())
            || matches!(&zero, Err(StoreError::InvalidRequest { .. })),
        "claim(0) must return nothing or InvalidRequest, got {zero:?}"
    );
    Ok(Verdict::Passed)
}

/// C2 precisely: "oldest first" is due order — the time an event became claimable (its schedule,
/// the end of its back-off) — then creation order.
pub async fn c2_due_order<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c2due")).await?;
    let scheduled = store
        .enqueue(
            NewEvent::new("c2.Due", json!({"n": "scheduled"}))
                .deliver_after(Duration::from_millis(700)),
        )
        .await?
        .id;
    let fresh = put(&store, "c2.Due", json!({"n": "fresh"})).await?;
    let retried = put(&store, "c2.Due", json!({"n": "retried"})).await?;
    let first = store.claim(&claim(10, LONG)).await?;
    let got: Vec<_> = first.iter().map(|c| c.record.id).collect();
    ensure!(
        got == [fresh, retried],
        "only the two due events may be claimed, in creation order: got {got:?}"
    );
    // `fresh` goes back without delay (due again now), `retried` after 350 ms.
    for c in &first {
        let delay = (c.record.id == retried).then_some(Duration::from_millis(350));
        store
            .complete(
                &c.lease,
                Completion {
                    status: EventStatus::Pending,
                    handler_results: HandlerResults::new(),
                    attempts: c.record.attempts,
                    retry_delay: delay,
                },
            )
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    let mut order = Vec::new();
    for _ in 0..3 {
        let one = store.claim(&claim(1, LONG)).await?;
        ensure!(
            one.len() == 1,
            "expected one due event per claim, got {}",
            one.len()
        );
        order.push(one[0].record.id);
    }
    ensure!(
        order == [fresh, retried, scheduled],
        "claims must follow due order (fresh, then retried after its back-off, then the scheduled \
         one) whatever the creation order: got {order:?} for fresh {fresh}, retried {retried}, \
         scheduled {scheduled}"
    );
    Ok(Verdict::Passed)
}

/// C2 under concurrency: many claimers at once never hold the same event.
pub async fn c2_concurrent_claims_are_exclusive<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c2excl")).await?;
    let total = 600;
    let events: Vec<_> = (0..total)
        .map(|n| NewEvent::new("c2.Excl", json!({ "n": n })))
        .collect();
    for chunk in events.chunks(100) {
        store.enqueue_batch(chunk.to_vec()).await?;
    }
    let mut claimers = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim(&claim(7, LONG)).await?;
                if batch.is_empty() {
                    return Ok::<_, StoreError>(mine);
                }
                mine.extend(batch.into_iter().map(|c| c.record.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut count = 0;
    for claimer in claimers {
        let ids = claimer
            .await
            .map_err(|e| Failure::new(format!("claimer task failed: {e}")))??;
        count += ids.len();
        seen.extend(ids);
    }
    ensure!(
        count == seen.len(),
        "{} events were handed to two claimers at once",
        count - seen.len()
    );
    ensure!(
        seen.len() == total,
        "claimers got {} distinct events of {total}",
        seen.len()
    );
    Ok(Verdict::Passed)
}

/// C2: scheduled events and events backing off are not claimable before their time.
pub async fn c2_scheduled_and_backoff<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c2sched")).await?;
    let scheduled = store
        .enqueue(NewEvent::new("c2.Later", json!({})).deliver_after(Duration::from_millis(700)))
        .await?
        .id;
    ensure!(
        store.claim(&claim(10, LONG)).await?.is_empty(),
        "a scheduled event was claimable early"
    );
    wait_until(
        Duration::from_secs(5),
        "the scheduled event is claimable",
        || async { Ok(!store.claim(&claim(10, LONG)).await?.is_empty()) },
    )
    .await?;
    let stored = fetch(&store, scheduled).await?;
    ensure!(stored.available_at <= Utc::now(), "available_at not kept");

    let id = put(&store, "c2.Backoff", json!({})).await?;
    let c = store.claim(&claim(1, LONG)).await?;
    ensure!(c.len() == 1, "fresh event not claimable");
    let retry = Completion {
        status: EventStatus::Pending,
        handler_results: HandlerResults::new(),
        attempts: c[0].record.attempts,
        retry_delay: Some(Duration::from_millis(700)),
    };
    store.complete(&c[0].lease, retry).await?;
    let stored = fetch(&store, id).await?;
    ensure!(
        stored.backoff_until.is_some(),
        "backoff_until not set by a retry completion"
    );
    ensure!(
        stored.lease_token.is_none() && stored.locked_until.is_none(),
        "completion must release the lease"
    );
    ensure!(
        store.claim(&claim(10, LONG)).await?.is_empty(),
        "an event backing off was claimable"
    );
    wait_until(
        Duration::from_secs(5),
        "the backed-off event is claimable again",
        || async {
            Ok(store
                .claim(&claim(10, LONG))
                .await?
                .iter()
                .any(|c| c.record.id == id))
        },
    )
    .await?;
    Ok(Verdict::Passed)
}

/// C2: a claim and `get` return every field the event was enqueued with: payload, correlation
/// id, ordering key, idempotency key and the trace context (`traceparent`); unset ones stay unset.
pub async fn c2_claim_returns_every_field<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c2f")).await?;
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let full = NewEvent::new("c2f.Full", json!({ "n": 1, "s": "héllo" }))
        .correlation_id("corr-c2f")
        .ordering_key("key-c2f")
        .idempotency_key("idem-c2f")
        .traceparent(TRACEPARENT);
    let full_id = store.enqueue(full).await?.id;
    let mut bare = NewEvent::new("c2f.Bare", json!([]));
    bare.traceparent = None;
    let bare_id = store.enqueue(bare).await?.id;
    let claimed = store.claim(&claim(10, LONG)).await?;
    ensure!(
        claimed.len() == 2,
        "expected both events claimed, got {}",
        claimed.len()
    );
    for (record, source) in [
        (
            claimed
                .iter()
                .find(|c| c.record.id == full_id)
                .map(|c| c.record.clone()),
            "claim",
        ),
        (store.get(full_id).await?, "get"),
    ] {
        let Some(r) = record else {
            return Err(Failure::new(format!("{source}: the full event is missing")));
        };
        ensure!(
            r.payload == json!({ "n": 1, "s": "héllo" })
                && r.correlation_id.as_deref() == Some("corr-c2f")
                && r.ordering_key.as_deref() == Some("key-c2f")
                && r.idempotency_key.as_deref() == Some("idem-c2f")
                && r.traceparent.as_deref() == Some(TRACEPARENT),
            "{source}: a field did not come back as enqueued: {r:?}"
        );
    }
    let bare = fetch(&store, bare_id).await?;
    ensure!(
        bare.correlation_id.is_none()
            && bare.ordering_key.is_none()
            && bare.idempotency_key.is_none()
            && bare.traceparent.is_none(),
        "unset fields must stay unset: {bare:?}"
    );
    Ok(Verdict::Passed)
}
