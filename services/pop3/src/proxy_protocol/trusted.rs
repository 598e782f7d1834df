//! The networks whose connections carry a PROXY header.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// The networks the proxies in front of the listener connect from (§5: "accepting the header
/// only from a number of known sources should be safe").
///
/// Built from entries such as `10.0.0.0/8`, `127.0.0.1/32` or `::1/128`; a bare address is
/// one host (`/32` or `/128`). An entry with host bits set (`10.1.2.3/8`) is refused rather
/// than silently widened or narrowed: this list decides who may claim any client address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedNetworks(Vec<IpNet>);

/// An entry of a trusted network list that is not an address or a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trusted network `{entry}`: {reason}")]
pub struct TrustedNetworksError {
    entry: String,
    reason: String,
}

impl TrustedNetworksError {
    /// The entry as written.
    pub fn entry(&self) -> &str {
        &self.entry
    }
}

impl TrustedNetworks {
    /// The empty list: no peer may send a PROXY header.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether `ip` is in one of the networks.
    ///
    /// An IPv4 client looks the same whichever way the socket reports it: `::ffff:10.1.2.3`
    /// (a dual-stack socket) matches `10.0.0.0/8`, and `10.1.2.3` matches a network written
    /// in IPv4-mapped form such as `::ffff:10.0.0.0/104`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let other_form = match ip {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            // Not `to_ipv4`, which would also turn `::1` into `0.0.0.1`.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        };
        self.0
            .iter()
            .any(|net| net.contains(&ip) || other_form.is_some_and(|other| net.contains(&other)))
    }

    /// The networks, in the order given.
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_entry(entry: &str) -> Result<IpNet, TrustedNetworksError> {
    let error = |reason: String| TrustedNetworksError {
        entry: entry.to_owned(),
        reason,
    };
    let text = entry.trim();
    if text.is_empty() {
        return Err(error("empty entry".into()));
    }
    if !text.contains('/') {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| error("not an IP address or a network such as 10.0.0.0/8".into()))?;
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = text.parse().map_err(|_| {
        error("not a network: expected an address, `/`, and a prefix length in range".into())
    })?;
    if net.trunc() != net {
        return Err(error(format!(
            "host bits are set; the network is {}",
            net.trunc()
        )));
    }
    Ok(net)
}

/// Parses a list separated by commas and/or whitespace, e.g. `10.0.0.0/8, ::1`. An empty
/// string is the empty list.
impl FromStr for TrustedNetworks {
    type Err = TrustedNetworksError;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        list.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(parse_entry)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// Parses one entry per element; an empty element is an error.
impl TryFrom<&[String]> for TrustedNetworks {
    type Error = TrustedNetworksError;

    fn try_from(entries: &[String]) -> Result<Self, Self::Error> {
        entries
            .iter()
            .map(|entry| parse_entry(entry))
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// Comma-separated, in the form [`FromStr`] reads back.
impl fmt::Display for TrustedNetworks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}
