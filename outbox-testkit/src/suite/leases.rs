//! Fenced completions and lease renewals, single and batched (contracts C3, C4).

use super::support::{LONG, processed};
use super::support::{claim, fetch, put};
use crate::ensure;
use crate::harness::{ClauseResult, Failure, StoreFactory, Verdict, namespace};
use outbox_core::prelude::*;
use outbox_core::{EventStatus, StoreError, StoreExt};
use serde_json::json;
use std::time::Duration;

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
