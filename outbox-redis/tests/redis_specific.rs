//! Behaviour specific to Redis: MULTI/DISCARD, SCRIPT FLUSH mid-run, stale completions, racing
//! duplicate enqueues, one hash tag for every key, cleanup of only our own keys.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use outbox_core::{
    ClaimRequest, Completion, EventStatus, Handler, HandlerError, NewEvent, Registry, Store,
    StoreError, StoreExt, Worker, WorkerConfig,
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
