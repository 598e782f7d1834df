//! The message being received: the DATA decoder and a buffer that grows only within the
//! [`MemoryBudget`].
//!
//! Before each decode the buffer is made large enough for everything that decode can
//! append ([`DataDecoder::max_output`]), capped at the largest message allowed, and the
//! budget is asked for that capacity first. The decoder therefore never allocates on its
//! own, and the memory held is what the budget granted. When the budget refuses, the buffer
//! is dropped at once (its bytes go back to the budget) and the rest of the message is
//! read and discarded, so the connection stays in step with the client.

use bytes::BytesMut;

use crate::codec::{DataDecoder, DataEnd};
use crate::memory_budget::{BudgetSpent, MemoryBudget, Reservation};
use crate::session::Received;

/// Decodes one message into a budgeted buffer.
#[derive(Debug)]
pub(crate) struct Incoming {
    decoder: DataDecoder,
    kept: Kept,
}

/// What is kept of the message so far.
#[derive(Debug)]
enum Kept {
    /// Everything so far.
    Buffer(Buffer),
    /// Nothing: the message is over the size limit.
    TooLarge,
    /// Nothing: the budget refused to let the buffer grow.
    OverBudget(BudgetSpent),
}

/// The message bytes so far and the reservation that covers their capacity.
#[derive(Debug)]
struct Buffer {
    bytes: BytesMut,
    reservation: Reservation,
    /// Capacity never needed: the trace fields plus `max_message_size`.
    max_capacity: usize,
}

impl Incoming {
    /// Starts a message whose buffer already holds `trace_fields`; at most `limit` octets
    /// of message are kept after them.
    pub(crate) fn new(trace_fields: BytesMut, limit: u64, budget: &MemoryBudget) -> Self {
        let mut reservation = budget.reservation();
        let max_capacity = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_add(trace_fields.len());
        let kept = match reservation.try_reserve(trace_fields.capacity() as u64) {
            Ok(()) => Kept::Buffer(Buffer {
                bytes: trace_fields,
                reservation,
                max_capacity,
            }),
            Err(spent) => Kept::OverBudget(spent),
        };
        let mut decoder = DataDecoder::new(limit);
        if !matches!(kept, Kept::Buffer(_)) {
            decoder.discard();
        }
        Self { decoder, kept }
    }

    /// Consumes what `input` holds of the message. `Some` once the end marker has been
    /// consumed (bytes after it stay in `input`).
    pub(crate) fn decode(&mut self, input: &mut BytesMut) -> Option<(Received, DataEnd)> {
        if let Kept::Buffer(buffer) = &mut self.kept
            && let Err(spent) = buffer.make_room(DataDecoder::max_output(input.len()))
        {
            self.give_up(Kept::OverBudget(spent));
        }
        let end = match &mut self.kept {
            Kept::Buffer(buffer) => self.decoder.decode(input, &mut buffer.bytes),
            Kept::TooLarge | Kept::OverBudget(_) => {
                self.decoder.decode(input, &mut BytesMut::new())
            }
        };
        if self.decoder.is_too_large() && matches!(self.kept, Kept::Buffer(_)) {
            self.give_up(Kept::TooLarge);
        }
        let end = end?;
        let received = match std::mem::replace(&mut self.kept, Kept::TooLarge) {
            Kept::Buffer(buffer) => Received::Message {
                message: buffer.bytes,
                reservation: buffer.reservation,
            },
            // RFC 1870 §6.2: a message over the fixed limit is refused for good (552), even
            // if it was given up for lack of memory first: retrying it cannot succeed.
            Kept::TooLarge => Received::TooLarge,
            Kept::OverBudget(_) if end.too_large => Received::TooLarge,
            Kept::OverBudget(spent) => Received::OverBudget(spent),
        };
        Some((received, end))
    }

    /// Drops the buffer (its bytes go back to the budget) and keeps nothing more.
    fn give_up(&mut self, why: Kept) {
        self.kept = why;
        self.decoder.discard();
    }
}

impl Buffer {
    /// Makes the capacity hold `more` octets after the current length (capped at
    /// `max_capacity`), reserving the new allocation before making it. Grows by doubling,
    /// so a message of `n` octets is copied O(log n) times.
    fn make_room(&mut self, more: usize) -> Result<(), BudgetSpent> {
        let capacity = self.bytes.capacity();
        let needed = self.bytes.len().saturating_add(more).min(self.max_capacity);
        if capacity >= needed {
            return Ok(());
        }
        let target = needed.max(capacity.saturating_mul(2).min(self.max_capacity));
        // The old and the new allocation are both held while the bytes are copied.
        self.reservation.try_reserve(target as u64)?;
        let mut bigger = BytesMut::with_capacity(target);
        bigger.extend_from_slice(&self.bytes);
        self.bytes = bigger;
        self.settle();
        Ok(())
    }

    /// Gives back whatever the reservation holds beyond the buffer's capacity.
    fn settle(&mut self) {
        let excess = self
            .reservation
            .held()
            .saturating_sub(self.bytes.capacity() as u64);
        self.reservation.release(excess);
    }
}

#[cfg(test)]
mod tests {
    use prometheus::IntGauge;

    use super::*;

    fn budget(limit: u64) -> MemoryBudget {
        MemoryBudget::new(limit, IntGauge::new("in_use", "test").unwrap())
    }

    /// Feeds `body` in chunks of `chunk` octets, checking after each decode that the
    /// buffer's capacity is exactly what the budget holds for it.
    fn receive(incoming: &mut Incoming, body: &[u8], chunk: usize) -> (Received, DataEnd) {
        let mut input = BytesMut::new();
        for piece in body.chunks(chunk) {
            input.extend_from_slice(piece);
            let done = incoming.decode(&mut input);
            if let Kept::Buffer(buffer) = &incoming.kept {
                assert_eq!(
                    buffer.reservation.held(),
                    buffer.bytes.capacity() as u64,
                    "the reservation covers the buffer exactly"
                );
            }
            if let Some(done) = done {
                return done;
            }
        }
        panic!("no end marker");
    }

    fn lines(count: usize, ending: &str) -> Vec<u8> {
        let mut body = format!("line{ending}").repeat(count).into_bytes();
        body.extend_from_slice(b"\r\n.\r\n");
        body
    }

    #[test]
    fn a_message_within_budget_is_kept_whole() {
        let budget = budget(1 << 20);
        let mut incoming = Incoming::new(BytesMut::from(&b"T: 1\r\n"[..]), 100_000, &budget);
        let (received, end) = receive(&mut incoming, &lines(1000, "\n"), 333);
        let Received::Message {
            message,
            reservation,
        } = received
        else {
            panic!("{received:?}");
        };
        assert_eq!(end.size, 6002);
        assert_eq!(message.len(), 6 + 6002);
        assert!(&message[..6] == b"T: 1\r\n" && message.ends_with(b"line\r\n\r\n"));
        assert_eq!(budget.in_use(), message.capacity() as u64);
        assert!(message.capacity() <= 6 + 100_000);
        drop((message, reservation));
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn over_budget_discards_the_rest_and_gives_everything_back() {
        let budget = budget(10_000);
        let mut other = budget.reservation();
        other.try_reserve(4_000).unwrap();
        let mut incoming = Incoming::new(BytesMut::from(&b"T: 1\r\n"[..]), 100_000, &budget);
        let mut input = BytesMut::from(&lines(2000, "\n")[..]);
        input.extend_from_slice(b"NOOP\r\n");
        let (received, end) = incoming.decode(&mut input).unwrap();
        assert!(matches!(received, Received::OverBudget(_)), "{received:?}");
        assert_eq!(end.size, 12_002);
        assert_eq!(&input[..], b"NOOP\r\n");
        assert_eq!(budget.in_use(), 4_000);
    }

    #[test]
    fn refused_midway_when_others_hold_the_budget() {
        let budget = budget(20_000);
        let mut incoming = Incoming::new(BytesMut::new(), 100_000, &budget);
        let mut input = BytesMut::from(&lines(500, "\r\n")[..3000]);
        assert!(incoming.decode(&mut input).is_none());
        let held = budget.in_use();
        assert!(held > 0 && matches!(incoming.kept, Kept::Buffer(_)));
        let mut other = budget.reservation();
        other.try_reserve(20_000 - held).unwrap();
        let mut input = BytesMut::from(&lines(2000, "\r\n")[3000..]);
        let (received, _) = incoming.decode(&mut input).unwrap();
        assert!(matches!(received, Received::OverBudget(_)));
        assert_eq!(budget.in_use(), 20_000 - held);
    }

    #[test]
    fn too_large_gives_the_buffer_back() {
        let budget = budget(1 << 20);
        let mut incoming = Incoming::new(BytesMut::new(), 1000, &budget);
        let (received, end) = receive(&mut incoming, &lines(300, "\n"), 100);
        assert!(matches!(received, Received::TooLarge));
        assert!(end.too_large);
        assert_eq!(budget.in_use(), 0);
    }
}
