//! The LMTP delivery endpoint (RFC 2033): how mail gets into maildrops.
//!
//! An MTA (Postfix, Exim, …) connects, names a sender and recipients, and sends one
//! message. Each recipient is resolved through the [`Authenticator`] seam; the message is
//! stored once per recipient maildrop through the [`MessageStore`] seam, and each recipient
//! gets its own reply, `250` only once the store has acknowledged the message. Line endings
//! are normalised to CRLF and `Return-Path:` and `Received:` header fields are added.
//!
//! Every session ends with one log line (outcome, duration, counts, bytes) and every
//! recipient's delivery with one more; [`LmtpMetrics`] counts the same events.
//!
//! Layers: [`codec`] (bytes ↔ commands, message data and replies; no I/O), [`session`]
//! (the state machine; handlers return replies), [`server`] (the accept loop and one task
//! per connection), [`memory_budget`] (the octets all connections may hold), [`config`].
//!
//! Not here: TLS and authentication of the client (RFC 2033 §1: LMTP is used only by prior
//! arrangement, here on a trusted network), the SMTP extensions not advertised in the LHLO reply (CHUNKING, DSN,
//! SMTPUTF8, …), queueing and retries (the client's job), and a disk spool: the message
//! is held in memory, bounded by `max_message_size` per connection and by
//! `max_in_flight_bytes` for all connections together ([`MemoryBudget`]).
//!
//! [`Authenticator`]: cloudpop_auth::Authenticator
//! [`MessageStore`]: cloudpop_maildrop::MessageStore

use std::sync::Arc;

use cloudpop_auth::Authenticator;
use cloudpop_maildrop::MessageStore;

pub mod codec;
pub mod config;
mod date;
mod incoming;
pub mod memory_budget;
mod metrics;
pub mod server;
pub mod session;
mod trace_fields;

pub use config::{ConfigError, LmtpConfig};
pub use memory_budget::MemoryBudget;
pub use metrics::LmtpMetrics;
pub use server::run;

/// What the endpoint needs: who the recipients are, where messages go, and its settings.
#[derive(Debug, Clone)]
pub struct LmtpDeps {
    /// Resolves `RCPT TO` addresses to maildrops.
    pub authenticator: Arc<dyn Authenticator>,
    /// Stores each message durably before it is acknowledged.
    pub store: Arc<dyn MessageStore>,
    pub config: LmtpConfig,
    /// Where sessions, recipients and deliveries are counted.
    pub metrics: LmtpMetrics,
}
