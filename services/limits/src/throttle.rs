//! Login throttling: when the next login attempt of a login, or of a client network, may
//! have its credential checked.
//!
//! A holder (one login, across every address; or one client network, across every login)
//! counts its *attempts*: an attempt counts from the moment it is admitted, before the
//! credential is checked, and stays counted unless it turns out right. So attempts in flight
//! at once are spaced like failures, and an attacker who hangs up before the answer still
//! pays for the attempt. Beyond a holder's free attempts, each admitted attempt pushes the
//! holder's next turn further out (`base`, doubling, up to `max`). An attempt whose turn is
//! further out than [`LoginThrottle::max_wait`] is refused without being checked, so right
//! and wrong passwords get the same answer after the same wait.

use std::time::Duration;

/// How the attempts of one holder are spaced.
///
/// The first `free_attempts` attempts within the window get their turn at once; after that,
/// each attempt's turn comes [`ThrottlePolicy::spacing_after`]`(n)` after the previous
/// turn, `n` being the attempts counted before it. Counts are forgotten `window` after the
/// latest admitted attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Attempts (failed, or not answered yet) that get their turn at once; 0 counts as 1,
    /// since the first attempt has no turn to wait behind.
    pub free_attempts: u64,
    /// Spacing before the first attempt beyond the free ones.
    pub base: Duration,
    /// Largest spacing, however many attempts.
    pub max: Duration,
    /// How long attempts are remembered after the latest one.
    pub window: Duration,
}

impl ThrottlePolicy {
    /// The spacing owed after `attempts` counted attempts: zero while the next attempt is
    /// still a free one, then `base × 2^k` for the k-th attempt beyond the free ones
    /// (counting from 0), capped at `max` (and never above `max`, even when `base` is).
    pub fn spacing_after(&self, attempts: u64) -> Duration {
        let free = self.free_attempts.max(1);
        if attempts < free {
            return Duration::ZERO;
        }
        let mut spacing = self.base.min(self.max);
        // Stops once the cap is reached, so a huge count costs a few dozen steps at most.
        // The Redis script computes the same, step by step.
        for _ in free..attempts {
            if spacing.is_zero() || spacing >= self.max {
                break;
            }
            spacing = spacing.saturating_mul(2).min(self.max);
        }
        spacing
    }
}

/// The throttling of login attempts: one policy per login, one per client network, and how
/// long an attempt may wait for its turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Attempts at one login, from any address.
    pub per_login: ThrottlePolicy,
    /// Attempts from one client network (an IPv4 address, an IPv6 /64), at any login.
    pub per_network: ThrottlePolicy,
    /// Longest wait for a turn; an attempt whose turn is further out is refused unchecked.
    pub max_wait: Duration,
}

impl Default for LoginThrottle {
    /// Per login: two attempts at once (a phone and a laptop polling together), then 1 s
    /// doubling up to 30 s, remembered for 15 minutes. Per network: as many free attempts as the default connection cap per
    /// address, so that a busy NAT's good logins are never spaced. Waits of up to 10 s.
    fn default() -> Self {
        let per_login = ThrottlePolicy {
            free_attempts: 2,
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            window: Duration::from_secs(15 * 60),
        };
        Self {
            per_login,
            per_network: ThrottlePolicy {
                free_attempts: 20,
                ..per_login
            },
            max_wait: Duration::from_secs(10),
        }
    }
}

/// The answer to [`crate::Limits::admit_login`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Check the credential once `wait` has passed: the attempt's turn. The attempt is
    /// counted already; a right credential refunds it through
    /// [`crate::Limits::record_success`].
    Admitted {
        /// Time until the attempt's turn.
        wait: Duration,
    },
    /// Refused without checking anything: the attempt's turn would come only after
    /// `retry_after`, longer than the throttle's `max_wait`. Nothing was counted for the
    /// holder that refused.
    Throttled {
        /// Time until a turn could be had, as things stand.
        retry_after: Duration,
    },
}

impl Admission {
    /// The stricter of two holders' answers for one attempt: refused if either refuses,
    /// else the longer wait.
    pub(crate) fn and(self, other: Admission) -> Admission {
        match (self, other) {
            (Admission::Admitted { wait: a }, Admission::Admitted { wait: b }) => {
                Admission::Admitted { wait: a.max(b) }
            }
            (Admission::Throttled { retry_after: a }, Admission::Throttled { retry_after: b }) => {
                Admission::Throttled {
                    retry_after: a.max(b),
                }
            }
            (throttled @ Admission::Throttled { .. }, _)
            | (_, throttled @ Admission::Throttled { .. }) => throttled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn policy(free_attempts: u64) -> ThrottlePolicy {
        ThrottlePolicy {
            free_attempts,
            base: ms(100),
            max: ms(1000),
            window: ms(60_000),
        }
    }

    #[test]
    fn spacing_doubles_after_the_free_attempts_up_to_the_cap() {
        let spacings: Vec<u64> = (0..8)
            .map(|n| policy(0).spacing_after(n).as_millis() as u64)
            .collect();
        assert_eq!(spacings, [0, 100, 200, 400, 800, 1000, 1000, 1000]);
        let spacings: Vec<u64> = (0..6)
            .map(|n| policy(2).spacing_after(n).as_millis() as u64)
            .collect();
        assert_eq!(spacings, [0, 0, 100, 200, 400, 800]);
        assert_eq!(
            (0..8)
                .map(|n| policy(0).spacing_after(n))
                .collect::<Vec<_>>(),
            (0..8)
                .map(|n| policy(1).spacing_after(n))
                .collect::<Vec<_>>(),
            "no free attempt is one free attempt"
        );
        assert_eq!(policy(2).spacing_after(u64::MAX), ms(1000));
    }

    #[test]
    fn odd_policies_stay_within_their_cap() {
        let zero_base = ThrottlePolicy {
            base: Duration::ZERO,
            ..policy(0)
        };
        assert_eq!(zero_base.spacing_after(u64::MAX), Duration::ZERO);
        let base_above_max = ThrottlePolicy {
            base: ms(5000),
            max: ms(2000),
            ..policy(0)
        };
        assert_eq!(base_above_max.spacing_after(1), ms(2000));
        let huge = ThrottlePolicy {
            free_attempts: 0,
            base: Duration::MAX,
            max: Duration::MAX,
            window: Duration::MAX,
        };
        assert_eq!(huge.spacing_after(3), Duration::MAX);
    }

    #[test]
    fn the_default_admits_fewer_than_ten_attempts_a_minute_at_one_login() {
        // An attacker with any number of connections and addresses gets one turn each time
        // the login's spacing allows.
        let policy = LoginThrottle::default().per_login;
        let (mut turn, mut attempts) = (Duration::ZERO, 0u64);
        let mut in_first_minute = 0;
        while turn < Duration::from_secs(60) {
            in_first_minute += 1;
            attempts += 1;
            turn += policy.spacing_after(attempts);
        }
        assert!(in_first_minute <= 10, "{in_first_minute} turns in a minute");
        assert_eq!(policy.spacing_after(100), Duration::from_secs(30));
    }

    #[test]
    fn the_stricter_answer_wins() {
        let admitted = |ms_| Admission::Admitted { wait: ms(ms_) };
        let throttled = |ms_| Admission::Throttled {
            retry_after: ms(ms_),
        };
        assert_eq!(admitted(5).and(admitted(9)), admitted(9));
        assert_eq!(admitted(5).and(throttled(2)), throttled(2));
        assert_eq!(throttled(7).and(admitted(9)), throttled(7));
        assert_eq!(throttled(7).and(throttled(3)), throttled(7));
    }
}
