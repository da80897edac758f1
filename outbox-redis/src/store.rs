//! [`RedisStore`]: the `Store` implementation, and enqueue inside the caller's `MULTI` block (C1).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use outbox_core::{
    ClaimRequest, ClaimedEvent, Completion, CorruptEvent, Enqueued, EventRecord, EventStatus,
    Lease, Limits, NewEvent, Store, StoreCapabilities, StoreError, StoreStats, TypeStats,
    WakeupStream, corrupt_reason,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use uuid::Uuid;

use crate::config::RedisStoreBuilder;
use crate::error::map_redis;
use crate::row::{CLAIM_READS, FIELDS, at, decode, from_millis};
use crate::scripts::{ENQUEUE_SOURCE, SCRIPTS};

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
    client: redis::Client,
    connection: ConnectionManager,
    prefix: String,
    limits: Limits,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
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
        Ok(RedisStoreBuilder::new(client, connection))
    }

    pub(crate) fn from_parts(
        client: redis::Client,
        connection: ConnectionManager,
        prefix: String,
        limits: Limits,
    ) -> Self {
        Self {
            client,
            connection,
            prefix,
            limits,
        }
    }

    /// The limits enqueued events are checked against (C11).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The prefix of every key of this outbox, e.g. `{outbox:default}`.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// A handle on the store's connection, for the caller's own commands.
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// The command that enqueues `events` atomically: an `EVAL` of the enqueue script, so it also
    /// works inside `MULTI` (where a missing cached script could not be reloaded). Its reply is a
    /// flat list of `id, duplicate` pairs; [`parse_enqueued`](Self::parse_enqueued) reads it.
    pub fn enqueue_command(&self, events: &[NewEvent]) -> Result<redis::Cmd, StoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(ENQUEUE_SOURCE.as_str())
            .arg(1)
            .arg(&self.prefix)
            .arg(enqueue_args(&self.limits, events)?);
        Ok(cmd)
    }

    /// Appends the enqueue of `events` to the caller's pipeline; with `pipe.atomic()` the events are
    /// written in the same `MULTI`/`EXEC` as the caller's own commands (C1). The pipeline's reply
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

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }
}

/// The enqueue script's arguments: the count, then eight per event.
fn enqueue_args(limits: &Limits, events: &[NewEvent]) -> Result<Vec<String>, StoreError> {
    let mut args = Vec::with_capacity(1 + events.len() * 8);
    args.push(events.len().to_string());
    for event in events {
        let payload = limits.encode(event)?;
        args.extend([
            event.id.to_string(),
            event.event_type.clone(),
            payload,
            event.correlation_id.clone().unwrap_or_default(),
            event.ordering_key.clone().unwrap_or_default(),
            event.idempotency_key.clone().unwrap_or_default(),
            event
                .available_at
                .map(|t| t.timestamp_millis().to_string())
                .unwrap_or_default(),
            event.traceparent.clone().unwrap_or_default(),
        ]);
    }
    Ok(args)
}

#[async_trait]
impl Store for RedisStore {
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::default()
            .with_wakeups(true)
            .with_transactional_enqueue(true)
    }

    async fn enqueue_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = SCRIPTS.enqueue.key(&self.prefix);
        invocation.arg(enqueue_args(&self.limits, &events)?);
        let reply: Vec<String> = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("enqueue", e))?;
        Self::parse_enqueued(reply)
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
        let limit = request.limit.min(MAX_CLAIM);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut invocation = SCRIPTS.claim.key(&self.prefix);
        invocation
            .arg(limit)
            .arg(&request.worker_id)
            .arg(millis(request.lease));
        // The claim derives each event's token from this one random UUID (see claim.lua).
        invocation.arg(Uuid::now_v7().to_string());
        let reply: Vec<Option<String>> = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("claim", e))?;
        let mut items = reply.into_iter();
        let Some(locked_until) = items.next() else {
            return Err(StoreError::invalid("claim: empty reply"));
        };
        let mut claimed = Vec::with_capacity(items.len() / (2 + CLAIM_READS));
        while let Some(id) = items.next() {
            let id = id.unwrap_or_default();
            let token = items.next().flatten().unwrap_or_default();
            // The fields the claim did not read are the ones it just wrote (see claim.lua).
            let mut fields: Vec<Option<String>> = Vec::with_capacity(FIELDS.len());
            fields.extend(items.by_ref().take(CLAIM_READS));
            fields.extend([
                Some("pending".to_owned()),
                None,
                Some(request.worker_id.clone()),
                locked_until.clone(),
                Some(token.clone()),
            ]);
            match decode(&fields).and_then(ClaimedEvent::from_record) {
                Ok(event) => claimed.push(event),
                // A poison event is set aside on its own; the rest of the batch goes on (C11).
                Err(err) => self.set_aside(&id, &token, &err).await?,
            }
        }
        Ok(claimed)
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        extend: Duration,
    ) -> Result<DateTime<Utc>, StoreError> {
        self.renew_many(vec![*lease], extend)
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::invalid("renew lease: no result")))
    }

    async fn renew_many(
        &self,
        leases: Vec<Lease>,
        extend: Duration,
    ) -> Vec<Result<DateTime<Utc>, StoreError>> {
        if leases.is_empty() {
            return Vec::new();
        }
        let mut invocation = SCRIPTS.renew.key(&self.prefix);
        invocation.arg(millis(extend));
        for lease in &leases {
            invocation
                .arg(lease.event_id.to_string())
                .arg(lease.token.to_string());
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

    async fn complete(&self, lease: &Lease, completion: Completion) -> Result<(), StoreError> {
        let results = serde_json::to_string(&completion.handler_results)
            .map_err(|e| StoreError::invalid(format!("handler results do not serialize: {e}")))?;
        let done: i64 = SCRIPTS
            .complete
            .key(&self.prefix)
            .arg(lease.event_id.to_string())
            .arg(lease.token.to_string())
            .arg(completion.status.as_str())
            .arg(results)
            .arg(completion.attempts)
            .arg(
                completion
                    .retry_delay
                    .map(|d| millis(d).to_string())
                    .unwrap_or_default(),
            )
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("complete", e))?;
        if done == 0 {
            return Err(StoreError::LeaseLost {
                event_id: lease.event_id,
            });
        }
        Ok(())
    }

    async fn complete_many(&self, items: Vec<(Lease, Completion)>) -> Vec<Result<(), StoreError>> {
        if items.len() <= 1 {
            return outbox_core::complete_each(self, items).await;
        }
        if items.len() > COMPLETE_CHUNK {
            // Long scripts block a single-threaded server: at most COMPLETE_CHUNK per call.
            let mut out = Vec::with_capacity(items.len());
            let mut items = items;
            while !items.is_empty() {
                let rest = items.split_off(COMPLETE_CHUNK.min(items.len()));
                out.extend(self.complete_many(items).await);
                items = rest;
            }
            return out;
        }
        // Items whose results do not serialize fail alone; the rest go in one script call.
        let mut invocation = SCRIPTS.complete_many.key(&self.prefix);
        let mut sent = Vec::with_capacity(items.len());
        let mut out: Vec<Option<Result<(), StoreError>>> = Vec::with_capacity(items.len());
        for (lease, completion) in &items {
            match serde_json::to_string(&completion.handler_results) {
                Ok(results) => {
                    invocation
                        .arg(lease.event_id.to_string())
                        .arg(lease.token.to_string())
                        .arg(completion.status.as_str())
                        .arg(results)
                        .arg(completion.attempts)
                        .arg(
                            completion
                                .retry_delay
                                .map(|d| millis(d).to_string())
                                .unwrap_or_default(),
                        );
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

    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.key(&format!("ev:{id}")))
            .arg(&FIELDS[..])
            .arg("corrupt_reason")
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("get", e))?;
        if fields.iter().all(Option::is_none) {
            return Ok(None);
        }
        if fields.get(at::STATUS).and_then(Option::as_deref) == Some(outbox_core::CORRUPT_STATUS) {
            return Err(StoreError::Corrupt {
                id: id.to_string(),
                message: format!(
                    "set aside because it does not decode ({}); fix it and call requeue_corrupt",
                    fields
                        .get(FIELDS.len())
                        .and_then(Option::as_deref)
                        .unwrap_or("")
                ),
            });
        }
        decode(&fields).map(Some)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let mut con = self.connection.clone();
        let stop = isize::try_from(limit).unwrap_or(isize::MAX) - 1;
        if stop < 0 {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.key("dead"))
            .arg(0)
            .arg(stop)
            .query_async(&mut con)
            .await
            .map_err(|e| map_redis("dead letters", e))?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.key(&format!("ev:{id}")))
                .arg(&FIELDS[..]);
        }
        let rows: Vec<Vec<Option<String>>> = pipe
            .query_async(&mut con)
            .await
            .map_err(|e| map_redis("dead letters", e))?;
        rows.iter()
            .filter(|r| r.iter().any(Option::is_some))
            .map(|r| decode(r))
            .collect()
    }

    async fn requeue_dead(&self, id: Uuid) -> Result<bool, StoreError> {
        let Some(record) = self
            .get(id)
            .await?
            .filter(|r| r.status == EventStatus::Dead)
        else {
            return Ok(false);
        };
        let mut results = record.handler_results;
        outbox_core::reset_unfinished_handlers(&mut results);
        let results = serde_json::to_string(&results)
            .map_err(|e| StoreError::invalid(format!("handler results do not serialize: {e}")))?;
        let done: i64 = SCRIPTS
            .requeue
            .key(&self.prefix)
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

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let reply: Vec<String> = SCRIPTS
            .stats
            .key(&self.prefix)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("stats", e))?;
        let number = |i: usize| -> Result<i64, StoreError> {
            reply
                .get(i)
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| StoreError::Corrupt {
                    id: self.prefix.clone(),
                    message: format!("stats reply {reply:?}"),
                })
        };
        let count = |i: usize| number(i).map(|n| u64::try_from(n).unwrap_or(0));
        let now = number(7)?;
        let lag = match reply.get(6).map(String::as_str) {
            Some("") | None => Duration::ZERO,
            Some(_) => Duration::from_millis(u64::try_from(now - number(6)?).unwrap_or(0)),
        };
        Ok(
            StoreStats::new(count(0)?, count(1)?, count(2)?, count(3)?, count(4)?, lag)
                .with_corrupt(count(5)?),
        )
    }

    async fn stats_by_type(&self) -> Result<Vec<TypeStats>, StoreError> {
        crate::type_stats::stats_by_type(&mut self.connection.clone(), &self.prefix).await
    }

    async fn key_head(&self, key: &str) -> Result<Option<EventRecord>, StoreError> {
        let head: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.key(&format!("okey:{key}")))
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
        let mut con = self.connection.clone();
        let stop = isize::try_from(limit).unwrap_or(isize::MAX) - 1;
        if stop < 0 {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.key("corrupt"))
            .arg(0)
            .arg(stop)
            .query_async(&mut con)
            .await
            .map_err(|e| map_redis("corrupt events", e))?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.key(&format!("ev:{id}")))
                .arg("event_type")
                .arg("corrupt_reason")
                .arg("processed_at");
        }
        let rows: Vec<(Option<String>, Option<String>, Option<String>)> = pipe
            .query_async(&mut con)
            .await
            .map_err(|e| map_redis("corrupt events", e))?;
        Ok(ids
            .into_iter()
            .zip(rows)
            .map(|(id, (event_type, reason, at))| {
                CorruptEvent::new(id, reason.unwrap_or_default())
                    .with_event_type(event_type)
                    .with_set_aside_at(at.and_then(|ms| ms.parse().ok()).map(from_millis))
            })
            .collect())
    }

    async fn requeue_corrupt(&self, id: &str) -> Result<bool, StoreError> {
        let done: i64 = SCRIPTS
            .requeue
            .key(&self.prefix)
            .arg(id)
            .arg("corrupt")
            .arg("")
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("requeue corrupt", e))?;
        Ok(done == 1)
    }

    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError> {
        let mut pubsub = self
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| map_redis("subscribe: connect", e))?;
        pubsub
            .subscribe(self.key("wake"))
            .await
            .map_err(|e| map_redis("SUBSCRIBE", e))?;
        // The stream ends when the connection drops; the worker then polls and subscribes again.
        Ok(Some(Box::pin(pubsub.into_on_message().map(|_| ()))))
    }
}

impl RedisStore {
    /// Sets aside a claimed event that does not decode (C11), fenced by its lease token.
    async fn set_aside(&self, id: &str, token: &str, err: &StoreError) -> Result<(), StoreError> {
        let reason = corrupt_reason(err);
        tracing::error!(
            event_id = id,
            reason,
            "undecodable outbox event set aside with status \"corrupt\""
        );
        let _: i64 = SCRIPTS
            .set_aside
            .key(&self.prefix)
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
        loop {
            let n: i64 = SCRIPTS
                .purge
                .key(&self.prefix)
                .arg(status.as_str())
                .arg(older_than.timestamp_millis())
                .arg(PURGE_BATCH)
                .invoke_async(&mut self.connection.clone())
                .await
                .map_err(|e| map_redis("purge", e))?;
            total += u64::try_from(n).unwrap_or(0);
            if n < PURGE_BATCH {
                return Ok(total);
            }
        }
    }
}
