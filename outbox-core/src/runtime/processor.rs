//! The [`Processor`] trait (one claimed event in, per-handler outcomes out) and the default
//! [`DispatchProcessor`] that runs registered handlers (P1, P3, P4, P5).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::handlers::handler::{HandlerContext, HandlerResult};
use crate::handlers::logs::LogBuffer;
use crate::handlers::registry::Registry;
use crate::handlers::state::States;
use crate::handlers::transaction::TransactionScope;
use crate::model::error::HandlerError;
use crate::model::record::{EventRecord, HandlerResults};

/// One delivery of a claimed event to a processor.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Delivery {
    /// The claimed event (its `handler_results` say which handlers already succeeded).
    pub record: Arc<EventRecord>,
    /// Fires when handlers should wind down: the lease was lost or shutdown began.
    pub cancellation: CancellationToken,
    /// Fires when handlers must stop now: shutdown's grace period ended or the lease was lost.
    /// Work still running then produces no outcome (it is retried later).
    pub abort: CancellationToken,
    /// The timeout for a handler without its own.
    pub default_timeout: Duration,
    /// Where the handlers' [`HandlerContext::log`] entries go; the runtime stores them with the
    /// event's outcome.
    pub logs: LogBuffer,
    /// The store's transactions and this delivery's lease, for transactional handlers (X1);
    /// `None` when the store has no transactions.
    pub transaction: Option<TransactionScope>,
}

impl Delivery {
    /// A delivery of `record` (for custom runtimes and tests).
    pub fn new(record: Arc<EventRecord>, default_timeout: Duration) -> Self {
        Self {
            record,
            cancellation: CancellationToken::new(),
            abort: CancellationToken::new(),
            default_timeout,
            logs: LogBuffer::default(),
            transaction: None,
        }
    }
}

/// What one handler did in one delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerOutcome {
    /// The handler's name (the key of `handler_results`).
    pub handler: String,
    /// Success with an optional JSON result, or the failure.
    pub result: HandlerResult,
    /// The handler's attempts override, if any.
    pub max_attempts: Option<u32>,
}

/// What a processor made of one delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Dispatch {
    /// No handler exists for the event's type (contract P4).
    NoHandlers,
    /// Outcomes of the handlers that ran (handlers that already succeeded do not run again; handlers
    /// stopped by `abort` report nothing).
    Ran(Vec<HandlerOutcome>),
}

impl Dispatch {
    /// Records `handler` as succeeded with `output`, replacing what it reported (or adding it when
    /// it reported nothing): its success is already committed (a transactional handler).
    pub(crate) fn record_success(&mut self, handler: String, output: Option<serde_json::Value>) {
        if matches!(self, Dispatch::NoHandlers) {
            *self = Dispatch::Ran(Vec::new());
        }
        let Dispatch::Ran(outcomes) = self else {
            return;
        };
        match outcomes.iter_mut().find(|o| o.handler == handler) {
            Some(outcome) => outcome.result = Ok(output),
            None => outcomes.push(HandlerOutcome {
                handler,
                result: Ok(output),
                max_attempts: None,
            }),
        }
    }
}

/// Turns one claimed event into per-handler outcomes.
///
/// The default, [`DispatchProcessor`], runs the registered handlers. Supply your own to, for example,
/// relay every event to a broker:
///
/// ```
/// use outbox_core::kit::async_trait;
/// use outbox_core::runtime::{Delivery, Dispatch, HandlerOutcome, Processor};
///
/// struct Relay;
///
/// #[async_trait]
/// impl Processor for Relay {
///     async fn process(&self, delivery: Delivery) -> Dispatch {
///         // publish delivery.record.payload to a broker here
///         Dispatch::Ran(vec![HandlerOutcome {
///             handler: "relay".into(),
///             result: Ok(None),
///             max_attempts: None,
///         }])
///     }
/// }
/// ```
#[async_trait]
pub trait Processor: Send + Sync + 'static {
    /// Processes one delivery. Must not panic; the runtime still records a panic as a failure of
    /// every handler that has not succeeded.
    async fn process(&self, delivery: Delivery) -> Dispatch;

    /// Names of the handlers that would run for `event_type`: they must all settle before the event
    /// is finished, and a panic of the processor is recorded against them. A recorded handler
    /// missing from this list and not reported by `process` is treated as not registered here
    /// (contract P4).
    fn handler_names(&self, event_type: &str) -> &[String] {
        let _ = event_type;
        &[]
    }

    /// Moves results stored under a handler's former name to its current name (handlers declared
    /// with `renamed_from`), before the delivery runs. The default does nothing.
    fn migrate_handler_names(&self, event_type: &str, results: &mut HandlerResults) {
        let _ = (event_type, results);
    }
}

/// Runs every registered handler for the event's type that has not settled yet, concurrently, each
/// with its timeout, capturing panics as failures.
///
/// Handlers run inside the event's own task (no task is spawned per handler), so a handler must not
/// block its thread: use `tokio::task::spawn_blocking` for blocking work.
///
/// ```
/// use outbox_core::runtime::DispatchProcessor;
/// use outbox_core::handlers::Registry;
/// let processor = DispatchProcessor::new(Registry::default());
/// ```
#[derive(Debug, Clone)]
pub struct DispatchProcessor {
    registry: Arc<Registry>,
    states: States,
}

impl DispatchProcessor {
    /// A processor dispatching to `registry`.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Arc::new(registry),
            states: States::default(),
        }
    }

    /// This processor with state values for its handlers' `State<T>` parameters.
    ///
    /// ```
    /// let mut states = outbox_core::handlers::States::default();
    /// states.insert(7_u8);
    /// let processor = outbox_core::runtime::DispatchProcessor::new(outbox_core::handlers::Registry::default()).with_states(states);
    /// # let _ = processor;
    /// ```
    #[must_use]
    pub fn with_states(mut self, states: States) -> Self {
        self.states = states;
        self
    }

    /// The registry it dispatches to.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

#[async_trait]
impl Processor for DispatchProcessor {
    async fn process(&self, delivery: Delivery) -> Dispatch {
        let record = &delivery.record;
        let handlers = self.registry.handlers_for(&record.event_type);
        if handlers.is_empty() {
            return Dispatch::NoHandlers;
        }
        let mut runs = handlers
            .iter()
            .filter(|h| {
                !record
                    .handler_results
                    .get(h.name())
                    .is_some_and(|s| s.is_settled())
            })
            .map(|handler| {
                let attempt = record
                    .handler_results
                    .get(handler.name())
                    .map_or(0, |s| s.attempts)
                    .saturating_add(1);
                let ctx = HandlerContext::for_delivery(
                    record,
                    handler.name(),
                    attempt,
                    delivery.cancellation.clone(),
                    self.states.clone(),
                    delivery.logs.clone(),
                    delivery.transaction.clone(),
                );
                let timeout = handler.timeout().unwrap_or(delivery.default_timeout);
                let span = tracing::info_span!(
                    "outbox.handler",
                    handler = handler.name(),
                    event_id = %record.id,
                    attempt
                );
                // The handler runs inside the event's task: a panic is caught here, a timeout or an
                // abort drops its future (which cancels it), and dropping the event task (a crash)
                // drops it too. No task is spawned per handler.
                let run = std::panic::AssertUnwindSafe(
                    handler.call(Arc::clone(record), ctx).instrument(span),
                )
                .catch_unwind();
                let abort = delivery.abort.clone();
                let name = handler.name().to_owned();
                let max_attempts = handler.max_attempts();
                async move {
                    #[cfg(feature = "metrics")]
                    let started = std::time::Instant::now();
                    let result = tokio::select! {
                        finished = tokio::time::timeout(timeout, run) => match finished {
                            Ok(Ok(result)) => result,
                            Ok(Err(panic)) => Err(HandlerError::retry(format!(
                                "handler panicked: {}",
                                panic_message(panic)
                            ))),
                            Err(_) => Err(HandlerError::retry(format!("timed out after {timeout:?}"))),
                        },
                        () = abort.cancelled() => return None,
                    };
                    #[cfg(feature = "metrics")]
                    crate::runtime::metrics::handler_duration(&name, started.elapsed());
                    Some(HandlerOutcome {
                        handler: name,
                        result,
                        max_attempts,
                    })
                }
            });
        // One handler (the common case) is awaited as it is; several run concurrently.
        let outcomes = match (runs.next(), runs.next()) {
            (None, _) => Vec::new(),
            (Some(only), None) => only.await.into_iter().collect(),
            (Some(first), Some(second)) => {
                futures::future::join_all([first, second].into_iter().chain(runs))
                    .await
                    .into_iter()
                    .flatten()
                    .collect()
            }
        };
        Dispatch::Ran(outcomes)
    }

    fn handler_names(&self, event_type: &str) -> &[String] {
        self.registry.names_for(event_type)
    }

    fn migrate_handler_names(&self, event_type: &str, results: &mut HandlerResults) {
        for (old, new) in self.registry.renames_for(event_type) {
            crate::model::record::rename_handler(results, old, new);
        }
    }
}

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs a processor, turning a panic of the processor itself into failures of `names`.
pub(crate) async fn process_catching_panics(
    processor: &dyn Processor,
    delivery: Delivery,
) -> Dispatch {
    let names = processor.handler_names(&delivery.record.event_type);
    let record = Arc::clone(&delivery.record);
    match std::panic::AssertUnwindSafe(processor.process(delivery))
        .catch_unwind()
        .await
    {
        Ok(dispatch) => dispatch,
        Err(payload) => {
            let message = format!("processor panicked: {}", panic_message(payload));
            let names: Vec<String> = if names.is_empty() {
                vec!["processor".to_owned()]
            } else {
                names.to_vec()
            };
            Dispatch::Ran(
                names
                    .into_iter()
                    .filter(|n| {
                        !record
                            .handler_results
                            .get(n)
                            .is_some_and(|s| s.is_settled())
                    })
                    .map(|handler| HandlerOutcome {
                        handler,
                        result: Err(HandlerError::retry(message.clone())),
                        max_attempts: None,
                    })
                    .collect(),
            )
        }
    }
}
