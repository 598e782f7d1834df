//! The in-process maildrop lock: leases in a map, for a single-process install.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::ids::MaildropKey;
use crate::lock::{Lease, LockError, MaildropLock, new_token};

/// Leases held in this process's memory, with the same contract as the Redis lock.
///
/// Only correct when every session serving these maildrops runs in this process. Expiry is
/// measured on Tokio's clock, so tests may pause and advance time. An expired lease is
/// treated exactly like an absent one; it is dropped from the map lazily, when its key is
/// next touched.
#[derive(Debug, Default)]
pub struct InProcessLock {
    leases: Mutex<HashMap<MaildropKey, Held>>,
}

#[derive(Debug)]
struct Held {
    token: String,
    expires_at: Instant,
}

impl Held {
    fn is_live(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

impl InProcessLock {
    /// A lock with no leases held.
    pub fn new() -> Self {
        Self::default()
    }

    fn leases(&self) -> MutexGuard<'_, HashMap<MaildropKey, Held>> {
        // Every critical section is a single insert, update or remove that cannot panic
        // halfway, so the map is consistent even if a holder panicked.
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the map and tells whether `lease` is the live holder of its key; callers act
    /// under the same guard, so nobody can take the key over in between.
    fn owned(&self, lease: &Lease) -> (MutexGuard<'_, HashMap<MaildropKey, Held>>, bool) {
        let now = Instant::now();
        let mut leases = self.leases();
        let owned = match leases.get(&lease.key) {
            Some(held) if held.is_live(now) => held.token == lease.token,
            Some(_) => {
                // Expired, whoever held it: the key is free, as if Redis had evicted it.
                leases.remove(&lease.key);
                false
            }
            None => false,
        };
        (leases, owned)
    }
}

#[async_trait]
impl MaildropLock for InProcessLock {
    async fn acquire(&self, key: &MaildropKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let token = new_token()?;
        let now = Instant::now();
        let mut leases = self.leases();
        if leases.get(key).is_some_and(|held| held.is_live(now)) {
            return Ok(None);
        }
        leases.insert(
            key.clone(),
            Held {
                token: token.clone(),
                expires_at: expiry(now, ttl),
            },
        );
        Ok(Some(Lease {
            key: key.clone(),
            token,
            ttl,
        }))
    }

    async fn renew(&self, lease: &Lease) -> Result<bool, LockError> {
        let (mut leases, owned) = self.owned(lease);
        if owned && let Some(held) = leases.get_mut(&lease.key) {
            held.expires_at = expiry(Instant::now(), lease.ttl);
            return Ok(true);
        }
        Ok(false)
    }

    async fn check(&self, lease: &Lease) -> Result<bool, LockError> {
        Ok(self.owned(lease).1)
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let (mut leases, owned) = self.owned(lease);
        if owned {
            leases.remove(&lease.key);
        }
        Ok(owned)
    }
}

fn expiry(now: Instant, ttl: Duration) -> Instant {
    // A ttl too large for the clock means "practically forever"; adding it would panic.
    const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(ttl)
        .or_else(|| now.checked_add(FOREVER))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{MailboxId, TenantId};

    fn key(mailbox: &str) -> MaildropKey {
        MaildropKey::new(
            TenantId::new("acme").unwrap(),
            MailboxId::new(mailbox).unwrap(),
        )
    }

    const TTL: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_lease_expires_exactly_at_its_ttl() {
        let lock = InProcessLock::new();
        let old = lock.acquire(&key("a"), TTL).await.unwrap().unwrap();
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert!(lock.check(&old).await.unwrap());
        assert!(lock.acquire(&key("a"), TTL).await.unwrap().is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!lock.check(&old).await.unwrap());
        assert!(!lock.renew(&old).await.unwrap());
        assert!(!lock.release(&old).await.unwrap());
        assert!(lock.acquire(&key("a"), TTL).await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn renew_extends_by_the_ttl_from_now() {
        let lock = InProcessLock::new();
        let lease = lock.acquire(&key("a"), TTL).await.unwrap().unwrap();
        tokio::time::advance(TTL / 2).await;
        assert!(lock.renew(&lease).await.unwrap());
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert!(lock.check(&lease).await.unwrap());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!lock.check(&lease).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_lease_cannot_touch_the_new_holder() {
        let lock = InProcessLock::new();
        let stale = lock.acquire(&key("a"), TTL).await.unwrap().unwrap();
        tokio::time::advance(TTL).await;
        let current = lock.acquire(&key("a"), TTL).await.unwrap().unwrap();
        assert_ne!(stale.token, current.token);
        assert!(!lock.renew(&stale).await.unwrap());
        assert!(!lock.release(&stale).await.unwrap());
        assert!(lock.check(&current).await.unwrap());
        assert!(lock.release(&current).await.unwrap());
        assert!(lock.leases().is_empty(), "released lease left in the map");
    }

    #[tokio::test]
    async fn tokens_are_random_hex() {
        let lock = InProcessLock::new();
        let a = lock.acquire(&key("a"), TTL).await.unwrap().unwrap();
        let b = lock.acquire(&key("b"), TTL).await.unwrap().unwrap();
        for token in [&a.token, &b.token] {
            assert_eq!(token.len(), 2 * crate::lock::TOKEN_BYTES);
            assert!(
                token
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
        assert_ne!(a.token, b.token);
    }

    #[tokio::test]
    async fn a_huge_ttl_does_not_panic() {
        let lock = InProcessLock::new();
        let lease = lock
            .acquire(&key("a"), Duration::MAX)
            .await
            .unwrap()
            .unwrap();
        assert!(lock.renew(&lease).await.unwrap());
    }
}
