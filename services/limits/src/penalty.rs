//! How long a client or user that keeps failing to log in must wait.

use std::time::Duration;

/// How login penalties grow with failures.
///
/// After `n` failures within the window the penalty is `base × 2^(n-1)`, capped at `max`;
/// a count (and its penalty) is forgotten `window` after the latest failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PenaltyPolicy {
    /// Penalty after the first failure.
    pub base: Duration,
    /// Largest penalty, however many failures.
    pub max: Duration,
    /// How long failures are remembered after the latest one.
    pub window: Duration,
}

impl Default for PenaltyPolicy {
    /// 1 s after the first failure, doubling up to 30 s, remembered for 15 minutes.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            window: Duration::from_secs(15 * 60),
        }
    }
}

impl PenaltyPolicy {
    /// The penalty after `failures` failures: zero for none, else `base × 2^(failures-1)`
    /// capped at `max` (and never above `max`, even when `base` is).
    pub fn penalty_after(&self, failures: u64) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let mut penalty = self.base.min(self.max);
        // Stops once the cap is reached, so a huge count costs a few dozen steps at most.
        // The Redis script computes the same, step by step.
        for _ in 1..failures {
            if penalty.is_zero() || penalty >= self.max {
                break;
            }
            penalty = penalty.saturating_mul(2).min(self.max);
        }
        penalty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn penalties_double_up_to_the_cap() {
        let policy = PenaltyPolicy {
            base: ms(100),
            max: ms(1000),
            window: ms(60_000),
        };
        let penalties: Vec<u64> = (0..8)
            .map(|n| policy.penalty_after(n).as_millis() as u64)
            .collect();
        assert_eq!(penalties, [0, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(policy.penalty_after(u64::MAX), ms(1000));
    }

    #[test]
    fn odd_policies_stay_within_their_cap() {
        let zero_base = PenaltyPolicy {
            base: Duration::ZERO,
            ..PenaltyPolicy::default()
        };
        assert_eq!(zero_base.penalty_after(u64::MAX), Duration::ZERO);
        let base_above_max = PenaltyPolicy {
            base: ms(5000),
            max: ms(2000),
            window: ms(1),
        };
        assert_eq!(base_above_max.penalty_after(1), ms(2000));
        let huge = PenaltyPolicy {
            base: Duration::MAX,
            max: Duration::MAX,
            window: Duration::MAX,
        };
        assert_eq!(huge.penalty_after(3), Duration::MAX);
    }

    #[test]
    fn the_default_is_one_to_thirty_seconds_for_a_quarter_hour() {
        let policy = PenaltyPolicy::default();
        assert_eq!(policy.penalty_after(1), Duration::from_secs(1));
        assert_eq!(policy.penalty_after(5), Duration::from_secs(16));
        assert_eq!(policy.penalty_after(6), Duration::from_secs(30));
        assert_eq!(policy.window, Duration::from_secs(900));
    }
}
