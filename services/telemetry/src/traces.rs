//! Spans exported over OTLP/gRPC: off unless an endpoint is configured.
//!
//! Export never blocks a session: finished spans go into a bounded queue that a background
//! thread drains in batches; when the queue is full spans are dropped, and each export
//! attempt is bounded by a timeout. Sampling is parent-based, so a trace started by a
//! caller (the POP3 front-end, for the auth service) is kept or dropped as a whole.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use tracing_subscriber::registry::LookupSpan;

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// The OTLP/gRPC endpoint of a collector, `http://host:4317`.
    pub endpoint: String,
    /// Share of new traces kept, 0.0 to 1.0. Traces continued from a caller follow the
    /// caller's decision.
    pub sampling_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Further resource attributes (`deployment.environment`, `k8s.pod.name`, …).
    pub resource_attributes: Vec<(String, String)>,
    /// Longest time one export may take before it is abandoned.
    pub export_timeout: Duration,
    /// How often queued spans are sent.
    pub export_interval: Duration,
    /// Finished spans kept while waiting for export; more are dropped.
    pub max_queue_size: usize,
}

/// The trace exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces to {endpoint:?}: {reason}")]
pub struct TraceError {
    endpoint: String,
    reason: String,
}

/// A running exporter.
#[derive(Debug)]
pub(crate) struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// Builds the exporter and its batch processor. Must run inside a Tokio runtime.
pub(crate) fn start(settings: &TraceSettings) -> Result<Tracing, TraceError> {
    let error = |reason: String| TraceError {
        endpoint: settings.endpoint.clone(),
        reason,
    };
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(settings.endpoint.clone())
        .with_timeout(settings.export_timeout)
        .build()
        .map_err(|e| error(e.to_string()))?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(settings.max_queue_size)
        .with_scheduled_delay(settings.export_interval)
        .build();
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes(
            settings
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::new(exporter, batch))
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sampling_ratio,
        ))))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("cloudpop");
    Ok(Tracing { provider, tracer })
}

impl Tracing {
    /// The `tracing` layer that turns spans into OpenTelemetry spans.
    pub(crate) fn layer<S>(&self) -> tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.tracer.clone())
    }

    /// Flushes and stops the exporter, giving up after `within`.
    pub(crate) async fn shutdown(self, within: Duration) {
        let provider = self.provider;
        // The SDK blocks its caller while the export thread drains the queue.
        let stop = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(within));
        match tokio::time::timeout(within + Duration::from_millis(100), stop).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "trace exporter did not shut down cleanly")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "trace exporter shutdown failed"),
            Err(_) => tracing::warn!("trace exporter shutdown timed out; queued spans dropped"),
        }
    }
}
