//! Operational plumbing shared by every role: log set-up and the admin HTTP port.
//!
//! The admin port serves `/livez` (the process answers) and `/readyz` (dependencies are
//! reachable and the process is not draining). This crate knows nothing of POP3 or LMTP;
//! roles hand it a [`Readiness`] to answer with.

mod admin;
mod logging;

pub use admin::{Readiness, ReadinessCheck, serve_admin};
pub use logging::{LogFormat, LoggingError, init_logging};
