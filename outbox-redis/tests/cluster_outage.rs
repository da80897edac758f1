//! A shard of a Redis Cluster dies mid-run (SIGKILL of one master's process; no replicas). What
//! the partitioned store promises, checked on a cluster of its own (ports 7100–7102, started by
//! this test, append-only files fsynced on every write):
//!
//! - the partitions on the other shards go on: their events are delivered, new events enqueue;
//! - an enqueue to a partition of the dead shard fails with a transient error (nothing is
//!   acknowledged that was not written);
//! - when the shard's process returns (same data directory), its events are delivered too:
//!   every acknowledged event is handled, none is lost.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outbox_core::handlers::Registry;
use outbox_core::prelude::*;
use outbox_core::{Handler, HandlerError, NewEvent, StoreExt, Worker, WorkerConfig};
use outbox_redis::RedisStore;
use redis::cluster_routing::get_slot;
use serde_json::json;
use uuid::Uuid;

const PORTS: [u16; 3] = [7100, 7101, 7102];
/// The master this test kills: the first, which is also where the store subscribes for wake-ups
/// and the first node its cluster client knows.
const VICTIM: u16 = 7100;

/// The cluster's node processes; killed when the test ends, however it ends.
struct Nodes {
    dir: tempfile::TempDir,
    children: HashMap<u16, Child>,
}

impl Nodes {
    fn start(&mut self, port: u16) {
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&dir).expect("node directory");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", "1000"])
            .args(["--cluster-require-full-coverage", "no"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (./scripts/services.sh installs it)");
        self.children.insert(port, child);
        wait_until(Duration::from_secs(10), || {
            redis_cli(port, &["ping"]).is_some_and(|out| out.contains("PONG"))
        });
    }

    fn kill(&mut self, port: u16) {
        if let Some(mut child) = self.children.remove(&port) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cluster_ok(port: u16) -> bool {
    redis_cli(port, &["cluster", "info"]).is_some_and(|out| out.contains("cluster_state:ok"))
}

/// The slot ranges `port` serves, from its own line of `CLUSTER NODES`.
fn slots_of(port: u16) -> Vec<(u16, u16)> {
    let nodes = redis_cli(port, &["cluster", "nodes"]).expect("CLUSTER NODES");
    let line = nodes
        .lines()
        .find(|l| l.contains("myself"))
        .expect("the node's own line");
    line.split_whitespace()
        .skip(8)
        .filter_map(|range| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

async fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_shard_stops_only_its_partitions_and_loses_nothing() {
    let mut nodes = Nodes {
        dir: tempfile::tempdir().expect("temp dir"),
        children: HashMap::new(),
    };
    // A node left over by an earlier run that was killed itself would answer in place of ours.
    for port in PORTS {
        let _ = redis_cli(port, &["shutdown", "nosave"]);
    }
    for port in PORTS {
        nodes.start(port);
    }
    let addresses: Vec<String> = PORTS.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .status()
        .expect("redis-cli --cluster create");
    assert!(created.success(), "the test cluster was not created");
    wait_until(Duration::from_secs(15), || {
        PORTS.iter().all(|p| cluster_ok(*p))
    });

    let urls: Vec<String> = PORTS
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = RedisStore::cluster_builder(&urls)
        .await
        .expect("the test cluster answers")
        .name("outage")
        .partitions(8)
        .build()
        .expect("valid store");
    let victim_slots = slots_of(VICTIM);
    let on_victim = |event: &NewEvent| {
        let prefix = store
            .key_prefix_for(std::slice::from_ref(event))
            .expect("one event has one partition");
        let slot = get_slot(prefix.as_bytes());
        victim_slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
    };

    let handled: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let seen = handled.clone();
    let handler = Handler::raw("Outage", "record", move |record, _ctx| {
        let seen = seen.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            seen.lock().expect("lock").push(record.id);
            Ok::<_, HandlerError>(())
        }
    });
    let worker = Worker::builder(store.clone())
        .registry(
            Registry::builder()
                .handler(handler)
                .build()
                .expect("registry"),
        )
        .config(
            WorkerConfig::default()
                .with_poll_interval(Duration::from_millis(50))
                .with_lease(Duration::from_secs(2))
                .with_max_in_flight(8)
                .with_store_backoff_max(Duration::from_millis(500)),
        )
        .build()
        .expect("worker")
        .start();

    let mut acknowledged = HashSet::new();
    let mut stranded = HashSet::new();
    for n in 0..400 {
        // One ordering key each: the events spread over every partition.
        let event = NewEvent::new("Outage", json!({ "n": n })).ordering_key(format!("k{n}"));
        if on_victim(&event) {
            stranded.insert(event.id);
        }
        acknowledged.insert(store.enqueue(event).await.expect("all shards are up").id);
    }
    assert!(
        !stranded.is_empty() && stranded.len() < 400,
        "the victim holds some of the events: {}",
        stranded.len()
    );
    let count = |set: &Mutex<Vec<Uuid>>| set.lock().expect("lock").len();
    wait_for(Duration::from_secs(20), "the run to get going", || {
        count(&handled) >= 40
    })
    .await;

    // SIGKILL of one master, mid-run.
    nodes.kill(VICTIM);
    let killed_at = tokio::time::Instant::now();
    let others = PORTS
        .iter()
        .copied()
        .filter(|p| *p != VICTIM)
        .collect::<Vec<_>>();
    // The other shards go on: new events enqueue (or fail, when they belong to the dead shard).
    let mut refused = 0;
    let mut live = HashSet::new();
    for n in 0..120 {
        let event = NewEvent::new("Outage", json!({ "n": 1000 + n }))
            .ordering_key(format!("k{}", 1000 + n));
        let dead_shard = on_victim(&event);
        let id = event.id;
        match store.enqueue(event).await {
            Ok(enqueued) => {
                assert!(!dead_shard, "an enqueue to the dead shard was acknowledged");
                acknowledged.insert(enqueued.id);
                live.insert(id);
            }
            Err(err) => {
                assert!(dead_shard, "an enqueue to a live shard failed: {err}");
                assert!(
                    err.is_transient(),
                    "a dead shard is a transient error: {err:?}"
                );
                refused += 1;
            }
        }
    }
    assert!(
        refused > 0 && !live.is_empty(),
        "refused {refused}, live {}",
        live.len()
    );
    // Every event outside the dead shard is delivered while it is down.
    let outside: HashSet<Uuid> = acknowledged.difference(&stranded).copied().collect();
    wait_for(Duration::from_secs(30), "the live shards' events", || {
        let done: HashSet<Uuid> = handled.lock().expect("lock").iter().copied().collect();
        outside.is_subset(&done)
    })
    .await;
    let outage_delivery = killed_at.elapsed();
    let during: HashSet<Uuid> = handled.lock().expect("lock").iter().copied().collect();
    assert!(
        !stranded.is_subset(&during),
        "the dead shard's events cannot all have run before it returned"
    );

    // The shard returns with its data (append-only file): its events are delivered as well.
    nodes.start(VICTIM);
    wait_until(Duration::from_secs(20), || {
        cluster_ok(VICTIM) && others.iter().all(|p| cluster_ok(*p))
    });
    wait_for(Duration::from_secs(60), "every acknowledged event", || {
        let done: HashSet<Uuid> = handled.lock().expect("lock").iter().copied().collect();
        acknowledged.is_subset(&done)
    })
    .await;
    // A handler may have run while the returning shard still refused writes: its completion is
    // retried only while the lease holds, then the event is redelivered once the lease expires
    // (at least once). Keep the worker running until the store records every event processed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stats = store.stats().await;
        if matches!(&stats, Ok(s) if s.pending == 0 && s.processed as usize >= acknowledged.len()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for every acknowledged event to be recorded processed: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = worker.shutdown().await;
    let runs = count(&handled);
    let stats = store.stats().await.expect("stats");
    eprintln!(
        "outage: {} events acknowledged ({} on the killed shard), {refused} enqueues refused while \
         it was down, the live shards' events all delivered {outage_delivery:?} after the kill, \
         {runs} handler runs ({} repeated); {report:?}",
        acknowledged.len(),
        stranded.len(),
        runs - acknowledged.len()
    );
    assert_eq!(stats.pending, 0, "{stats:?}");
    assert_eq!(stats.processed as usize, acknowledged.len(), "{stats:?}");
}
