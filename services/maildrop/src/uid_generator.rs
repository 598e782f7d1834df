//! Time-ordered unique ids for new messages (ULID-like).

use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ids::UniqueId;

/// Lowercase Crockford base32: digits and letters without `i`, `l`, `o`, `u`, in ASCII order,
/// so that comparing encoded ids as strings compares the numbers they encode.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Length of an encoded id: 128 bits in 5-bit digits, rounded up.
const ENCODED_LEN: usize = 26;

const RANDOM_BITS: u32 = 80;
const TIMESTAMP_MAX: u64 = (1 << 48) - 1;

/// Issues new message ids: 48 bits of unix milliseconds then 80 random bits, written as
/// 26 characters of lowercase Crockford base32, so that string order is time order.
///
/// Ids from one generator are strictly increasing: when the clock has not moved past the
/// previous id's millisecond (same millisecond, or the clock stepped back), the previous
/// value plus one is issued instead. Ids from different generators (other processes, or
/// this process after a restart) are unique thanks to the random part and ordered by
/// their millisecond.
#[derive(Debug, Default)]
pub struct UidGenerator {
    // The last id issued, as a number; 0 before the first.
    last: Mutex<u128>,
}

impl UidGenerator {
    /// A generator that has issued nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next id: greater than every id this generator issued before.
    pub fn next(&self) -> UniqueId {
        let now = unix_millis();
        // The critical section never panics, so a poisoned value is still consistent.
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let value = if now <= millis_of(*last) {
            // Carrying into the timestamp on overflow of the random part keeps the order.
            last.wrapping_add(1)
        } else {
            (u128::from(now) << RANDOM_BITS) | random_80_bits()
        };
        *last = value;
        UniqueId::from_generated(encode(value))
    }
}

/// Whether `name` has the shape of an id a generator issues (26 characters of its
/// alphabet): a file so named in a store folder was written by a store.
pub(crate) fn is_generated(name: &str) -> bool {
    name.len() == ENCODED_LEN && name.bytes().all(|b| ALPHABET.contains(&b))
}

fn unix_millis() -> u64 {
    // A clock before 1970 is treated as 1970; the monotonic rule in `next` still holds.
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    u64::try_from(millis).unwrap_or(u64::MAX).min(TIMESTAMP_MAX)
}

fn millis_of(value: u128) -> u64 {
    // The shift leaves 48 bits, which always fit.
    u64::try_from(value >> RANDOM_BITS).unwrap_or(u64::MAX)
}

fn random_80_bits() -> u128 {
    let mut buf = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut buf[6..]) {
        // Without OS randomness, std's per-process random hash keys still separate this
        // process from others; issuing no id at all would fail delivery.
        tracing::warn!(error = %e, "getrandom failed; using fallback randomness for uids");
        let state = RandomState::new();
        let high = state.hash_one(SystemTime::now());
        let low = state.hash_one(std::process::id());
        buf[..8].copy_from_slice(&high.to_be_bytes());
        buf[8..].copy_from_slice(&low.to_be_bytes());
    }
    u128::from_be_bytes(buf) & ((1 << RANDOM_BITS) - 1)
}

/// Big-endian base32 of all 128 bits; the first digit holds only the top 3 bits.
fn encode(value: u128) -> String {
    (0..ENCODED_LEN)
        .map(|i| {
            let shift = 5 * (ENCODED_LEN - 1 - i);
            let digit = (value >> shift) & 0x1f;
            // `digit` is below 32, so the index is in range.
            char::from(ALPHABET[digit as usize])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ids_are_strictly_increasing_over_100k_calls() {
        let generator = UidGenerator::new();
        let mut previous = generator.next();
        for _ in 0..100_000 {
            let next = generator.next();
            assert!(next > previous, "{next} does not sort after {previous}");
            previous = next;
        }
    }

    #[test]
    fn ids_are_valid_crockford_base32_of_fixed_length() {
        let generator = UidGenerator::new();
        for _ in 0..1_000 {
            let uid = generator.next();
            assert_eq!(uid.as_str().len(), ENCODED_LEN);
            assert!(uid.as_str().bytes().all(|b| ALPHABET.contains(&b)), "{uid}");
            assert_eq!(UniqueId::new(uid.as_str()).as_ref(), Ok(&uid));
        }
    }

    #[test]
    fn ids_are_distinct_across_threads() {
        let generator = Arc::new(UidGenerator::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let generator = Arc::clone(&generator);
                std::thread::spawn(move || {
                    (0..10_000).map(|_| generator.next()).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for thread in threads {
            for uid in thread.join().unwrap() {
                assert!(seen.insert(uid.clone()), "{uid} issued twice");
            }
        }
        assert_eq!(seen.len(), 80_000);
    }

    #[test]
    fn independent_generators_order_by_millisecond() {
        let first = UidGenerator::new().next();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = UidGenerator::new().next();
        assert!(second > first, "{second} does not sort after {first}");
    }

    #[test]
    fn the_timestamp_is_the_current_time() {
        let before = unix_millis();
        let uid = UidGenerator::new().next();
        let after = unix_millis();
        let decoded = uid.as_str().bytes().fold(0u128, |acc, b| {
            let digit = ALPHABET.iter().position(|&a| a == b).unwrap();
            (acc << 5) | digit as u128
        });
        assert!((before..=after).contains(&millis_of(decoded)));
    }

    #[test]
    fn encoding_edges() {
        assert_eq!(encode(0), "0".repeat(26));
        assert_eq!(encode(u128::MAX), format!("7{}", "z".repeat(25)));
        assert_eq!(
            encode(1 << RANDOM_BITS),
            format!("{}1{}", "0".repeat(9), "0".repeat(16))
        );
    }

    proptest! {
        #[test]
        fn encoding_preserves_order(a: u128, b: u128) {
            prop_assert_eq!(a.cmp(&b), encode(a).cmp(&encode(b)));
        }
    }
}
