//! Redis connections shared by the Redis implementations of cloudpop's seams (the maildrop
//! lock in `cloudpop-maildrop`, the abuse counters in `cloudpop-limits`).
//!
//! - [`RedisConfig`]: where Redis is (a single node, or the seed nodes of a Cluster), the
//!   key prefix, and the time one call may take; its `Debug` never shows a password.
//! - [`Reconnecting`]: a connection dialed on first use and replaced after it breaks.
//!
//! This crate knows no keys or scripts of its users, and does not retry commands.

mod config;
mod connection;

pub use config::RedisConfig;
pub use connection::{Connection, Reconnecting};
