//! The budget of message bytes the LMTP endpoint holds in memory at once.
//!
//! One [`MemoryBudget`] is shared by every connection of a listener (one per process).
//! A connection receiving a message holds a [`Reservation`] that covers the capacity of its
//! message buffer; the buffer grows only after the reservation has grown, so the sum of all
//! buffers never exceeds the limit. A reservation is returned when it is dropped, on every
//! path: the message stored or refused, the connection closed, timed out, failed or
//! cancelled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::IntGauge;

/// The budget is spent: the bytes asked for would take it over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("LMTP memory budget spent: {in_use} of {limit} octets held, {wanted} more wanted")]
pub struct BudgetSpent {
    /// Octets held by all reservations when the request was refused.
    pub in_use: u64,
    /// The budget's limit.
    pub limit: u64,
    /// Octets asked for.
    pub wanted: u64,
}

/// A process-wide limit on message bytes held in memory. Cloning shares the budget.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    limit: u64,
    in_use: AtomicU64,
    /// Mirrors `in_use` for the metrics endpoint.
    gauge: IntGauge,
}

impl MemoryBudget {
    /// A budget of `limit` octets whose use is shown on `gauge`.
    pub fn new(limit: u64, gauge: IntGauge) -> Self {
        Self {
            shared: Arc::new(Shared {
                limit,
                in_use: AtomicU64::new(0),
                gauge,
            }),
        }
    }

    /// A reservation that holds nothing yet.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            shared: Arc::clone(&self.shared),
            held: 0,
        }
    }

    /// Octets held by all reservations now.
    pub fn in_use(&self) -> u64 {
        self.shared.in_use.load(Ordering::Acquire)
    }

    /// The limit this budget was created with.
    pub fn limit(&self) -> u64 {
        self.shared.limit
    }
}

/// Octets taken from a [`MemoryBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    shared: Arc<Shared>,
    held: u64,
}

impl Reservation {
    /// Takes `more` octets on top of those held, or nothing if that would take the budget
    /// over its limit.
    pub fn try_reserve(&mut self, more: u64) -> Result<(), BudgetSpent> {
        let limit = self.shared.limit;
        let taken =
            self.shared
                .in_use
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_use| {
                    in_use.checked_add(more).filter(|total| *total <= limit)
                });
        match taken {
            Ok(_) => {
                self.held += more;
                self.shared.gauge.add(gauge_value(more));
                Ok(())
            }
            Err(in_use) => Err(BudgetSpent {
                in_use,
                limit,
                wanted: more,
            }),
        }
    }

    /// Gives back `less` octets (at most those held).
    pub fn release(&mut self, less: u64) {
        let less = less.min(self.held);
        if less == 0 {
            return;
        }
        self.held -= less;
        self.shared.in_use.fetch_sub(less, Ordering::AcqRel);
        self.shared.gauge.sub(gauge_value(less));
    }

    /// Octets this reservation holds.
    pub fn held(&self) -> u64 {
        self.held
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release(self.held);
    }
}

fn gauge_value(octets: u64) -> i64 {
    i64::try_from(octets).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: u64) -> MemoryBudget {
        MemoryBudget::new(limit, IntGauge::new("in_use", "test").unwrap())
    }

    #[test]
    fn reservations_share_the_limit_and_give_back_on_drop() {
        let budget = budget(100);
        let mut a = budget.reservation();
        let mut b = budget.reservation();
        assert_eq!(a.try_reserve(60), Ok(()));
        assert_eq!(
            b.try_reserve(41),
            Err(BudgetSpent {
                in_use: 60,
                limit: 100,
                wanted: 41
            })
        );
        assert_eq!(b.held(), 0, "a refused request takes nothing");
        assert_eq!(b.try_reserve(40), Ok(()));
        assert_eq!(budget.in_use(), 100);
        assert_eq!(budget.shared.gauge.get(), 100);
        a.release(10);
        assert_eq!((a.held(), budget.in_use()), (50, 90));
        drop(a);
        assert_eq!(budget.in_use(), 40);
        b.release(1000);
        assert_eq!((b.held(), budget.in_use()), (0, 0));
        assert_eq!(budget.shared.gauge.get(), 0);
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_limit() {
        let budget = budget(1000);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        let mut r = budget.reservation();
                        if r.try_reserve(300).is_ok() {
                            assert!(budget.in_use() <= budget.limit());
                        }
                    }
                });
            }
        });
        assert_eq!(budget.in_use(), 0);
    }
}
