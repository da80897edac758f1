//! Scenario `partitions` (backend `redis-cluster`): the drain on a Redis Cluster with the outbox in
//! one partition (one slot, so one shard does all the work) and in eight (spread over the shards),
//! each beside the raw baseline measured in the same run, and the gain of eight over one — in
//! events per second on this machine, and in the CPU the busiest shard spends per event, which
//! bounds the drain where each shard has a core of its own (here three shards, the benchmark and
//! its workers share two cores, so the wall-clock rate cannot show the spread).

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
            let mut gain = format!("N=8 / N=1: {:.2}× ev/s", b / a);
            if let (Some(one), Some(eight)) = (busiest(&base.notes), busiest(&spread.notes)) {
                gain.push_str(&format!(
                    ", {:.2}× less busiest-shard CPU per event (single-shard ceiling {:.0} → {:.0} \
                     ev/s)",
                    one / eight,
                    1e6 / one,
                    1e6 / eight
                ));
            }
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

/// The busiest shard's CPU µs per event from a row's notes (`busiest shard CPU 9.1 µs/ev (…)`).
fn busiest(notes: &str) -> Option<f64> {
    notes
        .split("busiest shard CPU ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|us: &f64| *us > 0.0)
}
