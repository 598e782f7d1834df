//! Choosing the certificate for a handshake from the client's SNI, over a swappable set.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::DnsName;

use super::certs::load_certified_key;
use super::{TlsError, TlsSettings};

/// One loaded generation of certificates: the default and the SNI ones, by name.
pub(super) struct CertSet {
    default: Arc<CertifiedKey>,
    /// Lower-case exact names.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the lower-case suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertSet {
    /// Loads every certificate and key named by `settings`; all or nothing.
    pub(super) fn load(
        settings: &TlsSettings,
        provider: &CryptoProvider,
    ) -> Result<Self, TlsError> {
        let default = load_certified_key(&settings.cert, &settings.key, provider)?;
        let mut set = Self {
            default,
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for entry in &settings.sni {
            if entry.domains.is_empty() {
                return Err(TlsError::NoSniDomains {
                    cert: entry.cert.clone(),
                });
            }
            let key = load_certified_key(&entry.cert, &entry.key, provider)?;
            for domain in &entry.domains {
                set.insert(domain, &key)?;
            }
        }
        Ok(set)
    }

    fn insert(&mut self, domain: &str, key: &Arc<CertifiedKey>) -> Result<(), TlsError> {
        let (map, name) = match parse_domain(domain)? {
            Domain::Exact(name) => (&mut self.exact, name),
            Domain::Wildcard(suffix) => (&mut self.wildcard, suffix),
        };
        if map.insert(name, Arc::clone(key)).is_some() {
            return Err(TlsError::DuplicateSniDomain {
                name: normalise(domain),
            });
        }
        Ok(())
    }

    /// The certificate for a client that sent `server_name` (or none).
    ///
    /// Exact name first, then a wildcard one label deep, else the default. RFC 6066 §3 lets a
    /// server that does not recognise the name continue the handshake rather than abort it;
    /// we continue with the default so that clients with odd names still connect.
    fn select(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name.map(normalise) else {
            return &self.default;
        };
        if let Some(key) = self.exact.get(&name) {
            return key;
        }
        // RFC 2595 §2.4 (and RFC 6125 §6.4.3): `*` matches exactly one left-most label, so
        // `*.example.com` covers `a.example.com` but neither `example.com` nor `a.b.example.com`.
        match name.split_once('.') {
            Some((label, suffix)) if !label.is_empty() => {
                self.wildcard.get(suffix).unwrap_or(&self.default)
            }
            _ => &self.default,
        }
    }
}

impl fmt::Debug for CertSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: the keys have nothing useful (or safe) to print.
        let mut exact: Vec<_> = self.exact.keys().collect();
        exact.sort();
        let mut wildcard: Vec<_> = self.wildcard.keys().collect();
        wildcard.sort();
        f.debug_struct("CertSet")
            .field("exact", &exact)
            .field("wildcard", &wildcard)
            .finish_non_exhaustive()
    }
}

enum Domain {
    Exact(String),
    Wildcard(String),
}

/// Validates a configured SNI domain: a DNS name, or `*.` followed by a DNS name.
fn parse_domain(domain: &str) -> Result<Domain, TlsError> {
    let invalid = |problem| TlsError::InvalidSniDomain {
        name: domain.to_owned(),
        problem,
    };
    let name = normalise(domain);
    let (wildcard, rest) = match name.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, name.as_str()),
    };
    if rest.contains('*') {
        return Err(invalid(
            "a wildcard must be a whole left-most label, as in *.example.com",
        ));
    }
    if rest.parse::<std::net::IpAddr>().is_ok() {
        // RFC 6066 §3: "Literal IPv4 and IPv6 addresses are not permitted in HostName".
        return Err(invalid("an IP address is never sent as SNI"));
    }
    if DnsName::try_from(rest).is_err() {
        return Err(invalid("not a DNS name"));
    }
    Ok(match wildcard {
        true => Domain::Wildcard(rest.to_owned()),
        false => Domain::Exact(rest.to_owned()),
    })
}

/// DNS names compare case-insensitively; an absolute name's trailing dot is dropped.
fn normalise(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// rustls' certificate callback over the current [`CertSet`], which a reload swaps whole.
///
/// A handshake takes the set current at its ClientHello. Connections already established hold
/// their own keys and are not affected by a swap.
pub(super) struct SniResolver {
    current: RwLock<Arc<CertSet>>,
}

impl SniResolver {
    pub(super) fn new(set: CertSet) -> Self {
        Self {
            current: RwLock::new(Arc::new(set)),
        }
    }

    /// Makes `set` the one new handshakes use.
    pub(super) fn replace(&self, set: CertSet) {
        // A poisoned lock still holds a whole `Arc`: the only write is this assignment.
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
    }

    fn snapshot(&self) -> Arc<CertSet> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8446 §4.4.2.2: the server picks its certificate from the client's
        // "server_name"; a client that sent none gets the default.
        let set = self.snapshot();
        Some(Arc::clone(set.select(client_hello.server_name())))
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("current", &self.snapshot())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    fn certified_key(name: &str) -> Arc<CertifiedKey> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let signing = provider.key_provider.load_private_key(der).unwrap();
        Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing))
    }

    #[test]
    fn selection_prefers_exact_then_one_label_wildcard_then_default() {
        let (default, exact, wild) = (
            certified_key("default.example"),
            certified_key("mail.a.example"),
            certified_key("*.a.example"),
        );
        let mut set = CertSet {
            default: Arc::clone(&default),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        set.insert("Mail.A.Example", &exact).unwrap();
        set.insert("*.a.example", &wild).unwrap();
        let cases = [
            (None, &default),
            (Some("mail.a.example"), &exact),
            (Some("MAIL.a.example."), &exact),
            (Some("pop.a.example"), &wild),
            (Some("a.example"), &default),
            (Some("x.pop.a.example"), &default),
            (Some(".a.example"), &default),
            (Some("elsewhere.example"), &default),
        ];
        for (name, expected) in cases {
            assert!(Arc::ptr_eq(set.select(name), expected), "{name:?}");
        }
        assert!(matches!(
            set.insert("mail.a.example", &wild),
            Err(TlsError::DuplicateSniDomain { name }) if name == "mail.a.example"
        ));
    }

    #[test]
    fn domains_are_validated_and_normalised() {
        assert!(matches!(
            parse_domain("Mail.Example.COM."),
            Ok(Domain::Exact(name)) if name == "mail.example.com"
        ));
        assert!(matches!(
            parse_domain("*.Example.com"),
            Ok(Domain::Wildcard(suffix)) if suffix == "example.com"
        ));
        for bad in [
            "",
            "*",
            "*.",
            "m*.example.com",
            "a.*.example.com",
            "**.example.com",
            "10.0.0.1",
            "a b.example",
        ] {
            assert!(
                matches!(parse_domain(bad), Err(TlsError::InvalidSniDomain { .. })),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn normalise_lowercases_and_drops_the_root_dot() {
        assert_eq!(normalise("X.B.Example."), "x.b.example");
        assert_eq!(normalise("x.b.example"), "x.b.example");
    }
}
