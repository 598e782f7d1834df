//! The Redis maildrop lock: one lease key per maildrop, on a single Redis node or a Redis
//! Cluster, shared by every pod that serves POP3.
//!
//! - acquire: `SET key token NX PX ttl` with a fresh random token.
//! - renew: compare-and-extend, release: compare-and-delete, both as Lua scripts so the
//!   token comparison and the change happen atomically inside Redis (`EVALSHA`, falling back
//!   to `SCRIPT LOAD` when Redis answers `NOSCRIPT`, e.g. after a restart).
//! - check: `GET` and compare.
//!
//! Keys are `{prefix}:lock:{<tenant>/<mailbox>}`; the braces are a Redis Cluster hash tag, so
//! every key of one maildrop hashes to the same slot, whatever is added later.
//!
//! The connection is lazy: [`RedisLock::connect`] dials nothing, so a pod starts while Redis
//! is down and reports it through [`RedisLock::ping`] (readiness). Every call is bounded by
//! [`RedisLockConfig::command_timeout`]; a failing or slow call returns
//! [`LockError::Unavailable`] and drops the connection, and the next call dials a new one
//! (see `connection` for why that call is not retried at once).
//!
//! An `acquire` whose outcome is unknown is not retried either; its lease is released in
//! the background instead (see [`RedisLock`]), so that a `SET` Redis applies late leaves no
//! maildrop `[IN-USE]` for a whole lease.
//!
//! This module does not decide what a lost lease means for a session; the caller does.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{RedisResult, Script, Value, cmd};
use tracing::debug;

/// How to reach Redis: shared with every Redis-backed seam.
pub use cloudpop_redis::RedisConfig as RedisLockConfig;
use cloudpop_redis::{Connection, Reconnecting};

use crate::ids::MaildropKey;
use crate::instrumented::StorageMetrics;
use crate::lock::{Lease, LockError, MaildropLock, new_token};
use crate::orphan_cleanup::{OrphanCleanup, OrphanCleanupCounts, Timing, Undo};

/// Longest ttl sent to Redis: a larger `PX` overflows Redis's clock and is refused, and a
/// century is "practically forever" for a lease.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Compare-and-extend: `PEXPIRE` only if the key still holds the caller's token.
const RENEW_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Compare-and-delete: `DEL` only if the key still holds the caller's token.
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
";

/// Maildrop leases in Redis (single node or Cluster), with the [`MaildropLock`] contract.
///
/// Cheap to share behind an `Arc`; all calls may run concurrently over one multiplexed
/// connection. A lease survives a Redis restart only if Redis persists its data; a restart
/// without persistence makes every lease read as lost (`renew`/`check` return `false`),
/// which ends those sessions without UPDATE — safe, never a second holder.
///
/// An `acquire` that fails after its `SET` may have been sent (a timeout, a broken
/// connection, or the caller dropping the call) may still be applied by Redis later, for
/// example when a frozen Redis resumes and reads the old connection's buffer. That lease
/// would block the maildrop for its whole ttl with nobody holding it. Its token is known,
/// so it is released in the background by compare-and-delete as soon as Redis answers,
/// and once more a command timeout later (see `orphan_cleanup`); callers only see the
/// error. The release can never remove a lease anybody holds: the token was never handed
/// out.
pub struct RedisLock {
    shared: Arc<Shared>,
    orphans: OrphanCleanup<Shared>,
}

/// What every call and the background release of orphan leases need.
struct Shared {
    connection: Reconnecting,
    key_prefix: String,
    command_timeout: Duration,
    renew_script: Script,
    release_script: Script,
}

/// A lease that an `acquire` with an unknown outcome may have left in Redis.
pub(crate) struct OrphanLease {
    redis_key: String,
    token: String,
}

impl fmt::Display for OrphanLease {
    // The token stays out of logs, like a held lease's.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redis_key)
    }
}

impl fmt::Debug for RedisLock {
    // The scripts are left out: their source is long and says nothing about this instance.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLock")
            .field("connection", &self.shared.connection)
            .field("key_prefix", &self.shared.key_prefix)
            .field("command_timeout", &self.shared.command_timeout)
            .field("orphans", &self.orphans)
            .finish_non_exhaustive()
    }
}

impl RedisLock {
    /// Validates `config` and builds the lock without dialing Redis.
    ///
    /// Succeeds while Redis is down: the first call that needs Redis dials it, and until it
    /// answers each call (and [`RedisLock::ping`]) returns [`LockError::Unavailable`]. Fails
    /// only for a configuration that can never work (no URL, an unparsable URL, several URLs
    /// without `cluster`, a key prefix with `{`/`}`, a zero timeout).
    pub async fn connect(config: RedisLockConfig) -> Result<Self, LockError> {
        config
            .validate()
            .map_err(|why| LockError::Unavailable(format!("invalid Redis lock config: {why}")))?;
        let connection = Reconnecting::new(&config).map_err(|e| {
            LockError::Unavailable(format!("invalid Redis lock config: bad Redis URL: {e}"))
        })?;
        debug!(config = ?config, "redis lock configured; connecting on first use");
        let shared = Arc::new(Shared {
            connection,
            key_prefix: config.key_prefix,
            command_timeout: config.command_timeout,
            renew_script: Script::new(RENEW_LUA),
            release_script: Script::new(RELEASE_LUA),
        });
        Ok(Self {
            orphans: OrphanCleanup::new(shared.clone(), "lock_lease"),
            shared,
        })
    }

    /// Whether Redis answers (every primary, on a Cluster) within the command timeout; for
    /// readiness checks.
    pub async fn ping(&self) -> Result<(), LockError> {
        self.shared
            .run("ping", None, |mut conn| async move {
                cmd("PING").query_async::<Value>(&mut conn).await
            })
            .await?;
        debug!(op = "ping", outcome = "ok", "redis lock");
        Ok(())
    }

    /// Counts the background releases of orphan leases in `metrics`
    /// (`cloudpop_orphan_cleanups_total{kind="lock_lease"}`).
    pub fn count_orphan_cleanups(&self, metrics: &StorageMetrics) {
        self.orphans.count_in(metrics.orphan_cleanups());
    }

    /// How many orphan leases were scheduled for release so far, and how that ended.
    pub fn orphan_cleanups(&self) -> OrphanCleanupCounts {
        self.orphans.counts()
    }

    #[cfg(test)]
    fn redis_key(&self, key: &MaildropKey) -> String {
        self.shared.redis_key(key)
    }
}

impl Shared {
    /// The Redis key of `key`'s lease: `{prefix}:lock:{tenant/mailbox}`. The braces are the
    /// Cluster hash tag; ids are `[a-z0-9-]`, so they cannot contain a brace themselves.
    fn redis_key(&self, key: &MaildropKey) -> String {
        format!(
            "{}:lock:{{{}/{}}}",
            self.key_prefix, key.tenant, key.mailbox
        )
    }

    /// Runs one Redis call under the command timeout (see [`Reconnecting::run`]).
    async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        key: Option<&MaildropKey>,
        command: F,
    ) -> Result<T, LockError>
    where
        F: FnOnce(Connection) -> Fut + Send,
        Fut: Future<Output = RedisResult<T>> + Send,
    {
        self.connection.run(op, self.command_timeout, command).await.map_err(|error| {
            match key {
                Some(key) => {
                    debug!(op, maildrop = %key, outcome = "unavailable", error = %error, "redis lock")
                }
                None => debug!(op, outcome = "unavailable", error = %error, "redis lock"),
            }
            LockError::Unavailable(error)
        })
    }

    /// Runs a compare-and-change script on `redis_key`; `true` if `token` matched.
    async fn compare_and(
        &self,
        op: &'static str,
        script: &Script,
        (key, redis_key, token): (Option<&MaildropKey>, &str, &str),
        extra_arg: Option<u64>,
    ) -> Result<bool, LockError> {
        let changed: i64 = self
            .run(op, key, |mut conn| async move {
                let mut invocation = script.key(redis_key);
                invocation.arg(token);
                if let Some(arg) = extra_arg {
                    invocation.arg(arg);
                }
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(changed == 1)
    }

    /// Runs a compare-and-change script on `lease`'s key; `true` if the token matched.
    async fn compare_and_lease(
        &self,
        op: &'static str,
        script: &Script,
        lease: &Lease,
        extra_arg: Option<u64>,
    ) -> Result<bool, LockError> {
        let redis_key = self.redis_key(&lease.key);
        let target = (Some(&lease.key), redis_key.as_str(), lease.token.as_str());
        let held = self.compare_and(op, script, target, extra_arg).await?;
        debug!(op, maildrop = %lease.key, outcome = outcome(held), "redis lock");
        Ok(held)
    }
}

impl Undo for Shared {
    type Target = OrphanLease;

    /// Compare-and-delete by the orphan's token: it removes that lease and nothing else.
    async fn undo(&self, orphan: &OrphanLease) -> Result<bool, String> {
        let target = (None, orphan.redis_key.as_str(), orphan.token.as_str());
        self.compare_and("release", &self.release_script, target, None)
            .await
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl MaildropLock for RedisLock {
    async fn acquire(&self, key: &MaildropKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let token = new_token()?;
        let redis_key = self.shared.redis_key(key);
        let orphan = OrphanLease {
            redis_key: redis_key.clone(),
            token: token.clone(),
        };
        // Armed before the SET is sent: an error or a dropped call leaves the outcome
        // unknown; only an answer from Redis settles it. A late SET lives at most `ttl`
        // after it lands, so trying for `ttl` covers any outage shorter than a lease.
        let timing = Timing {
            window: ttl.max(self.shared.command_timeout),
            settle: self.shared.command_timeout,
        };
        let guard = self.orphans.guard(orphan, timing);
        let reply: Value = self
            .shared
            .run("acquire", Some(key), |mut conn| {
                let mut set = cmd("SET");
                set.arg(&redis_key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms(ttl));
                async move { set.query_async(&mut conn).await }
            })
            .await?;
        match reply {
            Value::Okay => {
                guard.disarm();
                debug!(op = "acquire", maildrop = %key, outcome = "acquired", "redis lock");
                Ok(Some(Lease {
                    key: key.clone(),
                    token,
                    ttl,
                }))
            }
            Value::Nil => {
                guard.disarm();
                debug!(op = "acquire", maildrop = %key, outcome = "held elsewhere", "redis lock");
                Ok(None)
            }
            // The guard stays armed: whatever this reply means, releasing our token is safe.
            other => Err(LockError::Unavailable(format!(
                "redis acquire: unexpected reply to SET NX: {other:?}"
            ))),
        }
    }

    async fn renew(&self, lease: &Lease) -> Result<bool, LockError> {
        let script = &self.shared.renew_script;
        self.shared
            .compare_and_lease("renew", script, lease, Some(ttl_ms(lease.ttl)))
            .await
    }

    async fn check(&self, lease: &Lease) -> Result<bool, LockError> {
        let redis_key = self.shared.redis_key(&lease.key);
        let current: Option<String> = self
            .shared
            .run("check", Some(&lease.key), |mut conn| {
                let mut get = cmd("GET");
                get.arg(&redis_key);
                async move { get.query_async(&mut conn).await }
            })
            .await?;
        let held = current.as_deref() == Some(lease.token.as_str());
        debug!(op = "check", maildrop = %lease.key, outcome = outcome(held), "redis lock");
        Ok(held)
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let script = &self.shared.release_script;
        self.shared
            .compare_and_lease("release", script, lease, None)
            .await
    }
}

fn outcome(held: bool) -> &'static str {
    if held { "held" } else { "lost" }
}

/// `ttl` in whole milliseconds for `PX`/`PEXPIRE`, within what Redis accepts (at least 1).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(MAX_TTL_MS)
        .clamp(1, MAX_TTL_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{MailboxId, TenantId};

    async fn lock(prefix: &str) -> RedisLock {
        RedisLock::connect(RedisLockConfig {
            key_prefix: prefix.to_owned(),
            ..RedisLockConfig::default()
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn keys_carry_the_maildrop_as_a_hash_tag() {
        let key = MaildropKey::new(
            TenantId::new("acme").unwrap(),
            MailboxId::new("bob").unwrap(),
        );
        assert_eq!(
            lock("cloudpop").await.redis_key(&key),
            "cloudpop:lock:{acme/bob}"
        );
        assert_eq!(
            lock("pop-eu").await.redis_key(&key),
            "pop-eu:lock:{acme/bob}"
        );
    }

    #[test]
    fn ttls_stay_within_what_redis_accepts() {
        assert_eq!(ttl_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(10)), 1);
        assert_eq!(ttl_ms(Duration::MAX), MAX_TTL_MS);
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        for token in [a, b] {
            assert_eq!(token.len(), 2 * crate::lock::TOKEN_BYTES);
            assert!(
                token
                    .bytes()
                    .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            );
        }
    }
}
