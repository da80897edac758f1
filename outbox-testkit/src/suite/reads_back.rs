//! Read-back after renewal, idempotency keys, repair and counting (contracts C4, C6, C7, C9): each
//! record every read path returns is compared field by field with the model of [`super::expect`].

use super::support::LONG;
use super::transitions::{
    WORKER, check_all, claim_checked, enqueue_one, ids, ids_of, log, state, timed,
};
use crate::ensure;
use crate::harness::{ClauseResult, Failure, StoreFactory, Verdict, namespace};
use chrono::Utc;
use outbox_core::model::{HandlerResults, HandlerState};
use outbox_core::prelude::*;
use outbox_core::store::{ClaimRequest, Completion, Lease};
use outbox_core::{EventStatus, NewEvent, StoreError, StoreExt};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// C4 at every position of a batch and through both forms: a renewal extends the lease to the
/// store's now plus the extension, the record reads back the reported expiry, and a lost lease —
/// first, in the middle or last — fails alone, in its own position, changing nothing.
pub async fn c4_renewal_reads_back<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c4back")).await?;
    let mut model = HashMap::new();
    let mut events = Vec::new();
    for n in 0..4 {
        events.push(
            enqueue_one(
                &store,
                NewEvent::new("c4b.E", json!({ "n": n })),
                &mut model,
            )
            .await?,
        );
    }
    let held = claim_checked(&store, 10, &mut model).await?;
    ensure!(held.len() == 4, "expected 4 claimable events");
    let extend = Duration::from_secs(60);
    // Single form.
    let (until, at) = timed(store.renew_lease(&held[0].lease, extend)).await;
    let until = until?;
    let window = super::expect::Window::between(at.0, at.1).plus(extend);
    ensure!(
        window.contains(until),
        "renew_lease must extend to the store's now plus the extension ({window}), got {until}"
    );
    if let Some(e) = model.get_mut(&events[0]) {
        e.renewed(until);
    }
    check_all(&store, &model).await?;
    // Batch form: a lost lease first, in the middle, last.
    let lost = |n: usize| Lease {
        event_id: events[n],
        token: Uuid::now_v7(),
    };
    for (label, batch, lost_at) in [
        ("first", vec![lost(0), held[1].lease, held[2].lease], 0usize),
        ("middle", vec![held[1].lease, lost(2), held[3].lease], 1),
        ("last", vec![held[0].lease, held[3].lease, lost(1)], 2),
    ] {
        let (results, at) = timed(store.renew_many(batch.clone(), extend)).await;
        ensure!(
            results.len() == batch.len(),
            "renew_many ({label} lost) must return one result per lease, got {}",
            results.len()
        );
        let window = super::expect::Window::between(at.0, at.1).plus(extend);
        for (n, (lease, result)) in batch.iter().zip(&results).enumerate() {
            if n == lost_at {
                ensure!(
                    matches!(result, Err(StoreError::LeaseLost { .. })),
                    "renew_many: the lost lease ({label}) must fail alone with LeaseLost, got \
                     {result:?} (results {results:?})"
                );
                continue;
            }
            match result {
                Ok(until) => {
                    ensure!(
                        window.contains(*until),
                        "renew_many ({label} lost), item {n}: the lease must extend to the \
                         store's now plus the extension ({window}), got {until}"
                    );
                    if let Some(e) = model.get_mut(&lease.event_id) {
                        e.renewed(*until);
                    }
                }
                Err(err) => {
                    return Err(Failure::new(format!(
                        "renew_many ({label} lost), item {n}: a held lease was not renewed: {err}"
                    )));
                }
            }
        }
        check_all(&store, &model).await?;
    }
    Ok(Verdict::Passed)
}

/// How far ahead `c9_counts_every_state` schedules its event.
const SCHEDULED: Duration = Duration::from_secs(3);

/// C9 for every state: pending, due, leased, processed and dead are each counted; an event whose
/// lease expired is due (not leased), one backing off or scheduled is pending but not due; the lag
/// is measured from when the oldest due event became due — its schedule — not from its creation.
pub async fn c9_counts_every_state<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c9every")).await?;
    // Due in 3 s; by then it was created 3 s ago but due for almost nothing.
    let created = tokio::time::Instant::now();
    store
        .enqueue(NewEvent::new("c9e.Sched", json!({})).deliver_after(SCHEDULED))
        .await?;
    for n in 0..5 {
        store
            .enqueue(NewEvent::new("c9e.E", json!({ "n": n })))
            .await?;
    }
    let claimed = store
        .claim(&ClaimRequest::new(WORKER, 5, Duration::from_millis(400)))
        .await?;
    ensure!(claimed.len() == 5, "expected the 5 due events claimed");
    let with = |status, retry_delay| Completion {
        status,
        handler_results: HandlerResults::new(),
        attempts: 1,
        retry_delay,
    };
    store
        .complete(&claimed[0].lease, with(EventStatus::Processed, None))
        .await?;
    store
        .complete(&claimed[1].lease, with(EventStatus::Dead, None))
        .await?;
    store
        .complete(
            &claimed[2].lease,
            with(EventStatus::Pending, Some(Duration::from_secs(3600))),
        )
        .await?;
    // claimed[3] is renewed for a minute; claimed[4]'s lease runs out.
    store
        .renew_lease(&claimed[3].lease, Duration::from_secs(60))
        .await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let s = store.stats().await?;
    ensure!(
        (s.pending, s.due, s.leased, s.processed, s.dead) == (4, 1, 1, 1, 1),
        "expected pending 4 (the scheduled one, the one backing off, the leased one, the one whose \
         lease expired), due 1 (the expired lease), leased 1, processed 1, dead 1: {s:?}"
    );
    let types = store.stats_by_type().await?;
    let row = |t: &str| types.iter().find(|r| r.event_type == t).cloned();
    let e = row("c9e.E").unwrap_or_default();
    ensure!(
        (e.pending, e.due, e.leased, e.dead) == (3, 1, 1, 1),
        "stats_by_type for c9e.E: expected pending 3 (backing off, leased, lease expired), due 1, \
         leased 1, dead 1: {e:?}"
    );
    let sched = row("c9e.Sched").unwrap_or_default();
    ensure!(
        (
            sched.pending,
            sched.due,
            sched.leased,
            sched.dead,
            sched.oldest_due_age
        ) == (1, 0, 0, 0, Duration::ZERO),
        "stats_by_type for c9e.Sched: one pending event, not yet due, no lag: {sched:?}"
    );
    // The expired lease became due when it expired, ~300 ms ago.
    ensure!(
        s.oldest_due_age >= Duration::from_millis(100) && s.oldest_due_age < Duration::from_secs(5),
        "lag must count from when the expired lease ended: {s:?}"
    );
    let stale = store.claim(&ClaimRequest::new(WORKER, 1, LONG)).await?;
    ensure!(
        ids(&stale) == [claimed[4].record.id],
        "the event whose lease expired must be the one claimable"
    );
    ensure!(
        created.elapsed() < SCHEDULED,
        "the store took over {SCHEDULED:?} for a few calls; the clause cannot tell due from \
         scheduled"
    );
    tokio::time::sleep_until(created + SCHEDULED + Duration::from_millis(300)).await;
    // Now only the scheduled event is due: for ~300 ms, though created over 3 s ago.
    let lag = store.lag().await?;
    let age = created.elapsed();
    let s = store.stats().await?;
    ensure!(
        s.due == 1 && s.leased == 2,
        "the scheduled event must be due and two leases held: {s:?}"
    );
    let sched = store
        .stats_by_type()
        .await?
        .into_iter()
        .find(|r| r.event_type == "c9e.Sched")
        .unwrap_or_default();
    ensure!(
        sched.due == 1,
        "stats_by_type: the scheduled event must be due now: {sched:?}"
    );
    for (what, lag) in [
        ("lag()", lag),
        ("stats().oldest_due_age", s.oldest_due_age),
        ("stats_by_type().oldest_due_age", sched.oldest_due_age),
    ] {
        ensure!(
            lag >= Duration::from_millis(50) && lag + SCHEDULED / 2 < age,
            "{what} must measure from when the scheduled event became due (~300 ms ago), not from \
             its creation ({age:?} ago): {lag:?}"
        );
    }
    Ok(Verdict::Passed)
}

/// C6 exactly: keys are compared byte for byte (case matters), a key stays taken while its event
/// is stored — pending, processed or dead — through both `enqueue` and `enqueue_batch`, and a
/// duplicate always reports the first event's id.
pub async fn c6_idempotency_keys_are_exact_and_kept<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c6exact")).await?;
    let mut first = HashMap::new();
    for key in ["Key-A", "key-a", "KEY-A", "key-a ", "ключ", "kéy"] {
        let done = store
            .enqueue(NewEvent::new("c6e.E", json!({ "key": key })).idempotency_key(key))
            .await?;
        ensure!(
            !done.duplicate,
            "idempotency key {key:?} differs from every earlier key but was reported as a \
             duplicate of {}: keys are compared exactly",
            done.id
        );
        first.insert(key, done.id);
    }
    let claimed = store.claim(&ClaimRequest::new(WORKER, 10, LONG)).await?;
    ensure!(claimed.len() == 6, "expected 6 claimable events");
    let finish = |status| Completion {
        status,
        handler_results: HandlerResults::new(),
        attempts: 1,
        retry_delay: None,
    };
    let processed_id = first["Key-A"];
    let dead_id = first["key-a"];
    for c in &claimed {
        let status = if c.record.id == processed_id {
            EventStatus::Processed
        } else if c.record.id == dead_id {
            EventStatus::Dead
        } else {
            continue;
        };
        store.complete(&c.lease, finish(status)).await?;
    }
    for (key, id) in &first {
        if store.get(*id).await?.is_none() {
            // A store that deletes processed events frees their keys with them.
            ensure!(
                *id == processed_id,
                "event {id} (key {key:?}) vanished though it was not processed"
            );
            continue;
        }
        let single = store
            .enqueue(NewEvent::new("c6e.E", json!({"again": true})).idempotency_key(*key))
            .await?;
        ensure!(
            single.duplicate && single.id == *id,
            "enqueue: key {key:?} is taken by event {id} (pending, processed or dead, still \
             stored) — got {single:?}"
        );
        let batch = store
            .enqueue_batch(vec![
                NewEvent::new("c6e.Fresh", json!({})),
                NewEvent::new("c6e.E", json!({"again": true})).idempotency_key(*key),
            ])
            .await?;
        ensure!(
            batch.len() == 2 && !batch[0].duplicate && batch[1].duplicate && batch[1].id == *id,
            "enqueue_batch: key {key:?} is taken by event {id} — got {batch:?}"
        );
    }
    let s = store.stats().await?;
    ensure!(
        s.dead == 1 && s.processed <= 1 && s.pending == 4 + first.len() as u64,
        "duplicates must store nothing: {s:?}"
    );
    Ok(Verdict::Passed)
}

/// C7 exactly: dead letters list oldest first and honour the limit, reading back every field;
/// a re-queue resets status, attempts and every failed handler (attempts, gave-up) while keeping
/// successes whole, and the event is claimable at once; purges select processed and dead events
/// by when they finished (`processed_at`), not by when they were created.
pub async fn c7_repair_reads_back<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c7back")).await?;
    let mut model = HashMap::new();
    let mut events = Vec::new();
    for n in 0..3 {
        let event = NewEvent::new("c7b.E", json!({ "n": n }))
            .correlation_id(format!("corr-{n}"))
            .ordering_key(format!("c7b-{n}"));
        events.push(enqueue_one(&store, event, &mut model).await?);
    }
    let created = Utc::now();
    // Finished well after creation, so a purge by creation time would select them.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let claimed = claim_checked(&store, 10, &mut model).await?;
    ensure!(claimed.len() == 3, "expected 3 claimable events");
    let mut failed = HandlerResults::new();
    failed.insert(
        "mailer".into(),
        HandlerState {
            last_error: Some("gave up".into()),
            gave_up: true,
            ..state(4)
        },
    );
    failed.insert(
        "pager".into(),
        HandlerState {
            last_error: Some("timed out".into()),
            ..state(2)
        },
    );
    failed.insert(
        "audit".into(),
        HandlerState {
            succeeded_at: Some(Utc::now()),
            output: Some(json!({"kept": true})),
            logs: vec![log(1, "audited")],
            ..state(1)
        },
    );
    let dead = Completion {
        status: EventStatus::Dead,
        handler_results: failed,
        attempts: 4,
        retry_delay: None,
    };
    let processed = Completion {
        status: EventStatus::Processed,
        handler_results: HandlerResults::new(),
        attempts: 1,
        retry_delay: None,
    };
    // Both die in one batch (at one instant: oldest first is creation order), the third is
    // processed.
    let items = vec![
        (claimed[0].lease, dead.clone()),
        (claimed[1].lease, dead.clone()),
        (claimed[2].lease, processed.clone()),
    ];
    let (results, at) = timed(store.complete_many(&items)).await;
    ensure!(
        results.len() == 3 && results.iter().all(Result::is_ok),
        "completions failed: {results:?}"
    );
    for (lease, completion) in &items {
        model
            .get_mut(&lease.event_id)
            .ok_or_else(|| Failure::new("unmodelled event"))?
            .completed(completion, at);
    }
    let letters = store.dead_letters(10).await?;
    ensure!(
        ids_of(&letters) == events[..2],
        "dead_letters must list both dead events oldest first: expected {:?}, got {:?}",
        &events[..2],
        ids_of(&letters)
    );
    for letter in &letters {
        model[&letter.id].check(letter, "dead_letters")?;
    }
    ensure!(
        store.dead_letters(0).await?.is_empty(),
        "dead_letters(0) must list nothing"
    );
    for (what, id) in [
        ("a processed event", events[2]),
        ("an unknown id", Uuid::now_v7()),
    ] {
        ensure!(
            !store.requeue_dead(id).await?,
            "requeue_dead must refuse {what}"
        );
    }
    let one = store.dead_letters(1).await?;
    ensure!(
        ids_of(&one) == events[..1],
        "dead_letters(1) must list only the oldest dead event, got {:?}",
        ids_of(&one)
    );

    // Purges by finishing time: nothing finished before `created` + 200 ms.
    let cut = created + chrono::Duration::milliseconds(200);
    ensure!(
        store.purge_processed(cut).await? == 0,
        "purge_processed removed an event processed after the cut-off (it was created before it: \
         purges select by processed_at)"
    );
    ensure!(
        store.purge_dead(cut).await? == 0,
        "purge_dead removed an event that died after the cut-off (it was created before it)"
    );
    check_all(&store, &model).await?;

    let (requeued, at) = timed(store.requeue_dead(events[0])).await;
    ensure!(requeued?, "requeue_dead refused a dead event");
    model
        .get_mut(&events[0])
        .ok_or_else(|| Failure::new("unmodelled event"))?
        .requeued(at);
    check_all(&store, &model).await?;
    ensure!(
        ids_of(&store.dead_letters(10).await?) == events[1..2],
        "a re-queued event must leave the dead letters"
    );
    ensure!(
        !store.requeue_dead(events[0]).await?,
        "requeue_dead must refuse an event that is pending again"
    );
    check_all(&store, &model).await?;
    let again = claim_checked(&store, 10, &mut model).await?;
    ensure!(
        ids(&again) == events[..1],
        "the re-queued event must be claimable at once, and only it: {:?}",
        ids(&again)
    );
    let soon = Utc::now() + chrono::Duration::seconds(1);
    ensure!(
        store.purge_dead(soon).await? == 1 && store.purge_processed(soon).await? == 1,
        "purges must remove the one dead and the one processed event"
    );
    ensure!(
        store.get(events[1]).await?.is_none() && store.get(events[2]).await?.is_none(),
        "a purged event still exists"
    );
    model.retain(|id, _| *id == events[0]);
    check_all(&store, &model).await?;
    Ok(Verdict::Passed)
}
