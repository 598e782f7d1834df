//! The authenticator seam and its request and result types.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use cloudpop_maildrop::{MaildropKey, TenantId};

use crate::secret::Secret;

/// What the client proved, as it sent it.
#[derive(Debug, Clone)]
pub enum Credential {
    /// USER/PASS (and later SASL PLAIN/LOGIN): the cleartext password.
    Password(Secret),
    /// APOP (RFC 1939 §7): the digest the client sent, and the greeting timestamp it covers.
    Apop { challenge: String, digest: Secret },
}

impl Credential {
    /// The mechanism name, for logs and metrics.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Credential::Password(_) => "PASS",
            Credential::Apop { .. } => "APOP",
        }
    }
}

/// One authentication attempt.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// The login exactly as the client sent it (validated by the authenticator).
    pub login: String,
    pub credential: Credential,
    pub client_addr: Option<SocketAddr>,
    pub local_addr: Option<SocketAddr>,
    pub tls: bool,
}

/// A tenant's policy, returned with the principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Minimum time between two logins of the same user (RFC 2449 LOGIN-DELAY); zero is none.
    pub login_delay: Duration,
    /// Days a message may stay on the server after retrieval (RFC 2449 EXPIRE); `None` is NEVER.
    pub expire_days: Option<u32>,
    /// Whether USER/PASS may be used without TLS.
    pub cleartext_allowed: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            login_delay: Duration::ZERO,
            expire_days: None,
            cleartext_allowed: true,
        }
    }
}

/// Who logged in: the only thing the front-end learns from a successful authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    /// Opaque user id.
    pub user: String,
    /// The canonical login (lower-cased domain), for logs and greetings.
    pub login: String,
    /// The maildrop this principal reads.
    pub maildrop: MaildropKey,
    pub policy: Policy,
}

/// Why authentication did not succeed. Maps to POP3 response codes in the POP3 crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// Wrong login or credential (`[AUTH]`). Deliberately says nothing about which.
    #[error("authentication failed")]
    BadCredentials,
    /// The user must wait before logging in again (`[LOGIN-DELAY]`).
    #[error("login too soon")]
    LoginTooSoon,
    /// A dependency is down or slow (`[SYS/TEMP]`); never reported as bad credentials.
    #[error("authentication temporarily unavailable: {0}")]
    Temporary(String),
    /// The account cannot be used, e.g. disabled (`[SYS/PERM]`).
    #[error("account unavailable: {0}")]
    Permanent(String),
}

/// Recipient lookup failed for a reason other than "no such user".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("recipient lookup temporarily unavailable: {0}")]
    Temporary(String),
}

/// Checks credentials and resolves recipients.
#[async_trait]
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// Verifies a credential. Comparisons of secrets are constant-time.
    async fn authenticate(&self, request: AuthRequest) -> Result<Principal, AuthFailure>;

    /// Resolves a delivery address to its maildrop; `Ok(None)` if no such user (LMTP `550`).
    async fn lookup_recipient(&self, address: &str) -> Result<Option<Principal>, LookupError>;

    /// Whether APOP may be offered at all (the greeting then carries a timestamp).
    fn apop_offered(&self) -> bool;
}
