//! W3C trace context (`traceparent`, `tracestate`) across the gRPC hop: the front-end puts
//! the context of its current span into the request metadata, and the auth service makes
//! it the parent of its own span, so both sides' spans are one trace.
//!
//! Without trace export configured, spans carry no OpenTelemetry context: nothing is
//! injected, and an incoming context is ignored.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Inject<'a>(&'a mut MetadataMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct Extract<'a>(&'a MetadataMap);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Writes the context of the current `tracing` span into `metadata`.
pub(crate) fn inject_current(metadata: &mut MetadataMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut Inject(metadata));
}

/// Makes the caller's span, named in `metadata`, the parent of `span`. A request without
/// (valid) trace context leaves `span` the root of a new trace.
pub(crate) fn continue_from(metadata: &MetadataMap, span: &tracing::Span) {
    let parent = TraceContextPropagator::new().extract(&Extract(metadata));
    use opentelemetry::trace::TraceContextExt as _;
    if parent.span().span_context().is_valid() {
        // Fails only when trace export is off (no OpenTelemetry layer): nothing to join.
        let _ = span.set_parent(parent);
    }
}
