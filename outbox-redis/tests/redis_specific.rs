//! Behaviour specific to Redis: MULTI/DISCARD, SCRIPT FLUSH mid-run, stale completions, racing
//! duplicate enqueues, one hash tag for every key, cleanup of only our own keys.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use outbox_core::handlers::Registry;
use outbox_core::prelude::*;
use outbox_core::store::{ClaimRequest, Completion};
use outbox_core::{
    EventStatus, Handler, HandlerError, NewEvent, StoreError, StoreExt, Worker, WorkerConfig,
};
use serde_json::json;

async fn store(prefix: &str) -> outbox_redis::RedisStore {
    support::store_named(&outbox_testkit::namespace(prefix))
        .await
        .expect("Redis is reachable (./scripts/services.sh)")
}

async fn delete_keys(store: &outbox_redis::RedisStore) {
    let mut con = store.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", store.key_prefix()))
        .query_async(&mut con)
        .await
        .expect("redis command");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut con)
            .await
            .expect("redis command");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_multi_leaves_no_event_and_exec_keeps_both_writes() {
    let store = store("r_multi").await;
    let mut con = store.connection();
    let user_key = format!("{}:test:user", store.key_prefix());
    let discarded = NewEvent::new("UserInvited", json!({"email": "gone@example.com"}));
    let _: () = redis::cmd("MULTI").query_async(&mut con).await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&user_key)
        .arg("gone")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = store
        .enqueue_command(std::slice::from_ref(&discarded))
        .unwrap()
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("DISCARD").query_async(&mut con).await.unwrap();
    assert!(
        store.get(discarded.id).await.unwrap().is_none(),
        "a discarded MULTI stored the event"
    );
    let user: Option<String> = redis::cmd("GET")
        .arg(&user_key)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(user, None);

    let kept = NewEvent::new("UserInvited", json!({"email": "kept@example.com"}))
        .idempotency_key("invite:kept");
    let mut pipe = redis::pipe();
    pipe.atomic()
        .set(&user_key, "kept")
        .ignore()
        .add_command(store.enqueue_command(std::slice::from_ref(&kept)).unwrap());
    let (reply,): (Vec<String>,) = pipe.query_async(&mut con).await.unwrap();
    let enqueued = outbox_redis::RedisStore::parse_enqueued(reply).unwrap();
    assert_eq!(enqueued[0].id, kept.id);
    assert!(!enqueued[0].duplicate);
    assert_eq!(
        store.get(kept.id).await.unwrap().unwrap().status,
        EventStatus::Pending
    );
    delete_keys(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_flush_mid_run_is_survived() {
    let store = store("r_flush").await;
    let handler = Handler::raw("Flush", "h", |_r, _c| async { Ok::<_, HandlerError>(()) });
    let worker = Worker::builder(store.clone())
        .registry(Registry::builder().handler(handler).build().unwrap())
        .config(WorkerConfig::default().with_poll_interval(Duration::from_millis(20)))
        .build()
        .unwrap()
        .start();
    let mut con = store.connection();
    let mut ids = Vec::new();
    for round in 0..5 {
        for n in 0..20 {
            ids.push(
                store
                    .enqueue(NewEvent::new("Flush", json!({"round": round, "n": n})))
                    .await
                    .unwrap()
                    .id,
            );
        }
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut con)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.stats().await.unwrap().pending > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let report = worker.shutdown().await;
    for id in ids {
        assert_eq!(
            store.get(id).await.unwrap().unwrap().status,
            EventStatus::Processed
        );
    }
    assert_eq!(
        report.metrics.store_errors, 0,
        "a flushed script must be reloaded transparently"
    );
    delete_keys(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_completion_is_refused_and_changes_nothing() {
    let store = store("r_stale").await;
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
        attempts: 2,
        retry_delay: None,
    };
    let err = store
        .complete(&stale.lease, done.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    assert_eq!(store.get(id).await.unwrap().unwrap(), before);
    store.complete(&fresh.lease, done).await.unwrap();
    delete_keys(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_duplicate_enqueues_store_one_event() {
    let store = store("r_idem").await;
    let tasks: Vec<_> = (0..32)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .enqueue(NewEvent::new("Idem", json!({ "n": n })).idempotency_key("same"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(
        results.iter().map(|r| r.id).collect::<HashSet<_>>().len(),
        1
    );
    assert_eq!(results.iter().filter(|r| !r.duplicate).count(), 1);
    assert_eq!(store.stats().await.unwrap().pending, 1);
    delete_keys(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_shares_one_hash_tag_and_cleanup_touches_only_ours() {
    let ours = store("r_tag").await;
    let theirs = store("r_other").await;
    ours.enqueue(
        NewEvent::new("Tag", json!({}))
            .ordering_key("k")
            .idempotency_key("i"),
    )
    .await
    .unwrap();
    theirs
        .enqueue(NewEvent::new("Tag", json!({})))
        .await
        .unwrap();
    let claimed = ours
        .claim(&ClaimRequest::new("w", 1, Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let mut con = ours.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", ours.key_prefix()))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(keys.len() >= 5, "{keys:?}");
    let tag = &ours.key_prefix()[1..ours.key_prefix().len() - 1];
    for key in &keys {
        assert!(
            key.starts_with(&format!("{{{tag}}}")),
            "key {key} is outside the hash tag"
        );
    }
    delete_keys(&ours).await;
    assert!(
        theirs.stats().await.unwrap().pending == 1,
        "deleting our keys touched another outbox"
    );
    delete_keys(&theirs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_with_how_to_start_it() {
    let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
    let err = outbox_redis::RedisStore::builder(client).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

/// Writes event `id` as outbox wrote it before the `body` layout: one hash field per part (empty
/// strings for absent ones), queued at `at_ms`, behind its ordering key when it has one.
async fn write_old_layout(
    store: &outbox_redis::RedisStore,
    id: uuid::Uuid,
    seq: i64,
    ordering_key: &str,
    at_ms: i64,
) {
    let prefix = store.key_prefix();
    let mut con = store.connection();
    let at = at_ms.to_string();
    let id_text = id.to_string();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .hset_multiple(
            format!("{prefix}:ev:{id}"),
            &[
                ("id", id_text.as_str()),
                ("seq", &seq.to_string()),
                ("event_type", "LegacyEvent"),
                (
                    "payload",
                    r#"{"n":1,"note":"written before the body layout"}"#,
                ),
                ("correlation_id", "corr-legacy"),
                ("ordering_key", ordering_key),
                ("idempotency_key", ""),
                ("created_at", &at),
                ("available_at", &at),
                ("attempts", "0"),
                ("backoff_until", ""),
                ("status", "pending"),
                ("processed_at", ""),
                ("handler_results", "{}"),
                ("locked_by", ""),
                ("locked_until", ""),
                ("lease_token", ""),
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
            ],
        )
        .ignore()
        .incr(format!("{prefix}:pending_count"), 1)
        .ignore()
        .zadd(format!("{prefix}:queue"), &id_text, at_ms)
        .ignore();
    if !ordering_key.is_empty() {
        pipe.zadd(format!("{prefix}:okey:{ordering_key}"), &id_text, seq)
            .ignore();
    }
    let () = pipe.query_async(&mut con).await.expect("redis command");
}

/// The upgrade path: events a previous version wrote (one field per part) are read by `get`,
/// claimed with every field, folded into the new layout by the claim, completed, and keep their
/// place in their ordering key before events written in the new layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_in_the_old_layout_are_read_claimed_and_completed() {
    let store = store("r_old_layout").await;
    let at_ms = chrono::Utc::now().timestamp_millis() - 1_000;
    let (plain, keyed) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    // The sequence key, as the old enqueue script left it after two events.
    let _: () = redis::cmd("SET")
        .arg(format!("{}:seq", store.key_prefix()))
        .arg(2)
        .query_async(&mut store.connection())
        .await
        .unwrap();
    write_old_layout(&store, plain, 1, "", at_ms).await;
    write_old_layout(&store, keyed, 2, "acct-7", at_ms).await;
    let newer = NewEvent::new("NewEvent", json!({"n": 2})).ordering_key("acct-7");
    store.enqueue(newer.clone()).await.unwrap();

    let before = store
        .get(plain)
        .await
        .unwrap()
        .expect("the old event reads");
    assert_eq!(before.event_type, "LegacyEvent");
    assert_eq!(before.payload["n"], 1);
    assert_eq!(before.correlation_id.as_deref(), Some("corr-legacy"));
    assert_eq!(before.created_at.timestamp_millis(), at_ms);
    assert_eq!(before.ordering_key, None);
    assert!(before.traceparent.is_some());

    // Both old events come first (oldest due time); the new one waits behind its key.
    let claimed = store
        .claim(&ClaimRequest::new("w", 10, Duration::from_secs(30)))
        .await
        .unwrap();
    let ids: Vec<_> = claimed.iter().map(|c| c.record.id).collect();
    assert_eq!(ids, vec![plain, keyed], "the new event of acct-7 must wait");
    let record = &claimed[0].record;
    assert_eq!(
        (record.event_type.as_str(), record.attempts, &record.payload),
        ("LegacyEvent", 1, &before.payload)
    );
    assert_eq!(record.created_at, before.created_at);
    assert_eq!(record.correlation_id, before.correlation_id);
    assert_eq!(record.traceparent, before.traceparent);
    assert_eq!(claimed[1].record.ordering_key.as_deref(), Some("acct-7"));

    // The claim folded the old parts into the body: `get` reads the same record from it.
    let fields: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(format!("{}:ev:{plain}", store.key_prefix()))
        .arg(&["body", "payload", "created_at"])
        .query_async(&mut store.connection())
        .await
        .unwrap();
    assert!(fields[0].is_some(), "the claim wrote the body");
    assert_eq!(
        (&fields[1], &fields[2]),
        (&None, &None),
        "old parts removed"
    );
    let after = store.get(plain).await.unwrap().unwrap();
    assert_eq!(
        (after.payload, after.created_at, after.traceparent),
        (
            before.payload.clone(),
            before.created_at,
            before.traceparent
        )
    );

    for event in claimed {
        store
            .complete(
                &event.lease,
                Completion {
                    status: EventStatus::Processed,
                    handler_results: Default::default(),
                    attempts: 1,
                    retry_delay: None,
                },
            )
            .await
            .unwrap();
    }
    assert_eq!(
        store.get(keyed).await.unwrap().unwrap().status,
        EventStatus::Processed
    );
    let next = store
        .claim(&ClaimRequest::new("w", 10, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|c| c.record.id).collect::<Vec<_>>(),
        vec![newer.id],
        "after the old event of acct-7, the new one"
    );
    delete_keys(&store).await;
}

/// Hand-damaged fields (C11): a queued event whose status is not `pending` is set aside instead of
/// being redelivered after every lease; an `attempts` at the integer maximum saturates (as on
/// PostgreSQL) instead of counting past what a record holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_status_and_maximal_attempts() {
    let store = store("r_fields").await;
    let bogus = store
        .enqueue(NewEvent::new("Damaged", json!({})))
        .await
        .unwrap()
        .id;
    let maximal = store
        .enqueue(NewEvent::new("Damaged", json!({})))
        .await
        .unwrap()
        .id;
    let healthy = store
        .enqueue(NewEvent::new("Damaged", json!({})))
        .await
        .unwrap()
        .id;
    let mut con = store.connection();
    let bogus_key = store.event_key(&bogus.to_string()).await.unwrap().unwrap();
    let maximal_key = store
        .event_key(&maximal.to_string())
        .await
        .unwrap()
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(bogus_key)
        .arg("status")
        .arg("bogus")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(maximal_key)
        .arg("attempts")
        .arg("2147483647")
        .query_async(&mut con)
        .await
        .unwrap();
    let claimed = store
        .claim(&ClaimRequest::new("w", 10, Duration::from_secs(30)))
        .await
        .unwrap();
    let mut got: Vec<_> = claimed
        .iter()
        .map(|c| (c.record.id, c.record.attempts))
        .collect();
    got.sort();
    let mut want = vec![(maximal, 2_147_483_647), (healthy, 1)];
    want.sort();
    assert_eq!(got, want);
    let corrupt = store.corrupt_events(10).await.unwrap();
    assert_eq!(corrupt.len(), 1, "{corrupt:?}");
    assert_eq!(corrupt[0].id, bogus.to_string());
    assert!(corrupt[0].reason.contains("status"), "{corrupt:?}");
    delete_keys(&store).await;
}
