//! Password checks for the directory: a fixed set of hashing threads, and a bounded cache of
//! passwords already verified.
//!
//! - **Hashing threads.** argon2id needs its whole memory cost (19 MiB by default) for every
//!   check. Allocated per check on the blocking pool, those buffers end up kept by the
//!   allocator of each pool thread, and a burst of logins leaves hundreds of MiB behind. Here
//!   a fixed number of threads each own one buffer, reused for every check, so the memory of
//!   hashing is `threads × memory cost`, whatever the load.
//! - **Verified cache** (like Dovecot's `auth_cache`). A correct password, once verified
//!   against a stored hash, is remembered for a while as a keyed digest of the pair (stored
//!   hash, password), so the next login of that user costs microseconds instead of an
//!   argon2id run. The cache is safe by construction:
//!   - A changed password takes effect as soon as the directory has reloaded: its stored
//!     hash (with a fresh salt) is part of the key, so old entries can never match it.
//!   - Only successes are cached; a wrong password always pays the full check.
//!   - The key is an HMAC under a random key made at start-up: the cache holds nothing that
//!     helps recover a password, in memory or in a core dump.
//!   - It is bounded by entries and by age; the oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use argon2::Block;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::oneshot;

use super::password::PasswordDigest;
use crate::secret::Secret;

/// How passwords are checked: see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordCheckSettings {
    /// Threads that run argon2id checks (at least 1). Each keeps one buffer of the hash's
    /// memory cost. Default: one per CPU.
    pub threads: usize,
    /// Verified passwords remembered at most; 0 turns the cache off.
    pub cache_entries: usize,
    /// How long a verified password is remembered.
    pub cache_ttl: Duration,
}

impl Default for PasswordCheckSettings {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cache_entries: 100_000,
            cache_ttl: Duration::from_secs(3600),
        }
    }
}

/// The password check could not run (its threads are gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("password check unavailable")]
pub(crate) struct CheckUnavailable;

/// Checks passwords against stored argon2id hashes: the cache first, then a hashing thread.
pub(crate) struct PasswordChecker {
    jobs: mpsc::Sender<Job>,
    cache: Option<VerifiedCache>,
}

struct Job {
    digest: PasswordDigest,
    password: Secret,
    reply: oneshot::Sender<bool>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PasswordChecker {
    /// Starts `settings.threads` hashing threads (at least 1). They end when the checker is
    /// dropped and the checks already queued are done.
    pub(crate) fn start(settings: &PasswordCheckSettings) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..settings.threads.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("password-check-{n}"))
                .spawn(move || hashing_thread(&queue))?;
        }
        let cache = if settings.cache_entries > 0 {
            VerifiedCache::new(settings.cache_entries, settings.cache_ttl)
        } else {
            None
        };
        Ok(Self { jobs, cache })
    }

    /// Whether `password` matches `digest`. A cache hit answers at once; otherwise the check
    /// waits for a hashing thread. If the caller stops waiting, a check still queued is
    /// skipped.
    pub(crate) async fn check(
        &self,
        digest: PasswordDigest,
        password: Secret,
    ) -> Result<bool, CheckUnavailable> {
        let key = self
            .cache
            .as_ref()
            .map(|cache| cache.key(&digest, &password));
        if let (Some(cache), Some(key)) = (&self.cache, &key)
            && cache.contains(key)
        {
            return Ok(true);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            digest,
            password,
            reply,
        };
        self.jobs.send(job).map_err(|_| CheckUnavailable)?;
        let matched = answer.await.map_err(|_| CheckUnavailable)?;
        if matched && let (Some(cache), Some(key)) = (&self.cache, key) {
            cache.insert(key);
        }
        Ok(matched)
    }
}

/// Runs queued checks with one reused argon2 buffer until the checker is dropped.
fn hashing_thread(queue: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        // The guard is dropped at the end of the statement: other threads take the next job
        // while this one hashes.
        let next = lock(queue).recv();
        let Ok(job) = next else { return };
        if job.reply.is_closed() {
            continue;
        }
        let matched = job.digest.verify_with(job.password.expose(), &mut memory);
        let _ = job.reply.send(matched);
    }
}

/// A keyed digest of (stored hash, password).
type CacheKey = [u8; 32];

/// Verified (stored hash, password) pairs, by keyed digest, oldest first out.
struct VerifiedCache {
    hmac: Hmac<Sha256>,
    entries: usize,
    ttl: Duration,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// When each key was verified.
    verified: HashMap<CacheKey, Instant>,
    /// Keys in the order they were verified; a key verified again is queued again, and
    /// its older queue entry no longer matches `verified` when it comes out.
    order: VecDeque<(CacheKey, Instant)>,
}

impl VerifiedCache {
    /// A cache under a fresh random key; `None` (no cache) if the system has no randomness
    /// to give, since a guessable key would make entries testable offline.
    fn new(entries: usize, ttl: Duration) -> Option<Self> {
        let mut key = [0u8; 64];
        if let Err(error) = getrandom::fill(&mut key) {
            tracing::warn!(%error, "no system randomness: passwords are not cached");
            return None;
        }
        Some(Self {
            hmac: Hmac::new(&key.into()),
            entries,
            ttl,
            state: Mutex::new(CacheState::default()),
        })
    }

    fn key(&self, digest: &PasswordDigest, password: &Secret) -> CacheKey {
        let mut mac = self.hmac.clone();
        mac.update(digest.as_phc().as_bytes());
        // A separator that a PHC string never contains, so the pair is unambiguous.
        mac.update(&[0]);
        mac.update(password.expose());
        mac.finalize().into_bytes().into()
    }

    fn contains(&self, key: &CacheKey) -> bool {
        self.contains_at(key, Instant::now())
    }

    /// Whether `key` was verified less than the ttl before `now`.
    fn contains_at(&self, key: &CacheKey, now: Instant) -> bool {
        let state = lock(&self.state);
        state
            .verified
            .get(key)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.ttl)
    }

    fn insert(&self, key: CacheKey) {
        self.insert_at(key, Instant::now());
    }

    /// Records `key` as verified at `now`, dropping what expired or overflows first.
    fn insert_at(&self, key: CacheKey, now: Instant) {
        let mut state = lock(&self.state);
        while let Some(&(_, at)) = state.order.front()
            && (now.duration_since(at) >= self.ttl || state.order.len() >= self.entries)
        {
            state.evict_oldest();
        }
        state.verified.insert(key, now);
        state.order.push_back((key, now));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.state).verified.len()
    }
}

impl CacheState {
    fn evict_oldest(&mut self) {
        if let Some((key, at)) = self.order.pop_front()
            && self.verified.get(&key) == Some(&at)
        {
            self.verified.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use super::*;

    static DIGEST: LazyLock<PasswordDigest> =
        LazyLock::new(|| PasswordDigest::hash(b"wonderland").unwrap());

    fn settings(cache_entries: usize, cache_ttl: Duration) -> PasswordCheckSettings {
        PasswordCheckSettings {
            threads: 2,
            cache_entries,
            cache_ttl,
        }
    }

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes())
    }

    #[tokio::test]
    async fn checks_right_and_wrong_passwords_and_caches_only_successes() {
        let checker = PasswordChecker::start(&settings(10, Duration::from_secs(60))).unwrap();
        let cache = checker.cache.as_ref().unwrap();
        assert!(
            !checker
                .check(DIGEST.clone(), secret("wrong"))
                .await
                .unwrap()
        );
        assert_eq!(cache.len(), 0);
        assert!(
            checker
                .check(DIGEST.clone(), secret("wonderland"))
                .await
                .unwrap()
        );
        assert_eq!(cache.len(), 1);
        assert!(cache.contains(&cache.key(&DIGEST, &secret("wonderland"))));
        assert!(!cache.contains(&cache.key(&DIGEST, &secret("wonderlanD"))));
        // Still refused, and still not cached, after the right password was cached.
        assert!(
            !checker
                .check(DIGEST.clone(), secret("wrong"))
                .await
                .unwrap()
        );
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn a_new_stored_hash_of_the_same_password_misses_the_cache() {
        let checker = PasswordChecker::start(&settings(10, Duration::from_secs(60))).unwrap();
        let cache = checker.cache.as_ref().unwrap();
        assert!(
            checker
                .check(DIGEST.clone(), secret("wonderland"))
                .await
                .unwrap()
        );
        let rehashed = PasswordDigest::hash(b"wonderland").unwrap();
        assert!(!cache.contains(&cache.key(&rehashed, &secret("wonderland"))));
        let changed = PasswordDigest::hash(b"looking-glass").unwrap();
        assert!(
            !checker
                .check(changed.clone(), secret("wonderland"))
                .await
                .unwrap()
        );
        assert!(
            checker
                .check(changed, secret("looking-glass"))
                .await
                .unwrap()
        );
    }

    #[test]
    fn the_cache_is_bounded_oldest_first() {
        let cache = VerifiedCache::new(3, Duration::from_secs(60)).unwrap();
        let keys: Vec<CacheKey> = (0..5u8).map(|n| [n; 32]).collect();
        for key in &keys {
            cache.insert(*key);
        }
        assert_eq!(cache.len(), 3);
        assert!(!cache.contains(&keys[0]));
        assert!(!cache.contains(&keys[1]));
        assert!(keys[2..].iter().all(|key| cache.contains(key)));
        // Verified again: queued again, and not evicted by its own older queue entry.
        cache.insert(keys[2]);
        cache.insert([9; 32]);
        assert!(cache.contains(&keys[2]));
        assert!(cache.len() <= 3);
    }

    #[test]
    fn entries_expire_exactly_at_their_ttl() {
        let ttl = Duration::from_millis(500);
        let cache = VerifiedCache::new(10, ttl).unwrap();
        let verified = Instant::now();
        cache.insert_at([1; 32], verified);
        assert!(cache.contains_at(&[1; 32], verified));
        assert!(cache.contains_at(&[1; 32], verified + ttl - Duration::from_millis(1)));
        assert!(!cache.contains_at(&[1; 32], verified + ttl));
        cache.insert_at([2; 32], verified + ttl);
        assert_eq!(cache.len(), 1, "the expired entry is dropped on insert");
    }

    #[tokio::test]
    async fn without_a_cache_every_check_hashes() {
        let checker = PasswordChecker::start(&settings(0, Duration::from_secs(60))).unwrap();
        assert!(checker.cache.is_none());
        assert!(
            checker
                .check(DIGEST.clone(), secret("wonderland"))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn concurrent_checks_all_get_their_own_answer() {
        let checker = Arc::new(PasswordChecker::start(&settings(0, Duration::ZERO)).unwrap());
        let checks = (0..6).map(|n| {
            let checker = Arc::clone(&checker);
            let password = if n % 2 == 0 { "wonderland" } else { "nope" };
            tokio::spawn(async move { checker.check(DIGEST.clone(), secret(password)).await })
        });
        let mut answers = Vec::new();
        for check in checks {
            answers.push(check.await.unwrap().unwrap());
        }
        assert_eq!(answers, [true, false, true, false, true, false]);
    }
}
