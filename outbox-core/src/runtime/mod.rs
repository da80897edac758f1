//! The runtime: the [`Worker`] that claims events in batches, runs them through a
//! [`Processor`], records outcomes with retries and back-off ([`RetryPolicy`]), renews leases,
//! and shuts down gracefully (P1–P10) — its builder and the checks it runs, its configuration,
//! and its metrics.
//!
//! ```no_run
//! use outbox_core::runtime::{Worker, WorkerConfig};
//! # async fn demo(store: std::sync::Arc<dyn outbox_core::Store>) -> Result<(), Box<dyn std::error::Error>> {
//! let worker = Worker::builder(store).config(WorkerConfig::default()).build()?;
//! let handle = worker.start();
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

pub(crate) mod fold;
pub(crate) mod metrics;
pub(crate) mod processor;
pub(crate) mod retry;
#[cfg(feature = "metrics")]
pub mod telemetry;
pub(crate) mod worker;

pub use fold::NoHandlerPolicy;
pub use metrics::MetricsSnapshot;
pub use processor::{Delivery, Dispatch, DispatchProcessor, HandlerOutcome, Processor};
pub use retry::{JitterSource, RetryPolicy};
pub use worker::{BuildError, ShutdownReport, Worker, WorkerBuilder, WorkerConfig, WorkerHandle};
