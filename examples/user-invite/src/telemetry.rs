//! Logs and traces: `RUST_LOG`-filtered logs on stderr, and OpenTelemetry traces exported as
//! `OTEL_TRACES_EXPORTER` says: `none` (the default), `stdout` (or `console`: spans printed to
//! standard output) or `otlp` (OTLP over HTTP to `OTEL_EXPORTER_OTLP_ENDPOINT`, default
//! `http://localhost:4318`). The request's W3C `traceparent` header becomes the parent of its
//! span; outbox stores it with the event and the worker's spans continue that trace.

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber; returns the tracer provider to flush at exit, if traces are
/// exported.
pub(crate) fn init() -> Result<Option<SdkTracerProvider>, String> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let exporter = std::env::var("OTEL_TRACES_EXPORTER").unwrap_or_default();
    let provider = match exporter.as_str() {
        "" | "none" => None,
        "stdout" | "console" => Some(
            SdkTracerProvider::builder()
                .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
                .build(),
        ),
        "otlp" => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .map_err(|e| format!("OTLP exporter: {e}"))?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .build(),
            )
        }
        other => {
            return Err(format!(
                "OTEL_TRACES_EXPORTER={other:?}: expected none, stdout or otlp"
            ));
        }
    };
    let otel = provider.as_ref().map(|p| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_opentelemetry::layer().with_tracer(p.tracer("user-invite"))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(otel)
        .try_init()
        .map_err(|e| format!("installing the log subscriber failed: {e}"))?;
    Ok(provider)
}

/// Reads propagation headers (`traceparent`, `tracestate`) from an HTTP request.
pub(crate) struct HeaderExtractor<'a>(pub(crate) &'a axum::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}
