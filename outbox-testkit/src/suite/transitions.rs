//! Clauses that walk events through every transition at every entry point — single and batch
//! forms, first and later attempts, tied timestamps — and compare *every field* of every record
//! each read path returns (claim, `get`, dead letters) with what the contract says it must be
//! ([`Expected`]). They catch rule-level mistakes that the clauses about one field let through.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use outbox_core::model::{HandlerResults, HandlerState, LogEntry, LogLevel};
use outbox_core::prelude::*;
use outbox_core::store::{ClaimRequest, ClaimedEvent, Completion, Lease};
use outbox_core::{EventStatus, NewEvent, Store, StoreError, StoreExt};
use serde_json::json;
use uuid::Uuid;

use super::expect::Expected;
use super::support::LONG;
use super::support::{fetch, wait_until};
use crate::ensure;
use crate::harness::{ClauseResult, Failure, StoreFactory, Verdict, namespace};

pub(crate) const WORKER: &str = "conformance";

/// Runs `call`, returning its result and the instants just before and after it.
pub(crate) async fn timed<T, Fut: Future<Output = T>>(
    call: Fut,
) -> (T, (DateTime<Utc>, DateTime<Utc>)) {
    let before = Utc::now();
    let out = call.await;
    (out, (before, Utc::now()))
}

/// Claims up to `limit` events and checks each against its expectation (which it updates).
pub(crate) async fn claim_checked<S: Store>(
    store: &S,
    limit: usize,
    model: &mut HashMap<Uuid, Expected>,
) -> Result<Vec<ClaimedEvent>, Failure> {
    let (claimed, at) = timed(store.claim(&ClaimRequest::new(WORKER, limit, LONG))).await;
    let claimed = claimed?;
    ensure!(
        claimed.len() <= limit,
        "claim({limit}) returned {} events, more than its limit",
        claimed.len()
    );
    for c in &claimed {
        let expected = model
            .get_mut(&c.record.id)
            .ok_or_else(|| Failure::new(format!("claimed an unknown event {}", c.record.id)))?;
        expected.claimed(WORKER, LONG, c, at)?;
    }
    Ok(claimed)
}

/// Checks what `get` reads back for every modelled event.
pub(crate) async fn check_all<S: Store>(
    store: &S,
    model: &HashMap<Uuid, Expected>,
) -> Result<(), Failure> {
    for expected in model.values() {
        expected.check(&fetch(store, expected.id()).await?, "get")?;
    }
    Ok(())
}

/// Enqueues one event, modelling it.
pub(crate) async fn enqueue_one<S: Store>(
    store: &S,
    event: NewEvent,
    model: &mut HashMap<Uuid, Expected>,
) -> Result<Uuid, Failure> {
    let copy = event.clone();
    let (done, (before, after)) = timed(store.enqueue(event)).await;
    let done = done?;
    ensure!(
        !done.duplicate && done.id == copy.id,
        "enqueue must store a new event under its own id {}, got {done:?}",
        copy.id
    );
    model.insert(copy.id, Expected::enqueued(&copy, before, after));
    Ok(copy.id)
}

pub(crate) fn ids(claimed: &[ClaimedEvent]) -> Vec<Uuid> {
    claimed.iter().map(|c| c.record.id).collect()
}

pub(crate) fn ids_of(records: &[outbox_core::EventRecord]) -> Vec<Uuid> {
    records.iter().map(|r| r.id).collect()
}

/// C2, C6 and the record for `enqueue_batch`: one result per item in order, each new item stored
/// under its own id and reading back exactly as sent (payload integers beyond 2^53 included), a
/// key already stored — or repeated inside the batch — reported as a duplicate with the first
/// event's id, keys compared exactly, schedules inside a batch kept, and the batch's events
/// (created at one instant) claimed in enqueue order, never more than each claim's limit.
pub async fn c2_enqueue_batch_reads_back<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c2batch")).await?;
    let mut model = HashMap::new();
    let first = enqueue_one(
        &store,
        NewEvent::new("c2b.Stored", json!({"n": "stored"})).idempotency_key("Batch-Key"),
        &mut model,
    )
    .await?;
    let big = json!({
        "above_2_53": 9_007_199_254_740_993_u64,
        "u64_max": u64::MAX,
        "i64_min": i64::MIN,
        "fraction": 0.1,
        "nested": [1, {"deep": -9_007_199_254_740_993_i64}],
    });
    let batch = vec![
        NewEvent::new("c2b.Big", big)
            .correlation_id("corr-big")
            .traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        // The stored key, exactly: a duplicate of `first`.
        NewEvent::new("c2b.Dup", json!({"n": "dup"})).idempotency_key("Batch-Key"),
        // Another case of it: a different key.
        NewEvent::new("c2b.Case", json!({"n": "case"})).idempotency_key("batch-key"),
        NewEvent::new("c2b.Later", json!({"n": "later"}))
            .ordering_key("c2b-later")
            .deliver_after(Duration::from_secs(3600)),
        NewEvent::new("c2b.Once", json!({"n": "once"})).idempotency_key("in-batch"),
        NewEvent::new("c2b.Once", json!({"n": "again"})).idempotency_key("in-batch"),
        NewEvent::new("c2b.Keyed", json!({"n": "keyed"}))
            .ordering_key("c2b-k")
            .correlation_id("corr-k"),
        NewEvent::new("c2b.Tie", json!(null)),
        NewEvent::new(
            "c2b.Tie",
            json!({"$set": 1, "a.b": [true, 1e300, -2.5e-300], "": "\u{2028}\u{1}é"}),
        ),
        NewEvent::new("c2b.Tie", json!("a string payload")),
    ];
    let sent = batch.clone();
    ensure!(
        store.enqueue_batch(Vec::new()).await?.is_empty(),
        "an empty batch must store nothing and return no results"
    );
    let (results, (before, after)) = timed(store.enqueue_batch(batch)).await;
    let results = results?;
    ensure!(
        results.len() == sent.len(),
        "enqueue_batch must return one result per item ({}), got {}",
        sent.len(),
        results.len()
    );
    let duplicate_of: HashMap<usize, Uuid> = HashMap::from([(1, first), (5, sent[4].id)]);
    for (n, (event, result)) in sent.iter().zip(&results).enumerate() {
        match duplicate_of.get(&n) {
            Some(original) => ensure!(
                result.duplicate && result.id == *original,
                "batch item {n} repeats the idempotency key {:?} of event {original}: it must be \
                 reported as a duplicate with that id, got {result:?}",
                event.idempotency_key
            ),
            None => {
                ensure!(
                    !result.duplicate && result.id == event.id,
                    "batch item {n} ({}, key {:?}) must be stored under its own id {}, got \
                     {result:?} (idempotency keys are compared exactly)",
                    event.event_type,
                    event.idempotency_key,
                    event.id
                );
                model.insert(event.id, Expected::enqueued(event, before, after));
            }
        }
    }
    ensure!(
        store.get(sent[1].id).await?.is_none() && store.get(sent[5].id).await?.is_none(),
        "a duplicate item of a batch was stored"
    );
    check_all(&store, &model).await?;
    ensure!(
        store.get(Uuid::now_v7()).await?.is_none(),
        "get of an id never enqueued must return None"
    );

    // Claims of every size, in due order then enqueue order; the scheduled one never. A store
    // that cannot write a batch at one instant (a partitioned one stamps each partition's part
    // with its own clock) is held to the instants it stored.
    let enqueue_order = [
        first, sent[0].id, sent[2].id, sent[4].id, sent[6].id, sent[7].id, sent[8].id, sent[9].id,
    ];
    let mut due_order = Vec::new();
    for (n, id) in enqueue_order.iter().enumerate() {
        due_order.push((fetch(&store, *id).await?.available_at, n, *id));
    }
    due_order.sort_unstable();
    let due_order: Vec<Uuid> = due_order.into_iter().map(|(_, _, id)| id).collect();
    let mut got = Vec::new();
    for limit in [1, 2, 3, 100] {
        let claimed = claim_checked(&store, limit, &mut model).await?;
        let expected_len = limit.min(due_order.len() - got.len());
        ensure!(
            claimed.len() == expected_len,
            "claim({limit}) must return {expected_len} of the due events, got {}",
            claimed.len()
        );
        got.extend(ids(&claimed));
    }
    ensure!(
        got == due_order,
        "claims must return the due events in enqueue order (the batch's events share one \
         instant; ties go in enqueue order): expected {due_order:?}, got {got:?}"
    );
    ensure!(
        store
            .claim(&ClaimRequest::new(WORKER, 10, LONG))
            .await?
            .is_empty(),
        "a scheduled event of a batch was claimable before its time"
    );
    check_all(&store, &model).await?;
    Ok(Verdict::Passed)
}

/// How a clause hands completions to the store.
#[derive(Debug, Clone, Copy)]
enum EntryPoint {
    /// `complete`, one call per item.
    Single,
    /// `complete_many`.
    Many,
    /// `complete_and_hand_off`.
    HandOff,
}

impl EntryPoint {
    async fn complete<S: Store>(
        self,
        store: &S,
        items: &[(Lease, Completion)],
    ) -> Result<Vec<Result<(), StoreError>>, Failure> {
        Ok(match self {
            Self::Single => {
                let mut out = Vec::new();
                for (lease, completion) in items {
                    out.push(store.complete(lease, completion.clone()).await);
                }
                out
            }
            Self::Many => store.complete_many(items).await,
            Self::HandOff => {
                let handed = store
                    .complete_and_hand_off(items, &ClaimRequest::new(WORKER, 10, LONG))
                    .await;
                // Nothing here has a successor under its key to hand off.
                ensure!(
                    handed.next.is_empty(),
                    "complete_and_hand_off handed off {:?}, though no completed event's ordering \
                     key has another event",
                    ids(&handed.next)
                );
                handed.results
            }
        })
    }
}

pub(crate) fn state(attempts: u32) -> HandlerState {
    HandlerState {
        attempts,
        ..HandlerState::default()
    }
}

pub(crate) fn log(attempt: u32, message: &str) -> LogEntry {
    LogEntry {
        at: Utc::now(),
        level: LogLevel::Warn,
        attempt,
        message: message.to_owned(),
    }
}

/// C3, C7 and the record, for `complete`, `complete_many` and `complete_and_hand_off` alike: every
/// item of a completion is fenced by its own token (a stale one first or last fails alone and
/// changes nothing), carries its own status, attempts as sent, retry delay and handler results
/// (errors, outputs, logs), and one result per item comes back in order. After each transition —
/// first attempt, retry, release, dead, second attempt — every field of every read path (claim,
/// `get`, dead letters) is what the contract says.
pub async fn c3_every_transition_reads_back<F: StoreFactory>(factory: &F) -> ClauseResult {
    for entry in [EntryPoint::Single, EntryPoint::Many, EntryPoint::HandOff] {
        transitions_through(factory, entry)
            .await
            .map_err(|f| Failure::new(format!("through {entry:?} completions: {}", f.message)))?;
    }
    Ok(Verdict::Passed)
}

async fn transitions_through<F: StoreFactory>(factory: &F, entry: EntryPoint) -> ClauseResult {
    let store = factory.create(&namespace("c3trans")).await?;
    let mut model = HashMap::new();
    let mut events = Vec::new();
    // The fifth stays leased through the first batch, which holds a stale lease of it.
    for (n, key) in [
        (0, None),
        (1, Some("c3t-one")),
        (2, Some("c3t-dead")),
        (3, None),
        (4, None),
    ] {
        let mut event =
            NewEvent::new("c3t.Event", json!({ "n": n })).correlation_id(format!("corr-{n}"));
        if let Some(key) = key {
            event = event.ordering_key(key);
        }
        events.push(enqueue_one(&store, event, &mut model).await?);
    }
    let claimed = claim_checked(&store, 10, &mut model).await?;
    ensure!(
        ids(&claimed) == events,
        "the five due events must be claimed in creation order, got {:?}",
        ids(&claimed)
    );
    let lease = |n: usize| claimed[n].lease;
    let head = store
        .key_head("c3t-one")
        .await?
        .ok_or_else(|| Failure::new("key_head: a key whose event is leased has no head"))?;
    model[&events[1]].check(&head, "key_head")?;

    let mut retry_results = HandlerResults::new();
    retry_results.insert(
        "mailer".into(),
        HandlerState {
            last_error: Some("mailbox busy".into()),
            logs: vec![log(1, "retrying soon")],
            ..state(1)
        },
    );
    retry_results.insert(
        "audit".into(),
        HandlerState {
            succeeded_at: Some(Utc::now()),
            output: Some(json!({"receipt": 41})),
            ..state(1)
        },
    );
    let retry = Completion {
        status: EventStatus::Pending,
        handler_results: retry_results,
        attempts: 1,
        retry_delay: Some(Duration::from_millis(500)),
    };
    let mut done_results = HandlerResults::new();
    done_results.insert(
        "mailer".into(),
        HandlerState {
            succeeded_at: Some(Utc::now()),
            output: Some(json!({"message_id": "m-1", "big": 9_007_199_254_740_993_u64})),
            ..state(1)
        },
    );
    let processed = Completion {
        status: EventStatus::Processed,
        handler_results: done_results,
        attempts: 1,
        retry_delay: None,
    };
    let mut dead_results = HandlerResults::new();
    dead_results.insert(
        "mailer".into(),
        HandlerState {
            last_error: Some("no such mailbox".into()),
            gave_up: true,
            logs: vec![log(1, "giving up")],
            ..state(1)
        },
    );
    let dead = Completion {
        status: EventStatus::Dead,
        handler_results: dead_results,
        attempts: 1,
        retry_delay: None,
    };
    // Given back unattempted: the attempt is returned, due again at once.
    let release = Completion {
        status: EventStatus::Pending,
        handler_results: HandlerResults::new(),
        attempts: 0,
        retry_delay: None,
    };
    let stale = |n: usize| Lease {
        event_id: events[n],
        token: Uuid::now_v7(),
    };
    // A stale lease first (its event's real completion follows) and last (of an event another
    // worker holds).
    let items = vec![
        (stale(3), processed.clone()),
        (lease(0), retry.clone()),
        (lease(1), processed.clone()),
        (lease(2), dead.clone()),
        (lease(3), release.clone()),
        (stale(4), dead.clone()),
    ];
    let (results, at) = timed(entry.complete(&store, &items)).await;
    let results = results?;
    ensure!(
        results.len() == items.len(),
        "one result per item ({}) in order, got {}: {results:?}",
        items.len(),
        results.len()
    );
    for (n, result) in results.iter().enumerate() {
        let stale_item = n == 0 || n == items.len() - 1;
        ensure!(
            if stale_item {
                matches!(result, Err(StoreError::LeaseLost { .. }))
            } else {
                result.is_ok()
            },
            "item {n}: {} lease must {}, got {result:?} (results: {results:?})",
            if stale_item { "a stale" } else { "a live" },
            if stale_item {
                "fail alone with LeaseLost"
            } else {
                "be applied"
            }
        );
    }
    for (n, (_, completion)) in items.iter().enumerate().take(5).skip(1) {
        model
            .get_mut(&events[n - 1])
            .ok_or_else(|| Failure::new("unmodelled event"))?
            .completed(completion, at);
    }
    check_all(&store, &model).await?;
    let letters = store.dead_letters(10).await?;
    ensure!(
        ids_of(&letters) == [events[2]],
        "dead_letters must list exactly the dead event, got {:?}",
        ids_of(&letters)
    );
    model[&events[2]].check(&letters[0], "dead_letters")?;

    // Second attempt of the retried event; the released one is due first (it became due first).
    wait_until(
        Duration::from_secs(5),
        "the retried event's back-off ends",
        || async {
            Ok(fetch(&store, events[0])
                .await?
                .backoff_until
                .is_none_or(|t| t <= Utc::now()))
        },
    )
    .await?;
    let again = claim_checked(&store, 10, &mut model).await?;
    ensure!(
        ids(&again) == [events[3], events[0]],
        "after the back-off, the released event (due since its release) and the retried one must \
         be claimed in due order, got {:?}",
        ids(&again)
    );
    let mut second_results = retry.handler_results.clone();
    second_results.insert(
        "mailer".into(),
        HandlerState {
            succeeded_at: Some(Utc::now()),
            logs: vec![log(1, "retrying soon"), log(2, "sent")],
            ..state(2)
        },
    );
    let second = Completion {
        status: EventStatus::Processed,
        handler_results: second_results,
        attempts: 2,
        retry_delay: None,
    };
    let items = vec![
        (again[0].lease, processed.clone()),
        (again[1].lease, second),
        (lease(4), processed.clone()),
    ];
    let (results, at) = timed(entry.complete(&store, &items)).await;
    let results = results?;
    ensure!(
        results.len() == 3 && results.iter().all(Result::is_ok),
        "second attempts must complete, one result each: {results:?}"
    );
    for (lease, completion) in &items {
        model
            .get_mut(&lease.event_id)
            .ok_or_else(|| Failure::new("unmodelled event"))?
            .completed(completion, at);
    }
    check_all(&store, &model).await?;
    Ok(Verdict::Passed)
}

/// C2/C3 lease tokens: every claim sets a fresh token — never one derived from the event and its
/// attempt number, never one an earlier claim of the same event had (after a release that returned
/// the attempt, after a dead letter was re-queued) — and every earlier lease is refused.
pub async fn c3_lease_tokens_are_fresh<F: StoreFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("c3tok")).await?;
    let mut model = HashMap::new();
    let id = enqueue_one(&store, NewEvent::new("c3tok.E", json!({})), &mut model).await?;
    let other = enqueue_one(&store, NewEvent::new("c3tok.E", json!({})), &mut model).await?;
    let mut seen: Vec<Lease> = Vec::new();
    let release = Completion {
        status: EventStatus::Pending,
        handler_results: HandlerResults::new(),
        attempts: 0,
        retry_delay: None,
    };
    // Claimed and released three times: each claim is attempt 1.
    for round in 0..3 {
        let claimed = claim_checked(&store, 10, &mut model).await?;
        ensure!(
            ids(&claimed) == [id, other],
            "round {round}: both events must be claimable again after a release, got {:?}",
            ids(&claimed)
        );
        for c in &claimed {
            ensure!(
                c.record.attempts == 1,
                "round {round}: a claim after a release that returned the attempt is attempt 1, \
                 got {}",
                c.record.attempts
            );
            ensure!(
                seen.iter().all(|l| l.token != c.lease.token),
                "round {round}: event {} got a lease token an earlier claim had: tokens must be \
                 fresh on every claim",
                c.record.id
            );
        }
        for old in &seen {
            let before = fetch(&store, old.event_id).await?;
            let late = store.complete(old, release.clone()).await;
            ensure!(
                matches!(late, Err(StoreError::LeaseLost { .. })),
                "round {round}: a lease from an earlier claim of {} was accepted: {late:?}",
                old.event_id
            );
            ensure!(
                fetch(&store, old.event_id).await? == before,
                "round {round}: a refused completion changed its event"
            );
        }
        seen.extend(claimed.iter().map(|c| c.lease));
        let (results, at) = timed(
            store.complete_many(
                &claimed
                    .iter()
                    .map(|c| (c.lease, release.clone()))
                    .collect::<Vec<_>>(),
            ),
        )
        .await;
        ensure!(
            results.iter().all(Result::is_ok),
            "round {round}: releases failed: {results:?}"
        );
        for c in &claimed {
            model
                .get_mut(&c.record.id)
                .ok_or_else(|| Failure::new("unmodelled event"))?
                .completed(&release, at);
        }
    }
    // Dead, re-queued, claimed again: attempt 1 once more, with a fresh token.
    let claimed = store.claim(&ClaimRequest::new(WORKER, 10, LONG)).await?;
    let first_life = claimed
        .iter()
        .find(|c| c.record.id == id)
        .ok_or_else(|| Failure::new("the first event must be claimable"))?;
    let dead = Completion {
        status: EventStatus::Dead,
        handler_results: HandlerResults::new(),
        attempts: 1,
        retry_delay: None,
    };
    store.complete(&first_life.lease, dead).await?;
    seen.extend(claimed.iter().map(|c| c.lease));
    ensure!(
        store.requeue_dead(id).await?,
        "requeue_dead refused a dead event"
    );
    // `other` stays leased: only the re-queued event is due.
    let again = store.claim(&ClaimRequest::new(WORKER, 10, LONG)).await?;
    ensure!(ids(&again) == [id], "a re-queued event must be claimable");
    ensure!(
        again[0].record.attempts == 1,
        "a re-queued event's next claim is attempt 1, got {}",
        again[0].record.attempts
    );
    ensure!(
        seen.iter().all(|l| l.token != again[0].lease.token),
        "a re-queued event's claim reused a lease token of its first life"
    );
    seen.retain(|l| l.event_id != other || claimed.iter().all(|c| c.lease != *l));
    // A lease left to expire: the next claim (another worker) reads the event back with one
    // more attempt, its own worker name, token and expiry.
    let short = Duration::from_millis(300);
    let expiring = enqueue_one(
        &store,
        NewEvent::new("c3tok.Expiring", json!({})),
        &mut model,
    )
    .await?;
    let (first, at) = timed(store.claim(&ClaimRequest::new("first-worker", 10, short))).await;
    let first = first?;
    ensure!(
        ids(&first) == [expiring],
        "only the new event is due, got {:?}",
        ids(&first)
    );
    let expected = model
        .get_mut(&expiring)
        .ok_or_else(|| Failure::new("unmodelled event"))?;
    expected.claimed("first-worker", short, &first[0], at)?;
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (second, at) = timed(store.claim(&ClaimRequest::new("second-worker", 10, LONG))).await;
    let second = second?;
    ensure!(
        ids(&second) == [expiring],
        "an event whose lease expired must be claimable again, got {:?}",
        ids(&second)
    );
    expected.claimed("second-worker", LONG, &second[0], at)?;
    expected.check(&fetch(&store, expiring).await?, "get after a re-claim")?;
    seen.push(first[0].lease);
    let tokens: HashSet<Uuid> = seen.iter().map(|l| l.token).collect();
    ensure!(
        tokens.len() == seen.len(),
        "two claims got the same lease token"
    );
    for old in &seen {
        let late = store.renew_lease(old, LONG).await;
        ensure!(
            matches!(late, Err(StoreError::LeaseLost { .. })),
            "renewing a lease from an earlier claim of {} must report LeaseLost: {late:?}",
            old.event_id
        );
    }
    Ok(Verdict::Passed)
}
