//! Deterministic mail content: the bytes the bench delivers, and what it expects back.
//!
//! A message is a pure function of (seed, login, index, size), so verification needs no
//! stored copy: the bench keeps only a hash of each message and of its header block.

use xxhash_rust::xxh3::xxh3_64;

/// 64 characters a body line is made of: every 6 random bits pick one.
const ALPHABET: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .";

/// Longest body line generated, CRLF excluded (RFC 5322 §2.1.1 recommends 78).
const MAX_LINE: u64 = 76;

/// What the bench keeps of one seeded message to check a retrieval of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digest {
    /// xxh3 of the whole message as delivered.
    pub(crate) full: u64,
    /// xxh3 of the header block, blank line included (what `TOP n 0` returns of it).
    pub(crate) header: u64,
    /// Length of the header block, blank line included.
    pub(crate) header_len: u32,
}

/// The first header line, which names the message: `X-Bench-Id: LOGIN/INDEX`.
pub(crate) fn id_line(login: &str, index: u32) -> String {
    format!("X-Bench-Id: {login}/{index}\r\n")
}

/// Reads back the login and index from a first line made by [`id_line`].
pub(crate) fn parse_id_line(line: &[u8]) -> Option<(&str, u32)> {
    let line = line.strip_suffix(b"\r\n")?;
    let rest = line.strip_prefix(b"X-Bench-Id: ")?;
    let text = std::str::from_utf8(rest).ok()?;
    let (login, index) = text.rsplit_once('/')?;
    Some((login, index.parse().ok()?))
}

/// The header block of a message, ending with the blank line.
pub(crate) fn header_block(login: &str, index: u32) -> Vec<u8> {
    let mut out = id_line(login, index).into_bytes();
    out.extend_from_slice(
        format!(
            "From: bench@example.net\r\nTo: {login}\r\nSubject: cloudpop bench message {index}\r\n\
             Message-ID: <{index}.{login}@bench.invalid>\r\n\r\n"
        )
        .as_bytes(),
    );
    out
}

/// The smallest size a message for (`login`, `index`) can have: its headers and one line.
pub(crate) fn min_size(login: &str, index: u32) -> usize {
    header_block(login, index).len() + 2
}

/// The message `index` of `login`, exactly `size` octets (or [`min_size`] if larger), with
/// CRLF line ends. About one body line in sixteen starts with a dot, so that delivery and
/// retrieval exercise dot-stuffing.
pub(crate) fn message(seed: u64, login: &str, index: u32, size: usize) -> Vec<u8> {
    let mut out = header_block(login, index);
    let target = size.max(out.len() + 2);
    out.reserve(target - out.len());
    let mut rng = SplitMix64::new(seed ^ xxh3_64(format!("{login}/{index}").as_bytes()));
    while out.len() < target {
        let remaining = (target - out.len()) as u64;
        // Lines are at most MAX_LINE + 2 octets; the last one takes what is left, so that
        // the total is exact.
        let len = if remaining <= MAX_LINE + 2 + 3 {
            remaining - 2
        } else {
            1 + rng.next() % MAX_LINE
        };
        push_line(&mut out, &mut rng, len as usize);
    }
    out
}

fn push_line(out: &mut Vec<u8>, rng: &mut SplitMix64, len: usize) {
    let dotted = rng.next().is_multiple_of(16);
    let mut bits = 0u64;
    let mut left = 0;
    for i in 0..len {
        if left == 0 {
            bits = rng.next();
            left = 10;
        }
        let c = if i == 0 && dotted {
            b'.'
        } else {
            ALPHABET[(bits & 63) as usize]
        };
        bits >>= 6;
        left -= 1;
        out.push(c);
    }
    out.extend_from_slice(b"\r\n");
}

/// The hashes of a message, for [`Digest`].
pub(crate) fn digest(message: &[u8], login: &str, index: u32) -> Digest {
    let header_len = header_block(login, index).len();
    Digest {
        full: xxh3_64(message),
        header: xxh3_64(&message[..header_len.min(message.len())]),
        header_len: u32::try_from(header_len).unwrap_or(u32::MAX),
    }
}

/// The message as sent in LMTP DATA: dot-stuffed and followed by the end-of-data line
/// (RFC 5321 §4.5.2). The message must end with CRLF.
pub(crate) fn stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 256 + 8);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A small, fast deterministic generator (Steele, Lea, Flood 2014).
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_exact_size_and_crlf_lines() {
        for size in [0, 10, 150, 151, 152, 200, 4096, 8192, 100_003] {
            let m = message(7, "u1@example.com", 3, size);
            assert_eq!(m.len(), size.max(min_size("u1@example.com", 3)));
            assert!(m.ends_with(b"\r\n"));
            for line in m.split(|&b| b == b'\n') {
                if !line.is_empty() {
                    assert!(line.ends_with(b"\r"), "bare LF");
                    assert!(line.len() <= 80);
                }
            }
            assert!(
                m.windows(2).all(|w| w[0] != b'\r' || w[1] == b'\n'),
                "bare CR"
            );
        }
    }

    #[test]
    fn messages_are_deterministic_and_distinct() {
        let a = message(1, "a@example.com", 0, 8192);
        assert_eq!(a, message(1, "a@example.com", 0, 8192));
        assert_ne!(a, message(2, "a@example.com", 0, 8192));
        assert_ne!(a, message(1, "a@example.com", 1, 8192));
        assert!(
            a.windows(2).any(|w| w == b"\n."),
            "no line starts with a dot"
        );
    }

    #[test]
    fn the_id_line_round_trips() {
        let line = id_line("x@example.com", 42);
        assert_eq!(parse_id_line(line.as_bytes()), Some(("x@example.com", 42)));
        assert_eq!(parse_id_line(b"X-Bench-Id: nope\r\n"), None);
        let m = message(1, "x@example.com", 42, 500);
        assert!(m.starts_with(line.as_bytes()));
    }

    #[test]
    fn stuffing_doubles_leading_dots_only() {
        assert_eq!(
            stuff(b".a\r\nb.c\r\n..\r\n"),
            b"..a\r\nb.c\r\n...\r\n.\r\n".to_vec()
        );
    }

    #[test]
    fn the_header_digest_covers_the_blank_line() {
        let m = message(1, "h@example.com", 5, 1000);
        let d = digest(&m, "h@example.com", 5);
        let h = header_block("h@example.com", 5);
        assert!(h.ends_with(b"\r\n\r\n"));
        assert_eq!(d.header_len as usize, h.len());
        assert_eq!(d.header, xxh3_64(&h));
    }
}
