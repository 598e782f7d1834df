//! The in-process limits: counters in a map, for a single-process install.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::limits::{Limits, LimitsError};
use crate::network::ClientNetwork;
use crate::slot::{ConnectionSlot, SessionSlot, new_token};
use crate::throttle::{Admission, LoginThrottle, ThrottlePolicy};

/// How often every map is swept of lapsed entries, so that clients and users that never
/// come back do not keep memory forever.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Limits kept in this process's memory, with the same contract as [`crate::RedisLimits`].
///
/// Only correct when every connection and session it should count is served by this
/// process. Time is Tokio's clock, so tests may pause and advance it. A lapsed entry is
/// treated exactly like an absent one; entries are dropped when next touched, and all
/// lapsed ones at most every minute, so memory follows the live entries.
#[derive(Debug, Default)]
pub struct InProcessLimits {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Live slots per client network (connections) or user (sessions): token → expiry.
    slots: HashMap<Holder, HashMap<String, Instant>>,
    /// Login attempts per client network and per user.
    attempts: HashMap<Holder, Attempts>,
    /// Per user: until when another login is too soon (LOGIN-DELAY).
    logins: HashMap<String, Instant>,
    next_sweep: Option<Instant>,
}

/// Whom a slot or a count of login attempts belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Holder {
    Client(ClientNetwork),
    User(String),
}

/// One holder's login attempts within its window.
#[derive(Debug)]
struct Attempts {
    /// Attempts counted: admitted, and not refunded by a success.
    count: u64,
    /// The earliest turn of the next attempt.
    next_turn: Instant,
    expires_at: Instant,
}

impl InProcessLimits {
    /// Limits with nothing counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state, swept first if a sweep is due.
    fn state(&self, now: Instant) -> MutexGuard<'_, State> {
        // Every critical section only inserts, updates or removes entries and cannot panic
        // halfway, so the maps are consistent even if a holder panicked.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.sweep_if_due(now);
        state
    }

    fn open(&self, holder: Holder, max: u32, ttl: Duration) -> Result<Option<String>, LimitsError> {
        let token = new_token()?;
        let now = Instant::now();
        let mut state = self.state(now);
        let opened = state.open(holder, max, &token, expiry(now, ttl), now);
        Ok(opened.then_some(token))
    }

    fn refresh(&self, holder: &Holder, token: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        self.state(now)
            .refresh(holder, token, expiry(now, ttl), now)
    }

    fn close(&self, holder: &Holder, token: &str) {
        self.state(Instant::now()).close(holder, token);
    }
}

impl State {
    fn sweep_if_due(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        self.slots.retain(|_, slots| {
            slots.retain(|_, expires_at| now < *expires_at);
            !slots.is_empty()
        });
        self.attempts
            .retain(|_, attempts| now < attempts.expires_at);
        self.logins.retain(|_, until| now < *until);
        self.next_sweep = Some(expiry(now, SWEEP_EVERY));
    }

    fn open(
        &mut self,
        holder: Holder,
        max: u32,
        token: &str,
        expires_at: Instant,
        now: Instant,
    ) -> bool {
        let slots = self.slots.entry(holder).or_default();
        slots.retain(|_, slot_expires_at| now < *slot_expires_at);
        if u32::try_from(slots.len()).unwrap_or(u32::MAX) >= max {
            return false;
        }
        slots.insert(token.to_owned(), expires_at);
        true
    }

    fn refresh(&mut self, holder: &Holder, token: &str, expires_at: Instant, now: Instant) -> bool {
        let slot = self
            .slots
            .get_mut(holder)
            .and_then(|slots| slots.get_mut(token));
        match slot {
            Some(slot_expires_at) if now < *slot_expires_at => {
                *slot_expires_at = expires_at;
                true
            }
            _ => false,
        }
    }

    fn close(&mut self, holder: &Holder, token: &str) {
        if let Some(slots) = self.slots.get_mut(holder) {
            slots.remove(token);
            if slots.is_empty() {
                self.slots.remove(holder);
            }
        }
    }

    /// Asks `holder` for a turn (see [`crate::throttle`]).
    fn admit(
        &mut self,
        holder: Holder,
        policy: &ThrottlePolicy,
        max_wait: Duration,
        now: Instant,
    ) -> Admission {
        let attempts = self.attempts.entry(holder).or_insert(Attempts {
            count: 0,
            next_turn: now,
            expires_at: now,
        });
        if now >= attempts.expires_at {
            // A quiet window passed since the latest attempt: start counting afresh.
            attempts.count = 0;
            attempts.next_turn = now;
        }
        let turn = attempts.next_turn.max(now);
        let wait = turn - now;
        if wait > max_wait {
            return Admission::Throttled { retry_after: wait };
        }
        attempts.count = attempts.count.saturating_add(1);
        attempts.next_turn = expiry(turn, policy.spacing_after(attempts.count));
        attempts.expires_at = expiry(turn, policy.window);
        Admission::Admitted { wait }
    }

    /// Takes back one counted attempt of `holder`.
    fn refund(&mut self, holder: &Holder, now: Instant) {
        if let Some(attempts) = self.attempts.get_mut(holder)
            && now < attempts.expires_at
        {
            attempts.count = attempts.count.saturating_sub(1);
        }
    }
}

#[async_trait]
impl Limits for InProcessLimits {
    async fn open_connection(
        &self,
        client: IpAddr,
        max: u32,
        ttl: Duration,
    ) -> Result<Option<ConnectionSlot>, LimitsError> {
        let token = self.open(client_holder(client), max, ttl)?;
        Ok(token.map(|token| ConnectionSlot { client, token }))
    }

    async fn refresh_connection(
        &self,
        slot: &ConnectionSlot,
        ttl: Duration,
    ) -> Result<bool, LimitsError> {
        Ok(self.refresh(&client_holder(slot.client), &slot.token, ttl))
    }

    async fn close_connection(&self, slot: &ConnectionSlot) -> Result<(), LimitsError> {
        self.close(&client_holder(slot.client), &slot.token);
        Ok(())
    }

    async fn open_session(
        &self,
        user_key: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<Option<SessionSlot>, LimitsError> {
        let token = self.open(user_holder(user_key), max, ttl)?;
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
        Ok(self.refresh(&user_holder(&slot.user_key), &slot.token, ttl))
    }

    async fn close_session(&self, slot: &SessionSlot) -> Result<(), LimitsError> {
        self.close(&user_holder(&slot.user_key), &slot.token);
        Ok(())
    }

    async fn admit_login(
        &self,
        client: IpAddr,
        user_key: &str,
        throttle: &LoginThrottle,
    ) -> Result<Admission, LimitsError> {
        let now = Instant::now();
        let mut state = self.state(now);
        let max_wait = throttle.max_wait;
        let network = state.admit(client_holder(client), &throttle.per_network, max_wait, now);
        let login = state.admit(user_holder(user_key), &throttle.per_login, max_wait, now);
        Ok(network.and(login))
    }

    async fn record_success(&self, client: IpAddr, user_key: &str) -> Result<(), LimitsError> {
        let now = Instant::now();
        let mut state = self.state(now);
        state.attempts.remove(&user_holder(user_key));
        state.refund(&client_holder(client), now);
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
        let now = Instant::now();
        let mut state = self.state(now);
        if state.logins.get(user_key).is_some_and(|until| now < *until) {
            return Ok(false);
        }
        state.logins.insert(user_key.to_owned(), expiry(now, delay));
        Ok(true)
    }

    async fn ping(&self) -> Result<(), LimitsError> {
        Ok(())
    }
}

fn client_holder(client: IpAddr) -> Holder {
    Holder::Client(ClientNetwork::of(client))
}

fn user_holder(user_key: &str) -> Holder {
    Holder::User(user_key.to_owned())
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

    const TTL: Duration = Duration::from_secs(30);
    const MS: Duration = Duration::from_millis(1);

    fn client() -> IpAddr {
        "192.0.2.1".parse().unwrap()
    }

    fn throttle() -> LoginThrottle {
        let policy = ThrottlePolicy {
            free_attempts: 0,
            base: Duration::from_secs(1),
            max: Duration::from_secs(4),
            window: Duration::from_secs(60),
        };
        LoginThrottle {
            per_login: policy,
            per_network: ThrottlePolicy {
                free_attempts: 100,
                ..policy
            },
            max_wait: Duration::from_secs(10),
        }
    }

    fn admitted(wait: Duration) -> Admission {
        Admission::Admitted { wait }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_lapses_exactly_at_its_ttl_and_refresh_counts_from_now() {
        let limits = InProcessLimits::new();
        let slot = limits.open_connection(client(), 1, TTL).await.unwrap();
        let slot = slot.unwrap();
        tokio::time::advance(TTL - MS).await;
        assert!(
            limits
                .open_connection(client(), 1, TTL)
                .await
                .unwrap()
                .is_none()
        );
        assert!(limits.refresh_connection(&slot, TTL).await.unwrap());
        tokio::time::advance(TTL - MS).await;
        assert!(
            limits
                .open_connection(client(), 1, TTL)
                .await
                .unwrap()
                .is_none()
        );
        tokio::time::advance(MS).await;
        assert!(!limits.refresh_connection(&slot, TTL).await.unwrap());
        assert!(
            limits
                .open_connection(client(), 1, TTL)
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_forgotten_a_window_after_the_latest() {
        let limits = InProcessLimits::new();
        let throttle = throttle();
        let window = throttle.per_login.window;
        let admit = || limits.admit_login(client(), "acme/bob", &throttle);
        assert_eq!(admit().await.unwrap(), admitted(Duration::ZERO));
        tokio::time::advance(window - MS).await;
        // Its turn came long ago; the count of one makes the next turn 2 s after this one.
        assert_eq!(admit().await.unwrap(), admitted(Duration::ZERO));
        assert_eq!(admit().await.unwrap(), admitted(Duration::from_secs(2)));
        tokio::time::advance(Duration::from_secs(2) + window - MS).await;
        assert_eq!(admit().await.unwrap(), admitted(Duration::ZERO));
        tokio::time::advance(window).await;
        assert_eq!(admit().await.unwrap(), admitted(Duration::ZERO));
        assert_eq!(admit().await.unwrap(), admitted(Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn turns_are_spaced_and_those_too_far_out_refused_uncounted() {
        let limits = InProcessLimits::new();
        let throttle = LoginThrottle {
            max_wait: Duration::from_secs(5),
            ..throttle()
        };
        let admit = || limits.admit_login(client(), "acme/bob", &throttle);
        // Five attempts at once: turns at 0, 1, 3 s (spacing 1, 2, 4 capped at 4), then 7 s
        // is beyond the 5 s wait.
        let mut answers = Vec::new();
        for _ in 0..5 {
            answers.push(admit().await.unwrap());
        }
        let secs = |s| Duration::from_secs(s);
        assert_eq!(
            answers,
            [
                admitted(secs(0)),
                admitted(secs(1)),
                admitted(secs(3)),
                Admission::Throttled {
                    retry_after: secs(7)
                },
                Admission::Throttled {
                    retry_after: secs(7)
                },
            ]
        );
        tokio::time::advance(secs(2)).await;
        assert_eq!(admit().await.unwrap(), admitted(secs(5)));
        // A success forgets the login's attempts.
        limits.record_success(client(), "acme/bob").await.unwrap();
        assert_eq!(admit().await.unwrap(), admitted(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn login_delay_admits_again_exactly_after_the_delay() {
        let limits = InProcessLimits::new();
        let delay = Duration::from_secs(10);
        assert!(limits.check_login_delay("acme/bob", delay).await.unwrap());
        tokio::time::advance(delay - MS).await;
        assert!(!limits.check_login_delay("acme/bob", delay).await.unwrap());
        tokio::time::advance(MS).await;
        assert!(limits.check_login_delay("acme/bob", delay).await.unwrap());
        assert!(
            limits
                .check_login_delay("acme/bob", Duration::ZERO)
                .await
                .unwrap()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lapsed_entries_are_swept_so_memory_follows_live_ones() {
        let limits = InProcessLimits::new();
        let short = Duration::from_secs(1);
        for i in 0..100u8 {
            let client = IpAddr::from([192, 0, 2, i]);
            let user = format!("acme/user-{i}");
            limits.open_connection(client, 1, short).await.unwrap();
            limits.open_session(&user, 1, short).await.unwrap();
            let mut throttle = throttle();
            throttle.per_login.window = short;
            throttle.per_network.window = short;
            limits.admit_login(client, &user, &throttle).await.unwrap();
            limits.check_login_delay(&user, short).await.unwrap();
        }
        let elsewhere = IpAddr::from([198, 51, 100, 1]);
        let kept = limits.open_connection(elsewhere, 1, SWEEP_EVERY * 2).await;
        let kept = kept.unwrap().expect("a fresh client's slot");
        tokio::time::advance(SWEEP_EVERY).await;
        // Any call that looks at the state sweeps it when due.
        limits
            .record_success(elsewhere, "acme/nobody")
            .await
            .unwrap();
        {
            let state = limits.state.lock().unwrap();
            assert_eq!(state.slots.len(), 1, "only the live slot's holder is kept");
            assert!(state.attempts.is_empty());
            assert!(state.logins.is_empty());
        }
        limits.close_connection(&kept).await.unwrap();
        assert!(limits.state.lock().unwrap().slots.is_empty());
    }

    #[tokio::test]
    async fn huge_durations_do_not_panic() {
        let limits = InProcessLimits::new();
        let slot = limits.open_session("acme/bob", 1, Duration::MAX).await;
        let slot = slot.unwrap().unwrap();
        assert!(limits.refresh_session(&slot, Duration::MAX).await.unwrap());
        let policy = ThrottlePolicy {
            free_attempts: 0,
            base: Duration::MAX,
            max: Duration::MAX,
            window: Duration::MAX,
        };
        let throttle = LoginThrottle {
            per_login: policy,
            per_network: policy,
            max_wait: Duration::MAX,
        };
        for _ in 0..3 {
            let admission = limits.admit_login(client(), "acme/bob", &throttle).await;
            assert!(matches!(admission.unwrap(), Admission::Admitted { .. }));
        }
        assert!(
            limits
                .check_login_delay("acme/bob", Duration::MAX)
                .await
                .unwrap()
        );
    }
}
