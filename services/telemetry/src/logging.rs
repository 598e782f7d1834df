//! The process's `tracing` subscriber: structured logs to stderr (human-readable by
//! default, JSON for containers) and, when configured, spans exported over OTLP.

use std::time::Duration;

use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::traces::{self, TraceError, TraceSettings, Tracing};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// The subscriber could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `log.level` is not a valid filter.
    #[error("invalid log level {level:?}: {reason}")]
    Level { level: String, reason: String },
    /// The trace exporter could not be built from its settings.
    #[error(transparent)]
    Traces(#[from] TraceError),
}

/// What [`init`] installed; keep it until the process ends and call
/// [`Telemetry::shutdown`] so the last spans are exported.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracing: Option<Tracing>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exports_traces(&self) -> bool {
        self.tracing.is_some()
    }

    /// Exports the spans still queued and stops the exporter, waiting at most `within`
    /// (an unreachable collector must not hold the process past its shutdown deadline).
    pub async fn shutdown(self, within: Duration) {
        if let Some(tracing) = self.tracing {
            tracing.shutdown(within).await;
        }
    }
}

/// Installs the global subscriber: log lines at `level` (an `EnvFilter` directive such as
/// `info` or `info,cloudpop_pop3=debug`) in `format`, and, if `traces` is given, an OTLP
/// span exporter. With traces on, this must run inside a Tokio runtime (the gRPC exporter
/// lives on it).
///
/// The two outputs are filtered separately: the log level does not decide which spans are
/// exported (every `info` span of cloudpop's own crates is), so `log.level = "warn"` keeps
/// traces whole.
pub fn init(
    level: &str,
    format: LogFormat,
    traces: Option<&TraceSettings>,
) -> Result<Telemetry, LoggingError> {
    let filter = EnvFilter::try_new(level).map_err(|e| LoggingError::Level {
        level: level.to_owned(),
        reason: e.to_string(),
    })?;
    // Colours only for a person at a terminal, never into files and log collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    }
    .with_filter(filter);
    let tracing = traces.map(traces::start).transpose()?;
    let spans = tracing.as_ref().map(|t| {
        // Our own spans only: dependencies' spans (HTTP/2 frames, S3 SDK internals) would
        // flood the trace without saying anything about a session.
        let ours = Targets::new()
            .with_target("cloudpop", LevelFilter::INFO)
            .with_default(LevelFilter::OFF);
        t.layer().with_filter(ours)
    });
    // A second initialisation (tests) is not an error worth failing over.
    let _ = Registry::default().with(logs).with(spans).try_init();
    Ok(Telemetry { tracing })
}
