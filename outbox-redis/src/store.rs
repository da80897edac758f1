//! [`RedisStore`]: the `Store` implementation, and enqueue inside the caller's `MULTI` block (C1).
//! With more than one partition every call goes to the partition(s) it concerns (see
//! `partition.rs`); a claim reads the head of every partition and takes the oldest overall.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::future::join_all;
use outbox_core::kit::corrupt_reason;
use outbox_core::model::CorruptEvent;
use outbox_core::store::{
    ClaimRequest, ClaimedEvent, Completion, Lease, StoreCapabilities, StoreStats, TypeStats,
    WakeupStream,
};
use outbox_core::store::{ClaimStore, EnqueueStore, InspectStore, RepairStore};
use outbox_core::{Enqueued, EventRecord, EventStatus, Limits, NewEvent, StoreError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::config::RedisStoreBuilder;
use crate::connection::RedisConnection;
use crate::error::map_redis;
use crate::partition::Layout;
use crate::row::{CLAIM_READS, FIELDS, Leased, at, body_tail, decode, from_millis};
use crate::scripts::{ENQUEUE_SOURCE, Invocation, SCRIPTS};

/// Completions per `complete_many` script call.
const COMPLETE_CHUNK: usize = 100;

/// Claims are capped per call so one script never runs long (Redis is single-threaded).
const MAX_CLAIM: usize = 1_000;
const PURGE_BATCH: i64 = 500;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An outbox in Redis. Cheap to clone (a multiplexed, self-reconnecting connection).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use outbox_core::NewEvent;
/// use outbox_redis::RedisStore;
///
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let mut con = store.connection();
/// // The caller's own write and the event, in one MULTI/EXEC:
/// let mut pipe = redis::pipe();
/// pipe.atomic().hset("user:ada", "email", "ada@example.com").ignore();
/// store.enqueue_in_pipeline(&mut pipe, vec![NewEvent::new("UserInvited", serde_json::json!({"email": "ada@example.com"}))])?;
/// let _: () = pipe.query_async(&mut con).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    /// Where wake-ups are subscribed: the server, or each node of a cluster in turn.
    pubsub: Arc<[redis::Client]>,
    connection: RedisConnection,
    layout: Arc<Layout>,
    limits: Limits,
    /// Set once the stored partition count was found to match this store's (first enqueue or
    /// claim).
    layout_checked: Arc<OnceCell<()>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefixes", &self.layout.prefixes())
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// The head of a partition's queue: its due time (ms) and id; heads order by both, as the queue
/// does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Head {
    at: i64,
    id: String,
}

/// The partition with the oldest head, leaving out `except`.
fn oldest(heads: &[Option<Head>], except: Option<usize>) -> Option<usize> {
    heads
        .iter()
        .enumerate()
        .filter(|(p, _)| Some(*p) != except)
        .filter_map(|(p, head)| head.as_ref().map(|h| (h, p)))
        .min()
        .map(|(_, p)| p)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

impl RedisStore {
    /// Connects to `url` and returns the outbox named `default`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| map_redis("open client", e))?;
        Ok(Self::builder(client).await?.build()?)
    }

    /// Connects (with automatic reconnection) and returns a builder to choose the outbox's name.
    ///
    /// An unreachable server is reported at once (one bounded attempt) rather than after minutes of
    /// retries; later, the connection reconnects only briefly by itself and a worker's own back-off
    /// rides out longer outages. Commands time out after 30 s.
    pub async fn builder(client: redis::Client) -> Result<RedisStoreBuilder, StoreError> {
        let no_answer =
            || StoreError::unavailable(format!("connect: no answer within {CONNECT_TIMEOUT:?}"));
        match tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection()).await
        {
            Ok(Ok(_probe)) => {}
            Ok(Err(e)) => return Err(map_redis("connect", e)),
            Err(_) => return Err(no_answer()),
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(Duration::from_secs(30))
            .set_number_of_retries(2)
            .set_factor(50)
            .set_max_delay(1_000);
        let connection = tokio::time::timeout(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| no_answer())?
        .map_err(|e| map_redis("connect", e))?;
        Ok(RedisStoreBuilder::new(
            vec![client],
            RedisConnection::Server(connection),
        ))
    }

    /// Connects to the Redis Cluster that `nodes` (URLs of one or more of its nodes) belong to and
    /// returns the outbox named `default` with `partitions` partitions (see
    /// [`RedisStoreBuilder::partitions`]).
    pub async fn connect_cluster(nodes: &[&str], partitions: usize) -> Result<Self, StoreError> {
        Ok(Self::cluster_builder(nodes)
            .await?
            .partitions(partitions)
            .build()?)
    }

    /// Connects to the Redis Cluster that `nodes` (URLs of one or more of its nodes) belong to and
    /// returns a builder. Each command goes to the shard holding its partition's slot; the
    /// connection follows slot moves and failovers by itself.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let nodes = ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001", "redis://127.0.0.1:7002"];
    /// let store = outbox_redis::RedisStore::cluster_builder(&nodes)
    ///     .await?
    ///     .name("billing")
    ///     .partitions(8)
    ///     .build()?;
    /// assert_eq!(store.partitions(), 8);
    /// # Ok(()) }
    /// ```
    pub async fn cluster_builder(nodes: &[&str]) -> Result<RedisStoreBuilder, StoreError> {
        if nodes.is_empty() {
            return Err(StoreError::invalid("connect cluster: no node given"));
        }
        let pubsub = nodes
            .iter()
            .map(|url| redis::Client::open(*url).map_err(|e| map_redis("open client", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let client = ClusterClient::builder(nodes.iter().copied())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(Duration::from_secs(30))
            .retries(2)
            .min_retry_wait(20)
            .max_retry_wait(500)
            .build()
            .map_err(|e| map_redis("open cluster client", e))?;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_connection())
            .await
            .map_err(|_| {
                StoreError::unavailable(format!(
                    "connect cluster: no answer within {CONNECT_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| map_redis("connect cluster", e))?;
        Ok(RedisStoreBuilder::new(
            pubsub,
            RedisConnection::Cluster(connection),
        ))
    }

    pub(crate) fn from_parts(
        pubsub: Vec<redis::Client>,
        connection: RedisConnection,
        layout: Layout,
        limits: Limits,
    ) -> Self {
        Self {
            pubsub: pubsub.into(),
            connection,
            layout: Arc::new(layout),
            limits,
            layout_checked: Arc::new(OnceCell::new()),
        }
    }

    /// The limits enqueued events are checked against (C11).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The prefix of every key of this outbox when it has one partition, e.g. `{outbox:default}`;
    /// with more, the prefix of partition 0 (see [`key_prefixes`](Self::key_prefixes)).
    pub fn key_prefix(&self) -> &str {
        self.layout.prefix(0)
    }

    /// The key prefix of each partition, e.g. `{outbox:billing:0}` … `{outbox:billing:7.3}`: each
    /// is a hash tag, so each partition lives in one cluster slot.
    pub fn key_prefixes(&self) -> &[String] {
        self.layout.prefixes()
    }

    /// The key that records how many partitions the outbox was created with,
    /// `{outbox:<name>}:layout` (see [`RedisStoreBuilder::partitions`]).
    pub fn layout_key(&self) -> String {
        self.layout.layout_key()
    }

    /// How many partitions the outbox has (1 unless [`RedisStoreBuilder::partitions`] said more).
    pub fn partitions(&self) -> usize {
        self.layout.len()
    }

    /// The key prefix of the partition that `events` are enqueued in together (by
    /// [`enqueue_command`](Self::enqueue_command) or [`enqueue_in_pipeline`](Self::enqueue_in_pipeline)):
    /// that of the first event with an ordering or idempotency key, else of the first event. In a
    /// cluster, a `MULTI` block is atomic only within one slot: put the keys you write with the
    /// events under this prefix. With one partition it is always [`key_prefix`](Self::key_prefix).
    ///
    /// ```no_run
    /// # async fn demo(store: outbox_redis::RedisStore) -> Result<(), Box<dyn std::error::Error>> {
    /// use outbox_core::NewEvent;
    /// let events = vec![NewEvent::new("UserInvited", serde_json::json!({})).ordering_key("user:ada")];
    /// let prefix = store.key_prefix_for(&events)?;
    /// let mut pipe = redis::pipe();
    /// pipe.atomic().hset(format!("{prefix}:user:ada"), "email", "ada@example.com").ignore();
    /// store.enqueue_in_pipeline(&mut pipe, events)?;
    /// let _: () = pipe.query_async(&mut store.connection()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidRequest`] when two events' keys put them in different partitions.
    pub fn key_prefix_for(&self, events: &[NewEvent]) -> Result<&str, StoreError> {
        Ok(self.layout.prefix(self.layout.of_batch(events)?))
    }

    /// A handle on the store's connection, for the caller's own commands.
    pub fn connection(&self) -> RedisConnection {
        self.connection.clone()
    }

    /// The key of event `id`'s hash (`<partition prefix>:ev:<id>`), or `None` when no partition
    /// holds it. For operators' own reads and repairs.
    pub async fn event_key(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .locate(id)
            .await?
            .map(|p| format!("{}:ev:{id}", self.layout.prefix(p))))
    }

    /// The command that enqueues `events` atomically, in the partition
    /// [`key_prefix_for`](Self::key_prefix_for) names: an `EVAL` of the enqueue script, so it also
    /// works inside `MULTI` (where a missing cached script could not be reloaded). Its reply is a
    /// flat list of `id, duplicate` pairs; [`parse_enqueued`](Self::parse_enqueued) reads it.
    pub fn enqueue_command(&self, events: &[NewEvent]) -> Result<redis::Cmd, StoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(ENQUEUE_SOURCE.as_str())
            .arg(1)
            .arg(self.key_prefix_for(events)?)
            .arg(enqueue_args(&self.limits, events)?);
        Ok(cmd)
    }

    /// Appends the enqueue of `events` to the caller's pipeline; with `pipe.atomic()` the events are
    /// written in the same `MULTI`/`EXEC` as the caller's own commands (C1) — in a cluster, as long
    /// as those are keys under [`key_prefix_for`](Self::key_prefix_for). The pipeline's reply
    /// for it is ignored; use [`enqueue_command`](Self::enqueue_command) to read duplicates.
    pub fn enqueue_in_pipeline(
        &self,
        pipe: &mut redis::Pipeline,
        events: Vec<NewEvent>,
    ) -> Result<(), StoreError> {
        pipe.add_command(self.enqueue_command(&events)?).ignore();
        Ok(())
    }

    /// Reads the reply of an [`enqueue_command`](Self::enqueue_command).
    pub fn parse_enqueued(reply: Vec<String>) -> Result<Vec<Enqueued>, StoreError> {
        reply
            .chunks(2)
            .map(|pair| match pair {
                [id, dup] => Uuid::parse_str(id)
                    .map(|id| Enqueued {
                        id,
                        duplicate: dup == "1",
                    })
                    .map_err(|e| StoreError::Corrupt {
                        id: id.clone(),
                        message: e.to_string(),
                    }),
                _ => Err(StoreError::invalid("odd-length enqueue reply")),
            })
            .collect()
    }

    fn key(&self, partition: usize, suffix: &str) -> String {
        format!("{}:{suffix}", self.layout.prefix(partition))
    }

    /// Checks once per store handle that the outbox was created with this many partitions (and
    /// records the count on first use): with another count, events in partitions the store does
    /// not know would be stranded.
    async fn check_layout(&self) -> Result<(), StoreError> {
        self.layout_checked
            .get_or_try_init(|| async {
                let key = self.layout.layout_key();
                let mut con = self.connection.clone();
                let _: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(self.layout.len())
                    .arg("NX")
                    .query_async(&mut con)
                    .await
                    .map_err(|e| map_redis("check the partition count", e))?;
                match crate::partition::recorded_count(&mut con, &key).await? {
                    Some(n) if n == self.layout.len() => Ok(()),
                    other => Err(StoreError::from(outbox_core::ConfigError::new(
                        "partitions",
                        format!(
                            "this store has {} partition(s) but `{key}` says the outbox was \
                             created with {}: events in the partitions this store does not know \
                             would never be claimed. Use the recorded count, or drain the outbox \
                             and delete `{key}` to change it",
                            self.layout.len(),
                            other
                                .map_or_else(|| "none (it vanished)".to_owned(), |n| n.to_string())
                        ),
                    ))),
                }
            })
            .await
            .map(|_| ())
    }

    /// The partition holding event `id`, asked of every partition at once.
    async fn locate(&self, id: &str) -> Result<Option<usize>, StoreError> {
        let found = join_all((0..self.layout.len()).map(|p| async move {
            redis::cmd("EXISTS")
                .arg(self.key(p, &format!("ev:{id}")))
                .query_async::<bool>(&mut self.connection.clone())
                .await
                .map_err(|e| map_redis("find event", e))
        }))
        .await;
        let mut first_error = None;
        for (p, answer) in found.into_iter().enumerate() {
            match answer {
                Ok(true) => return Ok(Some(p)),
                Ok(false) => {}
                Err(err) => first_error = first_error.or(Some(err)),
            }
        }
        first_error.map_or(Ok(None), Err)
    }

    /// Runs `run` once per partition over the items that belong to it (all at once), and returns
    /// the results in the items' order. Items no partition of this store issued get `stray`'s
    /// result.
    async fn per_partition<T, R, Fut>(
        &self,
        items: Vec<T>,
        partition_of: impl Fn(&T) -> Option<usize>,
        stray: impl Fn(&T) -> R,
        run: impl Fn(usize, Vec<T>) -> Fut,
    ) -> Vec<R>
    where
        Fut: Future<Output = Vec<R>>,
    {
        let mut out: Vec<Option<R>> = Vec::with_capacity(items.len());
        let mut groups: Vec<(usize, Vec<usize>, Vec<T>)> = Vec::new();
        for item in items {
            let slot = out.len();
            match partition_of(&item) {
                None => out.push(Some(stray(&item))),
                Some(p) => {
                    out.push(None);
                    match groups.iter_mut().find(|(q, _, _)| *q == p) {
                        Some((_, slots, members)) => {
                            slots.push(slot);
                            members.push(item);
                        }
                        None => groups.push((p, vec![slot], vec![item])),
                    }
                }
            }
        }
        let (slots, runs): (Vec<_>, Vec<_>) = groups
            .into_iter()
            .map(|(p, slots, members)| (slots, run(p, members)))
            .unzip();
        for (slots, results) in slots.into_iter().zip(join_all(runs).await) {
            for (slot, result) in slots.into_iter().zip(results) {
                out[slot] = Some(result);
            }
        }
        out.into_iter().flatten().collect()
    }
}

/// Appends `id` as text to a script call, without allocating a string for it.
fn uuid_arg(invocation: &mut Invocation<'_>, id: Uuid) {
    let mut text = Uuid::encode_buffer();
    invocation.arg(&*id.as_hyphenated().encode_lower(&mut text));
}

/// The enqueue script's arguments: the count, then six per event (see enqueue.lua).
fn enqueue_args(limits: &Limits, events: &[NewEvent]) -> Result<Vec<String>, StoreError> {
    let mut args = Vec::with_capacity(1 + events.len() * 6);
    args.push(events.len().to_string());
    for event in events {
        let payload = limits.encode(event)?;
        args.extend([
            event.id.to_string(),
            event.event_type.clone(),
            body_tail(event, &payload)?,
            event.ordering_key.clone().unwrap_or_default(),
            event.idempotency_key.clone().unwrap_or_default(),
            event
                .available_at
                .map(|t| t.timestamp_millis().to_string())
                .unwrap_or_default(),
        ]);
    }
    Ok(args)
}

#[async_trait]
impl ClaimStore for RedisStore {
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::default()
            .with_wakeups(true)
            .with_transactional_enqueue(true)
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
        let limit = request.limit.min(MAX_CLAIM);
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.check_layout().await?;
        if self.layout.len() == 1 {
            return self.claim_in(0, limit, request, None).await;
        }
        self.claim_across(limit, request).await
    }

    async fn renew_many(
        &self,
        leases: Vec<Lease>,
        extend: Duration,
    ) -> Vec<Result<DateTime<Utc>, StoreError>> {
        self.per_partition(
            leases,
            |lease| self.layout.of_token(&lease.token),
            |lease| {
                Err(StoreError::LeaseLost {
                    event_id: lease.event_id,
                })
            },
            |p, leases| self.renew_in(p, leases, extend),
        )
        .await
    }

    async fn complete_many(&self, items: &[(Lease, Completion)]) -> Vec<Result<(), StoreError>> {
        self.per_partition(
            items.iter().collect(),
            |(lease, _)| self.layout.of_token(&lease.token),
            |(lease, _)| {
                Err(StoreError::LeaseLost {
                    event_id: lease.event_id,
                })
            },
            |p, items| self.complete_in(p, items),
        )
        .await
    }

    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError> {
        let channels: Vec<String> = (0..self.layout.len())
            .map(|p| self.key(p, "wake"))
            .collect();
        // A cluster broadcasts PUBLISH to every node: any node that answers will do.
        let mut last_error = None;
        for client in self.pubsub.iter() {
            let mut pubsub = match client.get_async_pubsub().await {
                Ok(pubsub) => pubsub,
                Err(e) => {
                    last_error = Some(map_redis("subscribe: connect", e));
                    continue;
                }
            };
            pubsub
                .subscribe(&channels)
                .await
                .map_err(|e| map_redis("SUBSCRIBE", e))?;
            // The stream ends when the connection drops; the worker then polls and subscribes
            // again.
            return Ok(Some(Box::pin(pubsub.into_on_message().map(|_| ()))));
        }
        Err(last_error.unwrap_or_else(|| StoreError::invalid("subscribe: no server to ask")))
    }
}

#[async_trait]
impl EnqueueStore for RedisStore {
    async fn enqueue_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.check_layout().await?;
        // Each partition's events in one atomic call (a batch over several partitions is several).
        // A batch over several partitions is checked whole first: one refused event stores none
        // (C11), even when the others go to partitions of their own. (A batch in one partition
        // is checked by its one script call.)
        let home = self.layout.of_event(&events[0]);
        if events
            .iter()
            .any(|event| self.layout.of_event_beside(event, home) != home)
        {
            for event in &events {
                self.limits.check(event)?;
            }
        }
        self.per_partition(
            events,
            |event| Some(self.layout.of_event_beside(event, home)),
            |_| Err(StoreError::invalid("enqueue: an event without a partition")),
            |p, part| async move {
                match self.enqueue_in(p, &part).await {
                    Ok(done) if done.len() == part.len() => done.into_iter().map(Ok).collect(),
                    Ok(_) => part
                        .iter()
                        .map(|_| Err(StoreError::invalid("enqueue: a partition answered short")))
                        .collect(),
                    Err(err) => part.iter().map(|_| Err(err.replicate())).collect(),
                }
            },
        )
        .await
        .into_iter()
        .collect()
    }
}

#[async_trait]
impl InspectStore for RedisStore {
    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        Ok(self.read_event(id).await?.map(|(_, record)| record))
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let oldest = self.oldest_in("dead", limit).await?;
        let rows = self.read_each(&oldest, &FIELDS[..], "dead letters").await?;
        let rows = rows.iter().filter(|r| r.iter().any(Option::is_some));
        Ok(outbox_core::kit::decodable(
            "dead letters",
            rows.map(|r| decode(r, None)),
        ))
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut total = [0u64; 6];
        let mut lag = Duration::ZERO;
        for reply in join_all((0..self.layout.len()).map(|p| self.stats_in(p))).await {
            let (counts, partition_lag) = reply?;
            for (sum, n) in total.iter_mut().zip(counts) {
                *sum += n;
            }
            lag = lag.max(partition_lag);
        }
        let [pending, due, leased, processed, dead, corrupt] = total;
        Ok(StoreStats::new(pending, due, leased, processed, dead, lag).with_corrupt(corrupt))
    }

    async fn stats_by_type(&self) -> Result<Vec<TypeStats>, StoreError> {
        crate::type_stats::stats_by_type(&mut self.connection.clone(), self.layout.prefixes()).await
    }

    async fn key_head(&self, key: &str) -> Result<Option<EventRecord>, StoreError> {
        let head: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.key(self.layout.of_key(key), &format!("okey:{key}")))
            .arg(0)
            .arg(0)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("key head", e))?;
        let Some(id) = head.first().and_then(|id| Uuid::parse_str(id).ok()) else {
            return Ok(None);
        };
        self.get(id).await
    }

    async fn corrupt_events(&self, limit: usize) -> Result<Vec<CorruptEvent>, StoreError> {
        let oldest = self.oldest_in("corrupt", limit).await?;
        let rows = self
            .read_each(
                &oldest,
                &["event_type", "corrupt_reason", "processed_at"],
                "corrupt events",
            )
            .await?;
        Ok(oldest
            .into_iter()
            .zip(rows)
            .map(|((_, id), row)| {
                let mut row = row.into_iter();
                let (event_type, reason, at) = (
                    row.next().flatten(),
                    row.next().flatten(),
                    row.next().flatten(),
                );
                CorruptEvent::new(id, reason.unwrap_or_default())
                    .with_event_type(event_type)
                    .with_set_aside_at(at.and_then(|ms| ms.parse().ok()).map(from_millis))
            })
            .collect())
    }
}

#[async_trait]
impl RepairStore for RedisStore {
    async fn requeue_dead(&self, id: Uuid) -> Result<bool, StoreError> {
        let Some((p, record)) = self
            .read_event(id)
            .await?
            .filter(|(_, r)| r.status == EventStatus::Dead)
        else {
            return Ok(false);
        };
        let mut results = record.handler_results;
        outbox_core::kit::reset_unfinished_handlers(&mut results);
        let results = serde_json::to_string(&results)
            .map_err(|e| StoreError::invalid(format!("handler results do not serialize: {e}")))?;
        let done: i64 = SCRIPTS
            .requeue
            .key(self.layout.prefix(p))
            .arg(id.to_string())
            .arg("dead")
            .arg(results)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("requeue", e))?;
        Ok(done == 1)
    }

    async fn purge_dead(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        self.purge(EventStatus::Dead, older_than).await
    }

    async fn purge_processed(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        self.purge(EventStatus::Processed, older_than).await
    }

    async fn requeue_corrupt(&self, id: &str) -> Result<bool, StoreError> {
        let Some(p) = self.locate(id).await? else {
            return Ok(false);
        };
        let done: i64 = SCRIPTS
            .requeue
            .key(self.layout.prefix(p))
            .arg(id)
            .arg("corrupt")
            .arg("")
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("requeue corrupt", e))?;
        Ok(done == 1)
    }
}

impl RedisStore {
    /// Event `id` and its partition.
    async fn read_event(&self, id: Uuid) -> Result<Option<(usize, EventRecord)>, StoreError> {
        let id = id.to_string();
        let Some(p) = self.locate(&id).await? else {
            return Ok(None);
        };
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.key(p, &format!("ev:{id}")))
            .arg(&FIELDS[..])
            .arg("corrupt_reason")
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("get", e))?;
        if fields.iter().all(Option::is_none) {
            return Ok(None);
        }
        if fields.get(at::STATUS).and_then(Option::as_deref)
            == Some(outbox_core::kit::CORRUPT_STATUS)
        {
            return Err(StoreError::Corrupt {
                id,
                message: format!(
                    "set aside because it does not decode ({}); fix it and call requeue_corrupt",
                    fields
                        .get(FIELDS.len())
                        .and_then(Option::as_deref)
                        .unwrap_or("")
                ),
            });
        }
        decode(&fields, None).map(|record| Some((p, record)))
    }

    /// Enqueues `events` in partition `p`, atomically (one script call).
    async fn enqueue_in(&self, p: usize, events: &[NewEvent]) -> Result<Vec<Enqueued>, StoreError> {
        let mut invocation = SCRIPTS.enqueue.key(self.layout.prefix(p));
        invocation.arg(enqueue_args(&self.limits, events)?);
        let reply: Vec<String> = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("enqueue", e))?;
        Self::parse_enqueued(reply)
    }

    /// Claims the `limit` oldest due events across partitions. First every partition's head (one
    /// short script each, all at once), and a claim from the partition whose head is oldest, up to
    /// the oldest head of the others: events without keys arrive in runs per partition (see
    /// `partition.rs`), so this one call usually fills the claim. When it does not (events of many
    /// ordering keys interleave over the partitions), the due times of the next events of every
    /// partition tell how many of the oldest overall each holds (`shares`), and those are claimed
    /// from each at once. The batch is then put in due order. A partition that does not answer (its
    /// shard is down) is left out; the others go on.
    async fn claim_across(
        &self,
        limit: usize,
        request: &ClaimRequest,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let peeks = join_all((0..self.layout.len()).map(|p| self.peek(p, 1))).await;
        let mut heads: Vec<Option<Head>> = Vec::with_capacity(peeks.len());
        let mut first_error = None;
        let mut answered = 0;
        for (p, peek) in peeks.into_iter().enumerate() {
            match peek {
                Ok(head) => {
                    answered += 1;
                    heads.push(head.map(|(head, _)| head));
                }
                Err(err) => {
                    tracing::warn!(partition = self.layout.prefix(p), error = %err, "claim: a partition did not answer");
                    first_error = first_error.or(Some(err));
                    heads.push(None);
                }
            }
        }
        if let (0, Some(err)) = (answered, first_error) {
            // No partition answered: the store is down for this claimer.
            return Err(err);
        }
        let Some(first) = oldest(&heads, None) else {
            return Ok(Vec::new());
        };
        let bound = oldest(&heads, Some(first)).and_then(|q| heads[q].clone());
        let mut claimed = self
            .claim_in(first, limit, request, bound.as_ref())
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, "claim: a partition's claim failed");
                Vec::new()
            });
        if claimed.len() >= limit || bound.is_none() {
            outbox_core::kit::sort_in_due_order(&mut claimed);
            return Ok(claimed);
        }
        // The rest by shares: the due times of the next events of every busy partition.
        let remaining = limit - claimed.len();
        let busy: Vec<usize> = (0..self.layout.len())
            .filter(|q| heads[*q].is_some())
            .collect();
        let peeks = join_all(busy.iter().map(|&q| self.peek(q, remaining))).await;
        let mut due: Vec<(i64, usize)> = Vec::new();
        for (&q, peek) in busy.iter().zip(peeks) {
            if let Ok(Some((_, times))) = peek {
                due.extend(times.into_iter().map(|at| (at, q)));
            }
        }
        due.sort_unstable();
        let wanted = self.shares(&due, remaining).await;
        let claims = join_all(
            wanted
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(q, n)| self.claim_in(q, *n, request, None)),
        )
        .await;
        for result in claims {
            match result {
                Ok(events) => claimed.extend(events),
                Err(err) => tracing::warn!(error = %err, "claim: a partition's claim failed"),
            }
        }
        outbox_core::kit::sort_in_due_order(&mut claimed);
        Ok(claimed)
    }

    /// How many of the oldest `limit` events each partition holds, from `due` — every answering
    /// partition's first due times, sorted. When the `limit`-th due time is shared by partitions
    /// and not all of its events fit, the ones with the smallest ids (creation order) are taken:
    /// their ids are read then (a rare second round trip).
    async fn shares(&self, due: &[(i64, usize)], limit: usize) -> Vec<usize> {
        let mut wanted = vec![0usize; self.layout.len()];
        let (taken, rest) = due.split_at(limit.min(due.len()));
        for (_, p) in taken {
            wanted[*p] += 1;
        }
        let Some(&(boundary, _)) = taken.last() else {
            return wanted;
        };
        let mut tied: Vec<usize> = due
            .iter()
            .filter(|(at, _)| *at == boundary)
            .map(|(_, p)| *p)
            .collect();
        tied.dedup();
        if tied.len() < 2 || rest.first().is_none_or(|(at, _)| *at != boundary) {
            return wanted;
        }
        let lists = join_all(tied.iter().map(|&p| async move {
            redis::cmd("ZRANGEBYSCORE")
                .arg(self.key(p, "queue"))
                .arg(boundary)
                .arg(boundary)
                .query_async::<Vec<String>>(&mut self.connection.clone())
                .await
                .map(|ids| ids.into_iter().map(move |id| (id, p)).collect::<Vec<_>>())
        }))
        .await;
        let Ok(lists) = lists.into_iter().collect::<Result<Vec<_>, _>>() else {
            return wanted;
        };
        let mut ids: Vec<(String, usize)> = lists.into_iter().flatten().collect();
        ids.sort_unstable();
        let at_boundary = taken.iter().filter(|(at, _)| *at == boundary).count();
        for p in &tied {
            wanted[*p] -= taken
                .iter()
                .filter(|(at, q)| *at == boundary && q == p)
                .count();
        }
        for (_, p) in ids.iter().take(at_boundary) {
            wanted[*p] += 1;
        }
        wanted
    }

    /// The head of partition `p`'s queue and the due times (ms) of its first `limit` queued
    /// events (the head's first), once due events have joined it; `None` when it is empty.
    async fn peek(&self, p: usize, limit: usize) -> Result<Option<(Head, Vec<i64>)>, StoreError> {
        let reply: Vec<String> = SCRIPTS
            .peek
            .key(self.layout.prefix(p))
            .arg(limit)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("claim: read a partition's head", e))?;
        let mut items = reply.into_iter();
        let Some(id) = items.next() else {
            return Ok(None);
        };
        let times: Vec<i64> = items.filter_map(|at| at.parse().ok()).collect();
        let Some(&at) = times.first() else {
            return Err(StoreError::invalid("claim: a head without its due time"));
        };
        Ok(Some((Head { at, id }, times)))
    }

    /// Claims up to `limit` events of partition `p`, oldest first, only those before `bound` when
    /// one is given.
    async fn claim_in(
        &self,
        p: usize,
        limit: usize,
        request: &ClaimRequest,
        bound: Option<&Head>,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let mut invocation = SCRIPTS.claim.key(self.layout.prefix(p));
        invocation
            .arg(limit)
            .arg(&request.worker_id)
            .arg(millis(request.lease));
        // The claim derives each event's token from this one random UUID and the partition (see
        // claim.lua).
        invocation.arg(Uuid::now_v7().to_string()).arg(p);
        if let Some(head) = bound {
            invocation.arg(head.at).arg(&head.id);
        }
        let reply: Vec<Option<String>> = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("claim", e))?;
        let mut items = reply.into_iter();
        let locked_until = items
            .next()
            .flatten()
            .and_then(|ms| ms.parse().ok())
            .map(from_millis)
            .ok_or_else(|| StoreError::invalid("claim: no lease expiry in the reply"))?;
        let mut claimed = Vec::with_capacity(items.len() / (2 + CLAIM_READS));
        let mut fields: Vec<Option<String>> = Vec::with_capacity(CLAIM_READS);
        while let Some(id) = items.next() {
            let id = id.unwrap_or_default();
            let token = items.next().flatten().unwrap_or_default();
            // The fields the claim did not read are the ones it just wrote (see claim.lua).
            fields.clear();
            fields.extend(items.by_ref().take(CLAIM_READS));
            let leased = Leased {
                worker: &request.worker_id,
                locked_until,
                token: &token,
            };
            match decode(&fields, Some(&leased)).and_then(ClaimedEvent::from_record) {
                Ok(event) => claimed.push(event),
                // A poison event is set aside on its own; the rest of the batch goes on (C11).
                Err(err) => self.set_aside(p, &id, &token, &err).await?,
            }
        }
        Ok(claimed)
    }

    /// Renews `leases`, all issued by partition `p`, in one script call.
    async fn renew_in(
        &self,
        p: usize,
        leases: Vec<Lease>,
        extend: Duration,
    ) -> Vec<Result<DateTime<Utc>, StoreError>> {
        let mut invocation = SCRIPTS.renew.key(self.layout.prefix(p));
        invocation.arg(millis(extend));
        for lease in &leases {
            uuid_arg(&mut invocation, lease.event_id);
            uuid_arg(&mut invocation, lease.token);
        }
        let renewed: Result<Vec<i64>, StoreError> = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("renew lease", e));
        match renewed {
            Ok(until) if until.len() == leases.len() => leases
                .iter()
                .zip(until)
                .map(|(lease, until)| match until {
                    0 => Err(StoreError::LeaseLost {
                        event_id: lease.event_id,
                    }),
                    ms => Ok(from_millis(ms)),
                })
                .collect(),
            Ok(until) => {
                let message = format!(
                    "renew lease: the script answered {} results for {} leases",
                    until.len(),
                    leases.len()
                );
                leases
                    .iter()
                    .map(|_| Err(StoreError::invalid(message.clone())))
                    .collect()
            }
            Err(err) => leases.iter().map(|_| Err(err.replicate())).collect(),
        }
    }

    /// Completes `items`, all leased from partition `p`, at most [`COMPLETE_CHUNK`] per script
    /// call (long scripts block a single-threaded server).
    async fn complete_in(
        &self,
        p: usize,
        mut items: Vec<&(Lease, Completion)>,
    ) -> Vec<Result<(), StoreError>> {
        let mut out = Vec::with_capacity(items.len());
        while !items.is_empty() {
            let rest = items.split_off(COMPLETE_CHUNK.min(items.len()));
            out.extend(self.complete_chunk(p, items).await);
            items = rest;
        }
        out
    }

    async fn complete_chunk(
        &self,
        p: usize,
        items: Vec<&(Lease, Completion)>,
    ) -> Vec<Result<(), StoreError>> {
        // Items whose results do not serialize fail alone; the rest go in one script call.
        let mut invocation = SCRIPTS.complete_many.key(self.layout.prefix(p));
        let mut sent = Vec::with_capacity(items.len());
        let mut out: Vec<Option<Result<(), StoreError>>> = Vec::with_capacity(items.len());
        for (lease, completion) in &items {
            match serde_json::to_string(&completion.handler_results) {
                Ok(results) => {
                    uuid_arg(&mut invocation, lease.event_id);
                    uuid_arg(&mut invocation, lease.token);
                    invocation
                        .arg(completion.status.as_str())
                        .arg(results)
                        .arg(completion.attempts);
                    match completion.retry_delay {
                        Some(delay) => invocation.arg(millis(delay)),
                        None => invocation.arg(""),
                    };
                    sent.push(out.len());
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(StoreError::invalid(format!(
                    "handler results do not serialize: {e}"
                ))))),
            }
        }
        let applied: Result<Vec<i64>, StoreError> = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("complete", e));
        match applied {
            Ok(applied) if applied.len() == sent.len() => {
                for (slot, done) in sent.into_iter().zip(applied) {
                    out[slot] = Some(if done == 0 {
                        Err(StoreError::LeaseLost {
                            event_id: items[slot].0.event_id,
                        })
                    } else {
                        Ok(())
                    });
                }
            }
            Ok(applied) => {
                let message = format!(
                    "complete: the script answered {} results for {} completions",
                    applied.len(),
                    sent.len()
                );
                for slot in sent {
                    out[slot] = Some(Err(StoreError::invalid(message.clone())));
                }
            }
            Err(err) => {
                for slot in sent {
                    out[slot] = Some(Err(err.replicate()));
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::invalid("complete: no result"))))
            .collect()
    }

    /// The `limit` oldest members of the sorted set `set` over all partitions, as
    /// `(partition, id)` in score order.
    async fn oldest_in(&self, set: &str, limit: usize) -> Result<Vec<(usize, String)>, StoreError> {
        let stop = isize::try_from(limit).unwrap_or(isize::MAX) - 1;
        if stop < 0 {
            return Ok(Vec::new());
        }
        let pages = join_all((0..self.layout.len()).map(|p| async move {
            redis::cmd("ZRANGE")
                .arg(self.key(p, set))
                .arg(0)
                .arg(stop)
                .arg("WITHSCORES")
                .query_async::<Vec<(String, f64)>>(&mut self.connection.clone())
                .await
                .map_err(|e| map_redis(set, e))
        }))
        .await;
        let mut all = Vec::new();
        for (p, page) in pages.into_iter().enumerate() {
            all.extend(page?.into_iter().map(|(id, score)| (score, id, p)));
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        Ok(all
            .into_iter()
            .take(limit)
            .map(|(_, id, p)| (p, id))
            .collect())
    }

    /// Reads `fields` of each event in `events` (`(partition, id)`), one pipeline per partition,
    /// in the events' order.
    async fn read_each(
        &self,
        events: &[(usize, String)],
        fields: &[&str],
        operation: &str,
    ) -> Result<Vec<Vec<Option<String>>>, StoreError> {
        let reads = self
            .per_partition(
                events.iter().collect(),
                |(p, _)| Some(*p),
                |_| Ok(Vec::new()),
                |p, members| async move {
                    let mut pipe = redis::pipe();
                    for (_, id) in &members {
                        pipe.cmd("HMGET")
                            .arg(self.key(p, &format!("ev:{id}")))
                            .arg(fields);
                    }
                    match pipe
                        .query_async::<Vec<Vec<Option<String>>>>(&mut self.connection.clone())
                        .await
                    {
                        Ok(rows) => rows.into_iter().map(Ok).collect(),
                        Err(e) => {
                            let err = map_redis(operation, e);
                            members.iter().map(|_| Err(err.replicate())).collect()
                        }
                    }
                },
            )
            .await;
        reads.into_iter().collect()
    }

    /// Counts of partition `p` (pending, due, leased, processed, dead, corrupt) and its lag.
    async fn stats_in(&self, p: usize) -> Result<([u64; 6], Duration), StoreError> {
        let reply: Vec<String> = SCRIPTS
            .stats
            .key(self.layout.prefix(p))
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("stats", e))?;
        let number = |i: usize| -> Result<i64, StoreError> {
            reply
                .get(i)
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| StoreError::Corrupt {
                    id: self.layout.prefix(p).to_owned(),
                    message: format!("stats reply {reply:?}"),
                })
        };
        let mut counts = [0u64; 6];
        for (i, count) in counts.iter_mut().enumerate() {
            *count = u64::try_from(number(i)?).unwrap_or(0);
        }
        let now = number(7)?;
        let lag = match reply.get(6).map(String::as_str) {
            Some("") | None => Duration::ZERO,
            Some(_) => Duration::from_millis(u64::try_from(now - number(6)?).unwrap_or(0)),
        };
        Ok((counts, lag))
    }

    /// Sets aside a claimed event of partition `p` that does not decode (C11), fenced by its
    /// lease token.
    async fn set_aside(
        &self,
        p: usize,
        id: &str,
        token: &str,
        err: &StoreError,
    ) -> Result<(), StoreError> {
        let reason = corrupt_reason(err);
        tracing::error!(
            event_id = id,
            reason,
            "undecodable outbox event set aside with status \"corrupt\""
        );
        let _: i64 = SCRIPTS
            .set_aside
            .key(self.layout.prefix(p))
            .arg(id)
            .arg(token)
            .arg(&reason)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("claim: set aside an undecodable event", e))?;
        Ok(())
    }

    async fn purge(
        &self,
        status: EventStatus,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for p in 0..self.layout.len() {
            loop {
                let n: i64 = SCRIPTS
                    .purge
                    .key(self.layout.prefix(p))
                    .arg(status.as_str())
                    .arg(older_than.timestamp_millis())
                    .arg(PURGE_BATCH)
                    .invoke_async(&mut self.connection.clone())
                    .await
                    .map_err(|e| map_redis("purge", e))?;
                total += u64::try_from(n).unwrap_or(0);
                if n < PURGE_BATCH {
                    break;
                }
            }
        }
        Ok(total)
    }
}
