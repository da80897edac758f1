//! The calls one partition answers: each runs one script or command against the keys of one
//! partition (one hash slot on a Redis Cluster).

use crate::error::map_redis;
use crate::row::{FIELDS, at, decode, from_millis};
use crate::scripts::SCRIPTS;

use crate::scripts::Invocation;
use crate::store::{RedisStore, enqueue_args};
use chrono::{DateTime, Utc};
use futures::future::join_all;
use outbox_core::kit::corrupt_reason;
use outbox_core::kit::millis;
use outbox_core::store::{Completion, Lease};
use outbox_core::{Enqueued, EventRecord, NewEvent, StoreError};
use std::time::Duration;
use uuid::Uuid;

impl RedisStore {
    /// Event `id` and its partition.
    pub(crate) async fn read_event(
        &self,
        id: Uuid,
    ) -> Result<Option<(usize, EventRecord)>, StoreError> {
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
    pub(crate) async fn enqueue_in(
        &self,
        p: usize,
        events: &[NewEvent],
    ) -> Result<Vec<Enqueued>, StoreError> {
        let mut invocation = SCRIPTS.enqueue.key(self.layout.prefix(p));
        invocation.arg(enqueue_args(&self.limits, events)?);
        let reply: Vec<String> = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| map_redis("enqueue", e))?;
        Self::parse_enqueued(reply)
    }

    /// Renews `leases`, all issued by partition `p`, in one script call.
    pub(crate) async fn renew_in(
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
    pub(crate) async fn complete_in(
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

    pub(crate) async fn complete_chunk(
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
    pub(crate) async fn oldest_in(
        &self,
        set: &str,
        limit: usize,
    ) -> Result<Vec<(usize, String)>, StoreError> {
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
    pub(crate) async fn read_each(
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
    pub(crate) async fn stats_in(&self, p: usize) -> Result<([u64; 6], Duration), StoreError> {
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
            Some(_) => outbox_core::kit::age_millis(now, Some(number(6)?)),
        };
        Ok((counts, lag))
    }

    /// Sets aside a claimed event of partition `p` that does not decode (C11), fenced by its
    /// lease token.
    pub(crate) async fn set_aside(
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
}

/// Completions per `complete_many` script call.
const COMPLETE_CHUNK: usize = 100;

/// Appends `id` as text to a script call, without allocating a string for it.
fn uuid_arg(invocation: &mut Invocation<'_>, id: Uuid) {
    let mut text = Uuid::encode_buffer();
    invocation.arg(&*id.as_hyphenated().encode_lower(&mut text));
}
