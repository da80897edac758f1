//! Claims across partitions (contract C2 on a Redis Cluster): each partition is asked for the due
//! time of its oldest events, and the claim is shared out so the oldest due events overall are
//! leased first.

use crate::error::map_redis;
use crate::row::{CLAIM_READS, Leased, decode, from_millis};
use crate::scripts::SCRIPTS;

use crate::store::RedisStore;
use futures::future::join_all;
use outbox_core::StoreError;
use outbox_core::kit::millis;
use outbox_core::store::{ClaimRequest, ClaimedEvent};
use uuid::Uuid;

/// The head of a partition's queue: its due time (ms) and id; heads order by both, as the queue
/// does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Head {
    at: i64,
    id: String,
}

/// The partition with the oldest head, leaving out `except`.
pub(crate) fn oldest(heads: &[Option<Head>], except: Option<usize>) -> Option<usize> {
    heads
        .iter()
        .enumerate()
        .filter(|(p, _)| Some(*p) != except)
        .filter_map(|(p, head)| head.as_ref().map(|h| (h, p)))
        .min()
        .map(|(_, p)| p)
}

impl RedisStore {
    /// Claims the `limit` oldest due events across partitions. First every partition's head (one
    /// short script each, all at once), and a claim from the partition whose head is oldest, up to
    /// the oldest head of the others: events without keys arrive in runs per partition (see
    /// `partition.rs`), so this one call usually fills the claim. When it does not (events of many
    /// ordering keys interleave over the partitions), the due times of the next events of every
    /// partition tell how many of the oldest overall each holds (`shares`), and those are claimed
    /// from each at once. The batch is then put in due order. A partition that does not answer (its
    /// shard is down) is left out; the others go on.
    pub(crate) async fn claim_across(
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
    pub(crate) async fn shares(&self, due: &[(i64, usize)], limit: usize) -> Vec<usize> {
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
    pub(crate) async fn peek(
        &self,
        p: usize,
        limit: usize,
    ) -> Result<Option<(Head, Vec<i64>)>, StoreError> {
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
    pub(crate) async fn claim_in(
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
}
