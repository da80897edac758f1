//! Scenario 6 (PostgreSQL, on request): graphile-worker draining the same number of events with
//! the same payload on the same server, run by `scripts/peer-graphile.sh`, beside outbox's drain
//! measured in the same run.

use std::process::Command;

use serde::Deserialize;

use crate::report::Row;
use crate::{BenchError, Sizes};

#[derive(Debug, Deserialize)]
struct PeerRun {
    per_s: f64,
    cpu_us_per_event: f64,
    concurrency: u32,
    local_queue: u32,
}

/// Runs graphile-worker and adds one row comparing it with this run's drains at 2 processors
/// (kept and deleted processed events).
pub(crate) fn graphile(sizes: &Sizes, rows: &mut Vec<Row>) -> Result<(), BenchError> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/peer-graphile.sh");
    let output = Command::new(script)
        .arg(sizes.drain_events.to_string())
        .output()
        .map_err(|e| BenchError::Setup(format!("cannot run {script}: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let peer: PeerRun = serde_json::from_str(line).map_err(|e| {
        BenchError::Setup(format!(
            "graphile-worker run failed ({e}): {line}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    })?;
    let outbox = |variant: &str| {
        rows.iter()
            .find(|r| r.scenario == "drain" && r.variant == variant)
            .and_then(|r| r.outbox_per_s)
    };
    let kept = outbox("P=2");
    let deleted = outbox("P=2, delete processed");
    let best = deleted.or(kept);
    rows.push(Row {
        scenario: "peer".to_owned(),
        variant: format!(
            "graphile-worker 0.17 (concurrency {}, localQueue {})",
            peer.concurrency, peer.local_queue
        ),
        events: sizes.drain_events as u64,
        outbox_per_s: best,
        raw_per_s: Some(peer.per_s),
        ratio: best.map(|b| b / peer.per_s),
        cpu_us_per_event: None,
        raw_cpu_us_per_event: Some(peer.cpu_us_per_event),
        server_cpu_us_per_event: None,
        raw_server_cpu_us_per_event: None,
        latency_ms: None,
        notes: format!(
            "raw = graphile-worker (deletes finished jobs); outbox = this run's drain at P=2, \
             deleting processed events; keeping them: {} ev/s = {} of graphile-worker",
            kept.map_or("—".to_owned(), |k| format!("{k:.0}")),
            kept.map_or("—".to_owned(), |k| format!("{:.2}", k / peer.per_s)),
        ),
    });
    Ok(())
}
