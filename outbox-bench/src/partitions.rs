//! Scenario `partitions` (backend `redis-cluster`): the drain on a Redis Cluster with the outbox in
//! one partition (one slot, so one shard does all the work) and in eight (spread over the shards),
//! each beside the raw baseline measured in the same run, and the gain of eight over one.

use crate::report::{Check, Row};
use crate::targets::redis::Redis;
use crate::{BenchError, Sizes, scenario};

/// The partition counts compared.
const COUNTS: [usize; 2] = [1, 8];

/// Runs the drain with each partition count of [`COUNTS`] and adds a row per processor count and
/// partition count; the rows with eight partitions note their gain over one.
pub(crate) async fn partitions(
    sizes: &Sizes,
    rows: &mut Vec<Row>,
    checks: &mut Vec<Check>,
) -> Result<(), BenchError> {
    let cluster = Redis::connect_cluster(1).await?;
    let mut by_count: Vec<Vec<Row>> = Vec::new();
    for count in COUNTS {
        let target = cluster.with_partitions(count);
        let mut drained = Vec::new();
        scenario::drain(&target, sizes, &mut drained, checks).await?;
        for row in &mut drained {
            row.scenario = "cluster drain".to_owned();
            row.variant = format!("{}, N={count}", row.variant);
        }
        by_count.push(drained);
    }
    let [one, eight] = <[Vec<Row>; 2]>::try_from(by_count)
        .map_err(|_| BenchError::Setup("partitions: one run per count expected".to_owned()))?;
    for (mut base, mut spread) in one.into_iter().zip(eight) {
        if let (Some(a), Some(b)) = (base.outbox_per_s, spread.outbox_per_s) {
            let gain = format!("N=8 / N=1: {:.2}×", b / a);
            spread.notes = if spread.notes.is_empty() {
                gain
            } else {
                format!("{gain}; {}", spread.notes)
            };
        }
        base.notes = format!("one slot: one shard does all the work; {}", base.notes);
        rows.push(base);
        rows.push(spread);
    }
    Ok(())
}
