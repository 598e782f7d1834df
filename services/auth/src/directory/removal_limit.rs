//! [`RemovalLimit`]: how many users one reload of the users file may remove.

/// The share of the users in use that one reload of the users file may remove.
///
/// A version of the file that removes more is refused, and the directory in use stays,
/// unless that exact version is approved (see the `approval` module): a truncated, emptied
/// or half-written file then cannot lock every user out and bounce their mail. Removing
/// users one or a few at a time stays possible without approval as long as each reload
/// stays within the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemovalLimit {
    max_fraction: f64,
}

/// A removal limit outside 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("the share of users one reload may remove must be between 0 and 1, not {0}")]
pub struct InvalidRemovalLimit(pub f64);

impl Default for RemovalLimit {
    fn default() -> Self {
        Self {
            max_fraction: Self::DEFAULT_MAX_FRACTION,
        }
    }
}

impl RemovalLimit {
    /// The default share: a reload may remove at most half of the users in use.
    pub const DEFAULT_MAX_FRACTION: f64 = 0.5;

    /// A limit of `max_fraction` of the users in use, from 0 (no removal without approval)
    /// to 1 (no limit).
    pub fn new(max_fraction: f64) -> Result<Self, InvalidRemovalLimit> {
        if (0.0..=1.0).contains(&max_fraction) {
            Ok(Self { max_fraction })
        } else {
            Err(InvalidRemovalLimit(max_fraction))
        }
    }

    /// The share of the users in use that one reload may remove.
    pub fn max_fraction(&self) -> f64 {
        self.max_fraction
    }

    /// Whether a reload that removes `removed` of the `in_use` users may be taken.
    pub fn allows(&self, in_use: usize, removed: usize) -> bool {
        // Counts of users are far below 2^52, so the conversions are exact.
        removed == 0 || removed as f64 <= self.max_fraction * in_use as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_every_user_is_refused() {
        let limit = RemovalLimit::default();
        assert!(!limit.allows(1, 1));
        assert!(!limit.allows(2, 2));
        assert!(!limit.allows(1000, 1000));
    }

    #[test]
    fn removing_more_than_the_share_is_refused() {
        let limit = RemovalLimit::default();
        assert!(limit.allows(2, 1), "half of two");
        assert!(!limit.allows(3, 2));
        assert!(limit.allows(1000, 500));
        assert!(!limit.allows(1000, 501));
        assert!(limit.allows(0, 0));
        assert!(limit.allows(5, 0));
    }

    #[test]
    fn the_bounds_mean_no_removal_and_no_limit() {
        let none = RemovalLimit::new(0.0).unwrap();
        assert!(!none.allows(1000, 1));
        assert!(none.allows(1000, 0));
        let any = RemovalLimit::new(1.0).unwrap();
        assert!(any.allows(1, 1));
        assert!(any.allows(1000, 1000));
    }

    #[test]
    fn limits_outside_0_to_1_are_invalid() {
        for bad in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert!(RemovalLimit::new(bad).is_err(), "{bad}");
        }
        assert_eq!(RemovalLimit::new(0.25).unwrap().max_fraction(), 0.25);
    }
}
