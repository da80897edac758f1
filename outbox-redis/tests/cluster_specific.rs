//! The partitioned store on a real Redis Cluster (three masters, `./scripts/services.sh`): events
//! spread over every shard, claims take the oldest across partitions, a `MULTI` block commits in
//! the events' partition, and a store with another partition count is refused.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use outbox_core::prelude::*;
use outbox_core::store::ClaimRequest;
use outbox_core::{NewEvent, StoreError, StoreExt};
use outbox_redis::RedisStore;
use serde_json::json;

async fn cluster_store(prefix: &str, partitions: usize) -> (String, RedisStore) {
    let name = outbox_testkit::namespace(prefix);
    let store = support::cluster_store_named(&name, partitions)
        .await
        .expect("the Redis Cluster is reachable (./scripts/services.sh)");
    (name, store)
}

fn clean(store: &RedisStore) {
    support::delete_keys_under(&support::cluster_urls(), &support::key_patterns(store));
}

/// How many keys under `store`'s prefixes each cluster node holds.
fn keys_per_node(store: &RedisStore) -> Vec<usize> {
    support::cluster_urls()
        .iter()
        .map(|url| {
            let mut con = redis::Client::open(url.as_str())
                .and_then(|client| client.get_connection())
                .expect("a cluster node answers");
            store
                .key_prefixes()
                .iter()
                .map(|prefix| {
                    redis::cmd("KEYS")
                        .arg(format!("{prefix}*"))
                        .query::<Vec<String>>(&mut con)
                        .expect("KEYS on a cluster node")
                        .len()
                })
                .sum()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_spread_over_every_shard_and_claims_take_the_oldest_overall() {
    let (_, store) = cluster_store("cl_spread", 8).await;
    assert_eq!(store.partitions(), 8);
    // One ordering key each: the events interleave over all partitions, one by one.
    let mut ids = Vec::new();
    for n in 0..240 {
        ids.push(
            store
                .enqueue(NewEvent::new("Spread", json!({ "n": n })).ordering_key(format!("k{n}")))
                .await
                .unwrap()
                .id,
        );
    }
    let per_node = keys_per_node(&store);
    assert!(
        per_node.iter().all(|&n| n >= 30),
        "every shard holds a share of the events: {per_node:?}"
    );
    // Each claim returns the oldest due events of all partitions, in creation order (each claim
    // takes turns among the partitions, event by event here).
    let mut claimed = Vec::new();
    while claimed.len() < ids.len() {
        let batch = store
            .claim(&ClaimRequest::new("w", 50, Duration::from_secs(30)))
            .await
            .unwrap();
        assert!(!batch.is_empty(), "claims stopped after {}", claimed.len());
        claimed.extend(batch.into_iter().map(|c| c.record.id));
    }
    assert_eq!(
        claimed, ids,
        "claims across partitions follow creation order"
    );
    clean(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_block_commits_the_callers_key_with_events_in_their_partition() {
    let (_, store) = cluster_store("cl_multi", 8).await;
    let events = vec![
        NewEvent::new("UserInvited", json!({"email": "ada@example.com"})),
        NewEvent::new("UserInvited", json!({"email": "ada@example.com"})).ordering_key("user:ada"),
    ];
    let prefix = store.key_prefix_for(&events).unwrap().to_owned();
    assert_eq!(
        store
            .key_prefix_for(&events[1..])
            .map(str::to_owned)
            .unwrap(),
        prefix,
        "the keyed event decides the partition"
    );
    let mut pipe = redis::pipe();
    pipe.atomic()
        .hset(format!("{prefix}:user:ada"), "email", "ada@example.com")
        .ignore();
    store
        .enqueue_in_pipeline(&mut pipe, events.clone())
        .unwrap();
    let _: () = pipe.query_async(&mut store.connection()).await.unwrap();
    for event in &events {
        assert!(store.get(event.id).await.unwrap().is_some());
    }
    let email: String = redis::cmd("HGET")
        .arg(format!("{prefix}:user:ada"))
        .arg("email")
        .query_async(&mut store.connection())
        .await
        .unwrap();
    assert_eq!(email, "ada@example.com");

    // Keys in two partitions cannot share one atomic block: a clear error, nothing written.
    let other = (0..100)
        .map(|n| format!("user:{n}"))
        .find(|k| {
            let probe = [NewEvent::new("T", json!({})).ordering_key(k.clone())];
            store.key_prefix_for(&probe).ok() != Some(prefix.as_str())
        })
        .expect("100 keys over 8 partitions reach another one");
    let split = [
        NewEvent::new("UserInvited", json!({})).ordering_key("user:ada"),
        NewEvent::new("UserInvited", json!({})).ordering_key(other),
    ];
    let Err(err) = store.enqueue_command(&split) else {
        panic!("events of two partitions were accepted in one atomic command")
    };
    assert!(
        matches!(&err, StoreError::InvalidRequest { message } if message.contains("different partitions")),
        "{err:?}"
    );
    // A plain enqueue of the same events writes each in its own partition.
    let enqueued = store.enqueue_batch(split.to_vec()).await.unwrap();
    assert_eq!(enqueued.len(), 2);
    for (event, enqueued) in split.iter().zip(&enqueued) {
        assert_eq!(event.id, enqueued.id);
        assert!(store.get(event.id).await.unwrap().is_some());
    }
    clean(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_hold_across_partitions() {
    let (_, store) = cluster_store("cl_idem", 8).await;
    let mut firsts = HashSet::new();
    for n in 0..40 {
        let key = format!("order-{n}");
        let first = store
            .enqueue(NewEvent::new("Order", json!({ "n": n })).idempotency_key(key.clone()))
            .await
            .unwrap();
        let again = store
            .enqueue(NewEvent::new("Order", json!({ "n": n })).idempotency_key(key))
            .await
            .unwrap();
        assert!(!first.duplicate && again.duplicate && again.id == first.id);
        firsts.insert(first.id);
    }
    assert_eq!(store.stats().await.unwrap().pending, 40);

    // A batch over several partitions is written per partition; sending the same events again
    // (after a failure half-way, say) returns them as duplicates instead of failing.
    let batch: Vec<NewEvent> = (0..16)
        .map(|n| NewEvent::new("Order", json!({ "n": n })).idempotency_key(format!("again-{n}")))
        .collect();
    let first = store.enqueue_batch(batch.clone()).await.unwrap();
    assert!(first.iter().all(|e| !e.duplicate));
    let again = store.enqueue_batch(batch.clone()).await.unwrap();
    assert!(
        again
            .iter()
            .zip(&batch)
            .all(|(e, b)| e.duplicate && e.id == b.id),
        "{again:?}"
    );
    assert_eq!(store.stats().await.unwrap().pending, 56);
    // Another event under an existing id (in the same partition) is still refused.
    let home = store.key_prefix_for(&batch[..1]).unwrap().to_owned();
    let mut clash = (0..1000)
        .map(|n| NewEvent::new("Order", json!({})).ordering_key(format!("clash-{n}")))
        .find(|e| store.key_prefix_for(std::slice::from_ref(e)).ok() == Some(home.as_str()))
        .expect("a key in the same partition");
    clash.id = batch[0].id;
    assert!(matches!(
        store.enqueue(clash).await,
        Err(StoreError::InvalidRequest { .. })
    ));
    clean(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_partition_count_for_the_same_outbox_is_refused() {
    let (name, store) = cluster_store("cl_layout", 8).await;
    store
        .enqueue(NewEvent::new("Layout", json!({})))
        .await
        .unwrap();
    let fewer = support::cluster_store_named(&name, 4).await.unwrap();
    for result in [
        fewer
            .enqueue(NewEvent::new("Layout", json!({})))
            .await
            .map(|_| ()),
        fewer
            .claim(&ClaimRequest::new("w", 10, Duration::from_secs(5)))
            .await
            .map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(
            err.to_string().contains("created with 8"),
            "a store with 4 partitions must be refused: {err}"
        );
    }
    assert_eq!(store.stats().await.unwrap().pending, 1);
    assert!(matches!(
        RedisStore::cluster_builder(&["redis://127.0.0.1:7000"])
            .await
            .unwrap()
            .partitions(0)
            .build(),
        Err(e) if e.to_string().contains("partitions")
    ));
    clean(&store);
}
