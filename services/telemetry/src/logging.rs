//! Structured logs to stderr: human-readable by default, JSON for containers.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// The log filter could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid log level {level:?}: {reason}")]
pub struct LoggingError {
    level: String,
    reason: String,
}

/// Installs the global subscriber. `level` is an `EnvFilter` directive such as `info` or
/// `cloudpop_pop3=debug,info`.
pub fn init_logging(level: &str, format: LogFormat) -> Result<(), LoggingError> {
    let filter = EnvFilter::try_new(level).map_err(|e| LoggingError {
        level: level.to_owned(),
        reason: e.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is not an error worth failing over.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}
