//! Which peers must send a PROXY header, and which must not.

use std::net::IpAddr;

use super::TrustedNetworks;

/// What the listener expects at the start of a connection, decided from the TCP peer alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// A trusted proxy: read a header with [`super::read_header`] before sending the
    /// greeting; any error refuses the connection.
    Header,
    /// A direct client: send the greeting now; if its first bytes [`super::sniff`] as a
    /// header, refuse the connection (it would be claiming someone else's address).
    Direct,
}

/// Decides what a connection from `peer` must start with.
///
/// `require_from_trusted` is whether the listener speaks the PROXY protocol at all. When it
/// does, a peer in `trusted` must send a header and every other peer must not; when it does
/// not, no peer may send one. IPv4-mapped IPv6 peers are matched as IPv4
/// ([`TrustedNetworks::contains`]).
pub fn decide(peer: IpAddr, trusted: &TrustedNetworks, require_from_trusted: bool) -> Expectation {
    if require_from_trusted && trusted.contains(peer) {
        Expectation::Header
    } else {
        Expectation::Direct
    }
}
