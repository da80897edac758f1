//! Durable outcome targets (contract W2): who should hear of an event's outcome — a webhook, a
//! user session — attached at enqueue or later, even after the event finished. Each target is
//! itself an outbox event ([`TARGET_EVENT_TYPE`]) whose handler ([`Notifiers::handler`]) waits for
//! the outcome and calls the notifier registered for the target's `kind`: so a target is leased
//! exclusively and fenced like any event, a notifier that fails is retried with back-off and ends
//! as a dead letter, and one that succeeds is done (at least once per target).
//!
//! Attached at enqueue ([`with_target`]), the target shares an ordering key with its event and
//! runs right after it. Attached later ([`target_event`]), it runs at once: if the event is still
//! pending it enqueues a fresh copy of itself for later instead of spending an attempt.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::handlers::handler::Handler;
use crate::model::error::HandlerError;
use crate::model::record::NewEvent;
use crate::store::wait::Outcome;
use crate::store::{Store, StoreExt};

/// The event type of outcome targets.
pub const TARGET_EVENT_TYPE: &str = "outbox.OutcomeTarget";

/// How long a target waits before it looks again at an event that is still pending.
const RECHECK: Duration = Duration::from_secs(1);

/// What a notifier is told.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Notification {
    /// The event whose outcome this is.
    pub event_id: Uuid,
    /// The outcome: processed (with the handlers' outputs), dead (with the reason), or deleted
    /// after processing.
    pub outcome: Outcome,
    /// The target as attached (its `kind` chose the notifier).
    pub target: serde_json::Value,
}

/// A notifier's boxed future.
pub type NotifyFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'static>>;
type NotifyFn = dyn Fn(Notification) -> NotifyFuture + Send + Sync;

/// The target event for `event_id`: enqueue it (in your transaction, or later — even after the
/// event finished) and the notifier of `target["kind"]` hears of the outcome.
///
/// ```
/// let id = outbox_core::Uuid::now_v7();
/// let target = outbox_core::handlers::target_event(id, outbox_core::serde_json::json!({"kind": "webhook", "url": "https://example.com/hook"}));
/// assert_eq!(target.event_type, outbox_core::handlers::TARGET_EVENT_TYPE);
/// ```
pub fn target_event(event_id: Uuid, target: serde_json::Value) -> NewEvent {
    NewEvent::new(
        TARGET_EVENT_TYPE,
        serde_json::json!({ "event_id": event_id, "target": target }),
    )
}

/// `event` and a target for it, to enqueue together: the target takes the event's ordering key
/// (the event gets `outbox.target:<id>` when it has none), so it runs right after the event
/// finishes.
///
/// ```
/// use outbox_core::NewEvent;
/// use outbox_core::handlers::with_target;
/// let (event, target) = with_target(
///     NewEvent::new("OrderPlaced", outbox_core::serde_json::json!({"id": 7})),
///     outbox_core::serde_json::json!({"kind": "session", "user": 42}),
/// );
/// assert_eq!(event.ordering_key, target.ordering_key);
/// ```
pub fn with_target(mut event: NewEvent, target: serde_json::Value) -> (NewEvent, NewEvent) {
    let key = event
        .ordering_key
        .get_or_insert_with(|| format!("outbox.target:{}", event.id))
        .clone();
    let target = target_event(event.id, target).ordering_key(key);
    (event, target)
}

/// The notifiers, by target kind; [`handler`](Self::handler) is the target events' handler, to
/// add to the worker's registry.
///
/// ```
/// use outbox_core::handlers::{Notifiers, Registry};
/// use outbox_core::Store;
/// # fn demo(store: std::sync::Arc<dyn Store>) -> Result<(), Box<dyn std::error::Error>> {
/// let notifiers = Notifiers::new(store).kind("webhook", |n| async move {
///     println!("POST {} about {}: {:?}", n.target["url"], n.event_id, n.outcome.is_final());
///     Ok(())
/// });
/// let registry = Registry::builder().with_registered().handler(notifiers.handler()).build()?;
/// # let _ = registry; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Notifiers {
    store: Arc<dyn Store>,
    kinds: BTreeMap<String, Arc<NotifyFn>>,
}

impl std::fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifiers")
            .field("kinds", &self.kinds.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Notifiers {
    /// No notifiers yet, reading outcomes from `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            kinds: BTreeMap::new(),
        }
    }

    /// Registers the notifier of targets whose `kind` is `kind`.
    #[must_use]
    pub fn kind<F, Fut>(mut self, kind: impl Into<String>, notify: F) -> Self
    where
        F: Fn(Notification) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let notify = move |n| -> NotifyFuture { Box::pin(notify(n)) };
        self.kinds.insert(kind.into(), Arc::new(notify));
        self
    }

    /// The handler of [`TARGET_EVENT_TYPE`] events, named `notify`.
    pub fn handler(&self) -> Handler {
        let this = self.clone();
        Handler::raw(TARGET_EVENT_TYPE, "notify", move |record, _ctx| {
            let this = this.clone();
            async move { this.notify(&record.payload).await }
        })
    }

    async fn notify(&self, payload: &serde_json::Value) -> Result<serde_json::Value, HandlerError> {
        let event_id = payload["event_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| HandlerError::permanent("a target event without a valid event_id"))?;
        let target = payload["target"].clone();
        let kind = target["kind"].as_str().unwrap_or_default();
        let Some(notify) = self.kinds.get(kind) else {
            return Err(HandlerError::permanent(format!(
                "no notifier for target kind {kind:?}; register one with Notifiers::kind"
            )));
        };
        let outcome = match self.store.wait_for(event_id, Duration::ZERO).await {
            Ok(outcome) => outcome,
            Err(crate::model::StoreError::NotFound { .. }) => {
                return Err(HandlerError::permanent(format!(
                    "event {event_id} does not exist"
                )));
            }
            Err(err) => return Err(HandlerError::retry(err.to_string())),
        };
        if !outcome.is_final() {
            // Still pending (a target attached later to a running event): look again later, in a
            // fresh target event, so waiting spends no attempt. (A target attached at enqueue
            // shares its event's ordering key and only runs once the event finished.)
            let again = target_event(event_id, target).deliver_after(RECHECK);
            let next = self
                .store
                .enqueue(again)
                .await
                .map_err(|e| HandlerError::retry(e.to_string()))?;
            return Ok(serde_json::json!({ "waiting": true, "next_check": next.id }));
        }
        notify(Notification {
            event_id,
            outcome,
            target,
        })
        .await?;
        Ok(serde_json::json!({ "notified": true }))
    }
}
