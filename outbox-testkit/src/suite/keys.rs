//! Ordering keys and idempotency keys (contracts C5, C6).

use super::support::{LONG, processed};
use super::support::{claim, fetch, put};
use crate::ensure;
use crate::harness::{ClauseResult, Failure, StoreFactory, Verdict, namespace};
use chrono::Utc;
use outbox_core::model::HandlerResults;
use outbox_core::prelude::*;
use outbox_core::store::{Completion, Lease};
use outbox_core::{EventStatus, NewEvent, Store, StoreError, StoreExt};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

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
