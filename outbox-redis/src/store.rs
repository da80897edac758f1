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
use outbox_core::store::{ClaimRequest, ClaimedEvent, Completion, Lease, WakeupStream};
use outbox_core::store::{ClaimStore, EnqueueStore, Schema};
use outbox_core::{Enqueued, Limits, NewEvent, StoreError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::config::RedisStoreBuilder;
use crate::connection::RedisConnection;
use crate::error::map_redis;
use crate::partition::Layout;
use crate::row::body_tail;
use crate::scripts::ENQUEUE_SOURCE;

/// Claims are capped per call so one script never runs long (Redis is single-threaded).
const MAX_CLAIM: usize = 1_000;
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
    pub(crate) pubsub: Arc<[redis::Client]>,
    pub(crate) connection: RedisConnection,
    pub(crate) layout: Arc<Layout>,
    pub(crate) limits: Limits,
    /// Set once the stored partition count was found to match this store's (first enqueue or
    /// claim).
    pub(crate) layout_checked: Arc<OnceCell<()>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefixes", &self.layout.prefixes())
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// Redis needs no schema: keys are created as they are used, and a partitioned outbox records
/// its partition count when it is built. `migrate` has nothing to do; there is nothing to verify
/// and no DDL.
#[async_trait]
impl Schema for RedisStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        Ok(())
    }
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

    pub(crate) fn key(&self, partition: usize, suffix: &str) -> String {
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
    pub(crate) async fn locate(&self, id: &str) -> Result<Option<usize>, StoreError> {
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
    pub(crate) async fn per_partition<T, R, Fut>(
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

/// The enqueue script's arguments: the count, then six per event (see enqueue.lua).
pub(crate) fn enqueue_args(
    limits: &Limits,
    events: &[NewEvent],
) -> Result<Vec<String>, StoreError> {
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
