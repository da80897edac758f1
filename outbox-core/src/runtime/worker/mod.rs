//! The processing runtime: a [`Worker`] claims events in batches, runs them through a
//! [`Processor`], records outcomes, and shuts down gracefully (P1–P10).

mod completer;
mod config;
mod event_task;
mod renewer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::WorkerConfig;

use crate::handlers::registry::Registry;
use crate::handlers::state::States;
use crate::model::error::{ConfigError, RegistryError};
use crate::model::event::declared_event_types;
use crate::model::text::untrusted;
use crate::runtime::metrics::{Metrics, MetricsSnapshot};
use crate::runtime::processor::{DispatchProcessor, Processor};
use crate::store::{ClaimRequest, Store};

/// Why a worker could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The handler registry is invalid.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// `strict_coverage` is on and event types declared with `#[derive(Event)]` have no handler in
    /// this binary.
    #[error(
        "event types declared with #[derive(Event)] have no handler in this binary: {}; register handlers for them (is the handler crate linked?) or turn strict_coverage off",
        .missing.join(", ")
    )]
    UnhandledEventTypes {
        /// The declared event types without a handler.
        missing: Vec<String>,
    },
    /// A handler takes a `State<T>` parameter (or declared `requires_state::<T>()`) and the
    /// worker was given no value of type `T`.
    #[error(
        "handler `{handler}` (event type `{event_type}`) needs state of type `{type_name}`: give it with WorkerBuilder::state(..)"
    )]
    MissingState {
        /// The handler's name.
        handler: String,
        /// Its event type.
        event_type: String,
        /// The missing state type.
        type_name: &'static str,
    },
    /// A handler runs in a transaction (contract X1) the worker's store does not give.
    #[error(
        "handler `{handler}` (event type `{event_type}`) runs in a `{needs}`, but the store gives {}: \
         transactional handlers need a store with that transaction type (PostgreSQL, SQLite, MongoDB)",
        .store_gives.map_or_else(|| "no transactions".to_owned(), |t| format!("`{t}`"))
    )]
    TransactionUnavailable {
        /// The handler's name.
        handler: String,
        /// Its event type.
        event_type: String,
        /// The transaction type it takes.
        needs: &'static str,
        /// The transaction type the store gives, if any.
        store_gives: Option<&'static str>,
    },
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    store: Arc<dyn Store>,
    processor: Option<Arc<dyn Processor>>,
    registry: Option<Registry>,
    states: States,
    config: WorkerConfig,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("config", &self.config)
            .field("states", &self.states)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// Dispatches to this registry instead of the global one.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Gives handlers a shared value: a `#[handler]` taking a `State<T>` parameter receives it (one
    /// value per type; a later call replaces an earlier one of the same type). `build()` fails
    /// naming the type when a handler needs a state that was not given. Used by the built-in
    /// dispatch to handlers, not by a custom [`processor`](Self::processor).
    ///
    /// ```
    /// # fn demo(store: std::sync::Arc<dyn outbox_core::Store>, pool: std::sync::Arc<String>) {
    /// let builder = outbox_core::Worker::builder(store).state(pool); // e.g. a connection pool
    /// # }
    /// ```
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.states.insert(value);
        self
    }

    /// Like [`state`](Self::state), for a value the application keeps a handle to: handlers'
    /// `State<T>` parameters receive this same `Arc<T>`.
    pub fn state_arc<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.states.insert_arc(value);
        self
    }

    /// Uses a custom processor instead of dispatching to handlers.
    pub fn processor(mut self, processor: impl Processor) -> Self {
        self.processor = Some(Arc::new(processor));
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// Adjusts the configuration in place.
    ///
    /// ```
    /// # fn demo(store: std::sync::Arc<dyn outbox_core::Store>) {
    /// let builder = outbox_core::Worker::builder(store).configure(|c| c.with_batch_size(100));
    /// # }
    /// ```
    pub fn configure(mut self, f: impl FnOnce(WorkerConfig) -> WorkerConfig) -> Self {
        self.config = f(self.config);
        self
    }

    /// Validates the configuration and the registry (the global one, collected from `#[handler]`s,
    /// unless a registry or processor was given).
    pub fn build(self) -> Result<Worker, BuildError> {
        self.config.validate()?;
        // Deliveries carry the store's transactions only when a handler may run in one: a custom
        // processor may call transactional handlers; a registry says whether it has any.
        let mut runs_transactions = true;
        let processor: Arc<dyn Processor> = match (self.processor, self.registry) {
            (Some(p), _) => p,
            (None, registry) => {
                let registry = match registry {
                    Some(r) => r,
                    None => Registry::global()?,
                };
                let coverage = registry.coverage(&declared_event_types());
                if self.config.strict_coverage && !coverage.unhandled_event_types.is_empty() {
                    return Err(BuildError::UnhandledEventTypes {
                        missing: coverage.unhandled_event_types,
                    });
                }
                for event_type in &coverage.unhandled_event_types {
                    tracing::warn!(
                        event_type,
                        "event type is declared but no handler is registered for it in this binary"
                    );
                }
                if registry.is_empty() {
                    tracing::warn!(
                        "no handlers are registered: every event will be treated as unhandled"
                    );
                }
                for handler in registry.handlers() {
                    if let Some(missing) = handler
                        .required_state()
                        .iter()
                        .find(|r| !self.states.satisfies(r))
                    {
                        return Err(BuildError::MissingState {
                            handler: handler.name().to_owned(),
                            event_type: handler.event_type().to_owned(),
                            type_name: missing.type_name,
                        });
                    }
                }
                let given = self.store.transactions().map(|t| t.transaction_type());
                runs_transactions = false;
                for handler in registry.handlers() {
                    if let Some(needs) = handler.transaction() {
                        runs_transactions = true;
                        if given != Some(needs) {
                            return Err(BuildError::TransactionUnavailable {
                                handler: handler.name().to_owned(),
                                event_type: handler.event_type().to_owned(),
                                needs: needs.type_name,
                                store_gives: given.map(|t| t.type_name),
                            });
                        }
                    }
                }
                Arc::new(DispatchProcessor::new(registry).with_states(self.states))
            }
        };
        let completer = completer::Completer::new(self.config.max_in_flight);
        let transactions = self.store.transactions().filter(|_| runs_transactions);
        Ok(Worker {
            shared: Arc::new(Shared {
                store: self.store,
                transactions,
                processor,
                config: self.config,
                metrics: Metrics::default(),
                stop_claiming: CancellationToken::new(),
                hard_stop: CancellationToken::new(),
                completer,
                held: renewer::HeldLeases::default(),
                wake: Notify::new(),
                claims_full: AtomicBool::new(false),
                event_tasks: TaskTracker::new(),
                crashed: AtomicBool::new(false),
                unhandled_reported: Mutex::new(HashMap::new()),
            }),
        })
    }
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    /// The store's transactions, for transactional handlers (X1).
    pub(crate) transactions: Option<Arc<dyn crate::store::Transactions>>,
    pub(crate) processor: Arc<dyn Processor>,
    pub(crate) config: WorkerConfig,
    pub(crate) metrics: Metrics,
    /// Fired when shutdown begins: no more claims; handlers see their cancellation token fire.
    pub(crate) stop_claiming: CancellationToken,
    /// Fired when the grace period ends: handlers still running are aborted.
    pub(crate) hard_stop: CancellationToken,
    /// Batches the completions of events that finish together.
    pub(crate) completer: completer::Completer,
    /// The leases held right now, renewed together by the worker's renewer.
    pub(crate) held: renewer::HeldLeases,
    /// Wakes the claim loop while it waits after a claim that came back short: on a store
    /// wake-up (a commit), and when this worker persisted the end of an event with an ordering
    /// key (the key's next event may be due now; SQLite has no wake-ups to say so).
    pub(crate) wake: Notify,
    /// The last claim came back full: due events may be waiting for a free slot. While they do,
    /// the completer gives some ordering keys back to the queue instead of handing them to
    /// their next events here (see `completer::HAND_OFF_ROTATION`).
    pub(crate) claims_full: AtomicBool,
    /// The event tasks running now (claimed and handed-off events alike): shutdown waits for them.
    pub(crate) event_tasks: TaskTracker,
    /// The worker was dropped without a shutdown ([`WorkerHandle::abort`], or its task ended
    /// otherwise): its event tasks stop their handlers and write nothing, as after a crash.
    crashed: AtomicBool,
    /// When an unhandled event type was last logged, to log each at most once a minute.
    unhandled_reported: Mutex<HashMap<String, Instant>>,
}

/// How often one unhandled event type is logged at most.
const UNHANDLED_LOG_EVERY: Duration = Duration::from_secs(60);

impl Shared {
    /// Whether the worker was dropped without a shutdown: nothing more is written for its events.
    pub(crate) fn crashed(&self) -> bool {
        self.crashed.load(Ordering::Acquire)
    }

    /// Spawns the task that processes a claimed (or handed-off) event; `leased_at` is when the
    /// call that leased it was sent (its lease is trusted from then, see
    /// [`WorkerConfig::lease_margin`]).
    pub(crate) fn spawn_event_task(
        self: &Arc<Self>,
        event: crate::store::ClaimedEvent,
        permit: tokio::sync::OwnedSemaphorePermit,
        leased_at: tokio::time::Instant,
    ) {
        let trusted_until = self.config.lease_trusted_until(leased_at);
        self.event_tasks.spawn(event_task::process_event(
            Arc::clone(self),
            event,
            permit,
            trusted_until,
        ));
    }

    /// Logs an event type without a handler, at most once per type per minute (every occurrence is
    /// counted in the metrics).
    pub(crate) fn report_unhandled(&self, event_type: &str) {
        let now = Instant::now();
        let mut reported = self
            .unhandled_reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = reported
            .get(event_type)
            .is_none_or(|last| now.duration_since(*last) >= UNHANDLED_LOG_EVERY);
        if due {
            reported.insert(event_type.to_owned(), now);
            drop(reported);
            tracing::warn!(
                event_type,
                policy = ?self.config.no_handler,
                "no handler is registered for this event type in this worker"
            );
        }
    }
}

/// A configured processing runtime; [`start`](Worker::start) runs it.
///
/// ```no_run
/// use std::sync::Arc;
/// use outbox_core::{Store, Worker};
///
/// # async fn demo(store: Arc<dyn Store>, stop_signal: impl std::future::Future<Output = ()>) -> Result<(), Box<dyn std::error::Error>> {
/// let handle = Worker::builder(store).build()?.start();
/// stop_signal.await; // e.g. tokio::signal::ctrl_c()
/// let report = handle.shutdown().await;
/// println!("stopped: {report:?}");
/// # Ok(()) }
/// ```
pub struct Worker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Starts building a worker on `store` (any [`Store`], including an `Arc<dyn Store>`).
    pub fn builder(store: impl Store) -> WorkerBuilder {
        WorkerBuilder {
            store: Arc::new(store),
            processor: None,
            registry: None,
            states: States::default(),
            config: WorkerConfig::default(),
        }
    }

    /// Spawns the worker on the current tokio runtime.
    pub fn start(self) -> WorkerHandle {
        let shared = Arc::clone(&self.shared);
        #[cfg(feature = "metrics")]
        crate::runtime::telemetry::describe();
        shared.completer.start(&shared);
        let task = tokio::spawn(run(Arc::clone(&shared)));
        WorkerHandle { shared, task }
    }
}

/// A running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<ShutdownReport>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// The worker's counters now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// Whether the worker stopped.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops claiming, fires in-flight handlers' cancellation tokens, waits up to the grace period,
    /// aborts what still runs, persists every outcome it has, and returns (P7).
    ///
    /// It returns within `shutdown_grace` + [`ShutdownReport::ABORT_WAIT`] + the time the store takes to accept
    /// the outcomes (at most the lease, while the store fails), even when a handler blocks its
    /// thread: such a handler is abandoned and counted in [`ShutdownReport::abandoned`].
    pub async fn shutdown(self) -> ShutdownReport {
        self.shared.stop_claiming.cancel();
        match self.task.await {
            Ok(report) => report,
            Err(err) => {
                tracing::error!(error = %err, "worker task failed");
                ShutdownReport {
                    in_flight_at_shutdown: 0,
                    aborted_after_grace: false,
                    abandoned: 0,
                    metrics: self.shared.metrics.snapshot(),
                }
            }
        }
    }

    /// Drops the worker without a graceful shutdown, as a crash would: claimed events stay leased
    /// until their lease expires, running handlers are aborted (dropped at their next `.await`; a
    /// custom [`Processor`] that ignores [`Delivery::abort`](crate::runtime::Delivery::abort) runs on) and no
    /// outcome is written for them. Meant for tests of crash recovery.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// What a shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Events being processed when shutdown began.
    pub in_flight_at_shutdown: usize,
    /// Whether the grace period ran out and handlers were aborted.
    pub aborted_after_grace: bool,
    /// Events whose handlers did not stop within [`ShutdownReport::ABORT_WAIT`] of being aborted (they block their
    /// thread): shutdown returned without them; they are redelivered after their lease.
    pub abandoned: usize,
    /// Final counters.
    pub metrics: MetricsSnapshot,
}

/// Set while the worker's task runs: when that task is dropped before it finished (aborted, as a
/// crash would end it), the event tasks still running are told so — their handlers are aborted
/// and they write no outcome — and the renewer (dropped with the task) renews nothing more.
struct CrashOnDrop<'a> {
    shared: &'a Shared,
    finished: bool,
}

impl Drop for CrashOnDrop<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.crashed.store(true, Ordering::Release);
            self.shared.held.abort_all();
        }
    }
}

async fn run(shared: Arc<Shared>) -> ShutdownReport {
    let config = &shared.config;
    let permits = Arc::new(Semaphore::new(config.max_in_flight));
    let mut crash_guard = CrashOnDrop {
        shared: &shared,
        finished: false,
    };
    let _listener = config.use_wakeups.then(|| {
        let listener = tokio::spawn(listen_for_wakeups(Arc::clone(&shared)));
        crate::runtime::processor::AbortOnDrop(listener.abort_handle())
    });
    // Renews held leases until every in-flight event has finished (it stops with this function).
    let renewer = tokio::spawn(renewer::renew_held_leases(Arc::clone(&shared)));
    let _renewer = crate::runtime::processor::AbortOnDrop(renewer.abort_handle());
    let watchdog = tokio::spawn(renewer::expire_unconfirmed_leases(Arc::clone(&shared)));
    let _watchdog = crate::runtime::processor::AbortOnDrop(watchdog.abort_handle());
    let mut fault_backoff = config.store_backoff_initial;
    tracing::info!(worker_id = %config.worker_id, "outbox worker started");

    // Claim only when at least half a batch fits: claiming whenever a single slot frees up turns
    // a busy worker's claims into one-event round trips (measured: the drain benchmark). Never
    // more than half the slots, though: a worker with fewer slots than a batch would otherwise
    // wait for every slot, so one slow handler would stop it from claiming at all.
    let min_claim = (config.batch_size / 2).min(config.max_in_flight / 2).max(1);
    while !shared.stop_claiming.is_cancelled() {
        let free = permits.available_permits();
        if free < min_claim {
            // Slots come back when outcomes are persisted, after their event tasks ended.
            let wanted = u32::try_from(min_claim).unwrap_or(u32::MAX);
            tokio::select! {
                slots = permits.acquire_many(wanted) => drop(slots),
                () = shared.stop_claiming.cancelled() => break,
            }
            continue;
        }
        let limit = free.min(config.batch_size);
        let request = ClaimRequest::new(config.worker_id.clone(), limit, config.lease);
        let sent = tokio::time::Instant::now();
        let claimed = tokio::select! {
            claimed = shared.store.claim(&request) => claimed,
            () = shared.stop_claiming.cancelled() => break,
        };
        match claimed {
            Err(err) => {
                shared.metrics.store_error();
                tracing::warn!(error = %untrusted(&err.to_string()), retry_in = ?fault_backoff, "claim failed; backing off");
                tokio::select! {
                    () = tokio::time::sleep(fault_backoff) => {}
                    () = shared.stop_claiming.cancelled() => break,
                }
                fault_backoff = (fault_backoff * 2).min(config.store_backoff_max);
            }
            Ok(events) => {
                fault_backoff = config.store_backoff_initial;
                let full = events.len() >= limit;
                shared.claims_full.store(full, Ordering::Relaxed);
                shared.metrics.claimed(events.len());
                for event in events {
                    let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                        break;
                    };
                    shared.spawn_event_task(event, permit, sent);
                }
                if !full {
                    tokio::select! {
                        () = shared.wake.notified() => {}
                        () = tokio::time::sleep(config.poll_interval) => {}
                        () = shared.stop_claiming.cancelled() => break,
                    }
                }
            }
        }
    }

    let report = shut_down(&shared, &permits).await;
    crash_guard.finished = true;
    report
}

/// Stops the worker after its claim loop ended: lets in-flight handlers finish within the grace
/// period, aborts (and then abandons) those that do not, and waits until every outcome is
/// persisted or its lease has passed.
async fn shut_down(shared: &Shared, permits: &Semaphore) -> ShutdownReport {
    let config = &shared.config;
    let in_flight_at_shutdown = shared.event_tasks.len();
    shared.event_tasks.close();
    tracing::info!(
        in_flight = in_flight_at_shutdown,
        "outbox worker shutting down"
    );
    shared.held.cancel_all();
    let drained = tokio::time::timeout(config.shutdown_grace, shared.event_tasks.wait())
        .await
        .is_ok();
    let mut abandoned = 0;
    if !drained {
        tracing::warn!(grace = ?config.shutdown_grace, "grace period over; aborting handlers still running");
        shared.hard_stop.cancel();
        shared.held.abort_all();
        // An aborted handler stops at its next `.await`; one that blocks its thread cannot be
        // stopped, so it is abandoned (its event is redelivered after its lease).
        if tokio::time::timeout(ShutdownReport::ABORT_WAIT, shared.event_tasks.wait())
            .await
            .is_err()
        {
            abandoned = shared.event_tasks.len();
            tracing::error!(
                abandoned,
                "handlers did not stop when aborted (blocking their thread?); abandoning them"
            );
        }
    }
    shared.hard_stop.cancel();
    // Every in-flight slot comes back once its outcome is persisted (or given up on after the
    // lease): wait for them, so the outcomes are written when shutdown returns. Abandoned events
    // keep their slots.
    let slots = config.max_in_flight.saturating_sub(abandoned);
    let slots = u32::try_from(slots).unwrap_or(u32::MAX);
    let persisted = if slots == 0 {
        Ok(Ok(()))
    } else {
        tokio::time::timeout(config.lease, permits.acquire_many(slots))
            .await
            .map(|acquired| acquired.map(drop))
    };
    if !matches!(persisted, Ok(Ok(_))) {
        tracing::warn!(
            "some outcomes were not persisted before shutdown; their events will be redelivered"
        );
    }
    ShutdownReport {
        in_flight_at_shutdown,
        aborted_after_grace: !drained,
        abandoned,
        metrics: shared.metrics.snapshot(),
    }
}

impl ShutdownReport {
    /// How long shutdown waits, after the grace period, for aborted handlers to stop before it
    /// abandons those that block their thread (P7's documented bound): one second.
    pub const ABORT_WAIT: Duration = Duration::from_secs(1);
}

/// Forwards the store's wake-ups; resubscribes (then polls once) when the stream ends or fails.
async fn listen_for_wakeups(shared: Arc<Shared>) {
    let mut backoff = shared.config.store_backoff_initial;
    while !shared.stop_claiming.is_cancelled() {
        match shared.store.subscribe().await {
            Ok(Some(mut stream)) => {
                backoff = shared.config.store_backoff_initial;
                shared.wake.notify_one();
                loop {
                    tokio::select! {
                        item = stream.next() => match item {
                            Some(()) => shared.wake.notify_one(),
                            None => break,
                        },
                        () = shared.stop_claiming.cancelled() => return,
                    }
                }
                tracing::debug!("wake-up stream ended; resubscribing");
            }
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %untrusted(&err.to_string()), "wake-up subscription failed; polling meanwhile");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shared.stop_claiming.cancelled() => return,
        }
        backoff = (backoff * 2).min(
            shared
                .config
                .store_backoff_max
                .max(Duration::from_millis(1)),
        );
    }
}
