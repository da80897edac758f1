//! [`Layout`]: an outbox's partitions — one hash tag (so one cluster slot) each — and which
//! partition an event, an ordering key or a lease belongs to.
//!
//! - One partition keeps the original layout: every key under `{outbox:<name>}`.
//! - `N` > 1 partitions: partition `p`'s keys are under `{outbox:<name>:<p>}`, or
//!   `{outbox:<name>:<p>.<s>}` with the first `s` that puts the tag's slot in the `p`-th `N`-th of
//!   the 16,384 cluster slots. A cluster made by `redis-cli --cluster create` gives its masters
//!   equal runs of slots, so the partitions spread evenly over its shards.
//! - An event goes to the partition of its ordering key (so one key's events stay in one
//!   partition and C5 holds), else of its idempotency key (so C6 holds across partitions). The hash
//!   is FNV-1a (64 bits) modulo `N`: part of the layout, it never changes.
//! - Other events go to the partition of their id's 64-millisecond window (UUID v7 ids start with
//!   their creation time) mixed with a number drawn once per process: one process's events of one
//!   window share a partition, and windows and processes spread over all of them. Claims take the
//!   oldest events across partitions, so they take runs from one partition at a time: runs of
//!   consecutive events make claims and completions cheap. Ids of other versions are hashed whole.
//! - A claim's lease token carries its partition (its bytes 12–13), so renewals and completions
//!   go straight to it. Tokens of the original layout read as partition 0.

use std::sync::LazyLock;

use outbox_core::{NewEvent, StoreError};

use crate::connection::RedisConnection;
use crate::error::map_redis;
use redis::cluster_routing::get_slot;
use uuid::Uuid;

/// Drawn once per process: mixed into the partition of events without keys, so processes that
/// enqueue at the same moment write to different partitions.
static PROCESS_SALT: LazyLock<u64> =
    LazyLock::new(|| (Uuid::now_v7().as_u128() & u128::from(u64::MAX)) as u64);

/// The partition window of events without keys, as a power of two of milliseconds (64 ms).
const WINDOW_SHIFT: u32 = 6;

/// The most partitions an outbox may have.
pub const MAX_PARTITIONS: usize = 256;

/// The slots of a Redis Cluster.
const SLOTS: usize = 16_384;

/// The key prefixes of an outbox's partitions.
#[derive(Debug)]
pub(crate) struct Layout {
    /// `{outbox:<name>}:layout`, in the original layout's slot whatever the partitions.
    layout_key: String,
    prefixes: Vec<String>,
}

impl Layout {
    /// The layout of outbox `name` with `count` partitions (1 ..= [`MAX_PARTITIONS`], checked by
    /// the builder).
    pub(crate) fn new(name: &str, count: usize) -> Self {
        let prefixes = if count <= 1 {
            vec![format!("{{outbox:{name}}}")]
        } else {
            (0..count).map(|p| spread_tag(name, p, count)).collect()
        };
        Self {
            layout_key: Self::layout_key_of(name),
            prefixes,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub(crate) fn prefix(&self, partition: usize) -> &str {
        &self.prefixes[partition]
    }

    pub(crate) fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// The key that records how many partitions the outbox was created with.
    pub(crate) fn layout_key(&self) -> String {
        self.layout_key.clone()
    }

    /// The layout key of outbox `name` (`{outbox:<name>}:layout`), whatever its partitions.
    pub(crate) fn layout_key_of(name: &str) -> String {
        format!("{{outbox:{name}}}:layout")
    }

    /// The partition of an ordering (or idempotency) key.
    pub(crate) fn of_key(&self, key: &str) -> usize {
        self.reduce(fnv1a(key.as_bytes()))
    }

    /// The partition `event` goes to on its own.
    pub(crate) fn of_event(&self, event: &NewEvent) -> usize {
        match (&event.ordering_key, &event.idempotency_key) {
            (Some(key), _) | (None, Some(key)) => self.of_key(key),
            (None, None) => self.reduce(Self::window_hash(&event.id)),
        }
    }

    /// The hash of an event without keys: its id's creation window and the process's salt.
    fn window_hash(id: &Uuid) -> u64 {
        match id.get_timestamp().filter(|_| id.get_version_num() == 7) {
            Some(ts) => {
                let (secs, nanos) = ts.to_unix();
                let millis = secs * 1000 + u64::from(nanos / 1_000_000);
                fnv1a(&((millis >> WINDOW_SHIFT) ^ *PROCESS_SALT).to_be_bytes())
            }
            None => fnv1a(id.as_bytes()),
        }
    }

    /// Whether `event` must go to one partition (it has an ordering or idempotency key).
    fn is_placed(event: &NewEvent) -> bool {
        event.ordering_key.is_some() || event.idempotency_key.is_some()
    }

    /// The one partition all of `events` can be written to atomically: that of the first event
    /// with an ordering or idempotency key, else that of the first event. An error names two
    /// events whose keys put them in different partitions.
    pub(crate) fn of_batch(&self, events: &[NewEvent]) -> Result<usize, StoreError> {
        let Some(first) = events
            .iter()
            .find(|e| Self::is_placed(e))
            .or(events.first())
        else {
            return Ok(0);
        };
        let partition = self.of_event(first);
        if let Some(other) = events
            .iter()
            .find(|e| Self::is_placed(e) && self.of_event(e) != partition)
        {
            return Err(StoreError::invalid(format!(
                "events {} and {} belong to different partitions ({} and {} of {}: their ordering \
                 or idempotency keys differ), so they cannot be enqueued in one atomic call; \
                 enqueue them separately, or give them one ordering key",
                first.id,
                other.id,
                partition,
                self.of_event(other),
                self.len()
            )));
        }
        Ok(partition)
    }

    /// The partition `event` goes to in a plain enqueue beside other events: its own when it has
    /// an ordering or idempotency key, else `home` (the first event's), so events without keys
    /// stay in one call.
    pub(crate) fn of_event_beside(&self, event: &NewEvent, home: usize) -> usize {
        if Self::is_placed(event) {
            self.of_event(event)
        } else {
            home
        }
    }

    /// The partition a lease token was issued by, or `None` when no partition of this layout
    /// issued it.
    pub(crate) fn of_token(&self, token: &Uuid) -> Option<usize> {
        let bytes = token.as_bytes();
        let partition = usize::from(u16::from_be_bytes([bytes[12], bytes[13]]));
        (partition < self.len()).then_some(partition)
    }

    fn reduce(&self, hash: u64) -> usize {
        // `len` is at most MAX_PARTITIONS, so both conversions are exact.
        (hash % self.len() as u64) as usize
    }
}

/// The partition count recorded at `key` (a layout key), `None` when nothing is recorded yet.
pub(crate) async fn recorded_count(
    con: &mut RedisConnection,
    key: &str,
) -> Result<Option<usize>, StoreError> {
    let recorded: Option<String> = redis::cmd("GET")
        .arg(key)
        .query_async(con)
        .await
        .map_err(|e| map_redis("read the partition count", e))?;
    recorded
        .map(|n| {
            n.parse().map_err(|_| StoreError::Corrupt {
                id: key.to_owned(),
                message: format!("the partition count {n:?} is not a number"),
            })
        })
        .transpose()
}

/// The key prefix of partition `p` of `count`: a tag whose slot lies in the `p`-th `count`-th of
/// the slots.
fn spread_tag(name: &str, p: usize, count: usize) -> String {
    let range = (p * SLOTS / count)..((p + 1) * SLOTS / count);
    let plain = format!("outbox:{name}:{p}");
    let tag = std::iter::once(plain.clone())
        .chain((1..100_000).map(|s| format!("{plain}.{s}")))
        .find(|tag| range.contains(&usize::from(get_slot(tag.as_bytes()))))
        .unwrap_or(plain);
    format!("{{{tag}}}")
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_partition_keeps_the_original_prefix() {
        let layout = Layout::new("billing", 1);
        assert_eq!(layout.prefixes(), ["{outbox:billing}"]);
        assert_eq!(layout.layout_key(), "{outbox:billing}:layout");
        assert_eq!(
            Layout::new("billing", 8).layout_key(),
            Layout::layout_key_of("billing")
        );
    }

    #[test]
    fn partitions_spread_over_the_slot_space() {
        let layout = Layout::new("billing", 8);
        for (p, prefix) in layout.prefixes().iter().enumerate() {
            let slot = usize::from(get_slot(prefix.as_bytes()));
            assert!(
                (p * 2048..(p + 1) * 2048).contains(&slot),
                "{prefix}: slot {slot}"
            );
        }
    }

    #[test]
    fn keys_route_stably_and_batches_refuse_to_span_partitions() {
        let layout = Layout::new("billing", 8);
        let a = NewEvent::new("T", json!({})).ordering_key("user-1");
        let b = NewEvent::new("T", json!({})).ordering_key("user-1");
        assert_eq!(layout.of_event(&a), layout.of_event(&b));
        assert_eq!(layout.of_event(&a), layout.of_key("user-1"));
        let other = (0..100)
            .map(|n| format!("user-{n}"))
            .find(|k| layout.of_key(k) != layout.of_key("user-1"))
            .expect("100 keys in 8 partitions hit more than one");
        let c = NewEvent::new("T", json!({})).ordering_key(other);
        assert!(layout.of_batch(&[a.clone(), c]).is_err());
        let loose = NewEvent::new("T", json!({}));
        assert_eq!(
            layout.of_batch(&[loose, a.clone()]).ok(),
            Some(layout.of_event(&a))
        );
    }

    #[test]
    fn tokens_name_their_partition() {
        let layout = Layout::new("billing", 8);
        let token = |p: u8| Uuid::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, p, 0, 9]);
        assert_eq!(layout.of_token(&token(7)), Some(7));
        assert_eq!(layout.of_token(&token(8)), None);
        assert_eq!(Layout::new("billing", 1).of_token(&token(0)), Some(0));
    }
}
