//! Framing and decoding of one PROXY header. No I/O: bytes in, [`Parsed`] out.
//!
//! This module frames the header itself (v1: up to the first CRLF; v2: 16 bytes plus the
//! announced length) and hands only a complete header to `ppp` for decoding. Every decision
//! depends on a prefix of the input, taken in the same order however the bytes arrived, so a
//! header fed in chunks of any size gives the same result as the whole header at once.

use std::net::SocketAddr;

use ppp::PartialResult;
use ppp::v1;
use ppp::v2;

use super::{ProxyError, ProxyHeader};

/// The 12-byte signature that starts every v2 header (§2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 header, CRLF included (§2.1: `PROXY UNKNOWN` with two full IPv6 addresses
/// and two 5-digit ports).
pub const V1_MAX_LEN: usize = 107;

/// The longest v2 header the format can express: the 16-byte fixed part plus a 16-bit length.
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + u16::MAX as usize;

/// The header length cap [`parse`] applies: room for addresses and the TLVs load balancers
/// send in practice, far below [`V2_MAX_LEN`].
pub const DEFAULT_MAX_LEN: usize = 4096;

/// What starts a v1 header (§2.1: "PROXY" and exactly one space).
const V1_PREFIX: &[u8] = b"PROXY ";

/// The shortest v1 header: `PROXY UNKNOWN\r\n` (§2.1).
const V1_MIN_LEN: usize = 15;

/// Signature, version and command, family and transport, length (§2.2).
const V2_FIXED_LEN: usize = 16;

/// The result of parsing the start of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The bytes so far are the start of a header; more are needed to decide.
    Incomplete,
    /// A whole, valid header.
    Complete {
        /// What the header reports.
        header: ProxyHeader,
        /// The header's length in bytes; the connection's own data starts right after.
        consumed: usize,
    },
}

/// Whether the first bytes of a connection are a PROXY header, without parsing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// They start with `PROXY ` or the v2 signature.
    Header,
    /// They cannot be the start of a header.
    NotHeader,
    /// They are a proper prefix of `PROXY ` or of the v2 signature: more bytes are needed.
    NeedMore,
}

enum Detected {
    V1,
    V2,
    Undecided,
    Neither,
}

fn detect(buf: &[u8]) -> Detected {
    if buf.starts_with(&V2_SIGNATURE) {
        Detected::V2
    } else if buf.starts_with(V1_PREFIX) {
        Detected::V1
    } else if V2_SIGNATURE.starts_with(buf) || V1_PREFIX.starts_with(buf) {
        Detected::Undecided
    } else {
        Detected::Neither
    }
}

/// Tells whether `buf`, the first bytes a connection sent, start a PROXY header.
///
/// The listener uses it on peers that must not send one ([`super::Expectation::Direct`]):
/// [`Sniff::Header`] means the connection is refused. No POP3 command starts with `PROXY `,
/// and the signature's `\r\n\r\n\0` is no command either, so a real command leaves
/// [`Sniff::NeedMore`] within its first few bytes (`PASS` at its second). Only a client whose
/// first line is empty and who then waits would keep it undecided, until the idle timeout.
pub fn sniff(buf: &[u8]) -> Sniff {
    match detect(buf) {
        Detected::V1 | Detected::V2 => Sniff::Header,
        Detected::Undecided => Sniff::NeedMore,
        Detected::Neither => Sniff::NotHeader,
    }
}

/// Parses the PROXY header at the start of `buf`, capping v2 headers at [`DEFAULT_MAX_LEN`].
///
/// See [`parse_with_limit`].
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    parse_with_limit(buf, DEFAULT_MAX_LEN)
}

/// Parses the PROXY header at the start of `buf`, the first bytes of a connection.
///
/// `max_len` caps the header's length in bytes; it is clamped to
/// [`V1_MAX_LEN`]`..=`[`V2_MAX_LEN`], so v1 headers always get their 107 bytes and only v2
/// headers (whose TLVs can make them long) are cut shorter.
///
/// Returns [`Parsed::Incomplete`] while `buf` could still become a valid header, and an error
/// as soon as it cannot: [`ProxyError::Missing`] if it does not start like a header at all,
/// [`ProxyError::TooLong`] or [`ProxyError::Malformed`] otherwise. Bytes after the header are
/// not looked at.
pub fn parse_with_limit(buf: &[u8], max_len: usize) -> Result<Parsed, ProxyError> {
    match detect(buf) {
        Detected::V1 => parse_v1(buf),
        Detected::V2 => parse_v2(buf, effective_limit(max_len)),
        Detected::Undecided => Ok(Parsed::Incomplete),
        Detected::Neither => Err(ProxyError::Missing),
    }
}

fn effective_limit(max_len: usize) -> usize {
    max_len.clamp(V1_MAX_LEN, V2_MAX_LEN)
}

/// How many more bytes can be read without reading past the end of any header that starts
/// with `buf`: a lower bound on what is still missing, at least 1. Meant for `buf` on which
/// [`parse_with_limit`] returned [`Parsed::Incomplete`].
pub(super) fn safe_read_len(buf: &[u8]) -> usize {
    let missing = match detect(buf) {
        Detected::V2 => match v2_declared_len(buf) {
            Some(total) => total.saturating_sub(buf.len()),
            None => V2_FIXED_LEN.saturating_sub(buf.len()),
        },
        Detected::V1 => {
            // The line still needs its CRLF, or its LF after a trailing CR; but never more
            // than its 107 bytes: the byte at the limit already decides a line too long.
            let line_end = if buf.ends_with(b"\r") { 1 } else { 2 };
            let missing = v1_min_len(buf).saturating_sub(buf.len()).max(line_end);
            missing.min(V1_MAX_LEN.saturating_sub(buf.len()))
        }
        Detected::Undecided | Detected::Neither => V1_MIN_LEN.saturating_sub(buf.len()),
    };
    missing.max(1)
}

/// The shortest v1 header that starts with `buf` (§2.1).
fn v1_min_len(buf: &[u8]) -> usize {
    if buf.starts_with(b"PROXY TCP4 ") {
        "PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n".len()
    } else if buf.starts_with(b"PROXY TCP6 ") {
        "PROXY TCP6 :: :: 0 0\r\n".len()
    } else {
        V1_MIN_LEN
    }
}

/// §2.1: one line of printable US-ASCII ending in CRLF, at most 107 bytes.
fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let Some(end) = frame_v1(buf)? else {
        return Ok(Parsed::Incomplete);
    };
    let line = &buf[..end];
    Ok(Parsed::Complete {
        header: decode_v1(line)?,
        consumed: end,
    })
}

/// The length of the line including its CRLF, once it is all there.
fn frame_v1(buf: &[u8]) -> Result<Option<usize>, ProxyError> {
    for (i, &byte) in buf.iter().enumerate() {
        // A CRLF starting here would end past byte 107 (§2.1: "If the CRLF sequence is not
        // found in the first 107 characters, the receiver should declare the line invalid").
        if i + 2 > V1_MAX_LEN {
            return Err(ProxyError::TooLong { limit: V1_MAX_LEN });
        }
        match byte {
            // §2.1: "The receiver must not tolerate a single CR or LF character to end the line".
            b'\r' => {
                return match buf.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some(i + 2)),
                    Some(_) => Err(malformed("v1 header has a CR not followed by LF")),
                };
            }
            b' '..=b'~' => {}
            _ => return Err(malformed("v1 header has a byte outside printable US-ASCII")),
        }
    }
    Ok(None)
}

fn decode_v1(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    // §2.1: for UNKNOWN "the receiver must ignore anything presented before the CRLF", and
    // use the real connection's endpoints.
    let after_prefix = line.get(V1_PREFIX.len()..).unwrap_or_default();
    if let Some(rest) = after_prefix.strip_prefix(b"UNKNOWN")
        && matches!(rest.first(), Some(b' ' | b'\r'))
    {
        return Ok(ProxyHeader::default());
    }
    let header = v1::Header::try_from(line).map_err(|e| malformed(format!("v1 header: {e}")))?;
    Ok(match header.addresses {
        v1::Addresses::Tcp4(a) => ProxyHeader {
            source: Some(SocketAddr::from((a.source_address, a.source_port))),
            destination: Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        },
        v1::Addresses::Tcp6(a) => ProxyHeader {
            source: Some(SocketAddr::from((a.source_address, a.source_port))),
            destination: Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        },
        v1::Addresses::Unknown => ProxyHeader::default(),
    })
}

/// The whole v2 header's length, once the 16-byte fixed part is there (§2.2: "the length
/// of the protocol header in bytes is always exactly 16 + this value").
fn v2_declared_len(buf: &[u8]) -> Option<usize> {
    match buf.get(14..16) {
        Some(&[high, low]) => Some(V2_FIXED_LEN + usize::from(u16::from_be_bytes([high, low]))),
        _ => None,
    }
}

/// §2.2: the signature, version and command, family and transport, length, then addresses
/// and TLVs.
fn parse_v2(buf: &[u8], limit: usize) -> Result<Parsed, ProxyError> {
    let Some(total) = v2_declared_len(buf) else {
        return Ok(Parsed::Incomplete);
    };
    // Decided from the fixed part alone, before a byte of the body is awaited.
    if total > limit {
        return Err(ProxyError::TooLong { limit });
    }
    let framed = &buf[..total.min(buf.len())];
    match v2::Header::try_from(framed) {
        Ok(header) => Ok(Parsed::Complete {
            header: decode_v2(&header),
            consumed: total,
        }),
        // Only the length is missing: every other check ppp makes is on the fixed part.
        Err(e) if e.is_incomplete() => Ok(Parsed::Incomplete),
        Err(e) => Err(malformed(format!("v2 header: {e}"))),
    }
}

fn decode_v2(header: &v2::Header<'_>) -> ProxyHeader {
    // §2.2, LOCAL: "the receiver must … use the real connection endpoints and discard the
    // protocol block". A TCP listener uses only STREAM over INET/INET6; for the other valid
    // combinations it "falls back to the UNSPEC mode": the real endpoints again.
    if header.command != v2::Command::Proxy || header.protocol != v2::Protocol::Stream {
        return ProxyHeader::default();
    }
    match header.addresses {
        v2::Addresses::IPv4(a) => ProxyHeader {
            source: Some(SocketAddr::from((a.source_address, a.source_port))),
            destination: Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        },
        v2::Addresses::IPv6(a) => ProxyHeader {
            source: Some(SocketAddr::from((a.source_address, a.source_port))),
            destination: Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        },
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => ProxyHeader::default(),
    }
}

fn malformed(reason: impl Into<String>) -> ProxyError {
    ProxyError::Malformed(reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_read_len_never_passes_the_end_of_the_shortest_headers() {
        let shortest: [&[u8]; 3] = [
            b"PROXY UNKNOWN\r\n",
            b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n",
            b"PROXY TCP6 :: :: 0 0\r\n",
        ];
        for header in shortest {
            for n in 0..header.len() {
                let want = safe_read_len(&header[..n]);
                assert!(n + want <= header.len(), "{n} + {want} passes {header:?}");
            }
        }
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        for n in 0..local.len() {
            assert!(n + safe_read_len(&local[..n]) <= local.len());
        }
    }

    #[test]
    fn safe_read_len_never_takes_a_v1_line_past_its_limit() {
        // A line without CR: after 106 bytes, one more byte decides that it is too long.
        for n in V1_PREFIX.len()..V1_MAX_LEN {
            let mut line = V1_PREFIX.to_vec();
            line.resize(n, b'-');
            let want = safe_read_len(&line);
            assert!(n + want <= V1_MAX_LEN, "{n} + {want} passes {V1_MAX_LEN}");
        }
        let mut line = V1_PREFIX.to_vec();
        line.resize(V1_MAX_LEN, b'-');
        assert!(matches!(
            parse(&line),
            Err(ProxyError::TooLong { limit: V1_MAX_LEN })
        ));
    }

    #[test]
    fn max_len_is_clamped_to_the_format() {
        assert_eq!(effective_limit(0), V1_MAX_LEN);
        assert_eq!(effective_limit(usize::MAX), V2_MAX_LEN);
        assert_eq!(effective_limit(DEFAULT_MAX_LEN), DEFAULT_MAX_LEN);
    }
}
