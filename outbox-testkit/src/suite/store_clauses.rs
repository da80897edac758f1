//! Clauses C1–C10: what a store itself must guarantee, exercised through the `Store` trait alone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use outbox_core::model::{HandlerResults, HandlerState};
use outbox_core::prelude::*;
use outbox_core::store::{Completion, Lease};
use outbox_core::{EventStatus, NewEvent, Store, StoreError, StoreExt};
use serde_json::json;
use uuid::Uuid;

use super::support::{claim, fetch, put, wait_until};
use crate::ensure;
use crate::harness::{ClauseResult, Failure, StoreFactory, Verdict, namespace};

const LONG: Duration = Duration::from_secs(30);

fn processed() -> Completion {
    Completion {
        status: EventStatus::Processed,
        handler_results: HandlerResults::new(),
        attempts: 1,
        retry_delay: None,
    }
}

/// C1: an event enqueued in a caller's transaction is claimable after commit, invisible before,
/// and never exists after rollback.
pub async fn c1_transactional_enqueue<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c1")).await?;
    if !store.capabilities().transactional_enqueue {
        if let Some(tx) = factory.begin(&store).await? {
            tx.rollback().await?;
            return Err(Failure::new(
                "the factory begins transactions, yet the store does not declare \
                 transactional_enqueue: declare it (StoreCapabilities::transactional_enqueue)",
            ));
        }
        return Ok(Verdict::NotApplicable(
            "store does not declare transactional_enqueue".into(),
        ));
    }
    let Some(mut tx) = factory.begin(&store).await? else {
        return Err(Failure::new(
            "store declares transactional_enqueue but the factory's begin() returned None",
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

/// C4 for batches: `renew_many` fences each lease by its own token; a lost lease in the middle of
/// a batch fails alone with `LeaseLost` and changes nothing, the others are extended.
pub async fn c4_batched_renewal<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c4many")).await?;
    for n in 0..3 {
        put(&store, "c4.Many", json!({ "n": n })).await?;
    }
    let stale = store.claim(&claim(3, Duration::from_millis(300))).await?;
    ensure!(
        stale.len() == 3,
        "expected 3 claimable events, got {}",
        stale.len()
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    let fresh = store.claim(&claim(3, Duration::from_millis(400))).await?;
    ensure!(
        fresh.len() == 3,
        "expired leases must make the events claimable again"
    );
    let middle = fresh[1].record.id;
    let before = fetch(&store, middle).await?;
    let results = store
        .renew_many(
            vec![fresh[0].lease, stale[1].lease, fresh[2].lease],
            Duration::from_secs(5),
        )
        .await;
    ensure!(
        results.len() == 3,
        "renew_many must return one result per lease, got {}",
        results.len()
    );
    for (n, result) in [(0, &results[0]), (2, &results[2])] {
        match result {
            Ok(until) => ensure!(
                *until > fresh[n].locked_until,
                "a renewal must extend the lease: {until} <= {}",
                fresh[n].locked_until
            ),
            Err(err) => return Err(Failure::new(format!("a held lease was not renewed: {err}"))),
        }
    }
    ensure!(
        matches!(results[1], Err(StoreError::LeaseLost { .. })),
        "a lost lease in a batch must fail alone with LeaseLost, got {:?}",
        results[1]
    );
    ensure!(
        fetch(&store, middle).await? == before,
        "a refused renewal changed its event"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = store.claim(&claim(10, LONG)).await?;
    let ids: Vec<_> = again.iter().map(|c| c.record.id).collect();
    ensure!(
        ids == [middle],
        "only the event whose lease was not renewed may be claimed again, got {ids:?}"
    );
    ensure!(
        store.renew_many(Vec::new(), LONG).await.is_empty(),
        "an empty batch must return no results"
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

/// C3: a completion after the lease was taken over is refused with `LeaseLost` and changes nothing;
/// a completion cannot be applied twice.
pub async fn c3_fenced_completion<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c3")).await?;
    let id = put(&store, "c3.Fenced", json!({})).await?;
    let stale = store.claim(&claim(1, Duration::from_millis(300))).await?;
    ensure!(stale.len() == 1, "event not claimable");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let fresh = store.claim(&claim(1, LONG)).await?;
    ensure!(
        fresh.len() == 1,
        "an expired lease must make the event claimable again"
    );
    ensure!(
        fresh[0].lease.token != stale[0].lease.token,
        "a new claim must set a new token"
    );
    ensure!(
        fresh[0].record.attempts == 2,
        "the second claim must count attempt 2, got {}",
        fresh[0].record.attempts
    );
    let before = fetch(&store, id).await?;

    let late = store.complete(&stale[0].lease, processed()).await;
    ensure!(
        matches!(late, Err(StoreError::LeaseLost { .. })),
        "a stale completion must be refused with LeaseLost, got {late:?}"
    );
    let after = fetch(&store, id).await?;
    ensure!(
        after == before,
        "a refused completion changed the event:\nbefore {before:?}\nafter  {after:?}"
    );
    let late_renew = store.renew_lease(&stale[0].lease, LONG).await;
    ensure!(
        matches!(late_renew, Err(StoreError::LeaseLost { .. })),
        "a stale renewal must report LeaseLost, got {late_renew:?}"
    );

    store.complete(&fresh[0].lease, processed()).await?;
    let done = fetch(&store, id).await?;
    ensure!(
        done.status == EventStatus::Processed,
        "the live lease's completion was not applied"
    );
    ensure!(done.processed_at.is_some(), "processed_at not set");
    let twice = store.complete(&fresh[0].lease, processed()).await;
    ensure!(
        matches!(twice, Err(StoreError::LeaseLost { .. })),
        "a second completion with a released lease must be refused, got {twice:?}"
    );
    let unknown = outbox_core::store::Lease {
        event_id: uuid::Uuid::now_v7(),
        token: uuid::Uuid::now_v7(),
    };
    let missing = store.complete(&unknown, processed()).await;
    ensure!(
        matches!(
            missing,
            Err(StoreError::LeaseLost { .. } | StoreError::NotFound { .. })
        ),
        "completing an unknown event must fail with LeaseLost or NotFound, got {missing:?}"
    );
    Ok(Verdict::Passed)
}

/// C3 for batches: `complete_many` fences each item by its own token. A stale lease in the middle
/// of a batch fails alone with `LeaseLost` and changes nothing; the others are applied.
pub async fn c3_batched_completion<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c3many")).await?;
    for n in 0..3 {
        put(&store, "c3.Many", json!({ "n": n })).await?;
    }
    let stale = store.claim(&claim(3, Duration::from_millis(300))).await?;
    ensure!(
        stale.len() == 3,
        "expected 3 claimable events, got {}",
        stale.len()
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    // Another claimer takes all three after the leases expired; it will complete only the middle one
    // late, so the first claimer's batch mixes live and stale leases.
    let fresh = store.claim(&claim(3, LONG)).await?;
    ensure!(
        fresh.len() == 3,
        "expired leases must make the events claimable again"
    );
    let middle = fresh[1].record.id;
    let before = fetch(&store, middle).await?;
    let batch = vec![
        (fresh[0].lease, processed()),
        (stale[1].lease, processed()),
        (fresh[2].lease, processed()),
    ];
    let results = store.complete_many(&batch).await;
    ensure!(
        results.len() == 3,
        "complete_many must return one result per item, got {}",
        results.len()
    );
    ensure!(
        results[0].is_ok() && results[2].is_ok(),
        "live leases must complete: {results:?}"
    );
    ensure!(
        matches!(results[1], Err(StoreError::LeaseLost { .. })),
        "a stale lease in a batch must fail alone with LeaseLost, got {:?}",
        results[1]
    );
    ensure!(
        fetch(&store, middle).await? == before,
        "a refused item of a batch changed its event"
    );
    for c in [&fresh[0], &fresh[2]] {
        let done = fetch(&store, c.record.id).await?;
        ensure!(
            done.status == EventStatus::Processed,
            "a batched completion was not applied"
        );
    }
    let last = store.complete_many(&[(fresh[1].lease, processed())]).await;
    ensure!(
        matches!(last.as_slice(), [Ok(())]),
        "a one-item batch must work: {last:?}"
    );
    ensure!(
        store.complete_many(&[]).await.is_empty(),
        "an empty batch must return no results"
    );
    Ok(Verdict::Passed)
}

/// C4: a held lease can be extended; a lost one says so.
pub async fn c4_lease_renewal<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c4")).await?;
    put(&store, "c4.Renew", json!({})).await?;
    let held = store.claim(&claim(1, Duration::from_millis(400))).await?;
    ensure!(held.len() == 1, "event not claimable");
    let until = store
        .renew_lease(&held[0].lease, Duration::from_secs(5))
        .await?;
    ensure!(
        until > held[0].locked_until,
        "renewal must extend the lease: {until} <= {}",
        held[0].locked_until
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    ensure!(
        store.claim(&claim(1, LONG)).await?.is_empty(),
        "a renewed lease was taken over before its new expiry"
    );
    store.complete(&held[0].lease, processed()).await?;
    let after = store.renew_lease(&held[0].lease, LONG).await;
    ensure!(
        matches!(after, Err(StoreError::LeaseLost { .. })),
        "renewing a completed event must report LeaseLost, got {after:?}"
    );
    Ok(Verdict::Passed)
}

/// C5: events sharing an ordering key are delivered one at a time in creation order; other keys and
/// unkeyed events are not blocked.
pub async fn c5_ordering_key<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c5")).await?;
    let mut k1 = Vec::new();
    for n in 0..3 {
        k1.push(
            store
                .enqueue(NewEvent::new("c5.Ordered", json!({ "n": n })).ordering_key("k1"))
                .await?
                .id,
        );
    }
    let k2 = store
        .enqueue(NewEvent::new("c5.Ordered", json!({})).ordering_key("k2"))
        .await?
        .id;
    let free = put(&store, "c5.Unordered", json!({})).await?;
    let first = store.claim(&claim(10, LONG)).await?;
    let got: HashSet<_> = first.iter().map(|c| c.record.id).collect();
    let want: HashSet<_> = [k1[0], k2, free].into_iter().collect();
    ensure!(
        got == want,
        "first claim must return the head of each key plus unkeyed events: want {want:?}, got {got:?}"
    );
    ensure!(
        store.claim(&claim(10, LONG)).await?.is_empty(),
        "an event was claimable behind a leased one of its key"
    );

    let head = first
        .iter()
        .find(|c| c.record.id == k1[0])
        .ok_or_else(|| Failure::new("head missing"))?;
    let retry = Completion {
        status: EventStatus::Pending,
        handler_results: HandlerResults::new(),
        attempts: 1,
        retry_delay: Some(Duration::from_millis(400)),
    };
    store.complete(&head.lease, retry).await?;
    ensure!(
        store.claim(&claim(10, LONG)).await?.is_empty(),
        "an event was claimable while an older one of its key is pending (backing off)"
    );
    let again = wait_for_claim(&store, k1[0]).await?;
    store.complete(&again.lease, processed()).await?;
    let next = store.claim(&claim(10, LONG)).await?;
    ensure!(
        next.len() == 1 && next[0].record.id == k1[1],
        "after the head completed, the next of its key must follow"
    );
    store.complete(&next[0].lease, processed()).await?;
    let last = store.claim(&claim(10, LONG)).await?;
    ensure!(
        last.len() == 1 && last[0].record.id == k1[2],
        "the third event of the key must follow the second"
    );

    // Events of one key enqueued in one batch share an instant: still one at a time, in enqueue
    // order.
    let batch: Vec<NewEvent> = (0..3)
        .map(|n| NewEvent::new("c5.Batched", json!({ "n": n })).ordering_key("kb"))
        .collect();
    let order: Vec<Uuid> = batch.iter().map(|e| e.id).collect();
    store.enqueue_batch(batch).await?;
    for (n, id) in order.iter().enumerate() {
        let got: Vec<_> = store
            .claim(&claim(10, LONG))
            .await?
            .into_iter()
            .filter(|c| c.record.ordering_key.as_deref() == Some("kb"))
            .collect();
        let ids: Vec<Uuid> = got.iter().map(|c| c.record.id).collect();
        ensure!(
            ids == [*id],
            "events of one key enqueued in one batch must be claimed one at a time in enqueue \
             order: claim {n} expected [{id}], got {ids:?}"
        );
        store.complete(&got[0].lease, processed()).await?;
    }
    Ok(Verdict::Passed)
}

async fn wait_for_claim<S: Store>(
    store: &S,
    id: uuid::Uuid,
) -> Result<outbox_core::store::ClaimedEvent, Failure> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut got = store.claim(&claim(10, LONG)).await?;
        if let Some(pos) = got.iter().position(|c| c.record.id == id) {
            return Ok(got.swap_remove(pos));
        }
        ensure_other_none(&got, id)?;
        if tokio::time::Instant::now() > deadline {
            return Err(Failure::new(format!(
                "event {id} never became claimable again"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ensure_other_none(
    got: &[outbox_core::store::ClaimedEvent],
    id: uuid::Uuid,
) -> Result<(), Failure> {
    if let Some(other) = got.first() {
        return Err(Failure::new(format!(
            "claimed {} while waiting for {id}",
            other.record.id
        )));
    }
    Ok(())
}

/// C6: a second enqueue with an existing idempotency key stores nothing and returns the first id,
/// also when many callers race.
pub async fn c6_idempotent_enqueue<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c6")).await?;
    let first = store
        .enqueue(NewEvent::new("c6.Once", json!({"v": 1})).idempotency_key("order-1"))
        .await?;
    ensure!(
        !first.duplicate,
        "the first enqueue was reported as a duplicate"
    );
    let second = store
        .enqueue(NewEvent::new("c6.Once", json!({"v": 2})).idempotency_key("order-1"))
        .await?;
    ensure!(
        second.duplicate && second.id == first.id,
        "a duplicate key must return the first id, got {second:?}"
    );
    ensure!(
        fetch(&store, first.id).await?.payload == json!({"v": 1}),
        "the duplicate overwrote the payload"
    );
    let in_batch = store
        .enqueue_batch(vec![
            NewEvent::new("c6.Once", json!({})).idempotency_key("order-2"),
            NewEvent::new("c6.Once", json!({})).idempotency_key("order-2"),
        ])
        .await?;
    ensure!(
        in_batch.len() == 2
            && !in_batch[0].duplicate
            && in_batch[1].duplicate
            && in_batch[0].id == in_batch[1].id,
        "a key repeated inside one batch must store one event, got {in_batch:?}"
    );

    let store = Arc::new(store);
    let racers: Vec<_> = (0..16)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .enqueue(NewEvent::new("c6.Race", json!({ "n": n })).idempotency_key("race"))
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for racer in racers {
        results.push(
            racer
                .await
                .map_err(|e| Failure::new(format!("task failed: {e}")))??,
        );
    }
    let ids: HashSet<_> = results.iter().map(|r| r.id).collect();
    let stored = results.iter().filter(|r| !r.duplicate).count();
    ensure!(
        ids.len() == 1,
        "racing duplicates returned {} different ids",
        ids.len()
    );
    ensure!(stored == 1, "racing duplicates stored {stored} events");
    let stats = store.stats().await?;
    ensure!(
        stats.pending == 3,
        "expected 3 stored events in all, stats say {}",
        stats.pending
    );
    Ok(Verdict::Passed)
}

/// C7: dead letters are listed with their errors, re-queued with attempts reset, and purged;
/// processed events are purged by age.
pub async fn c7_dead_letters_and_purge<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c7")).await?;
    let dead_id = put(&store, "c7.Doomed", json!({})).await?;
    let ok_id = put(&store, "c7.Fine", json!({})).await?;
    let pending_id = store
        .enqueue(NewEvent::new("c7.Later", json!({})).deliver_after(Duration::from_secs(3600)))
        .await?
        .id;
    let claimed = store.claim(&claim(10, LONG)).await?;
    ensure!(
        claimed.len() == 2,
        "expected 2 due events, claimed {}",
        claimed.len()
    );
    for c in &claimed {
        let completion = if c.record.id == dead_id {
            let mut results = HandlerResults::new();
            results.insert(
                "mailer".into(),
                HandlerState {
                    attempts: 3,
                    last_error: Some("mailbox unavailable".into()),
                    gave_up: true,
                    ..HandlerState::default()
                },
            );
            results.insert(
                "audit".into(),
                HandlerState {
                    attempts: 1,
                    succeeded_at: Some(Utc::now()),
                    output: Some(json!({"receipt": "r-1"})),
                    ..HandlerState::default()
                },
            );
            Completion {
                status: EventStatus::Dead,
                handler_results: results,
                attempts: 3,
                retry_delay: None,
            }
        } else {
            processed()
        };
        store.complete(&c.lease, completion).await?;
    }
    let dead = store.dead_letters(10).await?;
    ensure!(
        dead.len() == 1 && dead[0].id == dead_id,
        "dead_letters must list exactly the dead event, got {}",
        dead.len()
    );
    ensure!(
        dead[0].give_up_reason() == Some(("mailer", "mailbox unavailable")),
        "dead letter must keep its error, got {:?}",
        dead[0].handler_results
    );
    ensure!(
        dead[0].handler_results["audit"].output == Some(json!({"receipt": "r-1"})),
        "handler output not stored"
    );
    ensure!(
        !store.requeue_dead(ok_id).await?,
        "requeue_dead must refuse an event that is not dead"
    );
    ensure!(
        store.requeue_dead(dead_id).await?,
        "requeue_dead refused a dead event"
    );
    let requeued = fetch(&store, dead_id).await?;
    ensure!(
        requeued.status == EventStatus::Pending && requeued.attempts == 0,
        "requeue must reset status and attempts, got {:?}/{}",
        requeued.status,
        requeued.attempts
    );
    ensure!(
        !requeued.handler_results["mailer"].gave_up,
        "requeue must clear gave_up"
    );
    ensure!(
        requeued.handler_results["audit"].succeeded_at.is_some(),
        "requeue must keep successes"
    );
    let again = store.claim(&claim(10, LONG)).await?;
    ensure!(
        again.len() == 1 && again[0].record.id == dead_id,
        "a requeued event must be claimable"
    );
    let kill = Completion {
        status: EventStatus::Dead,
        handler_results: requeued.handler_results.clone(),
        attempts: 1,
        retry_delay: None,
    };
    store.complete(&again[0].lease, kill).await?;

    let hour_ago = Utc::now() - chrono::Duration::hours(1);
    ensure!(
        store.purge_dead(hour_ago).await? == 0,
        "purge_dead removed events younger than the cut-off"
    );
    ensure!(
        store.purge_processed(hour_ago).await? == 0,
        "purge_processed removed events younger than the cut-off"
    );
    let soon = Utc::now() + chrono::Duration::seconds(1);
    ensure!(
        store.purge_dead(soon).await? == 1,
        "purge_dead must remove the dead event"
    );
    ensure!(
        store.get(dead_id).await?.is_none(),
        "a purged dead event still exists"
    );
    ensure!(
        store.purge_processed(soon).await? == 1,
        "purge_processed must remove the processed event"
    );
    ensure!(
        store.get(ok_id).await?.is_none(),
        "a purged processed event still exists"
    );
    ensure!(
        store.get(pending_id).await?.is_some(),
        "purging removed a pending event"
    );
    Ok(Verdict::Passed)
}

/// C8: a store that declares wake-ups announces new commits on its subscription.
pub async fn c8_wakeups<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c8")).await?;
    if !store.capabilities().wakeups {
        ensure!(
            store.subscribe().await?.is_none(),
            "the store does not declare wake-ups, yet subscribe() returned a stream: declare \
             StoreCapabilities::wakeups (or the worker never listens)"
        );
        return Ok(Verdict::NotApplicable(
            "store does not declare wake-ups; workers poll".into(),
        ));
    }
    let Some(mut stream) = store.subscribe().await? else {
        return Err(Failure::new(
            "store declares wake-ups but subscribe() returned None",
        ));
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    put(&store, "c8.Wake", json!({})).await?;
    let woke = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    ensure!(
        matches!(woke, Ok(Some(()))),
        "no wake-up within 5 s of a commit: {woke:?}"
    );
    Ok(Verdict::Passed)
}

/// C9: counts per status and the lag of the oldest due event.
pub async fn c9_stats_and_lag<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c9")).await?;
    let empty = store.stats().await?;
    ensure!(
        empty.pending == 0 && empty.oldest_due_age == Duration::ZERO,
        "a new store must be empty with zero lag: {empty:?}"
    );
    let lag = store.lag().await?;
    ensure!(
        lag == Duration::ZERO,
        "lag() of a new store must be zero: {lag:?}"
    );
    for _ in 0..3 {
        put(&store, "c9.Stat", json!({})).await?;
    }
    store
        .enqueue(NewEvent::new("c9.Stat", json!({})).deliver_after(Duration::from_secs(3600)))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = store.stats().await?;
    ensure!(
        (s.pending, s.due, s.leased) == (4, 3, 0),
        "expected pending 4, due 3, leased 0: {s:?}"
    );
    ensure!(
        s.oldest_due_age >= Duration::from_millis(250),
        "lag must be at least the 300 ms waited: {s:?}"
    );
    ensure!(
        s.oldest_due_age < Duration::from_secs(60),
        "lag implausibly large: {s:?}"
    );
    let lag = store.lag().await?;
    ensure!(
        lag >= Duration::from_millis(250) && lag < Duration::from_secs(60),
        "lag() must be the oldest due event's age, like stats(): {lag:?} vs {s:?}"
    );
    let c = store.claim(&claim(1, LONG)).await?;
    ensure!(c.len() == 1, "claim failed");
    let s = store.stats().await?;
    ensure!(
        (s.due, s.leased) == (2, 1),
        "after one claim expected due 2, leased 1: {s:?}"
    );
    store.complete(&c[0].lease, processed()).await?;
    let s = store.stats().await?;
    ensure!(
        (s.pending, s.processed, s.dead) == (3, 1, 0),
        "after completion expected pending 3, processed 1, dead 0: {s:?}"
    );
    // Leased and scheduled events are not due: with both due events leased the lag is zero.
    let rest = store.claim(&claim(10, LONG)).await?;
    ensure!(
        rest.len() == 2,
        "expected the 2 due events, got {}",
        rest.len()
    );
    let lag = store.lag().await?;
    ensure!(
        lag == Duration::ZERO,
        "lag() must not count leased or scheduled events: {lag:?}"
    );
    Ok(Verdict::Passed)
}

/// C5 with hand-off: [`ClaimStore::complete_and_hand_off`](outbox_core::store::ClaimStore::complete_and_hand_off) may lease a finished key's next event to the
/// completing worker, only when that event is due now, one per key, never for a completion that
/// was refused or left its event pending; whatever it hands off is leased exclusively, and what it
/// does not hand off is claimable as usual. Stores that hand nothing off pass by claiming.
pub async fn c5_hand_off_to_the_next_event<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c5h")).await?;
    let mut ids = HashMap::new();
    for (name, key, later) in [
        ("a", "k", false),
        ("b", "k", false),
        ("c", "k", false),
        ("s1", "s", false),
        ("s2", "s", true),
        ("r1", "r", false),
        ("r2", "r", false),
    ] {
        let mut event = NewEvent::new("c5h.E", json!({ "name": name })).ordering_key(key);
        if later {
            event = event.deliver_after(Duration::from_secs(3600));
        }
        ids.insert(name, store.enqueue(event).await?.id);
    }
    let heads = store.claim(&claim(10, LONG)).await?;
    let names: HashSet<Uuid> = heads.iter().map(|c| c.record.id).collect();
    ensure!(
        names == HashSet::from([ids["a"], ids["s1"], ids["r1"]]),
        "the first claim must take each key's head only"
    );
    let lease = |name: &str| {
        heads
            .iter()
            .find(|c| c.record.id == ids[name])
            .map(|c| c.lease)
            .ok_or_else(|| Failure::new(format!("{name} was not claimed")))
    };
    // a and s1 finish; r1 fails and stays pending (its key is not passed on); a stale lease of a
    // is refused and hands nothing.
    let mut retry = processed();
    retry.status = EventStatus::Pending;
    retry.retry_delay = Some(Duration::from_secs(3600));
    let stale = Lease {
        event_id: ids["a"],
        token: Uuid::now_v7(),
    };
    let next = outbox_core::store::ClaimRequest::new("c5h-worker", 10, LONG);
    let handed = store
        .complete_and_hand_off(
            &[
                (stale, processed()),
                (lease("a")?, processed()),
                (lease("s1")?, processed()),
                (lease("r1")?, retry),
            ],
            &next,
        )
        .await;
    ensure!(
        handed.results.len() == 4,
        "one result per completion, got {}",
        handed.results.len()
    );
    ensure!(
        matches!(handed.results[0], Err(StoreError::LeaseLost { .. })),
        "a stale lease must be refused: {:?}",
        handed.results[0]
    );
    ensure!(
        handed.results[1..].iter().all(Result::is_ok),
        "the live completions must apply: {:?}",
        handed.results
    );
    for c in &handed.next {
        let stored = fetch(&store, c.record.id).await?;
        ensure!(
            stored.lease_token == Some(c.lease.token)
                && stored.locked_until.is_some_and(|t| t > Utc::now())
                && stored.attempts == c.record.attempts
                && c.record.payload == stored.payload
                && c.record.ordering_key == stored.ordering_key,
            "a handed-off event must read back as handed (leased with its token, its fields): \
             handed {:?}, stored {stored:?}",
            c.record
        );
    }
    let handed_ids: Vec<Uuid> = handed.next.iter().map(|c| c.record.id).collect();
    ensure!(
        handed_ids.is_empty() || handed_ids == [ids["b"]],
        "only b may be handed off (s2 is scheduled, r1 did not finish, c waits behind b): {handed_ids:?}"
    );
    let b_lease = if let Some(b) = handed.next.first() {
        ensure!(
            b.record.locked_by.as_deref() == Some("c5h-worker") && b.record.attempts == 1,
            "a handed-off event is leased to the completing worker, one attempt: {:?}",
            b.record
        );
        let others = store
            .claim(&outbox_core::store::ClaimRequest::new(
                "c5h-other",
                10,
                LONG,
            ))
            .await?;
        ensure!(
            others.is_empty(),
            "nothing else is due: b is leased, c waits behind it, s2 is scheduled, r1 backs off; got {:?}",
            others.iter().map(|c| c.record.id).collect::<Vec<_>>()
        );
        b.lease
    } else {
        let claimed = store.claim(&claim(10, LONG)).await?;
        let got: Vec<Uuid> = claimed.iter().map(|c| c.record.id).collect();
        ensure!(
            got == [ids["b"]],
            "without a hand-off b must be claimable, and only b: {got:?}"
        );
        claimed[0].lease
    };
    // b finishes without a worker to hand to: c becomes claimable.
    store.complete(&b_lease, processed()).await?;
    let claimed = store.claim(&claim(10, LONG)).await?;
    let got: Vec<Uuid> = claimed.iter().map(|c| c.record.id).collect();
    ensure!(got == [ids["c"]], "after b, c must be claimable: {got:?}");
    Ok(Verdict::Passed)
}

/// C9 per type: [`InspectStore::stats_by_type`](outbox_core::store::InspectStore::stats_by_type) counts each type's pending (due, leased) and dead events
/// and its lag, leaving processed events out; [`InspectStore::key_head`](outbox_core::store::InspectStore::key_head) names the event an ordering key
/// waits on.
pub async fn c9_stats_by_type_and_key_head<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c9t")).await?;
    ensure!(
        store.stats_by_type().await?.is_empty(),
        "a new store must have no per-type rows"
    );
    ensure!(
        store.key_head("c9t-key").await?.is_none(),
        "a key without events must have no head"
    );
    for _ in 0..2 {
        put(&store, "c9t.A", json!({})).await?;
    }
    store
        .enqueue(NewEvent::new("c9t.A", json!({})).deliver_after(Duration::from_secs(3600)))
        .await?;
    let mut keyed = Vec::new();
    for n in 0..3 {
        let event = NewEvent::new("c9t.B", json!({ "n": n })).ordering_key("c9t-key");
        keyed.push(store.enqueue(event).await?.id);
    }
    put(&store, "c9t.C", json!({})).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Claim in due order: A, A, B (head), C; keep one A leased, finish the B head, kill C.
    let claimed = store.claim(&claim(10, LONG)).await?;
    ensure!(
        claimed.len() == 4,
        "expected 2 A, the B head and C claimable, got {}",
        claimed.len()
    );
    fn by_type<'a>(
        claimed: &'a [outbox_core::store::ClaimedEvent],
        t: &'a str,
    ) -> impl Iterator<Item = &'a outbox_core::store::ClaimedEvent> {
        claimed.iter().filter(move |c| c.record.event_type == t)
    }
    for c in by_type(&claimed, "c9t.A").skip(1) {
        store.complete(&c.lease, release()).await?;
    }
    for c in by_type(&claimed, "c9t.B") {
        store.complete(&c.lease, processed()).await?;
    }
    for c in by_type(&claimed, "c9t.C") {
        let mut dead = processed();
        dead.status = EventStatus::Dead;
        store.complete(&c.lease, dead).await?;
    }
    put(&store, "c9t.D", json!({})).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = store.stats_by_type().await?;
    let row = |t: &str| rows.iter().find(|r| r.event_type == t).cloned();
    let names: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    ensure!(
        names == ["c9t.A", "c9t.B", "c9t.C", "c9t.D"],
        "expected one row per type, sorted: {names:?}"
    );
    let a = row("c9t.A").unwrap_or_default();
    ensure!(
        (a.pending, a.due, a.leased, a.dead) == (3, 1, 1, 0),
        "type A: expected pending 3 (1 due, 1 leased, 1 scheduled), dead 0: {a:?}"
    );
    ensure!(
        a.oldest_due_age < Duration::from_secs(60),
        "type A: lag implausibly large: {a:?}"
    );
    let b = row("c9t.B").unwrap_or_default();
    ensure!(
        (b.pending, b.due, b.leased, b.dead) == (2, 1, 0, 0),
        "type B: the processed head is not counted; its successor is due, the last waits: {b:?}"
    );
    let c = row("c9t.C").unwrap_or_default();
    ensure!(
        (c.pending, c.dead, c.oldest_due_age) == (0, 1, Duration::ZERO),
        "type C: one dead letter and no lag: {c:?}"
    );
    let d = row("c9t.D").unwrap_or_default();
    ensure!(
        (d.pending, d.due) == (1, 1)
            && d.oldest_due_age >= Duration::from_millis(250)
            && d.oldest_due_age < Duration::from_secs(60),
        "type D: one due event, its lag at least the 300 ms waited: {d:?}"
    );
    let head = store.key_head("c9t-key").await?.map(|r| r.id);
    ensure!(
        head == Some(keyed[1]),
        "after the first keyed event finished its successor must head the key: {head:?} vs {keyed:?}"
    );
    Ok(Verdict::Passed)
}

/// Gives a claim back unprocessed (the attempt returned).
fn release() -> Completion {
    Completion {
        status: EventStatus::Pending,
        handler_results: HandlerResults::new(),
        attempts: 0,
        retry_delay: None,
    }
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

/// C10: schema setup is idempotent (a second `create` on one namespace keeps the data) and unsafe
/// names are refused.
pub async fn c10_schema_and_names<F: StoreFactory>(factory: &F) -> ClauseResult {
    let ns = namespace("c10");
    let store = factory.create(&ns).await?;
    let id = put(&store, "c10.Kept", json!({})).await?;
    let again = factory.create(&ns).await?;
    ensure!(
        again.get(id).await?.is_some(),
        "a second create() on the same namespace lost the data"
    );
    for bad in [
        "",
        "x; DROP TABLE users",
        "a\"b",
        "名前",
        "1abc",
        "has space",
        "a-b",
        &"x".repeat(200),
    ] {
        match factory.create(bad).await {
            Err(StoreError::InvalidRequest { .. } | StoreError::Schema { .. }) => {}
            Err(other) => {
                return Err(Failure::new(format!(
                    "unsafe name {bad:?} refused with an unclear error kind: {other}"
                )));
            }
            Ok(_) => return Err(Failure::new(format!("unsafe name {bad:?} was accepted"))),
        }
    }
    Ok(Verdict::Passed)
}
