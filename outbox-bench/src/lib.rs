//! The outbox benchmark: each backend against a raw-database baseline measured in the same run.
//!
//! `cargo run -p outbox-bench --release -- postgres` (or `redis`, `mongo`, `sqlite`) runs four
//! scenarios — enqueue, drain, latency, fan-out with failures — prints a table and writes it as
//! JSON. See `BENCHMARKS.md` at the repository root for the latest numbers and how to read them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), outbox_bench::BenchError> {
//! let report = outbox_bench::run("postgres", &outbox_bench::Sizes::reduced()).await?;
//! println!("{}", report.table());
//! assert!(report.all_checks_passed());
//! # Ok(()) }
//! ```

mod backlog;
mod gauges;
mod held_xmin;
mod partitions;
mod peer;
pub mod report;
pub mod scenario;
mod soak;
pub mod target;
mod targets;

use std::time::Duration;

use serde::Serialize;

pub use report::Report;

/// What can stop a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] outbox_core::StoreError),
    /// The database failed outside the store (raw baseline, setup).
    #[error("database: {0}")]
    Database(String),
    /// A worker could not be built.
    #[error("worker: {0}")]
    Worker(#[from] outbox_core::BuildError),
    /// A registry could not be built.
    #[error("registry: {0}")]
    Registry(#[from] outbox_core::model::RegistryError),
    /// Invalid configuration or setup.
    #[error("setup: {0}")]
    Setup(String),
    /// A scenario did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Unknown backend name.
    #[error("unknown backend {0:?}: expected postgres, redis, redis-cluster, mongo or sqlite")]
    UnknownBackend(String),
}

impl From<outbox_core::ConfigError> for BenchError {
    fn from(err: outbox_core::ConfigError) -> Self {
        Self::Setup(err.to_string())
    }
}

/// How big each scenario is.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    /// Transactions of one event each (scenario 1).
    pub enqueue_single: usize,
    /// Transactions of 100 events each (scenario 1).
    pub enqueue_batches: usize,
    /// Pending events drained (scenario 2).
    pub drain_events: usize,
    /// Processor counts for the drain (scenario 2).
    pub processors: Vec<usize>,
    /// Events per claim, for the library and the raw baseline alike.
    pub batch: usize,
    /// Producer rate, events per second (scenario 3).
    pub latency_rate: u32,
    /// Producer duration, seconds (scenario 3).
    pub latency_seconds: f64,
    /// Events in the fan-out scenario (scenario 4).
    pub fanout_events: usize,
    /// Due events drained in each backlog scenario (scenario 5).
    pub backlog_due: usize,
    /// Events scheduled for tomorrow beside them.
    pub backlog_scheduled: usize,
    /// Events in retry back-off beside them.
    pub backlog_backoff: usize,
    /// Events of the keyed drain.
    pub keyed_events: usize,
    /// Ordering keys of the keyed drain (events are spread round robin).
    pub keys: usize,
    /// Which scenarios run, by name (see [`SCENARIOS`]).
    pub scenarios: Vec<String>,
    /// Producer rate of the soak, events per second (scenario 7).
    pub soak_rate: u32,
    /// Duration of the soak, seconds (it runs only when asked for with `--scenarios soak`).
    pub soak_seconds: f64,
    /// Producer rate of the held-xmin scenario, events per second.
    pub held_xmin_rate: u32,
    /// How long the held-xmin scenario produces (and holds its snapshot), seconds.
    pub held_xmin_seconds: f64,
    /// Processed events kept while the gauges are timed (scenario 8, only with `--scenarios
    /// gauges`).
    pub gauge_processed: usize,
    /// Also run graphile-worker on the same database after the drain (PostgreSQL only; needs
    /// Node.js and npm).
    pub peer: bool,
    /// Longest any one measurement may take.
    #[serde(skip)]
    pub timeout: Duration,
}

impl Sizes {
    /// The full sizes of the issue: 200,000 events drained with 1, 2 and 4 processors, a producer
    /// at 1,000 events/s.
    pub fn full() -> Self {
        Self {
            enqueue_single: 5_000,
            enqueue_batches: 200,
            drain_events: 200_000,
            processors: vec![1, 2, 4],
            batch: 100,
            latency_rate: 1_000,
            latency_seconds: 10.0,
            fanout_events: 20_000,
            backlog_due: 100_000,
            backlog_scheduled: 500_000,
            backlog_backoff: 200_000,
            keyed_events: 100_000,
            keys: 1_000,
            scenarios: default_scenarios(),
            peer: false,
            soak_rate: 2_000,
            soak_seconds: 600.0,
            held_xmin_rate: 800,
            held_xmin_seconds: 600.0,
            gauge_processed: 1_000_000,
            timeout: Duration::from_secs(1_800),
        }
    }

    /// Small sizes for the test suite: it checks the final state, not speed.
    pub fn reduced() -> Self {
        Self {
            enqueue_single: 40,
            enqueue_batches: 3,
            drain_events: 600,
            processors: vec![1, 2, 4],
            batch: 50,
            latency_rate: 200,
            latency_seconds: 0.5,
            fanout_events: 200,
            backlog_due: 400,
            backlog_scheduled: 2_000,
            backlog_backoff: 1_000,
            keyed_events: 400,
            keys: 20,
            scenarios: default_scenarios(),
            peer: false,
            soak_rate: 500,
            soak_seconds: 3.0,
            held_xmin_rate: 200,
            held_xmin_seconds: 2.0,
            gauge_processed: 2_000,
            timeout: Duration::from_secs(120),
        }
    }
}

/// Every scenario, in the order they run. `soak` and `gauges` run only when asked for (they last
/// minutes).
pub const SCENARIOS: &[&str] = &[
    "enqueue",
    "drain",
    "latency",
    "fanout",
    "backlog",
    "soak",
    "gauges",
    "partitions",
    "held-xmin",
];

fn default_scenarios() -> Vec<String> {
    SCENARIOS
        .iter()
        .filter(|s| !matches!(**s, "soak" | "gauges" | "partitions" | "held-xmin"))
        .map(|s| (*s).to_owned())
        .collect()
}

/// The backend named `backend` (`postgres`, `redis`, `mongo`, `sqlite`), configured from the same
/// environment variables as the tests (`DATABASE_URL`, `REDIS_URL`, `MONGODB_URI`).
pub async fn target(backend: &str) -> Result<Box<dyn target::Target>, BenchError> {
    match backend {
        "postgres" => Ok(Box::new(targets::postgres::Postgres::connect().await?)),
        "sqlite" => Ok(Box::new(targets::sqlite::Sqlite::new()?)),
        "redis" => Ok(Box::new(targets::redis::Redis::connect().await?)),
        "redis-cluster" => Ok(Box::new(targets::redis::Redis::connect_cluster(8).await?)),
        "mongo" => Ok(Box::new(targets::mongo::Mongo::connect().await?)),
        other => Err(BenchError::UnknownBackend(other.to_owned())),
    }
}

/// Runs every scenario against `backend` and returns the report.
pub async fn run(backend: &str, sizes: &Sizes) -> Result<Report, BenchError> {
    let target = target(backend).await?;
    report::count_server_processes(backend);
    let started_at = chrono::Utc::now().to_rfc3339();
    let mut rows = Vec::new();
    let mut checks = Vec::new();
    let wanted = |name: &str| sizes.scenarios.iter().any(|s| s == name);
    let t = target.as_ref();
    if wanted("enqueue") {
        scenario::enqueue(t, sizes, &mut rows, &mut checks).await?;
    }
    if wanted("drain") {
        scenario::drain(t, sizes, &mut rows, &mut checks).await?;
        if sizes.peer && backend == "postgres" {
            peer::graphile(sizes, &mut rows)?;
        }
    }
    if wanted("latency") {
        scenario::latency(t, sizes, &mut rows, &mut checks).await?;
    }
    if wanted("fanout") {
        scenario::fanout(t, sizes, &mut rows, &mut checks).await?;
    }
    if wanted("backlog") {
        backlog::backlog(t, sizes, &mut rows, &mut checks).await?;
    }
    if wanted("soak") {
        soak::soak(t, sizes, &mut rows, &mut checks).await?;
    }
    if wanted("gauges") {
        gauges::gauges(t, sizes, &mut rows, &mut checks).await?;
    }
    if wanted("held-xmin") {
        held_xmin::held_xmin(t, sizes, &mut rows, &mut checks).await?;
    }
    if wanted("partitions") {
        if backend != "redis-cluster" {
            return Err(BenchError::Setup(
                "the partitions scenario runs on the redis-cluster backend".to_owned(),
            ));
        }
        partitions::partitions(sizes, &mut rows, &mut checks).await?;
    }
    Ok(Report {
        backend: backend.to_owned(),
        sizes: sizes.clone(),
        machine: report::machine(),
        started_at,
        rows,
        checks,
    })
}
