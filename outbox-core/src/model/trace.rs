//! Trace propagation (feature `opentelemetry`): the enqueuing span's OpenTelemetry context is
//! stored with the event as a W3C `traceparent`, and becomes the parent of the worker's
//! `outbox.event` span, so a handler's spans belong to the trace of the request that enqueued
//! the event. Needs a `tracing-opentelemetry` layer in the application's subscriber; without one
//! (or without the feature) nothing is stored and nothing is parented.

/// The `traceparent` of the current `tracing` span's OpenTelemetry context, when it has a valid
/// one.
#[cfg(feature = "opentelemetry")]
pub(crate) fn current_traceparent() -> Option<String> {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Without the feature nothing is captured.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) fn current_traceparent() -> Option<String> {
    None
}

/// Makes `span` a child of the remote context `traceparent` names; an invalid value is ignored
/// (the span starts its own trace).
#[cfg(feature = "opentelemetry")]
pub(crate) fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Without the feature spans are not parented.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let _ = (span, traceparent);
}
