//! Redis: the library's store, and a raw baseline of the same shape (a hash per event, a sorted
//! set of due events, one Lua script to lease a batch and one to complete an event). On one server
//! (`REDIS_URL`), or on a Redis Cluster (`REDIS_CLUSTER_URLS`) with the outbox split into
//! partitions; the raw baseline keeps all its keys under one hash tag (one shard).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use outbox_core::Store;
use outbox_redis::{RedisConnection, RedisStore};
use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::unique;
use crate::BenchError;
use crate::target::{Bench, EVENT_TYPE, Target, payload};

fn db(err: redis::RedisError) -> BenchError {
    BenchError::Database(err.to_string())
}

const CLAIM: &str = r"
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local out = {}
for i, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local token = ARGV[2] .. ':' .. i
  redis.call('HSET', ARGV[4] .. id, 'lease_token', token, 'locked_until', ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[3], id)
  out[#out + 1] = id
  out[#out + 1] = token
  out[#out + 1] = redis.call('HGET', ARGV[4] .. id, 'payload')
end
return out
";

// KEYS: leased, processed. ARGV: now, event key prefix, then (id, token) pairs. Completes each
// event whose token still matches, in one call for the whole batch (as the library's
// complete_many does); returns how many.
const COMPLETE: &str = r"
local done = 0
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local key = ARGV[2] .. id
  if redis.call('HGET', key, 'lease_token') == ARGV[i + 1] then
    redis.call('HSET', key, 'status', 'processed', 'processed_at', ARGV[1])
    redis.call('HDEL', key, 'lease_token', 'locked_until')
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    done = done + 1
  end
end
return done
";

/// Where the outboxes live.
#[derive(Clone)]
enum Server {
    /// One server.
    Single(redis::Client),
    /// A cluster (its nodes' URLs and, for nodes on this machine, their process ids), each outbox
    /// with this many partitions.
    Cluster {
        nodes: Vec<String>,
        pids: Vec<(String, u32)>,
        partitions: usize,
    },
}

/// The Redis server at `REDIS_URL`, or the cluster at `REDIS_CLUSTER_URLS`.
#[derive(Clone)]
pub(crate) struct Redis {
    server: Server,
    connection: RedisConnection,
}

impl Redis {
    pub(crate) async fn connect() -> Result<Self, BenchError> {
        let url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let client = redis::Client::open(url).map_err(db)?;
        let connection = ConnectionManager::new(client.clone()).await.map_err(|e| {
            BenchError::Setup(format!(
                "cannot reach Redis at REDIS_URL ({e}); start it with ./scripts/services.sh"
            ))
        })?;
        Ok(Self {
            server: Server::Single(client),
            connection: RedisConnection::Server(connection),
        })
    }

    /// The cluster at `REDIS_CLUSTER_URLS` (comma-separated node URLs; ports 7000–7002 by
    /// default, as `./scripts/services.sh` starts it), outboxes with `partitions` partitions.
    pub(crate) async fn connect_cluster(partitions: usize) -> Result<Self, BenchError> {
        let nodes: Vec<String> = std::env::var("REDIS_CLUSTER_URLS")
            .unwrap_or_else(|_| {
                "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002".to_owned()
            })
            .split(',')
            .map(|n| n.trim().to_owned())
            .collect();
        let urls: Vec<&str> = nodes.iter().map(String::as_str).collect();
        let connection = RedisStore::cluster_builder(&urls)
            .await
            .map_err(|e| {
                BenchError::Setup(format!(
                    "cannot reach the Redis Cluster at REDIS_CLUSTER_URLS ({e}); start it with \
                     ./scripts/services.sh"
                ))
            })?
            .build()?
            .connection();
        let mut pids = Vec::new();
        for node in &nodes {
            if let Some(pid) = local_pid(node).await {
                pids.push((node.rsplit(':').next().unwrap_or(node).to_owned(), pid));
            }
        }
        Ok(Self {
            server: Server::Cluster {
                nodes,
                pids,
                partitions,
            },
            connection,
        })
    }

    /// The same cluster, outboxes with `partitions` partitions.
    pub(crate) fn with_partitions(&self, partitions: usize) -> Self {
        let mut other = self.clone();
        if let Server::Cluster { partitions: n, .. } = &mut other.server {
            *n = partitions;
        }
        other
    }
}

/// The process id of the Redis server at `url`, when it runs on this machine.
async fn local_pid(url: &str) -> Option<u32> {
    let mut con = redis::Client::open(url)
        .ok()?
        .get_multiplexed_async_connection()
        .await
        .ok()?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await
        .ok()?;
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))?
        .trim()
        .parse()
        .ok()?;
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(pid)
}

/// CPU seconds of each shard process so far.
fn shard_cpu(pids: &[(String, u32)]) -> Vec<f64> {
    pids.iter()
        .map(|(_, pid)| crate::report::cpu_seconds_of(*pid).unwrap_or(0.0))
        .collect()
}

#[async_trait]
impl Target for Redis {
    fn name(&self) -> &'static str {
        match self.server {
            Server::Single(_) => "redis",
            Server::Cluster { .. } => "redis-cluster",
        }
    }

    async fn fresh(&self, tag: &str) -> Result<Box<dyn Bench>, BenchError> {
        let name = format!("bench_{tag}_{}", unique());
        let builder = match &self.server {
            Server::Single(client) => RedisStore::builder(client.clone()).await?,
            Server::Cluster {
                nodes, partitions, ..
            } => {
                let urls: Vec<&str> = nodes.iter().map(String::as_str).collect();
                RedisStore::cluster_builder(&urls)
                    .await?
                    .partitions(*partitions)
            }
        };
        let store = builder.name(&name).build()?;
        let shards = match &self.server {
            Server::Single(_) => Vec::new(),
            Server::Cluster { pids, .. } => pids.clone(),
        };
        Ok(Box::new(RedisBench {
            raw: format!("{{rawbench:{name}}}"),
            store: Arc::new(store),
            connection: self.connection.clone(),
            shards,
            drain_start: std::sync::Mutex::new(None),
        }))
    }
}

struct RedisBench {
    /// Key prefix of the raw baseline (its own hash tag).
    raw: String,
    store: Arc<RedisStore>,
    connection: RedisConnection,
    /// A cluster's shard processes on this machine (port, pid).
    shards: Vec<(String, u32)>,
    /// After the prefill: how many events, and each shard's CPU seconds then.
    drain_start: std::sync::Mutex<Option<(usize, Vec<f64>)>>,
}

impl RedisBench {
    fn event_key(&self, id: &str) -> String {
        format!("{}:ev:{id}", self.raw)
    }

    /// Deletes the keys under `prefix`, a hash tag (so one slot: one `DEL` may name many).
    async fn delete_prefix(&self, prefix: &str) {
        let mut con = self.connection.clone();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut con)
            .await
            .unwrap_or_default();
        for chunk in keys.chunks(1000) {
            let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(&mut con).await;
        }
    }

    /// The raw writes of `per` events in one MULTI/EXEC.
    async fn raw_write(&self, first: usize, per: usize) -> Result<(), BenchError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let now = chrono::Utc::now().timestamp_micros();
        for i in 0..per {
            let id = Uuid::now_v7().to_string();
            pipe.hset_multiple(
                self.event_key(&id),
                &[
                    ("event_type", EVENT_TYPE.to_owned()),
                    ("payload", payload(first + i).to_string()),
                    ("status", "pending".to_owned()),
                    ("attempts", "0".to_owned()),
                ],
            )
            .ignore()
            .zadd(format!("{}:queue", self.raw), &id, now + i as i64)
            .ignore();
        }
        let mut con = self.connection.clone();
        let () = pipe.query_async(&mut con).await.map_err(db)?;
        Ok(())
    }
}

#[async_trait]
impl Bench for RedisBench {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn outbox_enqueue(&self, transactions: usize, per: usize) -> Result<(), BenchError> {
        let mut con = self.connection.clone();
        for t in 0..transactions {
            let events: Vec<_> = (0..per)
                .map(|i| crate::target::event(t * per + i))
                .collect();
            let mut pipe = redis::pipe();
            pipe.atomic();
            self.store.enqueue_in_pipeline(&mut pipe, events)?;
            let _: redis::Value = pipe.query_async(&mut con).await.map_err(db)?;
        }
        Ok(())
    }

    async fn raw_enqueue(&self, transactions: usize, per: usize) -> Result<(), BenchError> {
        for t in 0..transactions {
            self.raw_write(t * per, per).await?;
        }
        Ok(())
    }

    async fn raw_prefill(&self, n: usize) -> Result<(), BenchError> {
        let mut next = 0;
        while next < n {
            let end = (next + 1000).min(n);
            self.raw_write(next, end - next).await?;
            next = end;
        }
        Ok(())
    }

    async fn raw_drain(&self, processors: usize, batch: usize) -> Result<u64, BenchError> {
        let claim = Arc::new(redis::Script::new(CLAIM));
        let complete = Arc::new(redis::Script::new(COMPLETE));
        let done = Arc::new(AtomicU64::new(0));
        let queue = format!("{}:queue", self.raw);
        let leased_key = format!("{}:leased", self.raw);
        let processed_key = format!("{}:processed", self.raw);
        let event_prefix = format!("{}:ev:", self.raw);
        let loops = (0..processors).map(|_| {
            let (claim, complete, done) = (claim.clone(), complete.clone(), done.clone());
            let (queue, leased_key, processed_key, event_prefix) = (
                queue.clone(),
                leased_key.clone(),
                processed_key.clone(),
                event_prefix.clone(),
            );
            let con = self.connection.clone();
            tokio::spawn(async move {
                loop {
                    let until = chrono::Utc::now().timestamp_millis() + 30_000;
                    let reply: Vec<String> = claim
                        .key(&queue)
                        .key(&leased_key)
                        .arg(batch)
                        .arg(Uuid::now_v7().to_string())
                        .arg(until)
                        .arg(&event_prefix)
                        .invoke_async(&mut con.clone())
                        .await
                        .map_err(db)?;
                    if reply.is_empty() {
                        return Ok::<_, BenchError>(());
                    }
                    let mut invocation = complete.key(&leased_key);
                    invocation
                        .key(&processed_key)
                        .arg(chrono::Utc::now().timestamp_millis())
                        .arg(&event_prefix);
                    for c in reply.chunks(3) {
                        if let [id, token, _payload] = c {
                            invocation.arg(id).arg(token);
                        }
                    }
                    let applied: u64 = invocation
                        .invoke_async(&mut con.clone())
                        .await
                        .map_err(db)?;
                    done.fetch_add(applied, Ordering::Relaxed);
                }
            })
        });
        for handle in loops.collect::<Vec<_>>() {
            handle
                .await
                .map_err(|e| BenchError::Setup(e.to_string()))??;
        }
        Ok(done.load(Ordering::Relaxed))
    }

    async fn prefill(&self, n: usize) -> Result<(), BenchError> {
        crate::target::prefill_store(self.store.as_ref(), n).await?;
        if !self.shards.is_empty() {
            *self
                .drain_start
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((n, shard_cpu(&self.shards)));
        }
        Ok(())
    }

    async fn facts(&self) -> Vec<(String, String)> {
        if !self.shards.is_empty() {
            // A cluster: the CPU each shard spent since the prefill (the drain), per event. The
            // busiest shard bounds the drain on a cluster whose shards have cores of their own.
            let start = self
                .drain_start
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let Some((n, before)) = start else {
                return Vec::new();
            };
            let per_event: Vec<f64> = shard_cpu(&self.shards)
                .iter()
                .zip(before)
                .map(|(after, before)| (after - before).max(0.0) * 1e6 / n.max(1) as f64)
                .collect();
            let busiest = per_event.iter().copied().fold(0.0, f64::max);
            let each = self
                .shards
                .iter()
                .zip(&per_event)
                .map(|((port, _), us)| format!("{port} {us:.1}"))
                .collect::<Vec<_>>()
                .join(", ");
            return vec![(
                "busiest shard CPU".to_owned(),
                format!("{busiest:.1} µs/ev ({each})"),
            )];
        }
        let mut con = self.connection.clone();
        let info: Result<String, _> = redis::cmd("INFO").arg("memory").query_async(&mut con).await;
        let used = info.ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("used_memory_human:"))
                .map(|l| l.trim_start_matches("used_memory_human:").to_owned())
        });
        vec![("server memory".to_owned(), used.unwrap_or_default())]
    }

    async fn cleanup(&self) {
        self.delete_prefix(&self.raw).await;
        for prefix in self.store.key_prefixes() {
            self.delete_prefix(prefix).await;
        }
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(self.store.layout_key())
            .query_async(&mut self.connection.clone())
            .await;
    }
}
