//! The [`Processor`] trait (one claimed event in, per-handler outcomes out) and the default
//! [`DispatchProcessor`] that runs registered handlers (P1, P3, P4, P5).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::HandlerError;
use crate::handler::{HandlerContext, HandlerResult};
use crate::record::EventRecord;
use crate::registry::Registry;

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
}

impl Delivery {
    /// A delivery of `record` (for custom runtimes and tests).
    pub fn new(record: Arc<EventRecord>, default_timeout: Duration) -> Self {
        Self {
            record,
            cancellation: CancellationToken::new(),
            abort: CancellationToken::new(),
            default_timeout,
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

/// Turns one claimed event into per-handler outcomes.
///
/// The default, [`DispatchProcessor`], runs the registered handlers. Supply your own to, for example,
/// relay every event to a broker:
///
/// ```
/// use outbox_core::{async_trait, Delivery, Dispatch, HandlerOutcome, Processor};
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

    /// Names of the handlers that would run for `event_type` (used to attribute a panic).
    fn handler_names(&self, event_type: &str) -> Vec<String> {
        let _ = event_type;
        Vec::new()
    }
}

/// Runs every registered handler for the event's type that has not settled yet, concurrently, each
/// with its timeout, capturing panics as failures.
///
/// ```
/// use outbox_core::{DispatchProcessor, Registry};
/// let processor = DispatchProcessor::new(Registry::default());
/// ```
#[derive(Debug, Clone)]
pub struct DispatchProcessor {
    registry: Arc<Registry>,
}

impl DispatchProcessor {
    /// A processor dispatching to `registry`.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Arc::new(registry),
        }
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
        let runs = handlers
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
                let ctx = HandlerContext::new(
                    record,
                    handler.name(),
                    attempt,
                    delivery.cancellation.clone(),
                );
                let timeout = handler.timeout().unwrap_or(delivery.default_timeout);
                let span = tracing::info_span!(
                    "outbox.handler",
                    handler = handler.name(),
                    event_id = %record.id,
                    attempt
                );
                let task = tokio::spawn(handler.call(Arc::clone(record), ctx).instrument(span));
                let abort = delivery.abort.clone();
                let name = handler.name().to_owned();
                let max_attempts = handler.max_attempts();
                async move {
                    let abort_handle = task.abort_handle();
                    // Dropping this future (a worker dropped mid-event) must not leave the handler running.
                    let _guard = AbortOnDrop(abort_handle.clone());
                    let result = tokio::select! {
                        joined = tokio::time::timeout(timeout, task) => match joined {
                            Ok(Ok(result)) => result,
                            Ok(Err(join_error)) => Err(join_failure(join_error)),
                            Err(_) => {
                                abort_handle.abort();
                                Err(HandlerError::retry(format!("timed out after {timeout:?}")))
                            }
                        },
                        () = abort.cancelled() => {
                            abort_handle.abort();
                            return None;
                        }
                    };
                    Some(HandlerOutcome {
                        handler: name,
                        result,
                        max_attempts,
                    })
                }
            });
        let outcomes = futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect();
        Dispatch::Ran(outcomes)
    }

    fn handler_names(&self, event_type: &str) -> Vec<String> {
        self.registry
            .handlers_for(event_type)
            .iter()
            .map(|h| h.name().to_owned())
            .collect()
    }
}

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Describes a handler task that did not return (panic or cancellation) as a retryable failure.
pub(crate) fn join_failure(err: tokio::task::JoinError) -> HandlerError {
    if err.is_panic() {
        HandlerError::retry(format!(
            "handler panicked: {}",
            panic_message(err.into_panic())
        ))
    } else {
        HandlerError::retry("handler task was cancelled")
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
                names
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
