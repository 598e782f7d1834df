//! PROXY protocol v1 and v2 for the POP3 listener: the real client address of a connection
//! relayed by haproxy or a cloud load balancer.
//!
//! The specification is haproxy's `doc/proxy-protocol.txt` ("The PROXY protocol, Versions 1 &
//! 2"); section numbers below are that document's.
//!
//! # Who may send a header
//!
//! A PROXY header is accepted only from configured trusted networks; from anywhere else the
//! connection is refused. The listener decides from the TCP peer address alone, before reading
//! a byte ([`decide`]), because §2 and §5 forbid guessing from the bytes whether a header is
//! present: a client allowed to send one could make its connection appear to come from
//! anywhere.
//!
//! - [`Expectation::Header`] (a trusted peer, PROXY protocol enabled): the listener calls
//!   [`read_header`] before it sends the greeting (§2: "The receiver MUST NOT start processing
//!   the connection before it receives a complete and valid PROXY protocol header"). No header,
//!   a malformed or over-long one, or none within the timeout: the connection is refused.
//! - [`Expectation::Direct`] (any other peer): the peer is served as a direct client and the
//!   greeting goes out at once. POP3 clients speak only after the greeting (RFC 1939 §4), so
//!   waiting to see whether a header comes would delay every direct client by the full
//!   timeout; instead the listener checks the first bytes the peer sends with [`sniff`]. If
//!   they start with `PROXY ` or the v2 signature, the peer is trying to speak the PROXY
//!   protocol without being trusted, and the connection is refused (and logged) instead of
//!   being answered `-ERR` line by line. The address claimed in such a header is never parsed,
//!   let alone used.
//!
//! There is deliberately no "header optional" mode: telling whether a header is coming means
//! waiting for bytes that a POP3 client never sends before the greeting.
//!
//! # Layers
//!
//! - [`parse`] and [`parse_with_limit`]: bytes in, [`Parsed`] out. No I/O. v2 is recognised by
//!   its 12-byte signature (§2.2), v1 by `PROXY ` (§2.1); anything else is
//!   [`ProxyError::Missing`]. This module frames the header (v1 up to its CRLF, v2 by its
//!   length) and only then has the `ppp` crate decode the addresses, so the result never
//!   depends on how the bytes were chunked. v1 `UNKNOWN` is recognised here, because §2.1 says
//!   to ignore the rest of its line, which `ppp` does not.
//! - [`read_header`]: reads one header from a stream under a deadline and a length cap.
//! - [`TrustedNetworks`] and [`decide`]: the policy above.
//!
//! # Limits
//!
//! - v1: at most 107 bytes, CRLF included (§2.1). A CR not followed by LF, a bare LF, or any
//!   byte outside printable US-ASCII before the CRLF is malformed at once, without waiting for
//!   the rest of the line (§2.1: "abort the connection as soon as possible").
//! - v2: 16 bytes plus the length in bytes 15–16 (§2.2), at most 16 + 65535 by the format;
//!   this module caps it at a configurable smaller maximum ([`DEFAULT_MAX_LEN`] by default),
//!   checked as soon as the 16-byte fixed part has arrived. TLVs (§2.2.1–§2.2.8) are skipped,
//!   never interpreted.
//!
//! # What the header means
//!
//! [`ProxyHeader`] carries the client (`source`) and the address it connected to
//! (`destination`). Both are `None` when the header says to use the real connection endpoints:
//! v1 `UNKNOWN` (§2.1), v2 `LOCAL` (health checks, §2.2), and v2 `PROXY` with an unspecified
//! or unsupported family or transport (AF_UNSPEC, AF_UNIX, DGRAM), for which §2.2 lets the
//! receiver fall back to UNSPEC.
//!
//! This module does not write headers, does not interpret TLVs, and does not do TLS: on POP3S
//! the header precedes the TLS handshake, and [`read_header`] leaves the handshake's bytes in
//! the stream.

mod parse;
mod policy;
mod read;
mod trusted;

use std::net::SocketAddr;

pub use parse::{
    DEFAULT_MAX_LEN, Parsed, Sniff, V1_MAX_LEN, V2_MAX_LEN, V2_SIGNATURE, parse, parse_with_limit,
    sniff,
};
pub use policy::{Expectation, decide};
pub use read::read_header;
pub use trusted::{TrustedNetworks, TrustedNetworksError};

/// The connection endpoints a proxy reported.
///
/// `None` means "use the TCP peer" (or the local socket address for `destination`): the
/// proxy sent v1 `UNKNOWN`, v2 `LOCAL`, or v2 `PROXY` with addresses this listener does not
/// use (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyHeader {
    /// The client's address as the proxy saw it.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, on the proxy.
    pub destination: Option<SocketAddr>,
}

impl ProxyHeader {
    /// The client address to use for this connection: the reported source, or `peer` (the
    /// TCP peer, i.e. the proxy itself) when the header carries none.
    pub fn source_or(&self, peer: SocketAddr) -> SocketAddr {
        self.source.unwrap_or(peer)
    }
}

/// Why no usable PROXY header was read. Each variant means the connection is refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The peer must send a header but its first bytes are neither `PROXY ` (v1) nor the v2
    /// signature.
    #[error("no PROXY protocol header from a peer that must send one")]
    Missing,
    /// The bytes start like a header but break the specification. The reason is for logs;
    /// it never quotes the peer's bytes.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    /// The header is, or announces itself as, longer than allowed: v1 without CRLF in its
    /// first 107 bytes, or v2 longer than the configured maximum.
    #[error("PROXY protocol header longer than {limit} bytes")]
    TooLong {
        /// The limit that applied, in bytes.
        limit: usize,
    },
    /// The whole header did not arrive in time.
    #[error("no complete PROXY protocol header within the timeout")]
    Timeout,
    /// Reading failed, or the peer closed the connection before the header was complete
    /// (`UnexpectedEof`).
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}
