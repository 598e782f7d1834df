//! The Redis limits: counters on a single Redis node or a Redis Cluster, shared by every pod.
//!
//! Keys (`{prefix}` from the config; the braces around a user are a Cluster hash tag, so
//! every key of one user lives in one slot):
//!
//! | key | type | what |
//! |---|---|---|
//! | `{prefix}:conn:<network>` | sorted set | connection slots: token scored by expiry (Unix ms) |
//! | `{prefix}:sess:{<user>}` | sorted set | session slots, likewise |
//! | `{prefix}:try:ip:<network>` | hash | login attempts: `count`, `next_ms` (the next turn, Unix ms); expires a window after the latest turn |
//! | `{prefix}:try:user:{<user>}` | hash | likewise, per user |
//! | `{prefix}:delay:{<user>}` | string | LOGIN-DELAY: present while another login is too soon |
//!
//! `<network>` is an IPv4 address or an IPv6 /64 (`2001:db8:1:2::/64`); `<user>` is the
//! caller's user key with `%`, `{`, `}`, space, controls and non-ASCII bytes
//! percent-encoded, so the hash tag cannot be broken and two user keys never share a key.
//!
//! Slots are opened and refreshed by Lua scripts that prune lapsed members before counting
//! (see `scripts`), so the slots of a pod that died stop counting at their expiry. Every
//! script touches one key; a login attempt runs two scripts (client, user) at once, which
//! need not be atomic together: an attempt one holder refuses stays counted by the other. Everything expires on its own: nothing here needs a
//! cleanup job.
//!
//! The connection is lazy and replaced after it breaks, and every call is bounded by
//! [`RedisLimitsConfig::command_timeout`], exactly like the maildrop lock's: a failing or
//! slow call returns [`LimitsError::Unavailable`] and the next call dials afresh.

mod scripts;

use std::fmt::{self, Write};
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use redis::{RedisResult, Script, Value, cmd};
use tracing::debug;

/// How to reach Redis: shared with every Redis-backed seam.
pub use cloudpop_redis::RedisConfig as RedisLimitsConfig;
use cloudpop_redis::{Connection, Reconnecting};

use crate::limits::{Limits, LimitsError};
use crate::network::ClientNetwork;
use crate::slot::{ConnectionSlot, SessionSlot, new_token};
use crate::throttle::{Admission, LoginThrottle, ThrottlePolicy};

/// Longest duration sent to Redis, in ms: a larger `PX` overflows Redis's clock and is
/// refused, and a century is "practically forever" here.
const MAX_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Abuse-protection counters in Redis (single node or Cluster), with the [`Limits`]
/// contract.
///
/// Cheap to share behind an `Arc`; all calls may run concurrently over one multiplexed
/// connection. Counts survive a Redis restart only if Redis persists its data; a restart
/// without persistence forgets every slot and failure (slots then refresh as `false`),
/// which briefly admits more than the caps — never fewer.
pub struct RedisLimits {
    connection: Reconnecting,
    key_prefix: String,
    command_timeout: Duration,
    open_slot: Script,
    refresh_slot: Script,
    admit_attempt: Script,
    refund_attempt: Script,
}

impl fmt::Debug for RedisLimits {
    // The scripts are left out: their source is long and says nothing about this instance.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimits")
            .field("connection", &self.connection)
            .field("key_prefix", &self.key_prefix)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisLimits {
    /// Validates `config` and builds the limits without dialing Redis.
    ///
    /// Succeeds while Redis is down: the first call that needs Redis dials it, and until it
    /// answers each call returns [`LimitsError::Unavailable`]. Fails only for a
    /// configuration that can never work (no URL, an unparsable URL, several URLs without
    /// `cluster`, a key prefix with `{`/`}`, a zero timeout).
    pub async fn connect(config: RedisLimitsConfig) -> Result<Self, LimitsError> {
        config.validate().map_err(|why| {
            LimitsError::Unavailable(format!("invalid Redis limits config: {why}"))
        })?;
        let connection = Reconnecting::new(&config).map_err(|e| {
            LimitsError::Unavailable(format!("invalid Redis limits config: bad Redis URL: {e}"))
        })?;
        debug!(config = ?config, "redis limits configured; connecting on first use");
        Ok(Self {
            connection,
            key_prefix: config.key_prefix,
            command_timeout: config.command_timeout,
            open_slot: Script::new(scripts::OPEN_SLOT),
            refresh_slot: Script::new(scripts::REFRESH_SLOT),
            admit_attempt: Script::new(scripts::ADMIT_ATTEMPT),
            refund_attempt: Script::new(scripts::REFUND_ATTEMPT),
        })
    }

    fn connection_key(&self, client: IpAddr) -> String {
        format!("{}:conn:{}", self.key_prefix, ClientNetwork::of(client))
    }

    fn session_key(&self, user_key: &str) -> String {
        format!("{}:sess:{{{}}}", self.key_prefix, user_tag(user_key))
    }

    fn client_attempts_key(&self, client: IpAddr) -> String {
        format!("{}:try:ip:{}", self.key_prefix, ClientNetwork::of(client))
    }

    fn user_attempts_key(&self, user_key: &str) -> String {
        format!("{}:try:user:{{{}}}", self.key_prefix, user_tag(user_key))
    }

    /// An invocation of the admission script on the attempts hash `key`.
    fn admission(
        &self,
        key: String,
        policy: &ThrottlePolicy,
        max_wait: Duration,
    ) -> redis::ScriptInvocation<'_> {
        let mut invocation = self.admit_attempt.key(key);
        invocation
            .arg(policy.free_attempts)
            .arg(millis(policy.base))
            .arg(millis(policy.max))
            .arg(ttl_ms(policy.window))
            .arg(millis(max_wait));
        invocation
    }

    fn login_delay_key(&self, user_key: &str) -> String {
        format!("{}:delay:{{{}}}", self.key_prefix, user_tag(user_key))
    }

    /// Runs one Redis call under the command timeout (see [`Reconnecting::run`]).
    async fn run<T, F, Fut>(&self, op: &'static str, command: F) -> Result<T, LimitsError>
    where
        F: FnOnce(Connection) -> Fut + Send,
        Fut: Future<Output = RedisResult<T>> + Send,
    {
        self.connection
            .run(op, self.command_timeout, command)
            .await
            .map_err(|error| {
                debug!(op, outcome = "unavailable", error = %error, "redis limits");
                LimitsError::Unavailable(error)
            })
    }

    /// Opens a slot in the sorted set `key`; the new slot's token, or `None` at the cap.
    async fn open_slot(
        &self,
        op: &'static str,
        key: String,
        max: u32,
        ttl: Duration,
    ) -> Result<Option<String>, LimitsError> {
        let token = new_token()?;
        let script = &self.open_slot;
        let opened: i64 = self
            .run(op, |mut conn| {
                let mut invocation = script.key(key);
                invocation.arg(max).arg(ttl_ms(ttl)).arg(&token);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        if opened == 1 {
            Ok(Some(token))
        } else {
            debug!(op, outcome = "at cap", "redis limits");
            Ok(None)
        }
    }

    /// Refreshes the slot `token` in the sorted set `key`; `false` if it was gone.
    async fn refresh_slot(
        &self,
        op: &'static str,
        key: String,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, LimitsError> {
        let script = &self.refresh_slot;
        let refreshed: i64 = self
            .run(op, |mut conn| {
                let mut invocation = script.key(key);
                invocation.arg(ttl_ms(ttl)).arg(token);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        if refreshed != 1 {
            debug!(op, outcome = "lapsed", "redis limits");
        }
        Ok(refreshed == 1)
    }

    /// Removes the slot `token` from the sorted set `key`, if it is there.
    async fn close_slot(
        &self,
        op: &'static str,
        key: String,
        token: &str,
    ) -> Result<(), LimitsError> {
        let mut zrem = cmd("ZREM");
        zrem.arg(key).arg(token);
        let _removed: i64 = self
            .run(
                op,
                |mut conn| async move { zrem.query_async(&mut conn).await },
            )
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Limits for RedisLimits {
    async fn open_connection(
        &self,
        client: IpAddr,
        max: u32,
        ttl: Duration,
    ) -> Result<Option<ConnectionSlot>, LimitsError> {
        let key = self.connection_key(client);
        let token = self.open_slot("open_connection", key, max, ttl).await?;
        Ok(token.map(|token| ConnectionSlot { client, token }))
    }

    async fn refresh_connection(
        &self,
        slot: &ConnectionSlot,
        ttl: Duration,
    ) -> Result<bool, LimitsError> {
        let key = self.connection_key(slot.client);
        self.refresh_slot("refresh_connection", key, &slot.token, ttl)
            .await
    }

    async fn close_connection(&self, slot: &ConnectionSlot) -> Result<(), LimitsError> {
        let key = self.connection_key(slot.client);
        self.close_slot("close_connection", key, &slot.token).await
    }

    async fn open_session(
        &self,
        user_key: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<Option<SessionSlot>, LimitsError> {
        let key = self.session_key(user_key);
        let token = self.open_slot("open_session", key, max, ttl).await?;
        Ok(token.map(|token| SessionSlot {
            user_key: user_key.to_owned(),
            token,
        }))
    }

    async fn refresh_session(
        &self,
        slot: &SessionSlot,
        ttl: Duration,
    ) -> Result<bool, LimitsError> {
        let key = self.session_key(&slot.user_key);
        self.refresh_slot("refresh_session", key, &slot.token, ttl)
            .await
    }

    async fn close_session(&self, slot: &SessionSlot) -> Result<(), LimitsError> {
        let key = self.session_key(&slot.user_key);
        self.close_slot("close_session", key, &slot.token).await
    }

    async fn admit_login(
        &self,
        client: IpAddr,
        user_key: &str,
        throttle: &LoginThrottle,
    ) -> Result<Admission, LimitsError> {
        let network = self.admission(
            self.client_attempts_key(client),
            &throttle.per_network,
            throttle.max_wait,
        );
        let login = self.admission(
            self.user_attempts_key(user_key),
            &throttle.per_login,
            throttle.max_wait,
        );
        let (network, login): ((i64, u64), (i64, u64)) = self
            .run("admit_login", |mut conn| async move {
                let mut login_conn = conn.clone();
                tokio::try_join!(
                    network.invoke_async(&mut conn),
                    login.invoke_async(&mut login_conn)
                )
            })
            .await?;
        Ok(admission(network).and(admission(login)))
    }

    async fn record_success(&self, client: IpAddr, user_key: &str) -> Result<(), LimitsError> {
        let mut forget = cmd("DEL");
        forget.arg(self.user_attempts_key(user_key));
        let refund = self.refund_attempt.key(self.client_attempts_key(client));
        let _: (i64, i64) = self
            .run("record_success", |mut conn| async move {
                let mut refund_conn = conn.clone();
                tokio::try_join!(
                    forget.query_async(&mut conn),
                    refund.invoke_async(&mut refund_conn)
                )
            })
            .await?;
        Ok(())
    }

    async fn check_login_delay(
        &self,
        user_key: &str,
        delay: Duration,
    ) -> Result<bool, LimitsError> {
        if delay.is_zero() {
            return Ok(true);
        }
        let mut set = cmd("SET");
        set.arg(self.login_delay_key(user_key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(delay));
        let reply: Value = self
            .run("check_login_delay", |mut conn| async move {
                set.query_async(&mut conn).await
            })
            .await?;
        match reply {
            Value::Okay => Ok(true),
            Value::Nil => {
                debug!(
                    op = "check_login_delay",
                    outcome = "too soon",
                    "redis limits"
                );
                Ok(false)
            }
            other => Err(LimitsError::Unavailable(format!(
                "redis check_login_delay: unexpected reply to SET NX: {other:?}"
            ))),
        }
    }

    /// Whether Redis answers (every primary, on a Cluster) within the command timeout.
    async fn ping(&self) -> Result<(), LimitsError> {
        self.run("ping", |mut conn| async move {
            cmd("PING").query_async::<Value>(&mut conn).await
        })
        .await?;
        Ok(())
    }
}

/// The admission script's answer: `{1, wait_ms}` or `{0, retry_after_ms}`.
fn admission((admitted, ms): (i64, u64)) -> Admission {
    let ms = Duration::from_millis(ms);
    if admitted == 1 {
        Admission::Admitted { wait: ms }
    } else {
        Admission::Throttled { retry_after: ms }
    }
}

/// `duration` in whole milliseconds, at most a century.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(MAX_MS)
        .min(MAX_MS)
}

/// `ttl` in whole milliseconds for `PX`/`PEXPIRE`/scores, within what Redis accepts (at
/// least 1).
fn ttl_ms(ttl: Duration) -> u64 {
    millis(ttl).max(1)
}

/// `user_key` as it appears inside a key's hash tag: `%`, the braces, space, control
/// characters and every non-ASCII byte percent-encoded. Injective, so distinct user keys
/// get distinct Redis keys, and a brace in a user key cannot move the hash tag.
fn user_tag(user_key: &str) -> String {
    let mut tag = String::with_capacity(user_key.len());
    for byte in user_key.bytes() {
        if matches!(byte, b'%' | b'{' | b'}') || !(0x21..0x7f).contains(&byte) {
            // Writing to a String cannot fail.
            let _ = write!(tag, "%{byte:02X}");
        } else {
            tag.push(char::from(byte));
        }
    }
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn limits(prefix: &str) -> RedisLimits {
        RedisLimits::connect(RedisLimitsConfig {
            key_prefix: prefix.to_owned(),
            ..RedisLimitsConfig::default()
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn keys_are_named_as_documented() {
        let limits = limits("pop-eu").await;
        let v4: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(limits.connection_key(v4), "pop-eu:conn:198.51.100.7");
        assert_eq!(limits.connection_key(v6), "pop-eu:conn:2001:db8:1:2::/64");
        assert_eq!(
            limits.client_attempts_key(v6),
            "pop-eu:try:ip:2001:db8:1:2::/64"
        );
        assert_eq!(limits.session_key("acme/bob"), "pop-eu:sess:{acme/bob}");
        assert_eq!(
            limits.user_attempts_key("acme/bob"),
            "pop-eu:try:user:{acme/bob}"
        );
        assert_eq!(
            limits.login_delay_key("acme/bob"),
            "pop-eu:delay:{acme/bob}"
        );
    }

    #[test]
    fn user_tags_keep_the_hash_tag_intact_and_users_apart() {
        assert_eq!(user_tag("acme/bob@example.org"), "acme/bob@example.org");
        assert_eq!(user_tag("a}b{c"), "a%7Db%7Bc");
        assert_eq!(user_tag("a b\r\n"), "a%20b%0D%0A");
        assert_eq!(user_tag("é"), "%C3%A9");
        // Injective: the escape character is escaped itself.
        assert_ne!(user_tag("%7D"), user_tag("}"));
        assert_eq!(user_tag("%7D"), "%257D");
    }

    #[test]
    fn durations_stay_within_what_redis_accepts() {
        assert_eq!(ttl_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(10)), 1);
        assert_eq!(ttl_ms(Duration::MAX), MAX_MS);
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::MAX), MAX_MS);
    }
}
