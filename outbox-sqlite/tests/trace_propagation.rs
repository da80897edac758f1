//! Trace propagation (outbox-core feature `opentelemetry`): the span that enqueues an event and
//! the worker's spans for it are one trace. The enqueuing span's context is stored as the event's
//! `traceparent`; the worker's `outbox.event` span is its child, and the handler's span is in the
//! same trace. Spans are exported to memory and compared by id.

use std::time::{Duration, Instant};

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use outbox_core::handlers::Registry;
use outbox_core::prelude::*;
use outbox_core::{EventStatus, Handler, HandlerError, NewEvent, StoreExt, Worker};
use outbox_sqlite::SqliteStore;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_spans_continue_the_enqueuing_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    // Worker tasks run on other threads: the subscriber is global.
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("outbox-test"))),
    )
    .expect("the only global subscriber of this test binary");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("trace.db"))
        .await
        .expect("a store");
    store.migrate().await.expect("migrate");

    // The "request": enqueue inside a span; its trace id is the one to find again.
    let request = tracing::info_span!("http.request");
    let (trace_id, id) = async {
        let trace_id = tracing::Span::current()
            .context()
            .span()
            .span_context()
            .trace_id();
        let event = NewEvent::new("trace.Ping", serde_json::json!({}));
        assert!(
            event
                .traceparent
                .as_deref()
                .is_some_and(|t| t.contains(&trace_id.to_string())),
            "NewEvent::new must capture the current span's trace: {:?}",
            event.traceparent
        );
        let id = store.enqueue(event).await.expect("enqueue").id;
        (trace_id, id)
    }
    .instrument(request)
    .await;
    let stored = store.get(id).await.expect("get").expect("the event");
    assert!(
        stored.traceparent.is_some(),
        "the store must keep the traceparent"
    );

    // The handler reports the trace its own span belongs to.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let handler = Handler::raw("trace.Ping", "ping", move |_record, _ctx| {
        let in_handler = tracing::Span::current()
            .context()
            .span()
            .span_context()
            .trace_id();
        let _ = seen_tx.send(in_handler);
        async { Ok::<_, HandlerError>(()) }
    });
    let worker = Worker::builder(store.clone())
        .registry(
            Registry::builder()
                .handler(handler)
                .build()
                .expect("a registry"),
        )
        .build()
        .expect("a worker")
        .start();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.get(id).await.ok().flatten().map(|r| r.status) != Some(EventStatus::Processed) {
        assert!(Instant::now() < deadline, "the event was not processed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;

    let in_handler = seen_rx.recv().expect("the handler ran");
    assert_eq!(
        in_handler, trace_id,
        "the handler's span must be in the request's trace"
    );
    let spans = exporter.get_finished_spans().expect("exported spans");
    let request_span = spans
        .iter()
        .find(|s| s.name == "http.request")
        .expect("the request span");
    let event_span = spans
        .iter()
        .find(|s| s.name == "outbox.event")
        .expect("the worker's event span");
    assert_eq!(event_span.span_context.trace_id(), trace_id);
    assert_eq!(
        event_span.parent_span_id,
        request_span.span_context.span_id(),
        "the event span's parent is the enqueuing span"
    );
    let handler_span = spans
        .iter()
        .find(|s| s.name == "outbox.handler")
        .expect("the handler span");
    assert_eq!(handler_span.span_context.trace_id(), trace_id);
}
