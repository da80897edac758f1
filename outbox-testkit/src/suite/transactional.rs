//! Contract X1: transactional handlers (a handler's writes and its success commit together, fenced
//! by the lease) and the inbox. These clauses need a backend's own table for the handlers'
//! effects, so a backend runs them with [`transactional_suite!`](crate::transactional_suite) and a
//! [`TransactionalFactory`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use outbox_core::model::HandlerState;
use outbox_core::prelude::*;
use outbox_core::store::{InboxStore, TransactionalStore};
use outbox_core::{EventStatus, Handler, HandlerError, Inbox, Receipt, StoreError};
use serde_json::json;
use uuid::Uuid;

use super::support::{
    Calls, claim, fast_config, fetch, put, registry, start, wait_status, wait_until,
};
use crate::ensure;
use crate::harness::{ClauseResult, Failure, StoreFactory, Verdict, namespace};

const WAIT: Duration = Duration::from_secs(30);

/// A table of a handler's effects in the backend's database, written in the handler's
/// transaction; the X1 clause counts its rows.
#[async_trait]
pub trait EffectTable<Tx>: Send + Sync + 'static {
    /// Inside `tx`, inserts one row for `event_id`. With `fail_at_commit`, the row must make the
    /// transaction fail when it commits — not before (e.g. a deferred foreign key to a row that
    /// does not exist).
    async fn write(
        &self,
        tx: &mut Tx,
        event_id: Uuid,
        fail_at_commit: bool,
    ) -> Result<(), StoreError>;

    /// The committed rows for `event_id`.
    async fn count(&self, event_id: Uuid) -> Result<u64, StoreError>;

    /// Whether [`write`](Self::write) can make a commit fail (`fail_at_commit`). A database without
    /// commit-time checks (MongoDB) answers `false`; the clause then skips its failing commits.
    fn can_fail_at_commit(&self) -> bool {
        true
    }
}

/// A [`StoreFactory`] whose stores have transactions and an inbox, with a table for the X1
/// clause to write handlers' effects to.
///
/// ```ignore
/// outbox_testkit::transactional_suite!(my_backend::testing::Factory::from_env());
/// ```
#[async_trait]
pub trait TransactionalFactory: StoreFactory<Store: InboxStore> {
    /// The effects table.
    type Effects: EffectTable<<Self::Store as TransactionalStore>::Tx>;

    /// A fresh, empty effects table for `namespace`, beside `store`.
    async fn effects(
        &self,
        store: &Self::Store,
        namespace: &str,
    ) -> Result<Self::Effects, StoreError>;
}

/// The handler's name in the X1 clause.
const APPLY: &str = "apply";

/// What the transactional handler of the clause does on its first attempt, by event.
const MODES: &[&str] = &["ok", "fail", "panic", "timeout", "commit", "sibling"];

/// X1: a transactional handler's writes and its success commit together or not at all, fenced by
/// the lease — first through the store's protocol directly (commit, rollback, a failing commit,
/// a stolen lease), then through workers under failures, timeouts, panics, failing commits, a
/// failing sibling handler and a killed worker. Effects are counted as rows.
pub async fn x1_transactional_handlers<F: TransactionalFactory>(factory: &F) -> ClauseResult {
    let ns = namespace("x1");
    let store = factory.create(&ns).await?;
    ensure!(
        store.transactions().is_some(),
        "ClaimStore::transactions() returns None: return transactions_of(self.clone())"
    );
    let effects = Arc::new(factory.effects(&store, &ns).await?);
    protocol(&store, effects.as_ref()).await?;
    through_workers(&store, &effects).await?;
    Ok(Verdict::Passed)
}

/// The store's side of X1, step by step.
async fn protocol<S: InboxStore + Clone, E: EffectTable<S::Tx>>(
    store: &S,
    effects: &E,
) -> Result<(), Failure> {
    let lease_for = |id: Uuid, leases: Vec<outbox_core::store::ClaimedEvent>| {
        leases
            .into_iter()
            .find(|c| c.record.id == id)
            .map(|c| c.lease)
            .ok_or_else(|| Failure::new(format!("event {id} was not claimed")))
    };
    let success = HandlerState {
        succeeded_at: Some(chrono::Utc::now()),
        attempts: 1,
        output: Some(json!({ "receipt": 7 })),
        ..HandlerState::default()
    };
    let mark = succeeded;

    // Committed: the write and the mark, the event still leased to its worker.
    let id = put(store, "x1.Direct", json!({})).await?;
    let lease = lease_for(id, store.claim(&claim(10, Duration::from_secs(30))).await?)?;
    let mut tx = store.begin_for(&lease).await?;
    effects.write(&mut tx, id, false).await?;
    ensure!(
        store
            .record_success_in(&mut tx, &lease, APPLY, &success)
            .await?,
        "record_success_in refused the event's current lease"
    );
    store.commit(tx).await?;
    let record = fetch(store, id).await?;
    ensure!(
        effects.count(id).await? == 1,
        "a committed handler transaction lost its write"
    );
    ensure!(
        mark(&record),
        "a committed handler transaction lost its success mark"
    );
    ensure!(
        record
            .handler_results
            .get(APPLY)
            .and_then(|s| s.output.clone())
            == Some(json!({ "receipt": 7 })),
        "the success mark lost the handler's output"
    );
    ensure!(
        record.status == EventStatus::Pending && record.lease_token == Some(lease.token),
        "recording a success must leave the event leased to its worker (status {}, token {:?})",
        record.status,
        record.lease_token
    );

    // Rolled back (dropped): neither the write nor the mark.
    let id = put(store, "x1.Direct", json!({})).await?;
    let lease = lease_for(id, store.claim(&claim(10, Duration::from_secs(30))).await?)?;
    let mut tx = store.begin_for(&lease).await?;
    effects.write(&mut tx, id, false).await?;
    ensure!(
        store
            .record_success_in(&mut tx, &lease, APPLY, &success)
            .await?,
        "record_success_in refused the event's current lease"
    );
    drop(tx);
    tokio::time::sleep(Duration::from_millis(50)).await;
    ensure!(
        effects.count(id).await? == 0,
        "a dropped handler transaction kept its write"
    );
    ensure!(
        !mark(&fetch(store, id).await?),
        "a dropped handler transaction kept its success mark: the mark was written outside the transaction"
    );

    // A commit that fails: neither.
    if effects.can_fail_at_commit() {
        failing_commit(store, effects, &success).await?;
    }

    // A stolen lease: the mark is refused and the write goes with the rollback.
    let id = put(store, "x1.Direct", json!({})).await?;
    let stale = lease_for(
        id,
        store.claim(&claim(10, Duration::from_millis(200))).await?,
    )?;
    let thief = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = store.claim(&claim(10, Duration::from_secs(30))).await?;
            if let Some(c) = got.into_iter().find(|c| c.record.id == id) {
                break c.lease;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "an expired lease was never taken over"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut tx = store.begin().await?;
    effects.write(&mut tx, id, false).await?;
    let recorded = store
        .record_success_in(&mut tx, &stale, APPLY, &success)
        .await?;
    if recorded {
        store.commit(tx).await?;
    } else {
        drop(tx);
    }
    ensure!(
        !recorded,
        "record_success_in accepted a lease that was taken over: it must be fenced by the token"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    ensure!(
        effects.count(id).await? == 0,
        "the write of a handler whose lease was taken over survived"
    );
    let record = fetch(store, id).await?;
    ensure!(
        !mark(&record) && record.lease_token == Some(thief.token),
        "a refused mark changed the event taken over"
    );
    Ok(())
}

/// A commit that fails at commit time keeps neither the write nor the mark.
async fn failing_commit<S: InboxStore + Clone, E: EffectTable<S::Tx>>(
    store: &S,
    effects: &E,
    success: &HandlerState,
) -> Result<(), Failure> {
    let id = put(store, "x1.Direct", json!({})).await?;
    let lease = store
        .claim(&claim(10, Duration::from_secs(30)))
        .await?
        .into_iter()
        .find(|c| c.record.id == id)
        .map(|c| c.lease)
        .ok_or_else(|| Failure::new(format!("event {id} was not claimed")))?;
    let mut tx = store.begin_for(&lease).await?;
    effects.write(&mut tx, id, true).await?;
    let recorded = store
        .record_success_in(&mut tx, &lease, APPLY, success)
        .await;
    let committed = match recorded {
        Ok(true) => store.commit(tx).await.is_ok(),
        _ => false,
    };
    ensure!(
        !committed,
        "the effects table's commit-time failure did not fail the commit"
    );
    ensure!(
        effects.count(id).await? == 0,
        "a failed commit kept the handler's write"
    );
    ensure!(
        !succeeded(&fetch(store, id).await?),
        "a failed commit kept the success mark: the mark was written outside the transaction"
    );
    Ok(())
}

/// Whether the clause's handler is recorded as succeeded on `record`.
fn succeeded(record: &outbox_core::EventRecord) -> bool {
    record
        .handler_results
        .get(APPLY)
        .is_some_and(|s| s.succeeded_at.is_some())
}

/// X1 through workers: every event's effect exactly once, whatever its first attempt did.
async fn through_workers<S: InboxStore + Clone, E: EffectTable<S::Tx>>(
    store: &S,
    effects: &Arc<E>,
) -> Result<(), Failure> {
    let calls = Calls::default();
    let registry = registry(vec![
        apply_handler::<S, E>(effects, &calls),
        sibling_handler(&calls),
    ])?;

    // A worker killed with a handler inside its transaction (after its write), and with events
    // whose transactional handler committed while a sibling still ran.
    // Each running transactional handler holds a connection of the store's pool: keep the
    // workers' handlers fewer than a small pool's connections.
    let config = fast_config()
        .with_max_in_flight(5)
        .with_lease(Duration::from_millis(800))
        .with_renew_interval(Duration::from_millis(200));
    let doomed = start(store, registry.clone(), config.clone())?;
    let mut after_commit = Vec::new();
    for _ in 0..3 {
        after_commit.push(put(store, "x1.Ev", json!({ "mode": "crash_after_commit" })).await?);
    }
    wait_until(WAIT, "the transactional handlers committed", || async {
        for id in &after_commit {
            let record = fetch(store, *id).await?;
            if record
                .handler_results
                .get(APPLY)
                .is_none_or(|s| s.succeeded_at.is_none())
            {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    let crashed = put(store, "x1.Ev", json!({ "mode": "crash" })).await?;
    wait_until(
        WAIT,
        "the crashing handler wrote in its transaction",
        || {
            let n = calls.get(crashed, WROTE);
            async move { Ok(n >= 1) }
        },
    )
    .await?;
    doomed.abort();

    // Survivors: two workers, every other first-attempt behaviour.
    let mut ids: Vec<(Uuid, &str)> = after_commit
        .iter()
        .map(|id| (*id, "crash_after_commit"))
        .chain([(crashed, "crash")])
        .collect();
    for mode in MODES {
        if *mode == "commit" && !effects.can_fail_at_commit() {
            continue;
        }
        for _ in 0..3 {
            ids.push((put(store, "x1.Ev", json!({ "mode": mode })).await?, mode));
        }
    }
    // Longer leases than the killed worker's: on SQLite a handler's transaction holds the write
    // lock, renewals included, while it runs (up to its 1.5 s timeout here).
    let config = config
        .with_lease(Duration::from_secs(5))
        .with_max_in_flight(3);
    let survivors = [
        start(store, registry.clone(), config.clone())?,
        start(store, registry, config)?,
    ];
    for (id, mode) in &ids {
        let record = match wait_status(store, *id, EventStatus::Processed, WAIT).await {
            Ok(record) => record,
            Err(failure) => {
                let now = store.get(*id).await?;
                return Err(Failure::new(format!(
                    "{mode}: {failure}; the event: {now:?}"
                )));
            }
        };
        let rows = effects.count(*id).await?;
        ensure!(
            rows == 1,
            "event {id} ({mode}): {rows} effect rows, expected exactly 1"
        );
        let state = record
            .handler_results
            .get(APPLY)
            .cloned()
            .unwrap_or_default();
        ensure!(
            state.succeeded_at.is_some(),
            "event {id} ({mode}): the transactional handler's success is not recorded"
        );
        let expected_runs = match *mode {
            "ok" | "sibling" | "crash_after_commit" => 1,
            _ => 2,
        };
        // A killed run leaves no result of its own (the event's attempts count it); an attempt
        // can also time out before the handler is called (waiting for SQLite's write lock).
        let expected_attempts = if *mode == "crash" { 1 } else { expected_runs };
        let runs = calls.get(*id, APPLY);
        ensure!(
            runs == expected_runs,
            "event {id} ({mode}): the transactional handler ran {runs} times, expected {expected_runs}"
        );
        ensure!(
            state.attempts >= expected_attempts,
            "event {id} ({mode}): its recorded attempts are {}, expected {expected_attempts} (last error: {:?})",
            state.attempts,
            state.last_error
        );
    }
    for worker in survivors {
        worker.shutdown().await;
    }
    Ok(())
}

/// Counted when the transactional handler has written (the crash waits for it).
const WROTE: &str = "wrote";

fn apply_handler<S: InboxStore, E: EffectTable<S::Tx>>(effects: &Arc<E>, calls: &Calls) -> Handler {
    let effects = Arc::clone(effects);
    let calls = calls.clone();
    Handler::transactional("x1.Ev", APPLY, move |record, tx: &mut S::Tx, _ctx| {
        let effects = Arc::clone(&effects);
        let n = calls.record(record.id, APPLY);
        let calls = calls.clone();
        Box::pin(async move {
            let mode = record.payload["mode"].as_str().unwrap_or("ok").to_owned();
            // The first call, whatever attempt it is: on SQLite an attempt can time out while
            // waiting for the write lock, before the handler is called.
            let first = n == 1;
            effects
                .write(tx, record.id, first && mode == "commit")
                .await
                .map_err(|e| HandlerError::retry(e.to_string()))?;
            calls.record(record.id, WROTE);
            if first {
                match mode.as_str() {
                    "fail" => return Err(HandlerError::retry("first attempt fails")),
                    "panic" => panic!("first attempt panics"),
                    "timeout" => tokio::time::sleep(Duration::from_secs(30)).await,
                    "crash" => tokio::time::sleep(Duration::from_secs(3600)).await,
                    _ => {}
                }
            }
            Ok::<_, HandlerError>(json!({ "applied": record.id }))
        })
    })
    .with_timeout(Duration::from_millis(1500))
    .with_max_attempts(50)
}

/// A plain handler beside the transactional one: fails once for "sibling" events, hangs once for
/// "crash_after_commit" ones (until its worker is killed).
fn sibling_handler(calls: &Calls) -> Handler {
    let calls = calls.clone();
    Handler::raw("x1.Ev", "sibling", move |record, _ctx| {
        let n = calls.record(record.id, "sibling");
        async move {
            match (record.payload["mode"].as_str(), n) {
                (Some("sibling"), 1) => Err(HandlerError::retry("sibling fails once")),
                (Some("crash_after_commit"), 1) => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(())
                }
                _ => Ok(()),
            }
        }
    })
}

/// Runs `attempt` until it does not fail with a transient error (a write conflict).
async fn retry_conflicts<F, Fut>(mut attempt: F) -> Result<Receipt, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Receipt, StoreError>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(err) if err.is_transient() && tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            done => return done,
        }
    }
}

/// X1 inbox: a message id is recorded in the caller's transaction — once per consumer, forgotten
/// with a rollback, seen by a concurrent transaction after the first commits, purged after its
/// retention — and bad ids are refused.
pub async fn x1_inbox<F: TransactionalFactory>(factory: &F) -> ClauseResult {
    let store = factory.create(&namespace("x1inbox")).await?;
    let inbox =
        Inbox::new(store.clone(), "mailer").map_err(|e| Failure::new(format!("inbox: {e}")))?;
    let other = Inbox::new(store.clone(), "audit").map_err(|e| Failure::new(format!("{e}")))?;
    ensure!(
        Inbox::new(store.clone(), " ").is_err(),
        "a blank consumer name was accepted"
    );

    // A conflict with another transaction (MongoDB) is retried as a whole, as the inbox's
    // contract asks of callers.
    let receive = |inbox: &Inbox<F::Store>, id: &'static str, commit: bool| {
        let inbox = inbox.clone();
        let store = store.clone();
        retry_conflicts(move || {
            let inbox = inbox.clone();
            let store = store.clone();
            async move {
                let mut tx = store.begin().await?;
                let receipt = inbox.receive_in(&mut tx, id).await?;
                if commit {
                    store.commit(tx).await?;
                }
                Ok(receipt)
            }
        })
    };
    ensure!(
        receive(&inbox, "m-1", true).await? == Receipt::First,
        "a new message was reported as a duplicate"
    );
    ensure!(
        receive(&inbox, "m-1", true).await? == Receipt::Duplicate,
        "a committed message id was not recognised"
    );
    ensure!(
        receive(&other, "m-1", true).await? == Receipt::First,
        "consumers must not share their inboxes"
    );
    ensure!(
        receive(&inbox, "m-2", false).await? == Receipt::First,
        "a new message was reported as a duplicate"
    );
    ensure!(
        receive(&inbox, "m-2", true).await? == Receipt::First,
        "a rolled-back receipt was kept"
    );

    // Concurrent: one transaction holds the message open for a while; another receives it
    // meanwhile (waiting for it, or conflicting and retrying). Exactly one is the first.
    let slow = {
        let inbox = inbox.clone();
        let store = store.clone();
        tokio::spawn(retry_conflicts(move || {
            let inbox = inbox.clone();
            let store = store.clone();
            async move {
                let mut tx = store.begin().await?;
                let receipt = inbox.receive_in(&mut tx, "m-3").await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                store.commit(tx).await?;
                Ok(receipt)
            }
        }))
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let quick = receive(&inbox, "m-3", true).await?;
    let slow = slow
        .await
        .map_err(|e| Failure::new(format!("the slow receiver: {e}")))??;
    let mut both = [slow, quick];
    both.sort_by_key(|r| r.is_duplicate());
    ensure!(
        both == [Receipt::First, Receipt::Duplicate],
        "two concurrent receipts of one message: {slow:?} and {quick:?}"
    );

    // Bad ids.
    let mut tx = store.begin().await?;
    ensure!(
        inbox.receive_in(&mut tx, "").await.is_err(),
        "an empty message id was accepted"
    );
    ensure!(
        inbox
            .receive_in(
                &mut tx,
                &"x".repeat(outbox_core::store::MAX_MESSAGE_ID_BYTES + 1)
            )
            .await
            .is_err(),
        "an over-long message id was accepted"
    );
    drop(tx);

    // Retention: nothing is old enough to purge at 7 days; everything at zero.
    tokio::time::sleep(Duration::from_millis(20)).await;
    ensure!(
        inbox.purge_expired().await? == 0,
        "a purge removed ids younger than the retention"
    );
    let purged = inbox
        .clone()
        .retention(Duration::ZERO)
        .purge_expired()
        .await?;
    ensure!(
        purged == 3,
        "purging with zero retention removed {purged} ids, expected the consumer's 3"
    );
    ensure!(
        receive(&inbox, "m-1", true).await? == Receipt::First,
        "a purged id was still recognised"
    );
    ensure!(
        receive(&other, "m-1", true).await? == Receipt::Duplicate,
        "a purge of one consumer removed another's ids"
    );
    Ok(Verdict::Passed)
}
