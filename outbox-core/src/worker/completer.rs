//! Batches completions: event tasks that finish together share one `Store::complete_many` call
//! (one round trip on backends that implement it), instead of one `complete` each.

use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::StoreError;
use crate::store::{Completion, Lease, Store};

type Request = (Lease, Completion, oneshot::Sender<Result<(), StoreError>>);

/// How many batches may be in flight at once (so a slow batch does not hold up the next).
const CONCURRENT_BATCHES: usize = 4;

/// The sending side, shared by a worker's event tasks; the batching task starts with the worker.
pub(crate) struct Completer {
    tx: mpsc::UnboundedSender<Request>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Request>>>,
    max_batch: usize,
}

impl Completer {
    pub(crate) fn new(max_batch: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            max_batch: max_batch.max(1),
        }
    }

    /// Starts the batching task (once; later calls do nothing). It ends when the worker is dropped.
    pub(crate) fn start(&self, store: Arc<dyn Store>) {
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(rx) = rx {
            tokio::spawn(batch_completions(store, rx, self.max_batch));
        }
    }

    /// Records one completion through the next batch.
    pub(crate) async fn complete(
        &self,
        lease: Lease,
        completion: Completion,
    ) -> Result<(), StoreError> {
        let (reply, result) = oneshot::channel();
        self.tx
            .send((lease, completion, reply))
            .map_err(|_| StoreError::unavailable("the worker's completion queue is closed"))?;
        result
            .await
            .map_err(|_| StoreError::unavailable("the completion batch was dropped"))?
    }
}

async fn batch_completions(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    max_batch: usize,
) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_BATCHES));
    while let Some(first) = rx.recv().await {
        // Wait for a free slot first: whatever arrives meanwhile joins this batch.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        // Let event tasks that are finishing right now join this batch.
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let (items, replies): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|(lease, completion, reply)| ((lease, completion), reply))
                .unzip();
            let count = items.len();
            let mut results = store.complete_many(items).await.into_iter();
            if results.len() != count {
                tracing::error!(
                    expected = count,
                    got = results.len(),
                    "Store::complete_many returned the wrong number of results"
                );
            }
            for reply in replies {
                let result = results.next().unwrap_or_else(|| {
                    Err(StoreError::unavailable(
                        "the store returned no result for this completion",
                    ))
                });
                let _ = reply.send(result);
            }
            drop(slot);
        });
    }
}
