//! C11 field by field: a stored event any part of which cannot be read — payload, handler
//! results, attempts, status, a timestamp, a missing field — is reported as bad by every read
//! path and set aside alone, while every listing goes on listing the others.

use std::time::Duration;

use outbox_core::model::HandlerResults;
use outbox_core::prelude::*;
use outbox_core::store::{ClaimRequest, Completion};
use outbox_core::{EventStatus, NewEvent, StoreError, StoreExt};
use serde_json::json;
use uuid::Uuid;

use crate::ensure;
use crate::harness::{ClauseResult, Damage, Failure, StoreFactory, Verdict, namespace};

const LONG: Duration = Duration::from_secs(30);

/// C11 for every part of a record the factory can damage ([`StoreFactory::damage_field`]): `get`
/// reports the damaged event as corrupt (never a record with a made-up value), `stats` and
/// `dead_letters` still answer and list the good events, a claim leaves it out and sets it aside
/// without failing — never delivered, never stranded: `corrupt_events` lists it with a reason and
/// `stats` counts it — and a damaged dead letter is left out of `dead_letters` while the good one
/// stays listed.
pub async fn c11_every_field_is_quarantined<F: StoreFactory>(factory: &F) -> ClauseResult {
    let mut checked = Vec::new();
    for &what in Damage::ALL {
        if quarantines(factory, what)
            .await
            .map_err(|f| Failure::new(format!("damaged {what:?}: {}", f.message)))?
        {
            checked.push(what);
        }
    }
    if checked.is_empty() {
        return Ok(Verdict::NotApplicable(
            "the factory damages no field (StoreFactory::damage_field)".into(),
        ));
    }
    Ok(Verdict::Passed)
}

/// Runs the checks for one damaged part; `false` when the factory cannot damage it.
async fn quarantines<F: StoreFactory>(factory: &F, what: Damage) -> Result<bool, Failure> {
    let store = factory.create(&namespace("c11field")).await?;
    // Two dead letters, one of which will be damaged.
    let dead_good = store
        .enqueue(NewEvent::new("c11f.Dead", json!({"n": "dead good"})))
        .await?
        .id;
    let dead_bad = store
        .enqueue(NewEvent::new("c11f.Dead", json!({"n": "dead bad"})))
        .await?
        .id;
    let claimed = store
        .claim(&ClaimRequest::new("conformance", 10, LONG))
        .await?;
    ensure!(
        claimed.len() == 2,
        "expected the two events to kill claimed"
    );
    let dead = Completion {
        status: EventStatus::Dead,
        handler_results: HandlerResults::new(),
        attempts: 1,
        retry_delay: None,
    };
    for c in &claimed {
        store.complete(&c.lease, dead.clone()).await?;
    }
    let mut good = Vec::new();
    for n in 0..2 {
        good.push(
            store
                .enqueue(NewEvent::new("c11f.E", json!({ "n": n })))
                .await?
                .id,
        );
    }
    let bad = store
        .enqueue(NewEvent::new("c11f.E", json!({"n": "bad"})))
        .await?
        .id;
    for n in 2..4 {
        good.push(
            store
                .enqueue(NewEvent::new("c11f.E", json!({ "n": n })))
                .await?
                .id,
        );
    }
    if !factory.damage_field(&store, bad, what).await? {
        return Ok(false);
    }
    ensure!(
        factory.damage_field(&store, dead_bad, what).await?,
        "the factory damaged a pending event's {what:?} but not a dead one's"
    );

    // Every read path reports it as such, and goes on answering for the others.
    for id in [bad, dead_bad] {
        match store.get(id).await {
            Err(StoreError::Corrupt { .. }) => {}
            other => {
                return Err(Failure::new(format!(
                    "get of a damaged event must report it as corrupt (StoreError::Corrupt), got \
                     {other:?}"
                )));
            }
        }
    }
    let letters = store.dead_letters(10).await?;
    let listed: Vec<Uuid> = letters.iter().map(|r| r.id).collect();
    ensure!(
        listed == [dead_good],
        "dead_letters must list the good dead event and leave the damaged one out, got {listed:?}"
    );
    let stats = store.stats().await?;
    ensure!(
        stats.dead >= 1 && stats.processed == 0,
        "stats must still count the good events: {stats:?}"
    );

    // A claim takes the good events and sets the bad one aside, without failing.
    let claimed = store
        .claim(&ClaimRequest::new("conformance", 10, LONG))
        .await
        .map_err(|e| Failure::new(format!("a claim failed because of one damaged event: {e}")))?;
    let mut got: Vec<Uuid> = claimed.iter().map(|c| c.record.id).collect();
    got.sort_unstable();
    let mut want = good.clone();
    want.sort_unstable();
    ensure!(
        got == want,
        "a claim must deliver exactly the good events (the damaged one set aside): expected \
         {want:?}, got {got:?}"
    );
    let again = store
        .claim(&ClaimRequest::new("conformance", 10, LONG))
        .await?;
    ensure!(
        again.is_empty(),
        "the damaged event was delivered: {:?}",
        again.iter().map(|c| c.record.id).collect::<Vec<_>>()
    );
    ensure!(
        store.corrupt_events(0).await?.is_empty(),
        "corrupt_events(0) must list nothing"
    );
    let corrupt = store.corrupt_events(10).await?;
    let entry = corrupt.iter().find(|c| c.id == bad.to_string());
    ensure!(
        entry.is_some_and(|c| !c.reason.trim().is_empty()),
        "corrupt_events must list the damaged event with a reason (it must not be stranded): \
         {corrupt:?}"
    );
    let types = store.stats_by_type().await?;
    let row = types.iter().find(|r| r.event_type == "c11f.E");
    ensure!(
        row.is_some_and(|r| (r.pending, r.leased, r.due) == (4, 4, 0)),
        "stats_by_type must count the four good events (leased) and not the one set aside: \
         {types:?}"
    );
    let stats = store.stats().await?;
    ensure!(
        stats.corrupt >= 1 && stats.leased == 4,
        "stats must count the event set aside as corrupt and the four good ones as leased: \
         {stats:?}"
    );
    Ok(true)
}
