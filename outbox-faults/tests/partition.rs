//! A network partition between one worker and its database (contract P6): worker A reaches the
//! store through a TCP proxy that is then *stalled* — its connections stay open but carry nothing,
//! so A's renewals neither succeed nor fail — while worker B reaches the store directly and claims
//! A's events once their leases expire. Handlers take twice the lease and ignore their
//! cancellation token; every run's start and end (however it ended) is recorded, and no two runs
//! of one event may overlap at any instant. On PostgreSQL, Redis and MongoDB.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outbox_core::handlers::Registry;
use outbox_core::prelude::*;
use outbox_core::{EventStatus, Handler, HandlerError, NewEvent, Store, Worker};
use outbox_faults::StallingProxy;
use serde_json::json;
use uuid::Uuid;

const EVENTS: usize = 12;
const LEASE: Duration = Duration::from_secs(2);
const RUN: Duration = Duration::from_secs(4);
const EVENT_TYPE: &str = "PartitionEvent";

/// One handler run: which worker, when it started, when it ended (`None` while it runs).
#[derive(Debug, Clone)]
struct Run {
    worker: &'static str,
    start: Instant,
    end: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
struct Runs(Arc<Mutex<HashMap<Uuid, Vec<Run>>>>);

impl Runs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<Run>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn start(&self, event: Uuid, worker: &'static str) -> RunGuard {
        let mut runs = self.lock();
        let list = runs.entry(event).or_default();
        list.push(Run {
            worker,
            start: Instant::now(),
            end: None,
        });
        RunGuard {
            runs: self.clone(),
            event,
            index: list.len() - 1,
        }
    }

    fn started_by(&self, worker: &str) -> usize {
        self.lock()
            .values()
            .flatten()
            .filter(|r| r.worker == worker)
            .count()
    }
}

/// Ends its run when dropped: at the end of the handler, or when an abort drops its future.
struct RunGuard {
    runs: Runs,
    event: Uuid,
    index: usize,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Some(run) = self
            .runs
            .lock()
            .get_mut(&self.event)
            .and_then(|l| l.get_mut(self.index))
        {
            run.end = Some(Instant::now());
        }
    }
}

fn registry(runs: &Runs, worker: &'static str) -> Registry {
    let runs = runs.clone();
    Registry::builder()
        .handler(Handler::raw(EVENT_TYPE, "slow", move |record, _ctx| {
            let guard = runs.start(record.id, worker);
            async move {
                let _guard = guard;
                // Ignores its cancellation token: only an abort stops it in time.
                tokio::time::sleep(RUN).await;
                Ok::<_, HandlerError>(())
            }
        }))
        .build()
        .expect("valid registry")
}

fn config(worker: &str) -> outbox_core::WorkerConfig {
    outbox_core::WorkerConfig::default()
        .with_worker_id(worker.to_owned())
        .with_lease(LEASE)
        .with_batch_size(50)
        .with_max_in_flight(50)
        .with_poll_interval(Duration::from_millis(50))
        .with_store_backoff_initial(Duration::from_millis(50))
        .with_store_backoff_max(Duration::from_millis(500))
}

/// The `host:port` a URL such as `postgres://user@127.0.0.1:5432/db` names.
fn target_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    host.parse()
        .unwrap_or_else(|e| panic!("{url}: expected a numeric host:port ({e})"))
}

/// `url` with its `host:port` replaced by the proxy's.
fn via(url: &str, proxy: &StallingProxy) -> String {
    url.replacen(&target_of(url).to_string(), &proxy.addr().to_string(), 1)
}

/// Runs the partition on two handles of one store: `cut_off` through the proxy, `direct` not.
async fn partition(
    backend: &str,
    proxy: &StallingProxy,
    cut_off: impl Store,
    direct: impl Store + Clone,
) {
    let runs = Runs::default();
    let events = (0..EVENTS)
        .map(|n| NewEvent::new(EVENT_TYPE, json!({ "n": n })))
        .collect();
    let ids: Vec<Uuid> = direct
        .enqueue_batch(events)
        .await
        .expect("enqueue")
        .iter()
        .map(|e| e.id)
        .collect();

    let a = Worker::builder(cut_off)
        .registry(registry(&runs, "a"))
        .config(config("a"))
        .build()
        .expect("worker a")
        .start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs.started_by("a") < EVENTS {
        assert!(
            Instant::now() < deadline,
            "{backend}: worker a never ran every event"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.stall();
    let stalled_at = Instant::now();
    let b = Worker::builder(direct.clone())
        .registry(registry(&runs, "b"))
        .config(config("b"))
        .build()
        .expect("worker b")
        .start();

    // B takes every event over once A's leases expire and finishes it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = 0;
        for id in &ids {
            let record = direct.get(*id).await.expect("get").expect("stored");
            done += usize::from(record.status == EventStatus::Processed);
        }
        if done == EVENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{backend}: only {done} of {EVENTS} events processed by worker b"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.heal();
    let a_report = a.shutdown().await;
    let b_report = b.shutdown().await;

    let runs = runs.lock().clone();
    let mut overlaps = Vec::new();
    let mut closest = Duration::MAX;
    let (mut by_a, mut by_b) = (0, 0);
    for (event, list) in &runs {
        let mut list = list.clone();
        list.sort_by_key(|r| r.start);
        for r in &list {
            if r.worker == "a" {
                by_a += 1;
            } else {
                by_b += 1;
            }
        }
        for pair in list.windows(2) {
            let end = pair[0].end.unwrap_or_else(Instant::now);
            if pair[1].start < end {
                overlaps.push(format!(
                    "event {event}: {} ran until {:?} after the stall, {} started at {:?}",
                    pair[0].worker,
                    end.saturating_duration_since(stalled_at),
                    pair[1].worker,
                    pair[1].start.saturating_duration_since(stalled_at)
                ));
            } else {
                closest = closest.min(pair[1].start - end);
            }
        }
    }
    println!(
        "FIGURES partition ({backend}, proxy stalled, lease {LEASE:?}, runs {RUN:?}): {EVENTS} events, \
         runs by the cut-off worker {by_a} (leases compromised {}), by the other {by_b}, overlapping runs {}, \
         closest hand-over {}",
        a_report.metrics.leases_compromised,
        overlaps.len(),
        if closest == Duration::MAX {
            "none".to_owned()
        } else {
            format!("{closest:?}")
        }
    );
    assert!(
        overlaps.is_empty(),
        "{backend}: runs overlapped:\n{}",
        overlaps.join("\n")
    );
    assert!(
        a_report.metrics.leases_compromised >= 1,
        "{backend}: worker a never found a lease compromised: {:?}",
        a_report.metrics
    );
    assert!(
        b_report.metrics.processed >= 1,
        "{backend}: worker b processed nothing: {:?}",
        b_report.metrics
    );
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run ./scripts/test.sh, which starts the servers")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_partition() {
    use outbox_postgres::PgStore;
    let url = env("DATABASE_URL");
    let proxy = StallingProxy::start(target_of(&url)).await.expect("proxy");
    let schema = outbox_testkit::namespace("partition");
    let direct_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(5)
        .connect(&url)
        .await
        .expect("PostgreSQL answers");
    let direct = PgStore::builder(direct_pool)
        .schema(&schema)
        .build()
        .expect("names");
    direct.migrate().await.expect("migrate");
    let cut_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(5)
        .connect(&via(&url, &proxy))
        .await
        .expect("PostgreSQL answers through the proxy");
    let cut_off = PgStore::builder(cut_pool)
        .schema(&schema)
        .build()
        .expect("names");
    partition("postgres", &proxy, cut_off, direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_partition() {
    use outbox_redis::RedisStore;
    let url = env("REDIS_URL");
    let proxy = StallingProxy::start(target_of(&url)).await.expect("proxy");
    let name = outbox_testkit::namespace("partition");
    let direct = RedisStore::builder(redis::Client::open(url.as_str()).expect("url"))
        .await
        .expect("Redis answers")
        .name(&name)
        .build()
        .expect("name");
    let cut_off = RedisStore::builder(redis::Client::open(via(&url, &proxy)).expect("url"))
        .await
        .expect("Redis answers through the proxy")
        .name(&name)
        .build()
        .expect("name");
    partition("redis", &proxy, cut_off, direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_partition() {
    use outbox_mongo::{MongoStore, mongodb::Client};
    let url = env("MONGODB_URI");
    let proxy = StallingProxy::start(target_of(&url)).await.expect("proxy");
    let collection = outbox_testkit::namespace("partition");
    let direct = MongoStore::builder(Client::with_uri_str(&url).await.expect("MongoDB client"))
        .collection(&collection)
        .build()
        .expect("name");
    direct.migrate().await.expect("migrate");
    let cut_off = MongoStore::builder(
        Client::with_uri_str(via(&url, &proxy))
            .await
            .expect("MongoDB client through the proxy"),
    )
    .collection(&collection)
    .build()
    .expect("name");
    partition("mongo", &proxy, cut_off, direct).await;
}
