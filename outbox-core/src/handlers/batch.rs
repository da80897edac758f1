//! Batch handlers (contract B1): one call handles many events of a type at once — relaying to a
//! broker is the natural case. [`Handler::batch`](crate::handlers::Handler::batch) groups the events the
//! worker is running of that type, up to a size or a short linger time, calls the function once,
//! and gives each event its own result, recorded as for any handler. Ordering keys still hold: a
//! worker runs one event per key at a time, so a batch never holds two events of one key.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::handlers::handler::{HandlerContext, HandlerFuture, HandlerResult};
use crate::model::error::HandlerError;
use crate::model::record::EventRecord;

/// One event of a batch, with its own context (its attempt, cancellation and log).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BatchItem {
    /// The event.
    pub record: Arc<EventRecord>,
    /// This event's handler context.
    pub ctx: HandlerContext,
}

/// A batch function's boxed future: one result per item, in order.
pub type BatchFuture = Pin<Box<dyn Future<Output = Vec<HandlerResult>> + Send + 'static>>;

type BatchFn = dyn Fn(Vec<BatchItem>) -> BatchFuture + Send + Sync;
type Waiting = (BatchItem, oneshot::Sender<HandlerResult>);

/// Collects the events of one batch handler and runs them in batches (a task started on first
/// use, ending when the handler is dropped; started again if the runtime it ran on ended).
pub(crate) struct Batcher {
    max: usize,
    linger: Duration,
    f: Arc<BatchFn>,
    tx: Mutex<Option<mpsc::UnboundedSender<Waiting>>>,
}

impl Batcher {
    pub(crate) fn new(max: usize, linger: Duration, f: Arc<BatchFn>) -> Self {
        Self {
            max: max.max(1),
            linger,
            f,
            tx: Mutex::new(None),
        }
    }

    /// Runs one event through the next batch and returns its result.
    pub(crate) fn call(
        self: &Arc<Self>,
        record: Arc<EventRecord>,
        ctx: HandlerContext,
    ) -> HandlerFuture {
        let (done, result) = oneshot::channel();
        let sent = {
            let mut tx = self
                .tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if tx.as_ref().is_none_or(mpsc::UnboundedSender::is_closed) {
                let (new_tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(collect(rx, self.max, self.linger, Arc::clone(&self.f)));
                *tx = Some(new_tx);
            }
            tx.as_ref()
                .map(|tx| tx.send((BatchItem { record, ctx }, done)).is_ok())
                .unwrap_or(false)
        };
        Box::pin(async move {
            if !sent {
                return Err(HandlerError::retry("the batch handler's collector stopped"));
            }
            result.await.unwrap_or_else(|_| {
                Err(HandlerError::retry(
                    "the batch handler panicked or ended without a result for this event",
                ))
            })
        })
    }
}

/// Forms batches: the first waiting event opens one, which closes when it is full or `linger`
/// after it opened; each batch runs in its own task.
async fn collect(
    mut rx: mpsc::UnboundedReceiver<Waiting>,
    max: usize,
    linger: Duration,
    f: Arc<BatchFn>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let closes = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(closes, rx.recv()).await {
                Ok(Some(next)) => batch.push(next),
                Ok(None) | Err(_) => break,
            }
        }
        let f = Arc::clone(&f);
        tokio::spawn(async move {
            let (items, senders): (Vec<BatchItem>, Vec<_>) = batch.into_iter().unzip();
            let count = items.len();
            let results = f(items).await;
            if results.len() != count {
                let message = format!(
                    "the batch handler returned {} results for {count} events",
                    results.len()
                );
                for sender in senders {
                    let _ = sender.send(Err(HandlerError::retry(message.clone())));
                }
                return;
            }
            for (sender, result) in senders.into_iter().zip(results) {
                let _ = sender.send(result);
            }
        });
    }
}

/// The batcher of a `#[handler(batch = N)]` function, one per function (a `static`).
#[doc(hidden)]
pub struct BatchCell(OnceLock<Arc<Batcher>>);

impl BatchCell {
    /// An empty cell; the batcher is made on first use.
    pub const fn new() -> Self {
        Self(OnceLock::new())
    }

    /// Runs one event through the function's next batch.
    pub fn call(
        &'static self,
        max: usize,
        linger_ms: u64,
        f: fn(Vec<BatchItem>) -> BatchFuture,
        record: Arc<EventRecord>,
        ctx: HandlerContext,
    ) -> HandlerFuture {
        self.0
            .get_or_init(|| {
                Arc::new(Batcher::new(
                    max,
                    Duration::from_millis(linger_ms),
                    Arc::new(f),
                ))
            })
            .call(record, ctx)
    }
}

impl Default for BatchCell {
    fn default() -> Self {
        Self::new()
    }
}

/// What a `#[handler(batch = N)]` function may return: one `Result` for the whole batch, or a
/// `Vec` of one `Result` per event, in order.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not what a batch handler returns",
    label = "return `Result<(), HandlerError>` (one outcome for all) or `Vec<Result<(), HandlerError>>` (one per event)",
    note = "the `Ok` value may also be `serde_json::Value` or `Option<serde_json::Value>`"
)]
pub trait IntoBatchResults {
    /// One result per event of a batch of `n`.
    fn into_batch_results(self, n: usize) -> Vec<HandlerResult>;
}

impl<O: crate::handlers::HandlerOutput + Clone> IntoBatchResults for Result<O, HandlerError> {
    fn into_batch_results(self, n: usize) -> Vec<HandlerResult> {
        let one = self.map(crate::handlers::HandlerOutput::into_output);
        vec![one; n]
    }
}

impl<O: crate::handlers::HandlerOutput> IntoBatchResults for Vec<Result<O, HandlerError>> {
    fn into_batch_results(self, _n: usize) -> Vec<HandlerResult> {
        self.into_iter()
            .map(|r| r.map(crate::handlers::HandlerOutput::into_output))
            .collect()
    }
}

/// Decodes a batch's events as `T` (an event that does not decode fails alone, permanently),
/// calls `f` with the rest, and puts each result back at its event's place.
#[doc(hidden)]
pub async fn run_batch<T, Fut, R>(
    items: Vec<BatchItem>,
    f: impl FnOnce(Vec<T>) -> Fut,
) -> Vec<HandlerResult>
where
    T: crate::handlers::HandlerInput,
    Fut: Future<Output = R>,
    R: IntoBatchResults,
{
    let mut slots: Vec<Option<HandlerResult>> = items.iter().map(|_| None).collect();
    let mut events = Vec::with_capacity(items.len());
    let mut places = Vec::with_capacity(items.len());
    for (place, item) in items.iter().enumerate() {
        match T::from_record(&item.record) {
            Ok(event) => {
                events.push(event);
                places.push(place);
            }
            Err(err) => slots[place] = Some(Err(err)),
        }
    }
    if !events.is_empty() {
        let results = f(events).await.into_batch_results(places.len());
        for (place, result) in places.into_iter().zip(results) {
            slots[place] = Some(result);
        }
    }
    slots
        .into_iter()
        .map(|slot| {
            slot.unwrap_or_else(|| {
                Err(HandlerError::retry(
                    "the batch handler returned fewer results than events",
                ))
            })
        })
        .collect()
}
