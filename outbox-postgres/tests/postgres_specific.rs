//! Behaviour specific to PostgreSQL: the caller's own transaction with its own data, other
//! connections, a killed LISTEN connection, killed pool connections, concurrent duplicate enqueues,
//! error kinds, and a missing server.

mod support;

use std::time::Duration;

use outbox_core::handlers::Registry;
use outbox_core::model::HandlerResults;
use outbox_core::prelude::*;
use outbox_core::store::{ClaimRequest, Completion};
use outbox_core::{
    EventStatus, Handler, HandlerError, NewEvent, StoreError, StoreExt, Worker, WorkerConfig,
};
use outbox_postgres::{PgStore, Retention};
use serde_json::json;
use sqlx::PgPool;

async fn fresh_store(prefix: &str) -> (PgStore, PgPool, String) {
    let schema = outbox_testkit::namespace(prefix);
    let pool = support::connect_named(&schema)
        .await
        .expect("PostgreSQL is reachable (run ./scripts/services.sh)");
    let store = PgStore::builder(pool.clone())
        .schema(&schema)
        .build()
        .expect("valid names");
    store.migrate().await.expect("migration");
    sqlx::query(&format!(
        "CREATE TABLE \"{schema}\".users (email TEXT PRIMARY KEY)"
    ))
    .execute(&pool)
    .await
    .expect("users table");
    (store, pool, schema)
}

fn counting_worker(
    store: &PgStore,
    event_type: &str,
    seen: std::sync::Arc<std::sync::Mutex<Vec<uuid::Uuid>>>,
    config: WorkerConfig,
) -> outbox_core::WorkerHandle {
    let handler = Handler::raw(event_type, "record", move |record, _ctx| {
        seen.lock().expect("lock").push(record.id);
        async { Ok::<_, HandlerError>(()) }
    });
    start_worker(store, handler, config)
}

/// Starts a worker on `store` with `handler` as its only handler.
fn start_worker(
    store: &PgStore,
    handler: Handler,
    config: WorkerConfig,
) -> outbox_core::WorkerHandle {
    Worker::builder(store.clone())
        .registry(
            Registry::builder()
                .handler(handler)
                .build()
                .expect("registry"),
        )
        .config(config)
        .build()
        .expect("worker")
        .start()
}

/// The completion of an event processed at its first attempt.
fn processed_first_attempt() -> Completion {
    Completion {
        status: EventStatus::Processed,
        handler_results: HandlerResults::new(),
        attempts: 1,
        retry_delay: None,
    }
}

async fn wait_for(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_discards_the_user_and_the_event_commit_keeps_both() {
    let (store, pool, schema) = fresh_store("pg_tx").await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO \"{schema}\".users VALUES ($1)"))
        .bind("gone@example.com")
        .execute(&mut *tx)
        .await
        .unwrap();
    let gone = store
        .enqueue_in(
            &mut tx,
            NewEvent::new("UserInvited", json!({"email": "gone@example.com"})),
        )
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(
        store.get(gone.id).await.unwrap().is_none(),
        "a rolled-back event exists"
    );

    let mut tx = pool.begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO \"{schema}\".users VALUES ($1)"))
        .bind("kept@example.com")
        .execute(&mut *tx)
        .await
        .unwrap();
    let batch = store
        .enqueue_batch_in(
            &mut tx,
            vec![
                NewEvent::new("UserInvited", json!({"n": 1})),
                NewEvent::new("UserInvited", json!({"n": 2})),
            ],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let users: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".users"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 1);
    for e in batch {
        assert_eq!(
            store.get(e.id).await.unwrap().unwrap().status,
            EventStatus::Pending
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_event_is_processed_by_a_worker_on_another_pool() {
    let (store, pool, schema) = fresh_store("pg_other").await;
    let other_pool = support::connect().await.unwrap();
    let other = PgStore::builder(other_pool)
        .schema(&schema)
        .build()
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let worker = counting_worker(
        &other,
        "Cross",
        seen.clone(),
        WorkerConfig::default().with_poll_interval(Duration::from_millis(50)),
    );
    let mut tx = pool.begin().await.unwrap();
    let id = store
        .enqueue_in(&mut tx, NewEvent::new("Cross", json!({})))
        .await
        .unwrap()
        .id;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "a worker saw an uncommitted event"
    );
    tx.commit().await.unwrap();
    assert!(
        wait_for(Duration::from_secs(10), async || seen
            .lock()
            .unwrap()
            .contains(&id))
        .await
    );
    worker.shutdown().await;
    assert_eq!(
        store.get(id).await.unwrap().unwrap().status,
        EventStatus::Processed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_survive_a_terminated_listen_connection() {
    let (store, pool, schema) = fresh_store("pg_listen").await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    // Polling every minute: only a wake-up can deliver within the test's limits.
    let config = WorkerConfig::default().with_poll_interval(Duration::from_secs(60));
    let worker = counting_worker(&store, "Wake", seen.clone(), config);
    let listen_pids = async || -> Vec<i32> {
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' AND pid <> pg_backend_pid() AND application_name = $1",
        )
        .bind(&schema)
        .fetch_all(&pool)
            .await
            .unwrap()
    };
    assert!(
        wait_for(Duration::from_secs(10), async || !listen_pids()
            .await
            .is_empty())
        .await,
        "no LISTEN connection"
    );
    let first = store
        .enqueue(NewEvent::new("Wake", json!({"n": 1})))
        .await
        .unwrap()
        .id;
    assert!(
        wait_for(Duration::from_secs(5), async || seen
            .lock()
            .unwrap()
            .contains(&first))
        .await,
        "no wake-up before the kill"
    );

    for pid in listen_pids().await {
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&pool)
            .await
            .unwrap();
    }
    // The listener reconnects on its own; give it a moment, then a commit must still wake the worker.
    assert!(
        wait_for(Duration::from_secs(10), async || !listen_pids()
            .await
            .is_empty())
        .await,
        "LISTEN never reconnected"
    );
    let second = store
        .enqueue(NewEvent::new("Wake", json!({"n": 2})))
        .await
        .unwrap()
        .id;
    assert!(
        wait_for(Duration::from_secs(10), async || seen
            .lock()
            .unwrap()
            .contains(&second))
        .await,
        "no delivery after the LISTEN connection was terminated"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_rides_out_terminated_connections() {
    let (store, pool, schema) = fresh_store("pg_kill").await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let worker = counting_worker(
        &store,
        "Kill",
        seen.clone(),
        WorkerConfig::default().with_poll_interval(Duration::from_millis(20)),
    );
    let admin = support::connect().await.unwrap();
    let mut ids = Vec::new();
    for round in 0..5 {
        for n in 0..20 {
            ids.push(
                store
                    .enqueue(NewEvent::new("Kill", json!({"round": round, "n": n})))
                    .await
                    .unwrap()
                    .id,
            );
        }
        // Kill every connection of this store's pool, the worker's listener included.
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE pid <> pg_backend_pid() AND application_name = $1",
        )
        .bind(&schema)
        .execute(&admin)
        .await
        .ok();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = wait_for(
        Duration::from_secs(30),
        async || matches!(store.stats().await, Ok(s) if s.pending == 0),
    )
    .await;
    let report = worker.shutdown().await;
    assert!(drained, "events left pending after connections were killed");
    for id in &ids {
        assert_eq!(
            store.get(*id).await.unwrap().unwrap().status,
            EventStatus::Processed
        );
    }
    drop(pool);
    println!("store errors ridden out: {}", report.metrics.store_errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_completion_is_refused_and_changes_nothing() {
    let (store, _pool, _schema) = fresh_store("pg_stale").await;
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
    let before = store.get(id).await.unwrap().unwrap();
    let done = Completion {
        status: EventStatus::Processed,
        handler_results: Default::default(),
        attempts: 1,
        retry_delay: None,
    };
    let err = store
        .complete(&stale.lease, done.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseLost { event_id } if event_id == id),
        "{err:?}"
    );
    assert_eq!(store.get(id).await.unwrap().unwrap(), before);
    store.complete(&fresh.lease, done).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_with_one_idempotency_key_store_one_event() {
    let (store, pool, _schema) = fresh_store("pg_idem").await;
    let tasks: Vec<_> = (0..12)
        .map(|n| {
            let (store, pool) = (store.clone(), pool.clone());
            tokio::spawn(async move {
                let mut tx = pool.begin().await.unwrap();
                let r = store
                    .enqueue_in(
                        &mut tx,
                        NewEvent::new("Idem", json!({ "n": n })).idempotency_key("same"),
                    )
                    .await;
                tx.commit().await.unwrap();
                r.unwrap()
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let ids: std::collections::HashSet<_> = results.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| !r.duplicate).count(), 1);
    assert_eq!(store.stats().await.unwrap().pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed() {
    let pool = support::connect().await.unwrap();
    let missing = PgStore::builder(pool.clone())
        .schema("no_such_schema_here")
        .build()
        .unwrap();
    let err = missing.stats().await.unwrap_err();
    assert!(matches!(err, StoreError::Schema { .. }), "{err:?}");
    assert!(err.to_string().contains("migrate()"), "{err}");

    let (store, _pool, _schema) = fresh_store("pg_err").await;
    let nul = store
        .enqueue(NewEvent::new("Nul", json!({"text": "a\u{0}b"})))
        .await
        .unwrap_err();
    assert!(
        matches!(nul, StoreError::InvalidRequest { .. }),
        "a NUL character must be a clear InvalidRequest: {nul:?}"
    );

    for (schema, table) in [("public; drop", "t"), ("s", "t\"x"), ("", "t"), ("s", "")] {
        assert!(
            PgStore::builder(pool.clone())
                .schema(schema)
                .table(table)
                .build()
                .is_err(),
            "{schema:?}.{table:?} accepted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_with_how_to_start_it() {
    let err = support::connect_to("postgres://postgres:secret@127.0.0.1:1/outbox_test")
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(err.is_transient(), "{err:?}");
    assert!(message.contains("./scripts/services.sh"), "{message}");
    assert!(!message.contains("secret"), "credentials leaked: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_is_idempotent_and_concurrent_safe() {
    let pool = support::connect().await.unwrap();
    let schema = outbox_testkit::namespace("pg_migrate");
    let store = PgStore::builder(pool)
        .schema(&schema)
        .table("events")
        .build()
        .unwrap();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.migrate().await })
        })
        .collect();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    store.migrate().await.unwrap();
    assert_eq!(store.stats().await.unwrap().pending, 0);
}

#[test]
fn the_readme_shows_the_schema_migrate_runs() {
    let readme = include_str!("../README.md");
    for statement in outbox_postgres::schema_sql("public", "outbox_events") {
        assert!(
            readme.contains(&format!("{statement};")),
            "README.md is missing or has an outdated:\n{statement}"
        );
    }
}

/// PostgreSQL hands a finished key's next event to the completing worker (one write instead of
/// an un-park and a claim), with a payload and handler results that survive the JSON trip; with
/// the retention that deletes processed events too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_hands_the_key_to_its_next_event() {
    for retention in [Retention::KeepProcessed, Retention::DeleteProcessed] {
        let (_, pool, schema) = fresh_store("handoff").await;
        let store = PgStore::builder(pool)
            .schema(&schema)
            .retention(retention)
            .build()
            .expect("valid names");
        let first = store
            .enqueue(NewEvent::new("H", json!({"n": 1})).ordering_key("k"))
            .await
            .unwrap()
            .id;
        let second = store
            .enqueue(
                NewEvent::new("H", json!({"n": 2, "text": "é\"\\"}))
                    .ordering_key("k")
                    .correlation_id("corr-2")
                    .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            )
            .await
            .unwrap()
            .id;
        let claimed = store
            .claim(&ClaimRequest::new("w1", 10, Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].record.id, first);
        let done = processed_first_attempt();
        let handed = store
            .complete_and_hand_off(
                &[(claimed[0].lease, done.clone())],
                &ClaimRequest::new("w1", 1, Duration::from_secs(30)),
            )
            .await;
        assert!(handed.results[0].is_ok(), "{:?}", handed.results);
        assert_eq!(
            handed.next.len(),
            1,
            "{retention:?}: the next event is handed off"
        );
        let next = &handed.next[0];
        assert_eq!(next.record.id, second);
        assert_eq!(next.record.payload, json!({"n": 2, "text": "é\"\\"}));
        assert_eq!(next.record.correlation_id.as_deref(), Some("corr-2"));
        assert!(next.record.traceparent.is_some());
        assert_eq!(next.record.locked_by.as_deref(), Some("w1"));
        assert_eq!(next.record.attempts, 1);
        // The lease is real: the completion with it applies.
        store.complete(&next.lease, done).await.unwrap();
        let status = store.get(second).await.unwrap().map(|r| r.status);
        let expected = match retention {
            Retention::DeleteProcessed => None,
            _ => Some(EventStatus::Processed),
        };
        assert_eq!(status, expected, "{retention:?}");
    }
}

/// With `Retention::DeleteProcessed` one completion call mixes every case: a processed event is
/// deleted, a processed event with an idempotency key is kept (it holds the key), a failed one
/// goes back to the queue with its delay, and a completion with a stale token applies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleting_completion_applies_each_case_of_a_mixed_batch() {
    let (_, pool, schema) = fresh_store("mixeddelete").await;
    let store = PgStore::builder(pool)
        .schema(&schema)
        .retention(Retention::DeleteProcessed)
        .build()
        .expect("valid names");
    let events = vec![
        NewEvent::new("M", json!({"n": 1})),
        NewEvent::new("M", json!({"n": 2})).idempotency_key("mixed-2"),
        NewEvent::new("M", json!({"n": 3})),
        NewEvent::new("M", json!({"n": 4})),
    ];
    let ids: Vec<_> = store.enqueue_batch(events).await.unwrap();
    let [deleted, kept, retried, stale] = [ids[0].id, ids[1].id, ids[2].id, ids[3].id];
    let claimed = store
        .claim(&ClaimRequest::new("w", 10, Duration::from_secs(30)))
        .await
        .unwrap();
    let lease = |id| {
        claimed
            .iter()
            .find(|c| c.record.id == id)
            .map(|c| c.lease)
            .expect("claimed")
    };
    let retry = Completion {
        status: EventStatus::Pending,
        handler_results: HandlerResults::new(),
        attempts: 1,
        retry_delay: Some(Duration::from_secs(3600)),
    };
    let mut stale_lease = lease(stale);
    stale_lease.token = uuid::Uuid::now_v7();
    let results = store
        .complete_many(&[
            (lease(deleted), processed_first_attempt()),
            (lease(kept), processed_first_attempt()),
            (lease(retried), retry),
            (stale_lease, processed_first_attempt()),
        ])
        .await;
    assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
    assert!(
        matches!(results[3], Err(StoreError::LeaseLost { .. })),
        "{results:?}"
    );
    assert!(store.get(deleted).await.unwrap().is_none());
    let kept = store
        .get(kept)
        .await
        .unwrap()
        .expect("kept: it holds its key");
    assert_eq!(kept.status, EventStatus::Processed);
    let retried = store.get(retried).await.unwrap().expect("retried");
    assert_eq!(retried.status, EventStatus::Pending);
    assert!(retried.backoff_until.is_some() && retried.lease_token.is_none());
    let stale = store.get(stale).await.unwrap().expect("still leased");
    assert_eq!(stale.status, EventStatus::Pending);
    assert_eq!(stale.lease_token, Some(lease(stale.id).token));
}

/// A table created by outbox 0.1 (no version recorded, no `due_at`, `corrupt_reason` or
/// `traceparent`, a status check without `corrupt`, 0.1's claim indexes) is upgraded in place by
/// every numbered migration: its events keep their order and state, and the result verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_outbox_0_1_is_upgraded_in_place() {
    let schema = outbox_testkit::namespace("upgrade01");
    let pool = support::connect_named(&schema)
        .await
        .expect("PostgreSQL is reachable (run ./scripts/services.sh)");
    let t = format!("\"{schema}\".\"outbox_events\"");
    let (first, second, dead) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    for statement in [
        format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""),
        format!(
            "CREATE TABLE {t} (
                seq BIGSERIAL NOT NULL, id UUID PRIMARY KEY, event_type TEXT NOT NULL,
                payload JSONB NOT NULL, correlation_id TEXT, ordering_key TEXT, idempotency_key TEXT,
                created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                available_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                attempts INTEGER NOT NULL DEFAULT 0, backoff_until TIMESTAMPTZ,
                status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processed', 'dead')),
                processed_at TIMESTAMPTZ, handler_results JSONB NOT NULL DEFAULT '{{}}'::jsonb,
                locked_by TEXT, locked_until TIMESTAMPTZ, lease_token UUID)"
        ),
        format!("CREATE INDEX \"outbox_events_pending_seq\" ON {t} (seq) WHERE status = 'pending'"),
        format!(
            "CREATE INDEX \"outbox_events_finished\" ON {t} (status, processed_at) WHERE status <> 'pending'"
        ),
        format!(
            "INSERT INTO {t} (id, event_type, payload, ordering_key) VALUES
                ('{first}', 'Old', '{{\"n\": 1}}', 'k'), ('{second}', 'Old', '{{\"n\": 2}}', 'k')"
        ),
        format!(
            "INSERT INTO {t} (id, event_type, payload, status, attempts, processed_at)
             VALUES ('{dead}', 'Old', '{{}}', 'dead', 3, now())"
        ),
    ] {
        sqlx::query(&statement).execute(&pool).await.expect(&statement);
    }
    let store = PgStore::builder(pool.clone())
        .schema(&schema)
        .build()
        .expect("valid names");
    assert_eq!(store.schema_version().await.expect("version"), None);

    store.migrate().await.expect("upgrade from 0.1");
    store
        .verify()
        .await
        .expect("the current schema after the upgrade");
    assert_eq!(
        store.schema_version().await.expect("version"),
        Some(outbox_postgres::SCHEMA_VERSION)
    );
    let old_index: Option<String> = sqlx::query_scalar(&format!(
        "SELECT to_regclass('\"{schema}\".\"outbox_events_pending_seq\"')::text"
    ))
    .fetch_one(&pool)
    .await
    .expect("lookup");
    assert_eq!(old_index, None, "0.1's claim index is dropped");
    assert_eq!(
        store.get(dead).await.expect("get").expect("kept").status,
        EventStatus::Dead
    );
    let claim = async || {
        store
            .claim(&ClaimRequest::new("w", 10, Duration::from_secs(30)))
            .await
            .expect("claim")
    };
    let ids = |claimed: &[outbox_core::store::ClaimedEvent]| -> Vec<uuid::Uuid> {
        claimed.iter().map(|e| e.record.id).collect()
    };
    let claimed = claim().await;
    assert_eq!(
        ids(&claimed),
        vec![first],
        "one event of the key at a time, oldest first"
    );
    store
        .complete(&claimed[0].lease, processed_first_attempt())
        .await
        .expect("complete");
    assert_eq!(
        ids(&claim().await),
        vec![second],
        "the key's next event after the first finished"
    );
}

/// A table of schema 4 (ordering keys in the database's collation, the completion function
/// `<table>_complete`) is upgraded in place by `migrate`: pending keyed events keep their order
/// and their hand-off, the key column compares bytes, and the schema-4 completion function is left
/// for processes of that version still running during the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_4_table_is_upgraded_in_place() {
    let (store, pool, schema) = fresh_store("upgrade4").await;
    let t = format!("\"{schema}\".\"outbox_events\"");
    for statement in [
        format!("ALTER TABLE {t} ALTER COLUMN ordering_key TYPE text COLLATE \"default\""),
        format!("DROP FUNCTION \"{schema}\".\"outbox_events_finish\""),
        // Stands in for schema 4's completion function (same signature).
        format!(
            "CREATE FUNCTION \"{schema}\".\"outbox_events_complete\"(ids uuid[], tokens uuid[],
                 statuses text[], results text[], attempt_counts int[], delays bigint[],
                 delete_processed boolean, worker text, lease_ms bigint, hand_max int)
             RETURNS TABLE(applied uuid, handed text) LANGUAGE sql AS 'SELECT NULL::uuid, NULL::text'"
        ),
        format!("UPDATE \"{schema}\".\"outbox_events_schema\" SET version = 4"),
    ] {
        sqlx::query(&statement).execute(&pool).await.expect(&statement);
    }
    let mut ids = Vec::new();
    for n in 0..3 {
        let event = NewEvent::new("U", json!({ "n": n })).ordering_key("k");
        ids.push(store.enqueue(event).await.expect("enqueue").id);
    }
    assert!(
        store.verify().await.is_err(),
        "schema 4 is reported outdated"
    );

    store.migrate().await.expect("upgrade");
    store.verify().await.expect("schema 5 after the upgrade");
    let collation: String = sqlx::query_scalar(&format!(
        "SELECT attcollation::regcollation::text FROM pg_attribute
         WHERE attrelid = '{t}'::regclass AND attname = 'ordering_key'"
    ))
    .fetch_one(&pool)
    .await
    .expect("collation");
    assert_eq!(collation, "\"C\"");
    let old_function: Option<String> = sqlx::query_scalar(&format!(
        "SELECT to_regproc('\"{schema}\".\"outbox_events_complete\"')::text"
    ))
    .fetch_one(&pool)
    .await
    .expect("lookup");
    assert!(
        old_function.is_some(),
        "the schema-4 completion function is kept"
    );

    let claimed = store
        .claim(&ClaimRequest::new("w", 10, Duration::from_secs(30)))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "one event of the key at a time");
    assert_eq!(claimed[0].record.id, ids[0]);
    let done = processed_first_attempt();
    let handed = store
        .complete_and_hand_off(
            &[(claimed[0].lease, done)],
            &ClaimRequest::new("w", 1, Duration::from_secs(30)),
        )
        .await;
    assert!(handed.results[0].is_ok(), "{:?}", handed.results);
    let next: Vec<_> = handed.next.iter().map(|e| e.record.id).collect();
    assert_eq!(next, vec![ids[1]], "the key's next event, handed off");
}

/// A worker with fewer slots than busy ordering keys does not keep the keys it holds until they
/// run dry: while due events wait for a slot, some key hand-offs give the key back to the queue,
/// so every key starts long before the first ones finish (C2: oldest first, not "held first").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_held_by_a_full_worker_are_rotated_while_others_wait() {
    let (store, _pool, _schema) = fresh_store("rotation").await;
    let (keys, per_key) = (4, 40);
    let mut batch = Vec::new();
    for n in 0..per_key {
        for key in 0..keys {
            batch.push(NewEvent::new("R", json!({ "n": n })).ordering_key(format!("key-{key}")));
        }
    }
    store.enqueue_batch(batch).await.expect("enqueue");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = std::sync::Arc::clone(&seen);
    let handler = Handler::raw("R", "record", move |record, _ctx| {
        let key = record.ordering_key.clone().unwrap_or_default();
        recorded.lock().expect("lock").push(key);
        async { Ok::<_, HandlerError>(()) }
    });
    let config = WorkerConfig::default()
        .with_batch_size(2)
        .with_max_in_flight(2);
    let worker = start_worker(&store, handler, config);
    let total = keys * per_key;
    let finished = wait_for(Duration::from_secs(60), async || {
        seen.lock().expect("lock").len() >= total
    })
    .await;
    worker.shutdown().await;
    let order = seen.lock().expect("lock").clone();
    assert!(finished, "processed {} of {total}", order.len());
    for key in 0..keys {
        let key = format!("key-{key}");
        let first = order.iter().position(|k| *k == key).unwrap_or(usize::MAX);
        // Without rotation the two keys claimed first ran all their 40 events before the others
        // started (position 80).
        assert!(
            first < 60,
            "{key} started at position {first} of {total}: {order:?}"
        );
    }
}

/// A row whose `attempts` stands at the integer maximum (written by hand) is claimed with its
/// count saturated, beside the others: it does not make every claim fail with "integer out of
/// range" (C11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maximal_attempt_count_saturates_instead_of_failing_claims() {
    let (store, pool, schema) = fresh_store("pg_maxattempts").await;
    let maximal = store
        .enqueue(NewEvent::new("T", json!({})))
        .await
        .unwrap()
        .id;
    let other = store
        .enqueue(NewEvent::new("T", json!({})))
        .await
        .unwrap()
        .id;
    sqlx::query(&format!(
        "UPDATE \"{schema}\".outbox_events SET attempts = 2147483647 WHERE id = $1"
    ))
    .bind(maximal)
    .execute(&pool)
    .await
    .unwrap();
    let mut claimed: Vec<_> = store
        .claim(&ClaimRequest::new("w", 10, Duration::from_secs(30)))
        .await
        .expect("the claim does not fail")
        .iter()
        .map(|c| (c.record.id, c.record.attempts))
        .collect();
    claimed.sort();
    let mut want = vec![(maximal, 2_147_483_647), (other, 1)];
    want.sort();
    assert_eq!(claimed, want);
}

/// While a snapshot held by another session keeps the dead row versions of 60,000 consumed events,
/// claims switch to a window of recent due times (full walks of the due index became slow); an
/// event whose due time is older than the window (a long transaction committing late) is still
/// claimed, by a sweep; once the snapshot is gone and the table vacuumed, claims walk the whole
/// index again. Stats report the snapshot, the dead rows and the mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_use_a_window_while_a_snapshot_holds_back_vacuum() {
    use sqlx::Connection;
    let (store, pool, schema) = fresh_store("pg_window").await;
    let mut holder = sqlx::PgConnection::connect(&support::database_url())
        .await
        .unwrap();
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut holder)
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM pg_class")
        .execute(&mut holder)
        .await
        .unwrap();
    let request = |n| ClaimRequest::new("w", n, Duration::from_secs(1));
    for _ in 0..60 {
        let batch = (0..1000)
            .map(|n| NewEvent::new("W", json!({ "n": n })))
            .collect();
        store.enqueue_batch(batch).await.unwrap();
        let claimed = store.claim(&request(1000)).await.unwrap();
        let done: Vec<_> = claimed
            .iter()
            .map(|c| {
                (
                    c.lease,
                    Completion {
                        status: EventStatus::Processed,
                        handler_results: HandlerResults::new(),
                        attempts: c.record.attempts,
                        retry_delay: None,
                    },
                )
            })
            .collect();
        assert!(store.complete_many(&done).await.iter().all(Result::is_ok));
    }
    // Empty claims walk every dead entry: slow, three times in a row, so the window is used.
    let mut windowed = false;
    for _ in 0..10 {
        assert!(store.claim(&request(10)).await.unwrap().is_empty());
        let held = store
            .stats()
            .await
            .unwrap()
            .held_back
            .expect("PostgreSQL reports it");
        if held.windowed_claims {
            windowed = true;
            assert!(held.oldest_snapshot_age > Duration::ZERO, "{held:?}");
            assert!(held.is_holding_back());
            // The gauge form answers the same without counting the table.
            let gauge = store
                .held_back()
                .await
                .unwrap()
                .expect("PostgreSQL reports it");
            assert!(
                gauge.windowed_claims && gauge.is_holding_back(),
                "{gauge:?}"
            );
            assert!(
                gauge.oldest_snapshot_age >= held.oldest_snapshot_age,
                "{gauge:?} {held:?}"
            );
            break;
        }
    }
    assert!(windowed, "claims never switched to the window");

    // A fresh event is claimed at once; one due an hour ago (as a long transaction committing
    // late would be) waits for the next sweep, and is claimed then.
    let fresh = store
        .enqueue(NewEvent::new("W", json!({})))
        .await
        .unwrap()
        .id;
    let late = store
        .enqueue(
            NewEvent::new("W", json!({}))
                .deliver_at(chrono::Utc::now() - chrono::Duration::hours(1)),
        )
        .await
        .unwrap()
        .id;
    let first = store.claim(&request(10)).await.unwrap();
    let ids: Vec<_> = first.iter().map(|c| c.record.id).collect();
    assert!(ids.contains(&fresh), "{ids:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut found = ids.contains(&late);
    while !found {
        assert!(
            std::time::Instant::now() < deadline,
            "the late event was never swept up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        found = store
            .claim(&request(10))
            .await
            .unwrap()
            .iter()
            .any(|c| c.record.id == late);
    }

    // The snapshot ends, the table is vacuumed: a fast full walk drops the window.
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    sqlx::query(&format!("VACUUM \"{schema}\".outbox_events"))
        .execute(&pool)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        store.claim(&request(10)).await.unwrap();
        let held = store.stats().await.unwrap().held_back.unwrap();
        if !held.windowed_claims {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "claims stayed windowed: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
