//! A POP3 client over rustls for the TLS and SASL end-to-end tests (tests/tls.rs and
//! tests/sasl.rs include this file): implicit TLS (POP3S, RFC 8314), STLS (RFC 2595), the
//! certificate the server presented, and users files prepared with `cloudpop admin` before
//! a server starts.
//!
//! The client is line-oriented like `support::Pop3`, but generic over the stream so that the
//! same code talks plain TCP before STLS and TLS after it.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a panic is a test failure; each test binary uses part of it"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::support::{self, Server, WAIT};

/// A TLS session over TCP.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// The self-signed development certificate role `all` made for `server`.
pub fn dev_cert_path(server: &Server) -> PathBuf {
    server.dir.path().join("tls").join("dev-cert.pem")
}

/// Every certificate in a PEM file.
pub fn read_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A client configuration that trusts exactly `trusted` (self-signed certificates as their
/// own anchors) and speaks TLS 1.3 and 1.2.
pub fn client_config(trusted: &[CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.clone()).expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A client configuration trusting `server`'s development certificate.
pub fn dev_config(server: &Server) -> Arc<ClientConfig> {
    client_config(&read_certs(&dev_cert_path(server)))
}

/// The name to verify: an IP address (rustls then sends no SNI) or a DNS name (sent as SNI).
pub fn server_name(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).expect("server name")
}

/// Runs the TLS handshake on `tcp` to its end.
pub fn handshake(
    mut tcp: TcpStream,
    config: &Arc<ClientConfig>,
    name: &str,
) -> std::io::Result<TlsStream> {
    let mut conn = ClientConnection::new(Arc::clone(config), server_name(name))
        .map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(StreamOwned::new(conn, tcp))
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    tcp.set_read_timeout(Some(WAIT)).expect("read timeout");
    tcp.set_write_timeout(Some(WAIT)).expect("write timeout");
    tcp
}

/// Connects to POP3S, verifies the certificate for `name`, and reads the greeting.
pub fn pop3s(addr: SocketAddr, config: &Arc<ClientConfig>, name: &str) -> Client<TlsStream> {
    let tls = handshake(tcp(addr), config, name)
        .unwrap_or_else(|e| panic!("TLS handshake with {addr} as {name}: {e}"));
    Client::greeted(tls)
}

/// Connects to the plain POP3 port and reads the greeting.
pub fn plain(addr: SocketAddr) -> Client<TcpStream> {
    Client::greeted(tcp(addr))
}

/// The leaf certificate the server presented.
pub fn peer_cert(client: &Client<TlsStream>) -> CertificateDer<'static> {
    client
        .stream()
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server presented a certificate")
        .clone()
        .into_owned()
}

/// The negotiated TLS version, as rustls names it.
pub fn tls_version(client: &Client<TlsStream>) -> String {
    format!(
        "{:?}",
        client
            .stream()
            .conn
            .protocol_version()
            .expect("handshake done")
    )
}

/// A line-oriented POP3 client that shows exactly what the server sent.
pub struct Client<S: Read + Write> {
    reader: BufReader<S>,
    pub greeting: String,
}

impl<S: Read + Write> Client<S> {
    /// Wraps a connected stream and reads the `+OK` greeting.
    pub fn greeted(stream: S) -> Self {
        let mut client = Self::wrap(stream);
        client.greeting = client.line();
        assert!(
            client.greeting.starts_with("+OK"),
            "greeting {:?}",
            client.greeting
        );
        client
    }

    /// Wraps a stream whose greeting was already read (or is not expected).
    pub fn wrap(stream: S) -> Self {
        Self {
            reader: BufReader::new(stream),
            greeting: String::new(),
        }
    }

    pub fn stream(&self) -> &S {
        self.reader.get_ref()
    }

    /// The stream back, asserting the server sent nothing that was not read yet.
    pub fn into_stream(self) -> S {
        assert!(
            self.reader.buffer().is_empty(),
            "unread bytes from the server: {:?}",
            String::from_utf8_lossy(self.reader.buffer())
        );
        self.reader.into_inner()
    }

    /// Writes raw bytes in one write.
    pub fn send(&mut self, bytes: &[u8]) {
        let stream = self.reader.get_mut();
        stream.write_all(bytes).expect("write");
        stream.flush().expect("flush");
    }

    /// Reads one line, CRLF included, asserting the CRLF.
    pub fn raw_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).expect("read");
        assert!(
            line.ends_with(b"\r\n"),
            "line without CRLF: {:?}",
            String::from_utf8_lossy(&line)
        );
        line
    }

    /// Reads one status line without its CRLF.
    pub fn line(&mut self) -> String {
        let line = self.raw_line();
        String::from_utf8_lossy(&line[..line.len() - 2]).into_owned()
    }

    /// Sends one command line and returns the status line.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// Reads a multi-line body up to the terminating dot; returns it un-stuffed, CRLFs kept.
    pub fn body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.raw_line();
            if line == b".\r\n" {
                return body;
            }
            let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
            body.extend_from_slice(unstuffed);
        }
    }

    /// Sends a command expecting a multi-line answer; returns (status, unstuffed body).
    pub fn multi(&mut self, line: &str) -> (String, Vec<u8>) {
        let status = self.cmd(line);
        assert!(status.starts_with("+OK"), "{line}: {status}");
        let body = self.body();
        (status, body)
    }

    /// The lines of a multi-line answer (CAPA, AUTH without mechanism).
    pub fn lines(&mut self, line: &str) -> Vec<String> {
        let body = self.multi(line).1;
        String::from_utf8(body)
            .expect("UTF-8 listing")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// USER + PASS; returns the answer to PASS (or to USER if that failed).
    pub fn login(&mut self, user: &str, pass: &str) -> String {
        let reply = self.cmd(&format!("USER {user}"));
        if !reply.starts_with("+OK") {
            return reply;
        }
        self.cmd(&format!("PASS {pass}"))
    }

    pub fn login_ok(&mut self, user: &str, pass: &str) {
        let reply = self.login(user, pass);
        assert!(reply.starts_with("+OK"), "login of {user}: {reply}");
    }

    pub fn retr(&mut self, n: u32) -> Vec<u8> {
        self.multi(&format!("RETR {n}")).1
    }

    pub fn quit(&mut self) {
        let reply = self.cmd("QUIT");
        assert!(reply.starts_with("+OK"), "QUIT: {reply}");
    }
}

impl Client<TcpStream> {
    /// STLS, then the TLS handshake on the same connection; the session goes on over TLS.
    pub fn stls(mut self, config: &Arc<ClientConfig>, name: &str) -> Client<TlsStream> {
        let reply = self.cmd("STLS");
        assert!(reply.starts_with("+OK"), "STLS: {reply}");
        self.upgrade(config, name)
    }

    /// The TLS handshake after the `+OK` to STLS was read.
    pub fn upgrade(self, config: &Arc<ClientConfig>, name: &str) -> Client<TlsStream> {
        let tls = handshake(self.into_stream(), config, name)
            .unwrap_or_else(|e| panic!("TLS handshake after STLS as {name}: {e}"));
        Client::wrap(tls)
    }
}

/// Writes a users file at `dir/users.toml` with `cloudpop admin`, one `(args, stdin)` per
/// command, before any server runs; start the server with `.option("USERS__FILE", …)`.
pub fn users_file(dir: &Path, commands: &[(&[&str], &str)]) -> PathBuf {
    let path = dir.join("users.toml");
    let env = HashMap::from([
        (
            "CLOUDPOP_USERS__FILE".to_owned(),
            path.display().to_string(),
        ),
        ("CLOUDPOP_DATA_DIR".to_owned(), dir.display().to_string()),
    ]);
    for (args, stdin) in commands {
        let mut full = vec!["admin"];
        full.extend_from_slice(args);
        support::run_cli(&env, Some(dir), &full, stdin).assert_success();
    }
    path
}

/// Replaces `path` with `contents` the way careful tools do: a temporary file, then rename.
pub fn replace_file(path: &Path, contents: &[u8]) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, contents).expect("write temporary file");
    std::fs::rename(&temp, path).expect("rename into place");
}
