//! The authenticator seam and its request and result types.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use cloudpop_maildrop::{MaildropKey, TenantId};

use crate::secret::Secret;

/// What the client proved, as it sent it. `Debug` never prints a secret.
#[derive(Debug, Clone)]
pub enum Credential {
    /// USER/PASS, SASL PLAIN and SASL LOGIN: the cleartext password.
    Password(Secret),
    /// APOP (RFC 1939 §7): the digest the client sent, and the greeting timestamp it covers.
    Apop { challenge: String, digest: Secret },
    /// CRAM-MD5 (RFC 2195): the challenge the front-end issued and the hex digest the client sent.
    CramMd5 { challenge: String, digest: Secret },
    /// OAUTHBEARER (RFC 7628) or XOAUTH2: the bearer token.
    ///
    /// `token` is the bare token (a JWT), without the `Bearer ` prefix. Tokens of up to
    /// 64 KiB are checked; longer ones are refused as bad credentials.
    Bearer { token: Secret, scheme: BearerScheme },
}

/// Which SASL mechanism carried a bearer token. Both are checked the same way; the
/// front-end needs it only to answer in the mechanism's own failure format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BearerScheme {
    /// OAUTHBEARER (RFC 7628).
    OAuthBearer,
    /// XOAUTH2 (Google's and Microsoft's pre-standard mechanism).
    XOAuth2,
}

impl Credential {
    /// The mechanism name, for logs and metrics: `PASS` (also for SASL PLAIN and LOGIN),
    /// `APOP`, `CRAM-MD5`, `OAUTHBEARER` or `XOAUTH2`.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Credential::Password(_) => "PASS",
            Credential::Apop { .. } => "APOP",
            Credential::CramMd5 { .. } => "CRAM-MD5",
            Credential::Bearer {
                scheme: BearerScheme::OAuthBearer,
                ..
            } => "OAUTHBEARER",
            Credential::Bearer {
                scheme: BearerScheme::XOAuth2,
                ..
            } => "XOAUTH2",
        }
    }
}

/// One authentication attempt.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// The login exactly as the client sent it (validated by the authenticator). For
    /// [`Credential::Bearer`] it is the authorization identity the client named (OAUTHBEARER's
    /// gs2 `a=`, XOAUTH2's `user=`), or empty if it named none: the token then says who it is.
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
    /// Whether passwords ([`Credential::Password`]) and bearer tokens may be sent without TLS.
    /// False by default: a tenant opts in.
    pub cleartext_allowed: bool,
}

impl Default for Policy {
    /// No login delay, messages never expire, and no cleartext credentials without TLS.
    fn default() -> Self {
        Self {
            login_delay: Duration::ZERO,
            expire_days: None,
            cleartext_allowed: false,
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
    /// A password or bearer token was sent without TLS to a tenant that forbids it. Decided
    /// before the credential is checked, so it says nothing about whether it was right.
    #[error("cleartext credentials need TLS")]
    EncryptionRequired,
}

impl AuthFailure {
    /// A short, fixed name for logs and metric labels: `bad_credentials`, `login_too_soon`,
    /// `temporary_failure`, `permanent_failure` or `encryption_required`.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthFailure::BadCredentials => "bad_credentials",
            AuthFailure::LoginTooSoon => "login_too_soon",
            AuthFailure::Temporary(_) => "temporary_failure",
            AuthFailure::Permanent(_) => "permanent_failure",
            AuthFailure::EncryptionRequired => "encryption_required",
        }
    }
}

/// Recipient lookup failed for a reason other than "no such user".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("recipient lookup temporarily unavailable: {0}")]
    Temporary(String),
    /// No such user in the directory in use, but that directory may be about to change (a
    /// new version of it is settling or was refused, or it has no users at all): the
    /// recipient may exist, so the answer must not be final.
    #[error("no such user in the directory in use, which is in doubt")]
    DirectoryInDoubt,
}

/// Checks credentials and resolves recipients.
#[async_trait]
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// Verifies a credential. Comparisons of secrets are constant-time.
    async fn authenticate(&self, request: AuthRequest) -> Result<Principal, AuthFailure>;

    /// Resolves a delivery address to its maildrop; `Ok(None)` if no such user (LMTP `550`),
    /// [`LookupError::DirectoryInDoubt`] if no such user for now (LMTP `450`).
    async fn lookup_recipient(&self, address: &str) -> Result<Option<Principal>, LookupError>;

    /// Whether APOP may be offered at all (the greeting then carries a timestamp).
    fn apop_offered(&self) -> bool;

    /// Whether SASL CRAM-MD5 may be offered at all. Not offered unless an implementation
    /// says so.
    fn cram_md5_offered(&self) -> bool {
        false
    }
}
