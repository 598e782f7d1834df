//! TLS end to end against the real binary: implicit TLS (POP3S, RFC 8314) and STLS
//! (RFC 2595) with curl, Python's poplib, `openssl s_client` and a rustls client; the
//! cleartext policy around them; STLS command injection; protocol versions; certificate
//! hot reload; and SNI.
//!
//! Role `all` makes a self-signed development certificate (covering `localhost` and
//! `127.0.0.1`) unless `[tls]` names one; clients here trust exactly that certificate, or
//! certificates the test generates, and verify the host name.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;
#[path = "tls_clients/wire.rs"]
mod wire;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use support::{Server, WAIT, require, run_bounded, without_trace_headers};
use wire::{Client, TlsStream, client_config, dev_cert_path, dev_config, peer_cert, pop3s};

const LOGIN: &str = "reader@example.com";
const PASSWORD: &str = "tls only pass";

/// A message with dot-stuffed lines and 8-bit bytes, so that "byte-exact" means something.
fn original() -> Vec<u8> {
    let mut m = b"From: sender@example.net\r\nTo: reader@example.com\r\nSubject: over TLS\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\n.a line that starts with a dot\r\n.\r\n"
        .to_vec();
    m.extend_from_slice("caf\u{e9} \u{1f512}\r\n".as_bytes());
    m.extend_from_slice(b"latin-1 \xe9\xff\r\n..\r\nend\r\n");
    m
}

/// A server whose default tenant keeps cleartext off, with one user holding `original()`.
fn tls_server() -> Server {
    let server = Server::builder()
        .cleartext(false)
        .user(LOGIN, PASSWORD)
        .start();
    server.deliver_ok(LOGIN, &original());
    server
}

/// What the server serves as message 1, read over POP3S with the rustls client.
fn served(server: &Server) -> Vec<u8> {
    let mut pop = pop3s(server.pop3s, &dev_config(server), "localhost");
    pop.login_ok(LOGIN, PASSWORD);
    let bytes = pop.retr(1);
    pop.quit();
    assert_eq!(without_trace_headers(&bytes), original(), "served message");
    bytes
}

fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    assert!(
        got == want,
        "{what}: got {} bytes, want {}\n got: {:?}\nwant: {:?}",
        got.len(),
        want.len(),
        String::from_utf8_lossy(got),
        String::from_utf8_lossy(want)
    );
}

fn assert_success(command: &Command, output: &Output) {
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn curl(port: u16, scheme: &str, cafile: &Path, extra: &[&str]) -> (Command, Output) {
    require("curl");
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--noproxy", "*", "--max-time", "20", "--cacert"])
        .arg(cafile)
        // The development certificate covers `localhost`; connect to the IPv4 listener.
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg("-u")
        .arg(format!("{LOGIN}:{PASSWORD}"))
        .arg(format!("{scheme}://localhost:{port}/1"))
        .args(extra);
    let output = run_bounded(&mut command, b"");
    (command, output)
}

// RFC 8314 §3.3 (implicit TLS) and RFC 2595 §4 (STLS), with curl verifying the certificate.
#[test]
fn curl_retrieves_byte_exact_over_pop3s_and_stls() {
    let server = tls_server();
    let served = served(&server);
    let cafile = dev_cert_path(&server);

    let (command, output) = curl(server.pop3s.port(), "pop3s", &cafile, &[]);
    assert_success(&command, &output);
    assert_same("curl over POP3S", &output.stdout, &served);

    let (command, output) = curl(server.pop3.port(), "pop3", &cafile, &["--ssl-reqd"]);
    assert_success(&command, &output);
    assert_same("curl over STLS", &output.stdout, &served);

    // Without TLS the same password is refused: the TLS paths above are what made it work.
    let (command, output) = curl(server.pop3.port(), "pop3", &cafile, &[]);
    assert!(
        !output.status.success() && output.stdout.is_empty(),
        "{command:?} logged in without TLS: {output:?}"
    );

    // A certificate curl does not trust fails the handshake, so verification was on.
    let other = tempfile::tempdir().unwrap();
    let (pem, _, _) = self_signed(&["localhost"]);
    std::fs::write(other.path().join("other.pem"), pem).unwrap();
    let (command, output) = curl(
        server.pop3s.port(),
        "pop3s",
        &other.path().join("other.pem"),
        &[],
    );
    assert!(
        !output.status.success(),
        "{command:?} trusted a certificate it was not given"
    );
}

/// Runs tests/tls_clients/poplib_tls.py; returns its summary lines and message 1.
fn poplib(server: &Server, mode: &str) -> (Vec<String>, Vec<u8>) {
    require("python3");
    let out = tempfile::tempdir().expect("tempdir");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/tls_clients/poplib_tls.py");
    let port = match mode {
        "ssl" => server.pop3s.port(),
        _ => server.pop3.port(),
    };
    let mut command = Command::new("python3");
    command
        .arg(&script)
        .args(["--mode", mode, "--port", &port.to_string(), "--user", LOGIN])
        .arg("--cafile")
        .arg(dev_cert_path(server))
        .arg("--out")
        .arg(out.path())
        .env("POP3_PASSWORD", PASSWORD);
    let output = run_bounded(&mut command, b"");
    assert_success(&command, &output);
    let summary = std::fs::read_to_string(out.path().join("summary.txt")).expect("summary");
    let message = std::fs::read(out.path().join("1.eml")).expect("message 1");
    (summary.lines().map(str::to_owned).collect(), message)
}

#[test]
fn poplib_logs_in_and_retrieves_over_pop3_ssl_and_stls() {
    let server = tls_server();
    let served = served(&server);
    for mode in ["ssl", "stls"] {
        let (summary, message) = poplib(&server, mode);
        assert_eq!(summary[0], "tls TLSv1.3", "{mode}: {summary:?}");
        assert!(
            summary.contains(&"capa USER".to_owned()),
            "{mode}: {summary:?}"
        );
        assert!(
            summary.contains(&format!("stat 1 {}", served.len())),
            "{mode}: {summary:?}"
        );
        assert!(
            summary.last().is_some_and(|l| l.starts_with("quit +OK")),
            "{mode}: {summary:?}"
        );
        assert_same(&format!("poplib {mode} RETR 1"), &message, &served);
    }
}

fn s_client(args: &[&str], input: &[u8]) -> (Command, Output) {
    require("openssl");
    let mut command = Command::new("openssl");
    command.arg("s_client").args(args);
    let output = run_bounded(&mut command, input);
    (command, output)
}

#[test]
fn openssl_s_client_starttls_pop3_session() {
    let server = tls_server();
    let served = served(&server);
    let connect = server.pop3.to_string();
    let cafile = dev_cert_path(&server).display().to_string();
    let script = format!("CAPA\r\nUSER {LOGIN}\r\nPASS {PASSWORD}\r\nSTAT\r\nQUIT\r\n");
    let (command, output) = s_client(
        &[
            "-starttls",
            "pop3",
            "-connect",
            &connect,
            "-CAfile",
            &cafile,
            "-verify_hostname",
            "localhost",
            "-verify_return_error",
            "-quiet",
        ],
        script.as_bytes(),
    );
    // s_client consumed the greeting and the answer to STLS; this is what came over TLS.
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.split("\r\n").collect();
    let capa_end = lines.iter().position(|l| *l == ".");
    let stat = format!("+OK 1 {}", served.len());
    let ok = lines.first() == Some(&"+OK Capability list follows")
        && capa_end.is_some_and(|end| lines[..end].contains(&"USER"))
        && !lines.contains(&"STLS")
        && capa_end.is_some_and(|end| {
            // After CAPA's terminator: USER, PASS, STAT and QUIT answered in order.
            let after = &lines[end + 1..];
            after.len() >= 4
                && after[0].starts_with("+OK")
                && after[1].starts_with("+OK maildrop has 1 messages")
                && after[2] == stat
                && after[3].starts_with("+OK")
        });
    assert!(
        ok,
        "{command:?} ({}):\nstdout: {text}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    // The same with a CA file that does not hold the server's certificate fails.
    let other = tempfile::tempdir().unwrap();
    let (pem, _, _) = self_signed(&["localhost"]);
    let other_ca = other.path().join("other.pem");
    std::fs::write(&other_ca, pem).unwrap();
    let (command, output) = s_client(
        &[
            "-starttls",
            "pop3",
            "-connect",
            &connect,
            "-CAfile",
            &other_ca.display().to_string(),
            "-verify_return_error",
            "-quiet",
        ],
        script.as_bytes(),
    );
    assert!(
        !output.status.success() && !String::from_utf8_lossy(&output.stdout).contains("+OK 1 "),
        "{command:?} went on with an untrusted certificate: {output:?}"
    );
}

/// A users file with `LOGIN` in tenant `default` (cleartext not allowed, the default) and
/// `OPEN_LOGIN` in tenant `open`, which allows cleartext.
const OPEN_LOGIN: &str = "bob@open.example";

fn policy_server(dir: &Path) -> Server {
    let users = wire::users_file(
        dir,
        &[
            (&["user", "add", LOGIN], PASSWORD),
            (&["tenant", "add", "open", "--domain", "open.example"], ""),
            (&["user", "add", OPEN_LOGIN], PASSWORD),
            (
                &["tenant", "set", "open", "--cleartext-allowed", "true"],
                "",
            ),
        ],
    );
    Server::builder()
        .cleartext(false)
        .option("USERS__FILE", &users.display().to_string())
        .start()
}

// RFC 2595 §2.1/§4 and RFC 8314 §4.1: no cleartext password crosses the network unless the
// tenant says so; the refusal comes before the password is checked, so it reveals nothing.
#[test]
fn cleartext_logins_need_tls_unless_the_tenant_allows_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = policy_server(dir.path());
    let config = dev_config(&server);

    let mut pop = wire::plain(server.pop3);
    let capa = pop.lines("CAPA");
    assert!(capa.contains(&"STLS".to_owned()), "{capa:?}");
    assert!(!capa.contains(&"USER".to_owned()), "{capa:?}");
    assert!(
        !capa
            .iter()
            .any(|l| l.starts_with("SASL") && (l.contains("PLAIN") || l.contains("LOGIN"))),
        "{capa:?}"
    );
    let right = pop.login(LOGIN, PASSWORD);
    let wrong = pop.login(LOGIN, "not the password");
    assert!(
        right.starts_with("-ERR [AUTH] cleartext authentication is not allowed without TLS"),
        "{right}"
    );
    assert_eq!(
        right, wrong,
        "the same refusal for right and wrong passwords"
    );
    // SASL PLAIN, not offered here, is refused the same way.
    let plain = pop.cmd(&format!("AUTH PLAIN {}", plain_response(LOGIN, PASSWORD)));
    assert_eq!(plain, right, "AUTH PLAIN without TLS");

    // After STLS on the same connection: the password mechanisms, no STLS, and the login.
    let mut pop = pop.stls(&config, "localhost");
    let capa = pop.lines("CAPA");
    assert!(capa.contains(&"USER".to_owned()), "{capa:?}");
    assert!(
        capa.contains(&"SASL PLAIN LOGIN OAUTHBEARER XOAUTH2".to_owned()),
        "{capa:?}"
    );
    assert!(!capa.contains(&"STLS".to_owned()), "{capa:?}");
    assert!(pop.cmd("STLS").starts_with("-ERR"), "STLS twice");
    pop.login_ok(LOGIN, PASSWORD);
    assert!(pop.cmd("STAT").starts_with("+OK 0 "));
    pop.quit();

    // Tenant `open` allows cleartext: its user logs in without TLS.
    let mut pop = wire::plain(server.pop3);
    pop.login_ok(OPEN_LOGIN, PASSWORD);
    assert!(pop.cmd("STAT").starts_with("+OK 0 "));
    pop.quit();
}

fn plain_response(login: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0{password}"))
}

// RFC 2595 §4 / RFC 3207 §6: what the client pipelined after STLS, before the handshake, is
// discarded; it must not be answered over TLS (a man in the middle could have added it).
#[test]
fn stls_discards_commands_pipelined_before_the_handshake() {
    let server = tls_server();
    let config = dev_config(&server);

    let mut pop = wire::plain(server.pop3);
    pop.send(b"STLS\r\nCAPA\r\n");
    let reply = pop.line();
    assert!(reply.starts_with("+OK"), "STLS: {reply}");
    // `upgrade` also asserts that nothing followed the +OK in clear text.
    let mut pop = pop.upgrade(&config, "localhost");
    let noop = pop.cmd("NOOP");
    assert!(
        noop.starts_with("-ERR"),
        "the first answer over TLS must be NOOP's (-ERR before login), got {noop:?}: the \
         injected CAPA was answered"
    );
    let capa = pop.lines("CAPA");
    assert!(capa.contains(&"USER".to_owned()), "{capa:?}");

    // An injected USER is forgotten too: PASS over TLS needs its own USER.
    let mut pop = wire::plain(server.pop3);
    pop.send(format!("STLS\r\nUSER {LOGIN}\r\n").as_bytes());
    assert!(pop.line().starts_with("+OK"));
    let mut pop = pop.upgrade(&config, "localhost");
    let pass = pop.cmd(&format!("PASS {PASSWORD}"));
    assert!(
        pass.starts_with("-ERR"),
        "PASS after an injected USER: {pass}"
    );
    pop.login_ok(LOGIN, PASSWORD);
    pop.quit();
}

// RFC 8996 §5 forbids TLS 1.0 and 1.1; POP3S speaks 1.2 and 1.3 only.
#[test]
fn pop3s_refuses_tls_1_0_and_1_1() {
    let server = tls_server();
    let connect = server.pop3s.to_string();
    let cafile = dev_cert_path(&server).display().to_string();
    // SECLEVEL=0 lets OpenSSL 3 offer the old versions at all: the refusal must be the
    // server's.
    let attempt = |version: &str| {
        s_client(
            &[
                version,
                "-cipher",
                "DEFAULT@SECLEVEL=0",
                "-connect",
                &connect,
                "-CAfile",
                &cafile,
                "-verify_return_error",
                "-brief",
            ],
            b"QUIT\r\n",
        )
    };
    for version in ["-tls1_1", "-tls1"] {
        let (command, output) = attempt(version);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The server's alert (rustls answers handshake_failure), not a client-side refusal
        // such as "no protocols available": the old version really was offered.
        let refused_by_server = ["alert protocol version", "alert handshake failure"]
            .iter()
            .any(|alert| stderr.contains(alert));
        assert!(
            !output.status.success() && refused_by_server,
            "{command:?} was not refused by the server ({}):\nstdout: {}\nstderr: {stderr}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        );
    }
    for (version, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (command, output) = attempt(version);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("Protocol version: {name}")),
            "{command:?} did not negotiate {name} ({}):\nstdout: {}\nstderr: {stderr}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

/// A self-signed certificate for `names`: (certificate PEM, key PEM, certificate DER).
fn self_signed(names: &[&str]) -> (String, String, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

/// Writes a certificate and key as `dir/NAME-cert.pem` and `dir/NAME-key.pem` (temporary
/// file and rename, key first); returns their paths.
fn install(dir: &Path, name: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let cert_path = dir.join(format!("{name}-cert.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    wire::replace_file(&key_path, key.as_bytes());
    wire::replace_file(&cert_path, cert.as_bytes());
    (cert_path, key_path)
}

// Certificates are renewed without a restart: new handshakes get the new certificate within
// `tls.reload_interval`, and sessions already on TLS go on undisturbed.
#[test]
fn reloaded_certificate_serves_new_handshakes_and_old_sessions_go_on() {
    let certs = tempfile::tempdir().unwrap();
    let (old_pem, old_key, old_der) = self_signed(&["localhost", "127.0.0.1"]);
    let (new_pem, new_key, new_der) = self_signed(&["localhost", "127.0.0.1"]);
    let (cert, key) = install(certs.path(), "pop", &old_pem, &old_key);
    let server = Server::builder()
        .cleartext(false)
        .user(LOGIN, PASSWORD)
        .option("TLS__CERT", &cert.display().to_string())
        .option("TLS__KEY", &key.display().to_string())
        .option("TLS__RELOAD_INTERVAL", "200ms")
        .start();
    server.deliver_ok(LOGIN, &original());
    assert!(
        !dev_cert_path(&server).exists(),
        "no development certificate when one is configured"
    );
    // One client configuration (with its session cache) for every connection, as a real
    // client has: a resumed session must not hide the new certificate.
    let config = client_config(&[old_der.clone(), new_der.clone()]);

    let mut old = pop3s(server.pop3s, &config, "localhost");
    assert_eq!(peer_cert(&old), old_der, "the configured certificate");
    old.login_ok(LOGIN, PASSWORD);

    install(certs.path(), "pop", &new_pem, &new_key);
    let deadline = Instant::now() + WAIT;
    loop {
        let probe = pop3s(server.pop3s, &config, "localhost");
        if peer_cert(&probe) == new_der {
            break;
        }
        assert_eq!(peer_cert(&probe), old_der, "an unknown certificate");
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within {WAIT:?}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // STLS handshakes use the new certificate too.
    let pop = wire::plain(server.pop3).stls(&config, "localhost");
    assert_eq!(peer_cert(&pop), new_der, "after STLS");

    // The session opened before the reload still works, on its old certificate.
    assert_eq!(peer_cert(&old), old_der);
    let stat = old.cmd("STAT");
    assert!(stat.starts_with("+OK 1 "), "{stat}");
    assert_eq!(without_trace_headers(&old.retr(1)), original());
    old.quit();
}

// Tenants bring their own domain names: `[[tls.sni]]` serves their certificate to clients that
// ask for the name (RFC 6066 §3), and the default certificate to everyone else.
#[test]
fn sni_selects_the_tenant_certificate() {
    const TENANT_HOST: &str = "mail.tenant-b.example";
    let dir = tempfile::tempdir().unwrap();
    let (pem, key, tenant_der) = self_signed(&[TENANT_HOST]);
    let (cert, key) = install(dir.path(), "tenant-b", &pem, &key);
    let config_file = dir.path().join("cloudpop.toml");
    let toml = format!(
        "[[tls.sni]]\ndomains = [\"{TENANT_HOST}\"]\ncert = {cert:?}\nkey = {key:?}\n",
        cert = cert.display().to_string(),
        key = key.display().to_string(),
    );
    std::fs::write(&config_file, toml).unwrap();
    let server = Server::builder()
        .cleartext(false)
        .user(LOGIN, PASSWORD)
        .option("CONFIG", &config_file.display().to_string())
        .start();
    let dev_der = wire::read_certs(&dev_cert_path(&server)).remove(0);
    let config = client_config(&[dev_der.clone(), tenant_der.clone()]);

    let check = |pop: &Client<TlsStream>, name: &str, want: &CertificateDer<'static>| {
        assert_eq!(&peer_cert(pop), want, "certificate for {name}");
    };
    // The tenant's name, by SNI, on POP3S and after STLS; the login works on it.
    let mut pop = pop3s(server.pop3s, &config, TENANT_HOST);
    check(&pop, TENANT_HOST, &tenant_der);
    pop.login_ok(LOGIN, PASSWORD);
    pop.quit();
    let pop = wire::plain(server.pop3).stls(&config, TENANT_HOST);
    check(&pop, TENANT_HOST, &tenant_der);
    // Matching is case-insensitive (RFC 6066 §3: host names compare as DNS names).
    let pop = pop3s(server.pop3s, &config, "MAIL.Tenant-B.example");
    check(&pop, "MAIL.Tenant-B.example", &tenant_der);
    // No SNI (an IP address is never sent as SNI) and another name get the default.
    let pop = pop3s(server.pop3s, &config, "127.0.0.1");
    check(&pop, "no SNI", &dev_der);
    let pop = pop3s(server.pop3s, &config, "localhost");
    check(&pop, "localhost", &dev_der);
    let pop = wire::plain(server.pop3).stls(&config, "127.0.0.1");
    check(&pop, "no SNI after STLS", &dev_der);
}
