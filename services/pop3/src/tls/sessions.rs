//! The TLS session-resumption cache, emptied whenever the certificates are reloaded.
//!
//! A resumed handshake sends no certificate: the client trusts the server on the strength of
//! the earlier, full handshake (RFC 8446 §2.2). Without emptying the cache, a client could keep
//! resuming a session authenticated by a certificate we just replaced — perhaps because its
//! key leaked. After a reload every client does a full handshake and sees the new certificate.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};

/// How many sessions are remembered (rustls' own default).
const CAPACITY: usize = 256;

/// A [`ServerSessionMemoryCache`] that can be replaced by an empty one.
pub(super) struct ResumptionCache {
    current: RwLock<Arc<ServerSessionMemoryCache>>,
}

impl ResumptionCache {
    pub(super) fn new() -> Self {
        Self {
            current: RwLock::new(ServerSessionMemoryCache::new(CAPACITY)),
        }
    }

    /// Forgets every stored session.
    pub(super) fn clear(&self) {
        // A poisoned lock still holds a whole `Arc`: the only write is this assignment.
        *self.current.write().unwrap_or_else(PoisonError::into_inner) =
            ServerSessionMemoryCache::new(CAPACITY);
    }

    fn cache(&self) -> Arc<ServerSessionMemoryCache> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl StoresServerSessions for ResumptionCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.cache().put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache().get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache().take(key)
    }

    fn can_cache(&self) -> bool {
        self.cache().can_cache()
    }
}

impl fmt::Debug for ResumptionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumptionCache")
            .field("capacity", &CAPACITY)
            .finish_non_exhaustive()
    }
}
