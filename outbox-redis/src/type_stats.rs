//! Per-type counts ([`InspectStore::stats_by_type`](outbox_core::store::InspectStore::stats_by_type)) and the head of
//! an ordering key, read page by page so the server is never blocked by one long call.

use std::collections::BTreeMap;
use std::time::Duration;

use outbox_core::StoreError;
use outbox_core::store::TypeStats;

use crate::connection::RedisConnection;
use crate::error::map_redis;

/// Ids read per call.
const PAGE: isize = 1_000;

/// Where a pending or dead event sits, which decides what it counts as.
#[derive(Clone, Copy)]
enum Place {
    /// In the queue, or in the schedule or the leases with a score at or before now: due.
    Due(i64),
    /// In the schedule after now, or waiting behind its key's head.
    Waiting,
    /// Under a live lease.
    Leased,
    /// A dead letter.
    Dead,
}

/// Where an entry of a set with `score` sits at `now`.
type Classify = fn(i64, i64) -> Place;

/// Counts per event type over the queue, schedule, leases, ordering-key lines and dead letters
/// of every partition (`prefixes`) of an outbox.
pub(crate) async fn stats_by_type(
    con: &mut RedisConnection,
    prefixes: &[String],
) -> Result<Vec<TypeStats>, StoreError> {
    let (secs, micros): (i64, i64) = redis::cmd("TIME")
        .query_async(con)
        .await
        .map_err(|e| map_redis("stats by type: time", e))?;
    let now = secs * 1000 + micros / 1000;
    let mut rows: BTreeMap<String, (TypeStats, Option<i64>)> = BTreeMap::new();
    for prefix in prefixes {
        count_partition(con, prefix, now, &mut rows).await?;
    }
    Ok(rows
        .into_values()
        .map(|(row, oldest)| {
            let age = oldest.map_or(0, |t| now.saturating_sub(t).max(0));
            row.with_oldest_due_age(Duration::from_millis(u64::try_from(age).unwrap_or(0)))
        })
        .collect())
}

/// Adds the events of the partition at `prefix` to `rows`.
async fn count_partition(
    con: &mut RedisConnection,
    prefix: &str,
    now: i64,
    rows: &mut BTreeMap<String, (TypeStats, Option<i64>)>,
) -> Result<(), StoreError> {
    let sets: [(&str, Classify); 4] = [
        ("queue", |score, _| Place::Due(score)),
        ("sched", |score, now| {
            if score <= now {
                Place::Due(score)
            } else {
                Place::Waiting
            }
        }),
        ("leased", |score, now| {
            if score <= now {
                Place::Due(score)
            } else {
                Place::Leased
            }
        }),
        ("dead", |_, _| Place::Dead),
    ];
    for (set, place) in sets {
        let key = format!("{prefix}:{set}");
        let mut start = 0;
        loop {
            let page: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(&key)
                .arg(start)
                .arg(start + PAGE - 1)
                .arg("WITHSCORES")
                .query_async(con)
                .await
                .map_err(|e| map_redis("stats by type: read", e))?;
            let places = page
                .iter()
                .map(|(id, score)| (id.as_str(), place(*score as i64, now)));
            count(con, prefix, places, rows).await?;
            if (page.len() as isize) < PAGE {
                break;
            }
            start += PAGE;
        }
    }
    // Events waiting behind their key's head are only in their key's line (its first entry is
    // the head, counted above).
    let pattern = format!("{prefix}:okey:*");
    let mut cursor: u64 = 0;
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(PAGE);
        // SCAN names no key: it goes to the server holding this partition's slot.
        let (next, keys): (u64, Vec<String>) = con
            .query_at(prefix, &scan)
            .await
            .map_err(|e| map_redis("stats by type: scan keys", e))?;
        for key in keys {
            let waiting: Vec<String> = redis::cmd("ZRANGE")
                .arg(&key)
                .arg(1)
                .arg(-1)
                .query_async(con)
                .await
                .map_err(|e| map_redis("stats by type: read a key's line", e))?;
            let places = waiting.iter().map(|id| (id.as_str(), Place::Waiting));
            count(con, prefix, places, rows).await?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(())
}

/// Reads the types of `places`' events in one pipeline and adds each to its type's row.
async fn count<'a>(
    con: &mut RedisConnection,
    prefix: &str,
    places: impl Iterator<Item = (&'a str, Place)>,
    rows: &mut BTreeMap<String, (TypeStats, Option<i64>)>,
) -> Result<(), StoreError> {
    let places: Vec<(&str, Place)> = places.collect();
    if places.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (id, _) in &places {
        pipe.cmd("HGET")
            .arg(format!("{prefix}:ev:{id}"))
            .arg("event_type");
    }
    let types: Vec<Option<String>> = pipe
        .query_async(con)
        .await
        .map_err(|e| map_redis("stats by type: read types", e))?;
    for ((_, place), event_type) in places.into_iter().zip(types) {
        let Some(event_type) = event_type else {
            continue;
        };
        let (row, oldest) = rows
            .entry(event_type.clone())
            .or_insert_with(|| (TypeStats::new(event_type), None));
        match place {
            Place::Dead => row.dead += 1,
            Place::Waiting => row.pending += 1,
            Place::Leased => {
                row.pending += 1;
                row.leased += 1;
            }
            Place::Due(since) => {
                row.pending += 1;
                row.due += 1;
                *oldest = Some(oldest.map_or(since, |o| o.min(since)));
            }
        }
    }
    Ok(())
}
