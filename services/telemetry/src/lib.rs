//! Operational plumbing shared by every role: logs, traces, the metrics registry's HTTP
//! exposition, and the admin HTTP port.
//!
//! - [`init`] installs the process's `tracing` subscriber: log lines to stderr (text or
//!   JSON, levels from configuration) and, when an OTLP endpoint is configured, spans
//!   exported over OTLP/gRPC by a batch exporter with a bounded queue, so a slow or absent
//!   collector never blocks or fails a session (spans are dropped instead).
//! - [`serve_admin`] serves `/livez` (the process answers), `/readyz` (dependencies are
//!   reachable and the process is not draining) and `/metrics` (the Prometheus text
//!   exposition of the [`prometheus::Registry`] it is handed).
//!
//! This crate knows nothing of POP3 or LMTP: the metric families live with the code they
//! measure (each crate has a `Metrics` type registered on the registry `main` creates), and
//! roles hand this crate a [`Readiness`] to answer with.

mod admin;
mod logging;
mod metrics;
mod traces;

pub use admin::{Readiness, ReadinessCheck, serve_admin};
pub use logging::{LogFormat, LoggingError, Telemetry, init};
pub use metrics::{ProcessMetrics, encode};
pub use traces::{TraceError, TraceSettings};
