//! The connection cap under pressure, against the real binary: idle connections that have
//! not logged in are shed, longest idle first, so that a real client (Python's poplib, curl)
//! still gets in; logged-in sessions are never shed; and POP3S never answers a refusal with
//! plain text, which a TLS client would take for a broken handshake.
//!
//! The idle connections come from several loopback addresses (127.0.0.2, …), as a flood
//! from many hosts would, so that the per-address cap is not what stops them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;
#[path = "tls_clients/wire.rs"]
mod wire;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{Server, WAIT, http_get, require, run_bounded};
use wire::{Client, dev_cert_path, dev_config};

const LOGIN: &str = "alice@example.com";
const PASSWORD: &str = "alice password";
const OTHER_LOGIN: &str = "bob@example.com";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A TCP connection to `to` from the loopback address `source`.
fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        let stream = socket.connect(to).await.unwrap();
        stream.into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

/// The value of the metric series `series` (name and labels, as exposed).
fn metric(server: &Server, series: &str) -> u64 {
    let (_, body) = http_get(server.admin, "/metrics").unwrap();
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
        .map_or(0, |v| v as u64)
}

fn active(server: &Server) -> u64 {
    metric(
        server,
        r#"cloudpop_pop3_connections_active{listener="plain"}"#,
    ) + metric(
        server,
        r#"cloudpop_pop3_connections_active{listener="tls"}"#,
    )
}

/// Waits until the server counts `want` open connections.
fn wait_active(server: &Server, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = active(server);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} connections open, not {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Python's poplib over POP3S, trusting the development certificate: USER/PASS, STAT, QUIT.
const POPLIB_SCRIPT: &str = r#"
import os, poplib, ssl, sys
port, cafile, user = int(sys.argv[1]), sys.argv[2], sys.argv[3]
context = ssl.create_default_context(cafile=cafile)
pop = poplib.POP3_SSL("127.0.0.1", port, context=context, timeout=20)
pop.user(user)
pop.pass_(os.environ["POP3_PASSWORD"])
print("stat", *pop.stat())
print("quit", pop.quit().decode())
"#;

fn poplib_login(server: &Server) -> Output {
    require("python3");
    run_bounded(
        Command::new("python3")
            .arg("-c")
            .arg(POPLIB_SCRIPT)
            .arg(server.pop3s.port().to_string())
            .arg(dev_cert_path(server))
            .arg(LOGIN)
            .env("POP3_PASSWORD", PASSWORD),
        b"",
    )
}

/// A TLS handshake with Python's `ssl` from `source`: prints `greeting <line>` or
/// `failed <error>`.
const HANDSHAKE_SCRIPT: &str = r#"
import socket, ssl, sys
port, cafile, source = int(sys.argv[1]), sys.argv[2], sys.argv[3]
context = ssl.create_default_context(cafile=cafile)
raw = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))
try:
    sock = context.wrap_socket(raw, server_hostname="localhost")
    print("greeting", sock.recv(512))
except Exception as e:
    print("failed", repr(e))
"#;

fn python_handshake(server: &Server, source: &str) -> String {
    require("python3");
    let output = run_bounded(
        Command::new("python3")
            .arg("-c")
            .arg(HANDSHAKE_SCRIPT)
            .arg(server.pop3s.port().to_string())
            .arg(dev_cert_path(server))
            .arg(source),
        b"",
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

/// Asserts that a refused POP3S connection saw a TLS-level failure, not text.
fn assert_refused_without_text(what: &str, said: &str) {
    assert!(
        said.starts_with("failed") && !said.contains("WRONG_VERSION_NUMBER"),
        "{what}: {said}"
    );
}

/// Reads from a raw connection to its end: what the server sent before closing.
fn read_to_end(mut stream: TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    // A reset after the close is fine: what counts is what arrived before it.
    let _ = stream.read_to_end(&mut got);
    got
}

// Finding every slot taken by connections that never log in, a new client still gets in:
// the connection idle the longest is closed to make room, with `-ERR [SYS/TEMP]`.
#[test]
fn a_real_client_gets_in_when_idle_connections_fill_the_server() {
    let server = Server::builder()
        .cleartext(false)
        .user(LOGIN, PASSWORD)
        .option("POP3__MAX_CONNECTIONS", "8")
        .option("POP3__MAX_CONNECTIONS_PER_IP", "3")
        .start();
    server.deliver_ok(LOGIN, &support::message("hello", "under pressure\r\n"));
    let config = dev_config(&server);

    // Oldest first: three plain connections, three on POP3S that finished the handshake,
    // two on POP3S that never start it.
    let mut plain: Vec<Client<TcpStream>> = (0..3)
        .map(|_| Client::greeted(connect_from([127, 0, 0, 2], server.pop3)))
        .collect();
    let _tls: Vec<_> = (0..3)
        .map(|_| {
            let tcp = connect_from([127, 0, 0, 3], server.pop3s);
            Client::greeted(wire::handshake(tcp, &config, "localhost").unwrap())
        })
        .collect();
    let _silent: Vec<TcpStream> = (0..2)
        .map(|_| connect_from([127, 0, 0, 4], server.pop3s))
        .collect();
    wait_active(&server, 8);

    let output = poplib_login(&server);
    let said = text(&output.stdout);
    assert!(
        output.status.success() && said.starts_with("stat 1 ") && said.contains("quit +OK"),
        "poplib over POP3S on a full server: {said}\n{}",
        text(&output.stderr)
    );
    // The longest idle connection made room, and was told why.
    let shed = plain.remove(0);
    let goodbye = read_to_end(shed.into_stream());
    assert!(
        text(&goodbye).starts_with("-ERR [SYS/TEMP]"),
        "{:?}",
        text(&goodbye)
    );

    // Full again: curl gets in the same way, at the cost of the next oldest.
    let _late = connect_from([127, 0, 0, 4], server.pop3s);
    wait_active(&server, 8);
    require("curl");
    let port = server.pop3s.port();
    let output = run_bounded(
        Command::new("curl")
            .args(["-sS", "--noproxy", "*", "--max-time", "20", "--cacert"])
            .arg(dev_cert_path(&server))
            .arg("--resolve")
            .arg(format!("localhost:{port}:127.0.0.1"))
            .arg("-u")
            .arg(format!("{LOGIN}:{PASSWORD}"))
            .arg(format!("pop3s://localhost:{port}/")),
        b"",
    );
    assert!(
        output.status.success() && text(&output.stdout).starts_with("1 "),
        "curl over POP3S on a full server: {}",
        text(&output.stderr)
    );
    let goodbye = read_to_end(plain.remove(0).into_stream());
    assert!(text(&goodbye).starts_with("-ERR [SYS/TEMP]"), "{goodbye:?}");
    assert_eq!(
        metric(&server, "cloudpop_pop3_connections_shed_total"),
        2,
        "shed connections"
    );
}

// Logged-in sessions are never shed. With nothing to shed, plain POP3 still says why it
// refuses; POP3S closes without a byte of text, before and after a client hello.
#[test]
fn refusals_on_pop3s_are_not_plain_text() {
    let server = Server::builder()
        .user(LOGIN, PASSWORD)
        .user(OTHER_LOGIN, PASSWORD)
        .option("POP3__MAX_CONNECTIONS", "2")
        .option("POP3__MAX_CONNECTIONS_PER_IP", "1")
        .start();
    let mut sessions: Vec<Client<TcpStream>> =
        [([127, 0, 0, 2], LOGIN), ([127, 0, 0, 3], OTHER_LOGIN)]
            .into_iter()
            .map(|(source, login)| {
                let mut pop = Client::greeted(connect_from(source, server.pop3));
                pop.login_ok(login, PASSWORD);
                pop
            })
            .collect();

    let refused = read_to_end(connect_from([127, 0, 0, 4], server.pop3));
    assert!(
        text(&refused).starts_with("-ERR [SYS/TEMP]"),
        "plain refusal: {:?}",
        text(&refused)
    );
    let refused = read_to_end(connect_from([127, 0, 0, 4], server.pop3s));
    assert!(
        refused.is_empty(),
        "POP3S refusal sent {:?}",
        text(&refused)
    );
    assert_refused_without_text("full", &python_handshake(&server, "127.0.0.4"));
    for pop in &mut sessions {
        let reply = pop.cmd("NOOP");
        assert!(
            reply.starts_with("+OK"),
            "logged-in session after refusals: {reply}"
        );
    }
    assert_eq!(metric(&server, "cloudpop_pop3_connections_shed_total"), 0);

    // The per-address cap refuses the same way on POP3S.
    for mut pop in sessions {
        pop.quit();
    }
    wait_active(&server, 0);
    let tcp = connect_from([127, 0, 0, 5], server.pop3s);
    let _first = Client::greeted(wire::handshake(tcp, &dev_config(&server), "localhost").unwrap());
    let refused = read_to_end(connect_from([127, 0, 0, 5], server.pop3s));
    assert!(
        refused.is_empty(),
        "per-address refusal sent {:?}",
        text(&refused)
    );
    assert_refused_without_text("per address", &python_handshake(&server, "127.0.0.5"));
}
