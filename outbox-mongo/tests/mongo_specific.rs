//! Behaviour specific to MongoDB: enqueue inside the caller's session transaction (abort and
//! commit), write conflicts surfacing as retryable errors, stale completions, change-stream
//! wake-ups, undecodable documents set aside, and a missing server reported quickly.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use outbox_core::handlers::Registry;
use outbox_core::prelude::*;
use outbox_core::store::{ClaimRequest, Completion};
use outbox_core::{
    EventStatus, Handler, HandlerError, NewEvent, StoreError, StoreExt, Worker, WorkerConfig,
};
use outbox_mongo::MongoStore;
use serde_json::json;
use tokio::sync::Mutex;

/// A store in a fresh database named after the test; the database is dropped by [`cleanup`].
async fn store(prefix: &str) -> MongoStore {
    let client = support::client()
        .await
        .expect("MongoDB is reachable (./scripts/services.sh)");
    let store = MongoStore::builder(client)
        .database(outbox_testkit::namespace(prefix))
        .build()
        .expect("valid names");
    store.migrate().await.expect("indexes created");
    store
}

async fn cleanup(store: &MongoStore) {
    let name = store.collection().namespace().db;
    store
        .client()
        .database(&name)
        .drop()
        .await
        .expect("drop the test database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_transaction_leaves_no_event_and_a_committed_one_keeps_both_writes() {
    let store = store("m_abort").await;
    let users = store
        .client()
        .database(&store.collection().namespace().db)
        .collection::<Document>("users");

    let discarded = NewEvent::new("UserInvited", json!({"email": "gone@example.com"}));
    let mut session = store.client().start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    users
        .insert_one(doc! { "email": "gone@example.com" })
        .session(&mut session)
        .await
        .unwrap();
    store
        .enqueue_batch_in(&mut session, vec![discarded.clone()])
        .await
        .unwrap();
    session.abort_transaction().await.unwrap();
    assert!(store.get(discarded.id).await.unwrap().is_none());
    assert_eq!(users.count_documents(doc! {}).await.unwrap(), 0);

    let kept = vec![
        NewEvent::new("UserInvited", json!({"email": "kept@example.com"})),
        NewEvent::new("WelcomeScheduled", json!({"email": "kept@example.com"})),
    ];
    session.start_transaction().await.unwrap();
    users
        .insert_one(doc! { "email": "kept@example.com" })
        .session(&mut session)
        .await
        .unwrap();
    let enqueued = store
        .enqueue_batch_in(&mut session, kept.clone())
        .await
        .unwrap();
    // Uncommitted: invisible to everyone else, including a claimer.
    assert!(store.get(kept[0].id).await.unwrap().is_none());
    let early = store
        .claim(&ClaimRequest::new("w", 10, Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(early.is_empty(), "claimed an uncommitted event");
    session.commit_transaction().await.unwrap();
    assert_eq!(enqueued.len(), 2);
    for event in &kept {
        assert_eq!(
            store.get(event.id).await.unwrap().unwrap().status,
            EventStatus::Pending
        );
    }
    assert_eq!(users.count_documents(doc! {}).await.unwrap(), 1);
    cleanup(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_conflict_during_enqueue_is_a_retryable_error_and_the_retry_sees_the_winner() {
    let store = store("m_conflict").await;
    let first = NewEvent::new("Invite", json!({"n": 1})).idempotency_key("invite:ada");
    let second = NewEvent::new("Invite", json!({"n": 2})).idempotency_key("invite:ada");

    let mut a = store.client().start_session().await.unwrap();
    a.start_transaction().await.unwrap();
    store
        .enqueue_batch_in(&mut a, vec![first.clone()])
        .await
        .unwrap();

    let mut b = store.client().start_session().await.unwrap();
    b.start_transaction().await.unwrap();
    // Transaction A holds an uncommitted document with the same unique key: B cannot insert.
    let err = store
        .enqueue_batch_in(&mut b, vec![second.clone()])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { .. }) && err.is_transient(),
        "expected a retryable conflict, got {err:?}"
    );
    let message = err.to_string();
    assert!(
        message.len() < 400 && message.contains("enqueue"),
        "the error should be one readable line: {message}"
    );
    let _ = b.abort_transaction().await;
    a.commit_transaction().await.unwrap();

    // The caller retries its whole transaction: the key now belongs to A's event.
    b.start_transaction().await.unwrap();
    let retried = store
        .enqueue_batch_in(&mut b, vec![second.clone()])
        .await
        .unwrap();
    b.commit_transaction().await.unwrap();
    assert_eq!(retried[0].id, first.id);
    assert!(retried[0].duplicate);
    assert!(store.get(second.id).await.unwrap().is_none());
    assert_eq!(store.stats().await.unwrap().pending, 1);
    cleanup(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_plain_enqueues_with_one_idempotency_key_store_one_event() {
    let store = store("m_idem").await;
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                // Batches go through a transaction of their own; singles through insert_one.
                let event = NewEvent::new("Idem", json!({ "n": n })).idempotency_key("same");
                if n % 2 == 0 {
                    store.enqueue(event).await
                } else {
                    let other = NewEvent::new("Idem", json!({ "n": n, "other": true }));
                    store
                        .enqueue_batch(vec![event, other])
                        .await
                        .map(|mut v| v.remove(0))
                }
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut fresh = 0;
    for task in tasks {
        let enqueued = task.await.unwrap().expect("enqueue (retried on conflict)");
        ids.insert(enqueued.id);
        fresh += usize::from(!enqueued.duplicate);
    }
    assert_eq!(ids.len(), 1, "one event per idempotency key");
    assert_eq!(fresh, 1);
    let keyed = store
        .collection()
        .count_documents(doc! { "idempotency_key": "same" })
        .await
        .unwrap();
    assert_eq!(keyed, 1);
    cleanup(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_completion_is_refused_and_changes_nothing() {
    let store = store("m_stale").await;
    let id = store
        .enqueue(NewEvent::new("Stale", json!({})))
        .await
        .unwrap()
        .id;
    let stale = store
        .claim(&ClaimRequest::new("a", 1, Duration::from_millis(200)))
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = store
        .claim(&ClaimRequest::new("b", 1, Duration::from_secs(30)))
        .await
        .unwrap()
        .remove(0);
    assert_ne!(stale.lease.token, fresh.lease.token);
    let before = store.get(id).await.unwrap().unwrap();
    let done = Completion {
        status: EventStatus::Processed,
        handler_results: Default::default(),
        attempts: 2,
        retry_delay: None,
    };
    let err = store
        .complete(&stale.lease, done.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    let err = store
        .renew_lease(&stale.lease, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    assert_eq!(store.get(id).await.unwrap().unwrap(), before);
    store.complete(&fresh.lease, done).await.unwrap();
    assert_eq!(
        store.get(id).await.unwrap().unwrap().status,
        EventStatus::Processed
    );
    cleanup(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_stream_delivers_an_event_well_under_the_poll_interval() {
    let store = store("m_wake").await;
    assert!(store.subscribe().await.expect("subscribe").is_some());
    let started: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = started.clone();
    let handler = Handler::raw("Wake", "h", move |_record, _ctx| {
        let seen = seen.clone();
        async move {
            seen.lock().await.push(Instant::now());
            Ok::<_, HandlerError>(())
        }
    });
    let poll = Duration::from_secs(30);
    let worker = Worker::builder(store.clone())
        .registry(Registry::builder().handler(handler).build().unwrap())
        .config(WorkerConfig::default().with_poll_interval(poll))
        .build()
        .unwrap()
        .start();
    // Let the first (empty) poll pass and the change stream open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut delays = Vec::new();
    for n in 0..3 {
        let committed = Instant::now();
        store
            .enqueue(NewEvent::new("Wake", json!({ "n": n })))
            .await
            .unwrap();
        let deadline = committed + Duration::from_secs(10);
        while started.lock().await.len() <= n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let at = *started
            .lock()
            .await
            .get(n)
            .expect("the event was not delivered within 10 s (the poll interval is 30 s)");
        delays.push(at - committed);
    }
    worker.shutdown().await;
    // Functional bound, not a benchmark: polling alone would take up to 30 s.
    for delay in &delays {
        assert!(*delay < Duration::from_secs(3), "wake-up delays {delays:?}");
    }
    cleanup(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_document_is_set_aside_and_does_not_block_its_ordering_key() {
    let store = store("m_corrupt").await;
    let broken = uuid::Uuid::now_v7().to_string();
    store
        .collection()
        .insert_one(doc! {
            "_id": &broken, "event_type": "Broken", "payload": "{not json", "status": "pending",
            "ordering_key": "k", "due_at": mongodb::bson::DateTime::from_millis(0),
            "locked_until": mongodb::bson::DateTime::from_millis(0),
            "created_at": mongodb::bson::DateTime::now(), "available_at": mongodb::bson::DateTime::now(),
            "attempts": 0_i64, "handler_results": "{}",
        })
        .await
        .unwrap();
    let good = store
        .enqueue(NewEvent::new("Fine", json!({})).ordering_key("k"))
        .await
        .unwrap()
        .id;
    let mut claimed = Vec::new();
    for _ in 0..3 {
        claimed.extend(
            store
                .claim(&ClaimRequest::new("w", 10, Duration::from_secs(5)))
                .await
                .expect("a corrupt document must not fail the claim"),
        );
    }
    assert_eq!(
        claimed.iter().map(|c| c.record.id).collect::<Vec<_>>(),
        vec![good]
    );
    let set_aside = store
        .collection()
        .find_one(doc! { "_id": &broken })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(set_aside.get_str("status").unwrap(), "corrupt");
    assert!(
        set_aside
            .get_str("corrupt_reason")
            .unwrap()
            .contains("payload"),
        "{set_aside}"
    );
    cleanup(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_are_refused_before_any_round_trip() {
    let client = mongodb::Client::with_uri_str("mongodb://127.0.0.1:1/?directConnection=true")
        .await
        .unwrap();
    for (database, collection) in [("bad.name", "events"), ("app", "bad$name"), ("", "events")] {
        let err = MongoStore::builder(client.clone())
            .database(database)
            .collection(collection)
            .build()
            .unwrap_err();
        assert!(!err.to_string().is_empty());
    }
    // MongoDB's own databases accept the name and then refuse every claim: refused up front.
    for database in ["admin", "local", "config", "Local"] {
        let err = MongoStore::builder(client.clone())
            .database(database)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("MongoDB's own databases"), "{err}");
    }
    // Limits no store could hold are refused too.
    for limits in [
        outbox_core::Limits::default().with_max_payload_bytes(0),
        outbox_core::Limits::default().with_max_payload_bytes(64 << 20),
        outbox_core::Limits::default().with_max_key_bytes(10_000),
    ] {
        let err = MongoStore::builder(client.clone())
            .limits(limits)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("limits."), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_transient_error_within_the_selection_timeout() {
    let mut options =
        mongodb::options::ClientOptions::parse("mongodb://127.0.0.1:1/?directConnection=true")
            .await
            .unwrap();
    options.server_selection_timeout = Some(Duration::from_millis(500));
    let store = MongoStore::builder(mongodb::Client::with_options(options).unwrap())
        .database("unreachable")
        .build()
        .unwrap();
    let started = Instant::now();
    let err = store.migrate().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let err = store.stats().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A transactional handler that runs across several lease renewals commits: its transaction holds
/// the event from its start, and the worker does not renew that lease meanwhile (a renewal would
/// be a write conflict that aborts it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_handler_longer_than_the_renewal_interval_commits_once() {
    let store = store("mgtx").await;
    let effects = store
        .client()
        .database(&store.collection().namespace().db)
        .collection::<Document>("effects");
    let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let handler = {
        let effects = effects.clone();
        let runs = Arc::clone(&runs);
        Handler::transactional(
            "mg.Slow",
            "slow",
            move |record, tx: &mut outbox_mongo::MongoTx, _ctx| {
                let effects = effects.clone();
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Box::pin(async move {
                    effects
                        .insert_one(doc! { "event_id": record.id.to_string() })
                        .session(&mut **tx)
                        .await?;
                    // Longer than two renewal intervals of the worker below.
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    Ok::<_, HandlerError>(())
                })
            },
        )
    };
    let worker = Worker::builder(store.clone())
        .registry(
            Registry::builder()
                .handler(handler)
                .build()
                .expect("registry"),
        )
        .config(
            WorkerConfig::default()
                .with_lease(Duration::from_secs(3))
                .with_renew_interval(Duration::from_millis(300))
                .with_poll_interval(Duration::from_millis(50)),
        )
        .build()
        .expect("a worker")
        .start();
    let id = store
        .enqueue(NewEvent::new("mg.Slow", json!({})))
        .await
        .expect("enqueue")
        .id;
    let outcome = store
        .wait_for(id, Duration::from_secs(30))
        .await
        .expect("the event");
    assert!(
        matches!(outcome, outbox_core::Outcome::Processed(_)),
        "{outcome:?}"
    );
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1, "one run");
    let rows = effects
        .count_documents(doc! { "event_id": id.to_string() })
        .await
        .expect("count");
    assert_eq!(rows, 1);
    worker.shutdown().await;
    cleanup(&store).await;
}

/// Two transactional handlers of one event both commit on its first delivery: each transaction
/// holds the event, so they take turns instead of aborting each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_transactional_handlers_of_one_event_take_turns() {
    let store = store("mgtwo").await;
    let effects = store
        .client()
        .database(&store.collection().namespace().db)
        .collection::<Document>("effects");
    let writer = |name: &'static str| {
        let effects = effects.clone();
        Handler::transactional(
            "mg.Two",
            name,
            move |record, tx: &mut outbox_mongo::MongoTx, _ctx| {
                let effects = effects.clone();
                Box::pin(async move {
                    effects
                        .insert_one(doc! { "event_id": record.id.to_string(), "by": name })
                        .session(&mut **tx)
                        .await?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, HandlerError>(())
                })
            },
        )
    };
    let registry = Registry::builder()
        .handler(writer("first"))
        .handler(writer("second"))
        .build()
        .expect("registry");
    let worker = Worker::builder(store.clone())
        .registry(registry)
        .config(WorkerConfig::default().with_poll_interval(Duration::from_millis(50)))
        .build()
        .expect("a worker")
        .start();
    let id = store
        .enqueue(NewEvent::new("mg.Two", json!({})))
        .await
        .expect("enqueue")
        .id;
    let outcome = store
        .wait_for(id, Duration::from_secs(30))
        .await
        .expect("the event");
    let outbox_core::Outcome::Processed(record) = outcome else {
        panic!("not processed: {outcome:?}");
    };
    assert_eq!(
        record.attempts, 1,
        "both handlers committed on the first delivery"
    );
    for name in ["first", "second"] {
        assert_eq!(record.handler_results[name].attempts, 1, "{name}");
    }
    let rows = effects
        .count_documents(doc! { "event_id": id.to_string() })
        .await
        .expect("count");
    assert_eq!(rows, 2);
    worker.shutdown().await;
    cleanup(&store).await;
}

/// Hand-damaged fields that the claim's own update meets (C11): an `attempts` that is not a number
/// or that `$inc` cannot add to, an `attempts` beyond what a record counts, and a pending document
/// without a due time. Each is set aside on its own with its reason; the other events are claimed,
/// and no claim fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_fields_are_set_aside_without_failing_claims() {
    let store = store("m_fields").await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(
            store
                .enqueue(NewEvent::new("Damaged", json!({ "n": n })))
                .await
                .unwrap()
                .id,
        );
    }
    let damage = [
        doc! { "$set": { "attempts": "abc" } },
        doc! { "$set": { "attempts": i64::MAX } },
        doc! { "$set": { "attempts": i64::from(u32::MAX) } },
        doc! { "$unset": { "due_at": "" } },
    ];
    for (id, update) in ids.iter().zip(damage) {
        store
            .collection()
            .update_one(doc! { "_id": id.to_string() }, update)
            .await
            .unwrap();
    }
    let claimed = store
        .claim(&ClaimRequest::new("w", 10, Duration::from_secs(30)))
        .await
        .expect("no claim fails because of a damaged document");
    let got: Vec<_> = claimed.iter().map(|c| c.record.id).collect();
    assert_eq!(
        got,
        ids[4..].to_vec(),
        "only the healthy events are claimed"
    );
    let corrupt = store.corrupt_events(10).await.unwrap();
    let mut reasons: Vec<_> = corrupt
        .iter()
        .map(|c| (c.id.clone(), c.reason.clone()))
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    for (id, reason) in &reasons {
        let n = ids
            .iter()
            .position(|i| i.to_string() == *id)
            .expect("a damaged id");
        let expected = ["attempts", "attempts", "attempts", "due_at"][n];
        assert!(reason.contains(expected), "{id}: {reason}");
    }
    assert_eq!(store.stats().await.unwrap().pending, 2);
    cleanup(&store).await;
}
