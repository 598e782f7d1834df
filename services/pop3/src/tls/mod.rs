//! TLS for the POP3 front-end: certificates, SNI selection and hot reload.
//!
//! [`TlsTerminator`] turns [`TlsSettings`] (PEM files on disk) into a
//! [`tokio_rustls::TlsAcceptor`] that both RFC 2595 STLS and RFC 8314 implicit TLS (POP3S)
//! use. It
//! - speaks TLS 1.3 and TLS 1.2 only, with the aws-lc-rs provider installed explicitly (no
//!   process-wide default is consulted);
//! - picks the certificate by SNI: an exact name, then a `*.` wildcard one label deep, else
//!   the default certificate (also used when the client sends no SNI);
//! - reloads the files when they change ([`TlsTerminator::reload_if_changed`],
//!   [`TlsTerminator::spawn_reloader`]); a reload affects new handshakes only (it also
//!   forgets resumable sessions, so every client sees the new certificate), and a broken
//!   file keeps the certificates in use;
//! - can create a self-signed development certificate ([`ensure_dev_certificate`]).
//!
//! It does not do the STLS exchange itself: the connection loop answers `+OK`, drops any
//! plaintext the client pipelined after STLS (RFC 2595 §4), and then hands the socket to
//! [`TlsTerminator::acceptor`]. It does not ask for client certificates.

mod certs;
mod dev_cert;
mod error;
mod reload;
mod resolver;
mod sessions;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use tokio_rustls::TlsAcceptor;

pub use dev_cert::{DEV_CERT_FILE, DEV_KEY_FILE, ensure_dev_certificate};
pub use error::TlsError;

use certs::FileStamp;
use resolver::{CertSet, SniResolver};
use sessions::ResumptionCache;

/// Where the certificates are and how often to look for new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, end-entity first, served when no SNI entry matches.
    pub cert: PathBuf,
    /// PEM private key of `cert`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
    /// Certificates chosen by the client's SNI.
    pub sni: Vec<SniCert>,
    /// How often [`TlsTerminator::spawn_reloader`] checks the files; zero disables it.
    pub reload_interval: Duration,
}

impl TlsSettings {
    /// How often files are checked unless configured otherwise.
    pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

    /// One default certificate, no SNI entries, the default reload interval.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            sni: Vec::new(),
            reload_interval: Self::DEFAULT_RELOAD_INTERVAL,
        }
    }

    /// Every file the settings name, in a fixed order.
    fn files(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.cert, &self.key]
            .into_iter()
            .chain(self.sni.iter().flat_map(|entry| [&entry.cert, &entry.key]))
    }
}

/// A certificate served to clients that ask for one of `domains` by SNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniCert {
    /// Exact names (`mail.example.com`) or wildcards one label deep (`*.example.com`);
    /// matched case-insensitively. A name may appear in only one entry.
    pub domains: Vec<String>,
    /// PEM certificate chain, end-entity first.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
}

/// The TLS server side: a rustls configuration whose certificates can be reloaded.
///
/// Cloning is cheap and clones share the certificates, the reload state and the counter.
#[derive(Debug, Clone)]
pub struct TlsTerminator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    resolver: Arc<SniResolver>,
    sessions: Arc<ResumptionCache>,
    config: Arc<ServerConfig>,
    /// Stamps of the files the current certificates were loaded from. The lock also keeps
    /// two reloads from running at once.
    loaded: Mutex<Vec<FileStamp>>,
    reloads: AtomicU64,
    /// `cloudpop_certificate_reloads_total{outcome="success"}` and `{outcome="failure"}`,
    /// once set.
    reload_counters: OnceLock<(prometheus::IntCounter, prometheus::IntCounter)>,
}

impl TlsTerminator {
    /// Loads every certificate and key in `settings` and builds the server configuration.
    ///
    /// Fails, naming the file, if any file is missing, is not PEM, holds no certificate or
    /// key, holds a key of an unsupported kind, or holds a key that does not match its
    /// certificate; and if an SNI domain is invalid or configured twice.
    pub fn load(settings: &TlsSettings) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // Stamp before reading: a file replaced while we read it is stamped as the older
        // version, so the next check sees a change and loads it again.
        let stamps = stamp_files(settings)?;
        let resolver = Arc::new(SniResolver::new(CertSet::load(settings, &provider)?));
        let sessions = Arc::new(ResumptionCache::new());
        let config = server_config(&provider, &resolver, &sessions)?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                provider,
                resolver,
                sessions,
                config,
                loaded: Mutex::new(stamps),
                reloads: AtomicU64::new(0),
                reload_counters: OnceLock::new(),
            }),
        })
    }

    /// An acceptor for one connection (or many); it always serves the current certificates.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.inner.config))
    }

    /// How many reloads have succeeded since [`TlsTerminator::load`].
    pub fn reloads(&self) -> u64 {
        self.inner.reloads.load(Ordering::Relaxed)
    }

    /// Counts later reloads and failed reload attempts into
    /// `cloudpop_certificate_reloads_total`. Only the first call has an effect.
    pub fn count_reloads(&self, metrics: &crate::Pop3Metrics) {
        let family = &metrics.certificate_reloads;
        let _ = self.inner.reload_counters.set((
            family.with_label_values(&["success"]),
            family.with_label_values(&["failure"]),
        ));
    }

    /// The settings this terminator was loaded from.
    pub fn settings(&self) -> &TlsSettings {
        &self.inner.settings
    }
}

/// The rustls configuration shared by every handshake of one terminator.
fn server_config(
    provider: &Arc<CryptoProvider>,
    resolver: &Arc<SniResolver>,
    sessions: &Arc<ResumptionCache>,
) -> Result<Arc<ServerConfig>, TlsError> {
    // RFC 8314 §4.1 deprecates mail access over TLS below 1.1, and RFC 8996 §4–§5 forbids
    // negotiating TLS 1.0 and 1.1: we speak 1.3 and 1.2 only (DESIGN.md: below 1.2 is
    // refused). rustls implements nothing older anyway; naming the versions keeps that a
    // decision rather than a default.
    let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        // POP3 authenticates users with its own commands (RFC 1939, RFC 5034), not with
        // client certificates: RFC 8446 §4.3.2 CertificateRequest is never sent.
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(resolver) as Arc<dyn rustls::server::ResolvesServerCert>);
    config.session_storage = Arc::clone(sessions) as Arc<dyn rustls::server::StoresServerSessions>;
    // rustls' default max_early_data_size is 0: no RFC 8446 §2.3 0-RTT data, which could be
    // replayed, and POP3 commands such as DELE are not idempotent.
    Ok(Arc::new(config))
}

/// The stamps of every file `settings` names.
fn stamp_files(settings: &TlsSettings) -> Result<Vec<FileStamp>, TlsError> {
    settings.files().map(|path| FileStamp::of(path)).collect()
}
