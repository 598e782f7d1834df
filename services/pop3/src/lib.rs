//! The POP3 front-end (RFC 1939, with RFC 1957, 2449 and 3206).
//!
//! Layers, from the wire inwards:
//! - [`codec`]: bytes to [`Command`]s and [`Response`]s to bytes. No I/O; bounded lines.
//! - [`stuffing`]: dot-stuffing of streamed message bodies, with TOP's line limit. No I/O.
//! - [`session`]: the RFC 1939 state machine. Handlers return [`Reply`] values and never
//!   touch the socket.
//! - [`connection`] and [`server`]: the read → decode → handle → encode → write loop, the
//!   listener, timeouts and the connection cap, under which `admission` sheds idle
//!   connections that have not logged in.
//! - [`tls`]: certificates, SNI selection and hot reload for STLS and implicit TLS.
//! - [`Pop3Metrics`]: the Prometheus families the listener, connections and sessions
//!   update; passed in with the other dependencies. Each session runs in a `pop3_session`
//!   span with one `pop3_command` child span per command.
//!
//! This crate does not check credentials (it asks an [`cloudpop_auth::Authenticator`]) and does
//! not know where messages live (it asks a [`cloudpop_maildrop::MessageStore`]).

mod admission;
pub mod capabilities;
pub mod codec;
mod config;
mod connection;
mod login_gate;
mod metrics;
pub mod proxy_protocol;
pub mod reply;
pub mod sasl;
pub mod server;
pub mod session;
pub mod stuffing;
pub mod tls;

pub use codec::{Command, Decoder, MessageNumber, ProtocolError};
pub use config::{ExpirePolicy, Pop3Config};
pub use metrics::Pop3Metrics;
pub use reply::{Reply, RespCode, Response};
pub use server::{Pop3Deps, Pop3Listeners, run};
