//! What operators rely on: dead letters and purges, wake-ups, counts and lag, schema and names
//! (contracts C7, C8, C9, C10).

use super::support::{LONG, processed, release};
use super::support::{claim, fetch, put};
use crate::ensure;
use crate::harness::{ClauseResult, Failure, StoreFactory, Verdict, namespace};
use chrono::Utc;
use futures::StreamExt;
use outbox_core::model::{HandlerResults, HandlerState};
use outbox_core::prelude::*;
use outbox_core::store::Completion;
use outbox_core::{EventStatus, NewEvent, StoreError, StoreExt};
use serde_json::json;
use std::time::Duration;

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

/// C8: a store whose `subscribe` returns a stream announces new commits on it.
pub async fn c8_wakeups<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c8")).await?;
    let Some(mut stream) = store.subscribe().await? else {
        return Ok(Verdict::NotApplicable(
            "subscribe() returns None: the store has no wake-ups; workers poll".into(),
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
