//! The abuse-protection seam.

use std::fmt::Debug;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;

use crate::slot::{ConnectionSlot, SessionSlot};
use crate::throttle::{Admission, LoginThrottle};

/// Errors of a limits backend. All are temporary.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// The backend is down, slow or failing, or (from a constructor) its configuration can
    /// never work.
    #[error("limits backend unavailable: {0}")]
    Unavailable(String),
}

/// Counters that protect the service from abusive clients, shared by every process that
/// uses the same backend.
///
/// # Clients
///
/// A client is counted by its network, not its exact address: an IPv4 address (or an
/// IPv4-mapped IPv6 address, `::ffff:a.b.c.d`) counts alone; an IPv6 address counts with
/// every address of its /64, because one subscriber usually holds a whole /64 and could
/// otherwise dodge every cap by changing address.
///
/// # User keys
///
/// A `user_key` is chosen by the caller (e.g. `"tenant/user"`) and used verbatim: two
/// strings that differ are two users. The caller keeps it bounded (the POP3 line limit
/// does) and should build it from validated ids where it has them.
///
/// # Slots
///
/// A slot counts against its cap until it is closed or its ttl passes without a refresh, so
/// slots of a process that dies are freed at their ttl at the latest. Closing is idempotent.
/// A cap of `0` admits nobody; a caller that wants no cap simply does not ask.
///
/// # Login attempts
///
/// Attempts are throttled per login (across every address) and per client network (across
/// every login), as [`crate::throttle`] describes: [`Limits::admit_login`] is asked before
/// the credential is checked, counts the attempt with both holders, and says when its turn
/// comes, or that it is refused unchecked. A right credential is reported with
/// [`Limits::record_success`]. Time is the backend's own clock (Redis's `TIME`), so pods with
/// skewed clocks agree. Backends may round durations to the millisecond (Redis does), so use
/// whole milliseconds where exact values matter.
///
/// # When the backend fails
///
/// Every call may return [`LimitsError::Unavailable`]; the backend then changed nothing the
/// caller can rely on. What to do is the caller's decision, not this trait's: a POP3
/// front-end usually fails *open* for connection and session caps (admit the client, log and
/// count the error), since refusing everyone while Redis is down hurts more than a brief
/// lack of caps, and falls back to a throttle of its own process for login attempts; for
/// LOGIN-DELAY it may choose either way.
///
/// Contract (checked by [`crate::contract::limits`]):
/// - At most `max` live slots per client network (connections) or per user (sessions);
///   `open_*` returns `Ok(None)` at the cap; `close_*` frees the slot at once.
/// - A slot not refreshed within its ttl stops counting; `refresh_*` of a live slot makes it
///   live for `ttl` from now and returns `true`; of a lapsed or closed one returns `false`
///   and does not bring it back.
/// - Each holder admits its attempts no closer together than its policy's spacing, beyond its
///   free attempts; an attempt whose turn is further out than `max_wait` is refused and
///   counted by neither holder that refused it. `record_success` forgets the login's
///   attempts and refunds one attempt of the client network, never more.
/// - `check_login_delay` admits one login per user per `delay`.
/// - Clients, users and the different counters are independent of each other.
#[async_trait]
pub trait Limits: Send + Sync + Debug {
    /// Takes one of at most `max` connection slots of `client`'s network for `ttl`;
    /// `Ok(None)` when all are taken.
    async fn open_connection(
        &self,
        client: IpAddr,
        max: u32,
        ttl: Duration,
    ) -> Result<Option<ConnectionSlot>, LimitsError>;

    /// Keeps `slot` live for `ttl` from now; `false` if it had already lapsed or been closed
    /// (it then no longer counts, and is not brought back).
    async fn refresh_connection(
        &self,
        slot: &ConnectionSlot,
        ttl: Duration,
    ) -> Result<bool, LimitsError>;

    /// Frees `slot`; closing a lapsed or closed slot does nothing.
    async fn close_connection(&self, slot: &ConnectionSlot) -> Result<(), LimitsError>;

    /// Takes one of at most `max` session slots of `user_key` for `ttl`; `Ok(None)` when all
    /// are taken.
    async fn open_session(
        &self,
        user_key: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<Option<SessionSlot>, LimitsError>;

    /// Keeps `slot` live for `ttl` from now; `false` if it had already lapsed or been closed.
    async fn refresh_session(&self, slot: &SessionSlot, ttl: Duration)
    -> Result<bool, LimitsError>;

    /// Frees `slot`; closing a lapsed or closed slot does nothing.
    async fn close_session(&self, slot: &SessionSlot) -> Result<(), LimitsError>;

    /// Asks for a turn to check one login attempt of `client` at `user_key`, before the
    /// credential is checked: counts the attempt with the login and the client network
    /// unless one of them refuses it. Both holders are asked at once; an attempt refused by
    /// one stays counted by the other (it was made).
    async fn admit_login(
        &self,
        client: IpAddr,
        user_key: &str,
        throttle: &LoginThrottle,
    ) -> Result<Admission, LimitsError>;

    /// A login attempt of `client` at `user_key` that was admitted had the right credential:
    /// forgets the login's attempts, and refunds this one attempt of the client network, so
    /// that one good password does not unlock guessing at others.
    async fn record_success(&self, client: IpAddr, user_key: &str) -> Result<(), LimitsError>;

    /// RFC 2449 LOGIN-DELAY across processes: `false` if `user_key` logged in less than
    /// `delay` ago; otherwise records a login now and returns `true`. Atomic, so of two
    /// racing logins at most one is admitted. A zero `delay` always admits and records
    /// nothing.
    async fn check_login_delay(&self, user_key: &str, delay: Duration)
    -> Result<bool, LimitsError>;

    /// Whether the backend answers; for readiness checks.
    async fn ping(&self) -> Result<(), LimitsError>;
}
