//! The maildrop lock seam: a lease per maildrop.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::ids::MaildropKey;

/// A held lease on one maildrop. The token proves ownership for renew, check and release.
///
/// `Debug` shows the token redacted, so a lease can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Lease {
    /// The locked maildrop.
    pub key: MaildropKey,
    /// Random, unguessable proof of ownership; keep it out of logs.
    pub token: String,
    /// How long the lease lives without renewal.
    pub ttl: Duration,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("token", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Errors of a lock backend. All are temporary: the caller answers `[SYS/TEMP]`.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The backend is down, slow or failing.
    #[error("lock backend unavailable: {0}")]
    Unavailable(String),
}

/// At most one holder per maildrop at any time.
///
/// Contract (checked by `contract::maildrop_lock`):
/// - `acquire` returns `Ok(None)` while another unexpired lease exists on the key.
/// - A lease not renewed within its ttl expires, and the key can be acquired again.
/// - `renew` and `check` return `Ok(false)` once the lease is lost (expired, or taken over);
///   `renew` of a live lease extends it by its ttl.
/// - `release` removes only the caller's own lease (compare-and-delete).
/// - Keys are independent.
#[async_trait]
pub trait MaildropLock: Send + Sync + std::fmt::Debug {
    /// Tries to take the lease on `key` for `ttl`. A call that fails, or is dropped before
    /// it returns, leaves no lease behind: one it may still have taken is released once the
    /// backend answers, so a caller's deadline never leaves the maildrop held.
    async fn acquire(&self, key: &MaildropKey, ttl: Duration) -> Result<Option<Lease>, LockError>;

    /// Extends a lease by its ttl if it is still held; `false` if it was lost.
    async fn renew(&self, lease: &Lease) -> Result<bool, LockError>;

    /// Whether the lease is still held (fencing check right before UPDATE).
    async fn check(&self, lease: &Lease) -> Result<bool, LockError>;

    /// Releases the lease if it is still ours; `false` if it was already lost.
    async fn release(&self, lease: &Lease) -> Result<bool, LockError>;
}

/// A shared lock is a lock (so decorators and readiness probes can hold an `Arc`).
#[async_trait]
impl<T: MaildropLock + ?Sized> MaildropLock for std::sync::Arc<T> {
    async fn acquire(&self, key: &MaildropKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        (**self).acquire(key, ttl).await
    }

    async fn renew(&self, lease: &Lease) -> Result<bool, LockError> {
        (**self).renew(lease).await
    }

    async fn check(&self, lease: &Lease) -> Result<bool, LockError> {
        (**self).check(lease).await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        (**self).release(lease).await
    }
}

/// Random bytes in a lease token: enough that no two holders ever share one.
pub(crate) const TOKEN_BYTES: usize = 16;

/// A fresh lease token: `TOKEN_BYTES` random bytes as lower-case hex.
pub(crate) fn new_token() -> Result<String, LockError> {
    use std::fmt::Write;
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| LockError::Unavailable(format!("no randomness for a lock token: {e}")))?;
    let mut token = String::with_capacity(2 * TOKEN_BYTES);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(token, "{byte:02x}");
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{MailboxId, TenantId};

    #[test]
    fn debug_output_hides_the_token() {
        let lease = Lease {
            key: MaildropKey::new(TenantId::new("acme").unwrap(), MailboxId::new("a").unwrap()),
            token: "s3cr3t-token".to_owned(),
            ttl: Duration::from_secs(1),
        };
        let shown = format!("{lease:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("acme"), "{shown}");
    }
}
