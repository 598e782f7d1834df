//! Abuse protection shared by every POP3 pod: how many connections one client network may
//! hold, how many sessions one user may hold, how often a login, and a client network, may
//! have a credential checked, and RFC 2449 LOGIN-DELAY.
//!
//! One seam, [`Limits`], with two implementations that pass the same contract suite
//! ([`contract::limits`]):
//!
//! - [`InProcessLimits`]: counters in this process's memory, for a single-process install.
//! - [`RedisLimits`]: counters in Redis (single node or Cluster), shared by every pod.
//!
//! This crate counts and remembers; it does not decide what happens when a backend is down
//! (callers usually fail open, see [`Limits`]), does not sleep the waits it returns, and
//! knows nothing of POP3 replies or configuration files.

pub mod contract;
mod in_process;
mod limits;
mod network;
mod redis_limits;
mod slot;
pub mod throttle;

pub use in_process::InProcessLimits;
pub use limits::{Limits, LimitsError};
pub use redis_limits::{RedisLimits, RedisLimitsConfig};
pub use slot::{ConnectionSlot, SessionSlot};
pub use throttle::{Admission, LoginThrottle, ThrottlePolicy};
