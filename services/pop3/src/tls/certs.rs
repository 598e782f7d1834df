//! Reading PEM certificate chains and private keys from files, and noticing when they change.
//!
//! Parsing uses rustls-pki-types' PEM reader. Nothing here keeps or prints key bytes: a PEM
//! problem becomes a fixed description.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{Error as RustlsError, InconsistentKeys};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Loads a certificate chain (end-entity first) and its private key as one signing identity.
///
/// The key may be PKCS#8, PKCS#1 (RSA) or SEC1 (EC); the first key section in the file is
/// used. The key must belong to the first certificate.
pub(super) fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::UnusableKey {
            path: key.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // A key type whose public half the provider cannot derive is accepted unchecked,
        // as rustls' own `CertifiedKey::from_der` does.
        Ok(()) | Err(RustlsError::InconsistentKeys(InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(RustlsError::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
        Err(source) => Err(TlsError::BadCertificate {
            path: cert.to_owned(),
            source,
        }),
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let sections = CertificateDer::pem_file_iter(path).map_err(|err| pem_error(path, err))?;
    let chain = sections
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(path, err))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|err| match err {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        other => pem_error(path, other),
    })
}

/// Maps a PEM error to one that names the file and never repeats the file's content.
fn pem_error(path: &Path, err: pem::Error) -> TlsError {
    let problem = match err {
        pem::Error::Io(source) => {
            return TlsError::Read {
                path: path.to_owned(),
                source,
            };
        }
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        pem::Error::SectionTooLarge => "a section is too large",
        pem::Error::NoItemsFound => "no PEM section found",
        _ => "unreadable PEM",
    };
    TlsError::Pem {
        path: path.to_owned(),
        problem,
    }
}

/// What identifies one version of a file: its modification time, length and (on Unix) inode.
///
/// The inode catches a replacement by rename (how Kubernetes updates a mounted Secret and how
/// careful tools write certificates) even when time and length happen to be equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileStamp {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    /// Reads the stamp of `path`, following symlinks.
    pub(super) fn of(path: &Path) -> Result<Self, TlsError> {
        let meta = fs::metadata(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: inode(&meta),
        })
    }
}

#[cfg(unix)]
fn inode(meta: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

#[cfg(not(unix))]
fn inode(_meta: &fs::Metadata) -> u64 {
    0
}
