//! The one error type of the TLS layer.

use std::io;
use std::path::PathBuf;

/// Why certificates could not be loaded, reloaded or generated.
///
/// Every variant names the file (or the configured name) and the problem. No variant ever
/// carries key material: PEM parse problems are reduced to a fixed description.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be opened, read or inspected.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A file is not well-formed PEM.
    #[error("{} is not valid PEM: {problem}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words; never the file's content.
        problem: &'static str,
    },
    /// A certificate file holds no `CERTIFICATE` section.
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no private key in a supported encoding.
    #[error(
        "{} holds no private key (expected PEM PKCS#8, PKCS#1 RSA or SEC1 EC)",
        path.display()
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key parsed but the crypto provider cannot sign with it.
    #[error("the private key in {} is not usable: {source}", path.display())]
    UnusableKey {
        /// The key file.
        path: PathBuf,
        /// rustls' reason (it never includes key bytes).
        #[source]
        source: rustls::Error,
    },
    /// The end-entity certificate could not be parsed.
    #[error("the certificate in {} is not usable: {source}", path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The private key does not belong to the certificate's public key.
    #[error(
        "the private key {} does not match the certificate {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// An SNI certificate was configured without any domain.
    #[error("the SNI certificate {} lists no domains", cert.display())]
    NoSniDomains {
        /// The certificate file of that entry.
        cert: PathBuf,
    },
    /// A configured SNI domain is not a DNS name or a `*.` wildcard.
    #[error("SNI domain {name:?} is not valid: {problem}")]
    InvalidSniDomain {
        /// The name as configured.
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The same SNI domain was configured for two certificates.
    #[error("SNI domain {name:?} is configured for more than one certificate")]
    DuplicateSniDomain {
        /// The name, normalised to lower case.
        name: String,
    },
    /// rustls refused the server configuration.
    #[error("cannot build the TLS server configuration: {0}")]
    Config(#[source] rustls::Error),
    /// rcgen could not generate the development certificate.
    #[error("cannot generate the development certificate: {0}")]
    Generate(#[source] rcgen::Error),
    /// A generated file (or its directory) could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}
