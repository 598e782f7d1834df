//! The PROXY protocol end to end: a real haproxy (TCP mode, `send-proxy-v2`, round robin) in
//! front of two `cloudpop` servers, and the refusals the listener owes to peers that break the
//! trust rules (`services/pop3/src/proxy_protocol/mod.rs`).
//!
//! The test client binds its socket to 127.0.0.2 before connecting, so the address haproxy
//! reports in its header differs from haproxy's own (127.0.0.1).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Server, ServerBuilder, WAIT};

const USER: &str = "alice@example.com";
const PASS: &str = "proxy test pass";
/// The source address of the "real" client, distinct from haproxy's 127.0.0.1.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const HAPROXY_INSTALL: &str = "apt-get install -y haproxy (tests/run.sh must do this)";

/// A server with the PROXY protocol on, trusting `trusted` (a TOML array of networks).
fn proxied_server(trusted: &str) -> ServerBuilder {
    Server::builder()
        .user(USER, PASS)
        .option("LOG__FORMAT", "json")
        .option("POP3__PROXY_PROTOCOL", "true")
        .option("POP3__PROXY_TRUSTED_NETWORKS", trusted)
        .option("POP3__PROXY_HEADER_TIMEOUT", "1s")
}

/// The haproxy binary: `HAPROXY_BIN`, else `haproxy` on the `PATH`, else `/usr/sbin/haproxy`
/// (where Debian puts it, often not on a non-root user's `PATH`).
fn haproxy_program() -> PathBuf {
    let candidates = std::env::var_os("HAPROXY_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(["haproxy".into(), "/usr/sbin/haproxy".into()]);
    for program in candidates {
        let runs = Command::new(&program)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if runs {
            return program;
        }
    }
    panic!("haproxy is not installed; install it with: {HAPROXY_INSTALL}");
}

/// A foreground `haproxy` on a free loopback port, killed on drop.
struct Haproxy {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// Balances TCP connections round robin over `backends`, each sent a PROXY v2 header.
    fn start(backends: &[SocketAddr]) -> Haproxy {
        let program = haproxy_program();
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], support::backends::free_port()));
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("    server pod{i} {b} send-proxy-v2\n"))
            .collect();
        let config = format!(
            "global\n    maxconn 200\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    \
             timeout server 30s\n\
             frontend pop3\n    bind {addr}\n    default_backend pods\n\
             backend pods\n    balance roundrobin\n{servers}"
        );
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new(&program)
            .arg("-f")
            .arg(&config_path)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start haproxy ({HAPROXY_INSTALL}): {e}"));
        let mut haproxy = Haproxy {
            child: Some(child),
            addr,
            dir,
        };
        haproxy.wait_until_accepting();
        haproxy
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn wait_until_accepting(&mut self) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            let child = self.child.as_mut().unwrap();
            if let Ok(Some(status)) = child.try_wait() {
                panic!("haproxy exited with {status}; its output:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "haproxy did not accept on {}; output:\n{}",
            self.addr,
            self.log()
        );
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Connects to `to` from `from` (port chosen by the kernel). std cannot bind before
/// connecting; tokio's `TcpSocket` can, and hands back a blocking std stream.
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(from, 0))
            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
        let stream = socket.connect(to).await.expect("connect");
        stream.into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

/// A line-oriented client over any connected stream.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn new(stream: TcpStream) -> Client {
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// The next line without its CRLF, or `None` at EOF (or on a reset).
    fn line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                assert!(line.ends_with(b"\r\n"), "no CRLF: {line:?}");
                Some(String::from_utf8_lossy(&line[..line.len() - 2]).into_owned())
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line().unwrap_or_else(|| panic!("EOF after {line:?}"))
    }

    /// Every line until the server closes the connection.
    fn lines_until_eof(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.line()).collect()
    }
}

/// The session-end line of the session whose client address was `client`, once logged.
fn session_end(server: &Server, client: SocketAddr) -> Option<String> {
    let needle = format!("\"client\":\"{client}\"");
    server
        .log()
        .lines()
        .find(|l| l.contains("pop3 session ended") && l.contains(&needle))
        .map(str::to_owned)
}

/// Waits until one of `servers` logs the end of `client`'s session; returns which one.
fn pod_that_served(servers: &[&Server], client: SocketAddr) -> (usize, String) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        for (i, server) in servers.iter().enumerate() {
            if let Some(line) = session_end(server, client) {
                return (i, line);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let logs: Vec<String> = servers.iter().map(|s| s.log()).collect();
    panic!(
        "no server logged a session from {client}; logs:\n{}",
        logs.join("\n----\n")
    );
}

#[test]
fn haproxy_relays_the_real_client_address_to_both_pods() {
    let trusted = r#"["127.0.0.1/32"]"#;
    let pod_a = proxied_server(trusted).start();
    let pod_b = proxied_server(trusted).start();
    let haproxy = Haproxy::start(&[pod_a.pop3, pod_b.pop3]);

    let mut served = [0usize; 2];
    for attempt in 0..6 {
        let stream = connect_from(IpAddr::V4(CLIENT_IP), haproxy.addr);
        let me = stream.local_addr().unwrap();
        assert_eq!(me.ip(), IpAddr::V4(CLIENT_IP));
        let mut client = Client::new(stream);
        let greeting = client.line();
        assert!(
            greeting.as_deref().is_some_and(|g| g.starts_with("+OK")),
            "attempt {attempt}: greeting {greeting:?}; haproxy:\n{}",
            haproxy.log()
        );
        assert!(client.cmd(&format!("USER {USER}")).starts_with("+OK"));
        let pass = client.cmd(&format!("PASS {PASS}"));
        assert!(pass.starts_with("+OK"), "attempt {attempt}: {pass}");
        assert!(client.cmd("QUIT").starts_with("+OK"));

        let (pod, line) = pod_that_served(&[&pod_a, &pod_b], me);
        served[pod] += 1;
        // The session is attributed to the address from the header; the TCP peer is haproxy.
        assert!(line.contains("\"peer\":\"127.0.0.1:"), "{line}");
        assert!(line.contains(&format!("\"login\":\"{USER}\"")), "{line}");
        assert!(line.contains("\"outcome\":\"closed\""), "{line}");
    }
    assert!(
        served.iter().all(|&n| n > 0),
        "round robin should reach both pods: {served:?}"
    );
}

#[test]
fn a_trusted_peer_without_a_header_gets_no_greeting() {
    let server = proxied_server(r#"["127.0.0.1/32"]"#).start();

    // Silent: closed once the header timeout (1 s) passes, without a byte sent.
    let started = Instant::now();
    let mut client = Client::new(connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST), server.pop3));
    let said = client.lines_until_eof();
    let waited = started.elapsed();
    assert!(said.is_empty(), "a greeting went out: {said:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "closed after {waited:?}, not after the 1 s header timeout"
    );

    // A POP3 command instead of a header: refused at once, nothing executed or answered.
    let mut client = Client::new(connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST), server.pop3));
    client.send(format!("USER {USER}\r\nPASS {PASS}\r\n").as_bytes());
    let said = client.lines_until_eof();
    assert!(said.is_empty(), "answered without a header: {said:?}");

    let log = server.log_with("connection from a trusted proxy refused", 2);
    assert!(!log.contains(&format!("\"login\":\"{USER}\"")), "{log}");
}

#[test]
fn an_untrusted_peer_that_sends_a_header_is_refused_and_its_claim_ignored() {
    // 127.0.0.1 is not in 10.0.0.0/8: a direct client, which must not send a header.
    let server = proxied_server(r#"["10.0.0.0/8"]"#).start();

    // A direct client from the same address is served normally, under its own address.
    let stream = connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST), server.pop3);
    let me = stream.local_addr().unwrap();
    let mut client = Client::new(stream);
    assert!(client.line().unwrap().starts_with("+OK"));
    assert!(client.cmd(&format!("USER {USER}")).starts_with("+OK"));
    assert!(client.cmd(&format!("PASS {PASS}")).starts_with("+OK"));
    assert!(client.cmd("QUIT").starts_with("+OK"));
    pod_that_served(&[&server], me);

    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    // Version 2, PROXY, TCP over IPv4, 12 bytes: 1.2.3.4:1111 -> 127.0.0.1:110.
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 1, 2, 3, 4, 127, 0, 0, 1, 0x04, 0x57, 0, 110,
    ]);
    let headers: [(&str, Vec<u8>); 2] = [
        ("v1", b"PROXY TCP4 1.2.3.4 127.0.0.1 1111 110\r\n".to_vec()),
        ("v2", v2),
    ];
    for (version, header) in headers {
        let mut client = Client::new(connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST), server.pop3));
        client.send(&header);
        let said = client.lines_until_eof();
        // The greeting goes out before the peer speaks (it is a direct client); what the
        // peer sends next is a header, answered by -ERR and the end of the connection.
        assert_eq!(said.len(), 2, "{version}: {said:?}");
        assert!(said[0].starts_with("+OK"), "{version}: {said:?}");
        assert!(said[1].starts_with("-ERR"), "{version}: {said:?}");
    }

    let log = server.log_with("\"outcome\":\"proxy_refused\"", 2);
    assert!(
        !log.contains("1.2.3.4"),
        "the claimed address was logged:\n{log}"
    );
}
