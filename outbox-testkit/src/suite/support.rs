//! Shared helpers of the clause functions: fast worker settings, waiting, call counting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outbox_core::handlers::Registry;
use outbox_core::model::HandlerResults;
use outbox_core::store::{ClaimRequest, Completion};
use outbox_core::{
    EventRecord, EventStatus, Handler, NewEvent, RetryPolicy, Store, StoreExt, Worker, WorkerConfig,
};
use uuid::Uuid;

use crate::harness::Failure;
pub(crate) use crate::poll::{wait_drained, wait_until};
use outbox_core::{Event, HandlerError};
use serde::{Deserialize, Serialize};

/// Worker settings that make clauses fast: short leases, quick polls and retries, no jitter.
pub(crate) fn fast_config() -> WorkerConfig {
    WorkerConfig::default()
        .with_batch_size(16)
        .with_max_in_flight(32)
        .with_lease(Duration::from_secs(5))
        .with_poll_interval(Duration::from_millis(25))
        .with_handler_timeout(Duration::from_secs(10))
        .with_shutdown_grace(Duration::from_secs(3))
        .with_store_backoff_initial(Duration::from_millis(20))
        .with_store_backoff_max(Duration::from_millis(200))
        .with_retry(
            RetryPolicy::default()
                .with_initial_delay(Duration::from_millis(30))
                .with_max_delay(Duration::from_millis(200))
                .with_jitter(0.0),
        )
}

/// A registry of `handlers`.
pub(crate) fn registry(handlers: Vec<Handler>) -> Result<Registry, Failure> {
    handlers
        .into_iter()
        .fold(
            Registry::builder(),
            outbox_core::handlers::RegistryBuilder::handler,
        )
        .build()
        .map_err(|e| Failure::new(format!("registry: {e}")))
}

/// A started worker on `store`.
pub(crate) fn start<S: Store + Clone>(
    store: &S,
    registry: Registry,
    config: WorkerConfig,
) -> Result<outbox_core::WorkerHandle, Failure> {
    Ok(Worker::builder(store.clone())
        .registry(registry)
        .config(config)
        .build()
        .map_err(|e| Failure::new(format!("worker: {e}")))?
        .start())
}

/// A claim request for tests.
pub(crate) fn claim(limit: usize, lease: Duration) -> ClaimRequest {
    ClaimRequest::new("conformance", limit, lease)
}

/// Waits until event `id` has `status`, returning it.
pub(crate) async fn wait_status<S: Store>(
    store: &S,
    id: Uuid,
    status: EventStatus,
    limit: Duration,
) -> Result<EventRecord, Failure> {
    let what = format!("event {id} is {status}");
    wait_until(limit, &what, || async {
        Ok(store.get(id).await?.is_some_and(|r| r.status == status))
    })
    .await?;
    fetch(store, id).await
}

/// Reads an event that must exist.
pub(crate) async fn fetch<S: Store>(store: &S, id: Uuid) -> Result<EventRecord, Failure> {
    store
        .get(id)
        .await?
        .ok_or_else(|| Failure::new(format!("event {id} is missing from the store")))
}

/// Enqueues a plain event.
pub(crate) async fn put<S: Store>(
    store: &S,
    event_type: &str,
    payload: serde_json::Value,
) -> Result<Uuid, Failure> {
    Ok(store.enqueue(NewEvent::new(event_type, payload)).await?.id)
}

/// Counts handler invocations per (event, handler).
#[derive(Debug, Clone, Default)]
pub(crate) struct Calls(Arc<Mutex<HashMap<(Uuid, String), u32>>>);

impl Calls {
    /// Records one call and returns how many there were so far, this one included.
    pub(crate) fn record(&self, event: Uuid, handler: &str) -> u32 {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry((event, handler.to_owned())).or_default();
        *n += 1;
        *n
    }

    /// Calls recorded for (event, handler).
    pub(crate) fn get(&self, event: Uuid, handler: &str) -> u32 {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&(event, handler.to_owned())).copied().unwrap_or(0)
    }

    /// Every recorded pair with its count.
    pub(crate) fn snapshot(&self) -> HashMap<(Uuid, String), u32> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Plays a worker of another version: claims the one due event and gives it back pending, due
/// at once, with `results` recorded (one attempt).
pub(crate) async fn ran_elsewhere<S: Store>(
    store: &S,
    results: HandlerResults,
) -> Result<(), Failure> {
    let claimed = store
        .claim(&ClaimRequest::new(
            "previous-version",
            1,
            Duration::from_secs(30),
        ))
        .await?;
    let [claimed] = claimed.as_slice() else {
        return Err(Failure::new(format!(
            "expected one claimable event, got {}",
            claimed.len()
        )));
    };
    store
        .complete(
            &claimed.lease,
            Completion {
                status: EventStatus::Pending,
                handler_results: results,
                attempts: 1,
                retry_delay: None,
            },
        )
        .await?;
    Ok(())
}

pub(crate) const LONG: Duration = Duration::from_secs(30);

pub(crate) fn processed() -> Completion {
    Completion {
        status: EventStatus::Processed,
        handler_results: HandlerResults::new(),
        attempts: 1,
        retry_delay: None,
    }
}

/// Gives a claim back unprocessed (the attempt returned).
pub(crate) fn release() -> Completion {
    Completion {
        status: EventStatus::Pending,
        handler_results: HandlerResults::new(),
        attempts: 0,
        retry_delay: None,
    }
}

pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A handler that counts its calls and fails the first `fail_first` of them per event.
pub(crate) fn counting(event_type: &str, name: &str, calls: &Calls, fail_first: u32) -> Handler {
    let calls = calls.clone();
    let name_owned = name.to_owned();
    Handler::raw(event_type, name, move |record, _ctx| {
        let n = calls.record(record.id, &name_owned);
        async move {
            if n <= fail_first {
                Err(HandlerError::retry(format!("transient failure {n}")))
            } else {
                Ok(())
            }
        }
    })
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TypedPing {
    pub(crate) text: String,
}

impl Event for TypedPing {
    const EVENT_TYPE: &'static str = "p3.TypedPing";
}
