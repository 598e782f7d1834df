//! The TLS layer over real TCP on 127.0.0.1: protocol versions, SNI selection, hot reload,
//! key formats and the development certificate. Every certificate is generated at test time.

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use cloudpop_pop3::tls::{SniCert, TlsError, TlsSettings, TlsTerminator, ensure_dev_certificate};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, RsaKeySize,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{
    ClientConfig, HandshakeKind, ProtocolVersion, RootCertStore, SupportedProtocolVersion,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Certificates

/// A CA the test clients trust; it issues every leaf certificate of a test.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// One issued certificate with its key, as PEM, and the DER the server should present.
#[derive(Clone)]
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "cloudpop test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn issue(&self, names: &[&str]) -> Leaf {
        self.issue_with_key(names, KeyPair::generate().unwrap())
    }

    fn issue_with_key(&self, names: &[&str], key: KeyPair) -> Leaf {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }
}

/// Replaces `path` the way careful tools (and Kubernetes Secret mounts) do: write a new file,
/// rename it over the old one.
fn replace_file(path: &Path, contents: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, contents).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

fn install(leaf: &Leaf, cert: &Path, key: &Path) {
    replace_file(cert, &leaf.cert_pem);
    replace_file(key, &leaf.key_pem);
}

/// A temporary directory with a default certificate and two SNI certificates installed:
/// A for `mail.a.example`, B for `*.b.example`.
struct Fixture {
    _dir: TempDir,
    ca: TestCa,
    default: Leaf,
    a: Leaf,
    b: Leaf,
    settings: TlsSettings,
}

/// Names the default certificate covers, so a client can verify it whatever it asked for.
const DEFAULT_NAMES: [&str; 5] = [
    "default.example",
    "127.0.0.1",
    "other.example",
    "b.example",
    "deep.x.b.example",
];

impl Fixture {
    fn new() -> Self {
        let dir = TempDir::new().unwrap();
        let ca = TestCa::new();
        let default = ca.issue(&DEFAULT_NAMES);
        let a = ca.issue(&["mail.a.example"]);
        let b = ca.issue(&["*.b.example"]);
        let path = |name: &str| dir.path().join(name);
        install(&default, &path("default.pem"), &path("default.key"));
        install(&a, &path("a.pem"), &path("a.key"));
        install(&b, &path("b.pem"), &path("b.key"));
        let mut settings = TlsSettings::new(path("default.pem"), path("default.key"));
        settings.sni = vec![
            SniCert {
                domains: vec!["mail.a.example".into()],
                cert: path("a.pem"),
                key: path("a.key"),
            },
            SniCert {
                domains: vec!["*.b.example".into()],
                cert: path("b.pem"),
                key: path("b.key"),
            },
        ];
        Self {
            _dir: dir,
            ca,
            default,
            a,
            b,
            settings,
        }
    }

    fn client(&self) -> Arc<ClientConfig> {
        client_config(
            self.ca.roots(),
            &[&rustls::version::TLS13, &rustls::version::TLS12],
        )
    }
}

// ---------------------------------------------------------------------------------------
// Server and client

/// An echo server behind the terminator; handshake failures are reported on `failures`.
struct EchoServer {
    addr: SocketAddr,
    failures: mpsc::UnboundedReceiver<io::Error>,
    shutdown: CancellationToken,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn serve(terminator: &TlsTerminator) -> EchoServer {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, failures) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let terminator = terminator.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted.unwrap(),
            };
            // The acceptor is taken per connection, as the connection loop will.
            let acceptor = terminator.acceptor();
            let report = report.clone();
            tokio::spawn(async move {
                match acceptor.accept(stream).await {
                    Ok(mut tls) => {
                        let mut buf = [0u8; 1024];
                        loop {
                            match tls.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if tls.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    }
                    Err(error) => {
                        let _ = report.send(error);
                    }
                }
            });
        }
    });
    EchoServer {
        addr,
        failures,
        shutdown,
    }
}

fn client_config(
    roots: RootCertStore,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn without_sni(config: &Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut config = ClientConfig::clone(config);
    config.enable_sni = false;
    Arc::new(config)
}

async fn connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    name: &str,
) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    tokio::time::timeout(
        WAIT,
        TlsConnector::from(Arc::clone(config)).connect(name, tcp),
    )
    .await
    .unwrap()
}

fn served_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn handshake_kind(stream: &TlsStream<TcpStream>) -> HandshakeKind {
    stream.get_ref().1.handshake_kind().unwrap()
}

fn version(stream: &TlsStream<TcpStream>) -> ProtocolVersion {
    stream.get_ref().1.protocol_version().unwrap()
}

/// Sends `message` and expects it back.
async fn round_trip(stream: &mut TlsStream<TcpStream>, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, message);
}

/// The rustls error inside an I/O error from a handshake, if there is one.
fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

// ---------------------------------------------------------------------------------------
// Protocol versions

#[tokio::test]
async fn handshake_negotiates_tls13() {
    let fixture = Fixture::new();
    let terminator = TlsTerminator::load(&fixture.settings).unwrap();
    let server = serve(&terminator).await;
    let mut stream = connect(server.addr, &fixture.client(), "default.example")
        .await
        .unwrap();
    assert_eq!(version(&stream), ProtocolVersion::TLSv1_3);
    round_trip(&mut stream, b"CAPA\r\n").await;
}

#[tokio::test]
async fn handshake_works_with_tls12_forced() {
    let fixture = Fixture::new();
    let terminator = TlsTerminator::load(&fixture.settings).unwrap();
    let server = serve(&terminator).await;
    let tls12_only = client_config(fixture.ca.roots(), &[&rustls::version::TLS12]);
    let mut stream = connect(server.addr, &tls12_only, "default.example")
        .await
        .unwrap();
    assert_eq!(version(&stream), ProtocolVersion::TLSv1_2);
    round_trip(&mut stream, b"STAT\r\n").await;
}

/// Runs `openssl s_client` limited to one protocol version; true if the handshake completed.
async fn openssl_handshake(addr: SocketAddr, version_flag: &str) -> bool {
    let status = tokio::process::Command::new("openssl")
        .arg("s_client")
        .arg(version_flag)
        // OpenSSL 3 refuses TLS 1.0/1.1 itself at its default security level; level 0 lets
        // the client really offer the old version, so the refusal we see is the server's.
        .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
        .args(["-connect", &addr.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    tokio::time::timeout(WAIT, status)
        .await
        .unwrap()
        .unwrap()
        .success()
}

#[tokio::test]
async fn a_tls11_client_is_refused() {
    // rustls has no TLS 1.1 client at all, so a real OpenSSL client asks for it.
    let fixture = Fixture::new();
    let terminator = TlsTerminator::load(&fixture.settings).unwrap();
    let mut server = serve(&terminator).await;

    // Control: the same invocation with TLS 1.2 succeeds, so a failure below is the version.
    assert!(openssl_handshake(server.addr, "-tls1_2").await);
    assert!(
        server.failures.try_recv().is_err(),
        "TLS 1.2 handshake failed on the server"
    );

    for old in ["-tls1_1", "-tls1"] {
        assert!(
            !openssl_handshake(server.addr, old).await,
            "{old} was accepted"
        );
        let failure = tokio::time::timeout(WAIT, server.failures.recv())
            .await
            .unwrap()
            .unwrap();
        // The server saw the ClientHello and refused it as incompatible (rustls reports the
        // missing TLS 1.2 signature_algorithms extension, which no TLS 1.0/1.1 hello has).
        assert!(
            matches!(
                rustls_error(&failure),
                Some(rustls::Error::PeerIncompatible(_))
            ),
            "{old}: unexpected server error {failure:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// SNI

#[tokio::test]
async fn sni_picks_exact_then_wildcard_then_default() {
    let fixture = Fixture::new();
    let terminator = TlsTerminator::load(&fixture.settings).unwrap();
    let server = serve(&terminator).await;
    let client = fixture.client();

    let cases: [(&str, &Leaf); 6] = [
        ("mail.a.example", &fixture.a),
        ("MAIL.A.Example", &fixture.a),
        ("x.b.example", &fixture.b),
        // A wildcard covers one label only: not the bare suffix, not two labels deep.
        ("b.example", &fixture.default),
        ("deep.x.b.example", &fixture.default),
        ("other.example", &fixture.default),
    ];
    for (name, expected) in cases {
        let mut stream = connect(server.addr, &client, name).await.unwrap();
        assert_eq!(
            served_cert(&stream),
            expected.der,
            "certificate for SNI {name}"
        );
        round_trip(&mut stream, b"NOOP\r\n").await;
    }
}

#[tokio::test]
async fn a_client_without_sni_gets_the_default() {
    let fixture = Fixture::new();
    let terminator = TlsTerminator::load(&fixture.settings).unwrap();
    let server = serve(&terminator).await;

    // SNI switched off although the client knows a name that an SNI entry would match.
    let no_sni = without_sni(&fixture.client());
    let mut stream = connect(server.addr, &no_sni, "default.example")
        .await
        .unwrap();
    assert_eq!(served_cert(&stream), fixture.default.der);
    round_trip(&mut stream, b"NOOP\r\n").await;

    // RFC 6066 §3: an IP address is never sent as SNI.
    let ip = IpAddr::from(Ipv4Addr::LOCALHOST).to_string();
    let mut stream = connect(server.addr, &fixture.client(), &ip).await.unwrap();
    assert_eq!(served_cert(&stream), fixture.default.der);
    round_trip(&mut stream, b"NOOP\r\n").await;
}

// ---------------------------------------------------------------------------------------
// Reload

#[tokio::test]
async fn reload_serves_new_handshakes_and_keeps_established_sessions() {
    let fixture = Fixture::new();
    let terminator = TlsTerminator::load(&fixture.settings).unwrap();
    let server = serve(&terminator).await;
    let client = fixture.client();
    assert!(
        !terminator.reload_if_changed().unwrap(),
        "nothing changed yet"
    );

    let mut before = connect(server.addr, &client, "default.example")
        .await
        .unwrap();
    round_trip(&mut before, b"USER alice\r\n").await;
    // The client remembers the session and resumes it while nothing changes.
    let resumed = connect(server.addr, &client, "default.example")
        .await
        .unwrap();
    assert_eq!(handshake_kind(&resumed), HandshakeKind::Resumed);

    let renewed = fixture.ca.issue(&DEFAULT_NAMES);
    install(&renewed, &fixture.settings.cert, &fixture.settings.key);
    assert!(terminator.reload_if_changed().unwrap());
    assert_eq!(terminator.reloads(), 1);
    assert!(!terminator.reload_if_changed().unwrap(), "reloaded twice");

    // The same client (with its remembered sessions) gets a full handshake after the reload:
    // a resumption would skip the new certificate.
    let after = connect(server.addr, &client, "default.example")
        .await
        .unwrap();
    assert_eq!(handshake_kind(&after), HandshakeKind::Full);
    assert_eq!(served_cert(&after), renewed.der);
    // Clones share the certificates and the counter.
    assert_eq!(terminator.clone().reloads(), 1);

    // The session established before the reload goes on, in both directions.
    round_trip(&mut before, b"PASS secret\r\n").await;
    round_trip(&mut before, &[b'x'; 4000]).await;
    assert_eq!(served_cert(&before), fixture.default.der);

    // SNI certificates are reloaded too.
    let renewed_a = fixture.ca.issue(&["mail.a.example"]);
    let sni_a = &fixture.settings.sni[0];
    install(&renewed_a, &sni_a.cert, &sni_a.key);
    assert!(terminator.reload_if_changed().unwrap());
    let stream = connect(server.addr, &client, "mail.a.example")
        .await
        .unwrap();
    assert_eq!(served_cert(&stream), renewed_a.der);
    assert_eq!(terminator.reloads(), 2);
}

#[tokio::test]
async fn a_broken_replacement_keeps_the_old_certificate() {
    let fixture = Fixture::new();
    let terminator = TlsTerminator::load(&fixture.settings).unwrap();
    let server = serve(&terminator).await;
    let client = fixture.client();
    let (cert, key) = (&fixture.settings.cert, &fixture.settings.key);
    let serves_original = || async {
        let stream = connect(server.addr, &client, "default.example")
            .await
            .unwrap();
        assert_eq!(served_cert(&stream), fixture.default.der);
    };

    // Not base64 inside a PEM section.
    replace_file(
        cert,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    let error = terminator.reload_if_changed().unwrap_err();
    assert!(
        matches!(&error, TlsError::Pem { path, .. } if path == cert),
        "{error:?}"
    );
    assert!(error.to_string().contains(&cert.display().to_string()));
    serves_original().await;

    // It keeps failing (and the caller keeps logging) until the files are fixed.
    assert!(terminator.reload_if_changed().is_err());

    // A new certificate whose key is not there yet: the pair would not match.
    let renewed = fixture.ca.issue(&DEFAULT_NAMES);
    replace_file(cert, &renewed.cert_pem);
    let error = terminator.reload_if_changed().unwrap_err();
    assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");
    serves_original().await;

    // A key file without a key, and one with a corrupt key: never echoed in the error.
    replace_file(key, "just some text\n");
    let error = terminator.reload_if_changed().unwrap_err();
    assert!(matches!(error, TlsError::NoPrivateKey { .. }), "{error:?}");
    let secret_looking = "c2VjcmV0LWtleS1ieXRlcw==";
    replace_file(
        key,
        &format!("-----BEGIN PRIVATE KEY-----\n{secret_looking}\n-----END PRIVATE KEY-----\n"),
    );
    let error = terminator.reload_if_changed().unwrap_err();
    assert!(
        !format!("{error} {error:?}").contains(secret_looking),
        "{error:?}"
    );
    serves_original().await;

    // A file that vanished.
    std::fs::remove_file(key).unwrap();
    let error = terminator.reload_if_changed().unwrap_err();
    assert!(matches!(error, TlsError::Read { .. }), "{error:?}");
    serves_original().await;
    assert_eq!(terminator.reloads(), 0);

    // Fixed: the next check loads the new pair.
    replace_file(key, &renewed.key_pem);
    assert!(terminator.reload_if_changed().unwrap());
    assert_eq!(terminator.reloads(), 1);
    let stream = connect(server.addr, &client, "default.example")
        .await
        .unwrap();
    assert_eq!(served_cert(&stream), renewed.der);
}

#[tokio::test]
async fn the_reloader_polls_and_stops_on_shutdown() {
    let fixture = Fixture::new();
    let mut settings = fixture.settings.clone();
    settings.reload_interval = Duration::from_millis(20);
    let terminator = TlsTerminator::load(&settings).unwrap();
    let server = serve(&terminator).await;
    let shutdown = CancellationToken::new();
    let reloader = terminator.spawn_reloader(shutdown.clone());

    let renewed = fixture.ca.issue(&DEFAULT_NAMES);
    install(&renewed, &settings.cert, &settings.key);
    tokio::time::timeout(WAIT, async {
        while terminator.reloads() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the reloader never reloaded");
    let stream = connect(server.addr, &fixture.client(), "default.example")
        .await
        .unwrap();
    assert_eq!(served_cert(&stream), renewed.der);

    shutdown.cancel();
    tokio::time::timeout(WAIT, reloader).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_zero_interval_reloader_only_waits_for_shutdown() {
    let fixture = Fixture::new();
    let mut settings = fixture.settings.clone();
    settings.reload_interval = Duration::ZERO;
    let terminator = TlsTerminator::load(&settings).unwrap();
    let shutdown = CancellationToken::new();
    let reloader = terminator.spawn_reloader(shutdown.clone());
    shutdown.cancel();
    tokio::time::timeout(WAIT, reloader).await.unwrap().unwrap();
    assert_eq!(terminator.reloads(), 0);
}

// ---------------------------------------------------------------------------------------
// Loading

#[test]
fn bad_settings_are_refused_with_the_file_or_name() {
    let fixture = Fixture::new();
    let with_sni = |sni: Vec<SniCert>| TlsSettings {
        sni,
        ..fixture.settings.clone()
    };
    let entry = |domains: &[&str]| SniCert {
        domains: domains.iter().map(|domain| (*domain).to_owned()).collect(),
        ..fixture.settings.sni[0].clone()
    };

    let missing = TlsSettings::new(
        fixture.settings.cert.with_extension("gone"),
        &fixture.settings.key,
    );
    let error = TlsTerminator::load(&missing).unwrap_err();
    assert!(
        matches!(&error, TlsError::Read { path, .. } if path == &missing.cert),
        "{error:?}"
    );

    // A key file given as the certificate holds no certificate.
    let swapped = TlsSettings::new(&fixture.settings.key, &fixture.settings.key);
    let error = TlsTerminator::load(&swapped).unwrap_err();
    assert!(matches!(error, TlsError::NoCertificate { .. }), "{error:?}");

    // Certificate A with the default key.
    let mismatched = TlsSettings::new(&fixture.settings.sni[0].cert, &fixture.settings.key);
    let error = TlsTerminator::load(&mismatched).unwrap_err();
    assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");

    let error = TlsTerminator::load(&with_sni(vec![entry(&[])])).unwrap_err();
    assert!(matches!(error, TlsError::NoSniDomains { .. }), "{error:?}");

    for bad in ["mail*.a.example", "*", "10.1.2.3", "a..example"] {
        let error = TlsTerminator::load(&with_sni(vec![entry(&[bad])])).unwrap_err();
        assert!(
            matches!(&error, TlsError::InvalidSniDomain { name, .. } if name == bad),
            "{bad}: {error:?}"
        );
    }

    let twice = with_sni(vec![
        entry(&["mail.a.example"]),
        entry(&["Mail.A.Example."]),
    ]);
    let error = TlsTerminator::load(&twice).unwrap_err();
    assert!(
        matches!(&error, TlsError::DuplicateSniDomain { name } if name == "mail.a.example"),
        "{error:?}"
    );
}

/// Rewrites a PKCS#8 key file in its traditional form (PKCS#1 for RSA, SEC1 for EC).
fn to_traditional(pkcs8: &Path, out: &Path) -> String {
    let status = std::process::Command::new("openssl")
        .args(["pkey", "-traditional", "-in"])
        .arg(pkcs8)
        .arg("-out")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(out).unwrap()
}

#[tokio::test]
async fn pkcs8_pkcs1_and_sec1_keys_all_load() {
    let fixture = Fixture::new();
    let dir = TempDir::new().unwrap();
    let path = |name: &str| dir.path().join(name);

    let rsa_key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
    let rsa = fixture.ca.issue_with_key(&["rsa.example"], rsa_key);
    install(&rsa, &path("rsa.pem"), &path("rsa.pkcs8"));
    let pkcs1 = to_traditional(&path("rsa.pkcs8"), &path("rsa.pkcs1"));
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));

    let ec = fixture.ca.issue(&["ec.example"]);
    install(&ec, &path("ec.pem"), &path("ec.pkcs8"));
    let sec1 = to_traditional(&path("ec.pkcs8"), &path("ec.sec1"));
    assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));

    // The default uses PKCS#8 (rcgen's output); the SNI entries the traditional forms.
    let mut settings = fixture.settings.clone();
    settings.sni = vec![
        SniCert {
            domains: vec!["rsa.example".into()],
            cert: path("rsa.pem"),
            key: path("rsa.pkcs1"),
        },
        SniCert {
            domains: vec!["ec.example".into()],
            cert: path("ec.pem"),
            key: path("ec.sec1"),
        },
    ];
    let terminator = TlsTerminator::load(&settings).unwrap();
    let server = serve(&terminator).await;
    let client = fixture.client();
    let tls12 = client_config(fixture.ca.roots(), &[&rustls::version::TLS12]);
    for (name, leaf) in [
        ("default.example", &fixture.default),
        ("rsa.example", &rsa),
        ("ec.example", &ec),
    ] {
        for config in [&client, &tls12] {
            let mut stream = connect(server.addr, config, name).await.unwrap();
            assert_eq!(served_cert(&stream), leaf.der, "{name}");
            round_trip(&mut stream, b"NOOP\r\n").await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Development certificate

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_dev_certificate_is_created_once_and_serves_its_names() {
    let dir = TempDir::new().unwrap();
    let data: PathBuf = dir.path().join("data").join("tls");
    let names = vec!["mail.dev.test".to_owned(), "LOCALHOST".to_owned()];

    let (cert, key) = ensure_dev_certificate(&data, &names).unwrap();
    assert_eq!(cert, data.join("dev-cert.pem"));
    assert_eq!(key, data.join("dev-key.pem"));
    assert_eq!(mode(&key), 0o600);
    let first = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 2);

    // Idempotent: the same paths and the same bytes.
    let again = ensure_dev_certificate(&data, &names).unwrap();
    assert_eq!(again, (cert.clone(), key.clone()));
    let second = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    assert_eq!(first, second);
    assert_eq!(mode(&key), 0o600);

    // It serves TLS for every name it was made for; a client pinning it trusts it.
    let terminator = TlsTerminator::load(&TlsSettings::new(&cert, &key)).unwrap();
    let server = serve(&terminator).await;
    let der = CertificateDer::from_pem_file(&cert).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let client = client_config(roots, &[&rustls::version::TLS13]);
    for name in ["localhost", "127.0.0.1", "::1", "mail.dev.test"] {
        let mut stream = connect(server.addr, &client, name).await.unwrap();
        assert_eq!(served_cert(&stream), der, "{name}");
        round_trip(&mut stream, b"NOOP\r\n").await;
    }

    // Only one of the two files left: a new pair replaces it.
    std::fs::remove_file(&cert).unwrap();
    ensure_dev_certificate(&data, &names).unwrap();
    assert_ne!(std::fs::read(&key).unwrap(), first.1);
    assert_eq!(mode(&key), 0o600);
    TlsTerminator::load(&TlsSettings::new(&cert, &key)).unwrap();
}
