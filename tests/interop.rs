//! Interoperability with real clients against the real binary: which SASL mechanisms are
//! offered (curl picks the strongest one it sees, so offering CRAM-MD5 to users without a
//! CRAM-MD5 secret locks them out), the TLS closure after QUIT (RFC 8314 §5.1, seen by
//! Python's `ssl`), and the text after every `+OK` (RFC 1957).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;
#[path = "tls_clients/wire.rs"]
mod wire;

use std::path::Path;
use std::process::{Command, Output};

use support::{Server, require, run_bounded};
use wire::{dev_cert_path, dev_config, pop3s};

const LOGIN: &str = "alice@example.com";
const PASSWORD: &str = "alice password";
const CRAM_LOGIN: &str = "tim@example.com";
const CRAM_PASSWORD: &str = "tim password";
const CRAM_SECRET: &str = "tanstaaftanstaaf";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `LOGIN` with a password only; `CRAM_LOGIN` with a password and a CRAM-MD5 secret. TLS
/// is needed for passwords (the default tenant's policy).
fn server(options: &[(&str, &str)]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let users = wire::users_file(
        dir.path(),
        &[
            (&["user", "add", LOGIN], PASSWORD),
            (&["user", "add", CRAM_LOGIN], CRAM_PASSWORD),
            (&["user", "cram", CRAM_LOGIN], CRAM_SECRET),
        ],
    );
    let mut builder = Server::builder()
        .cleartext(false)
        .option("USERS__FILE", &users.display().to_string());
    for (key, value) in options {
        builder = builder.option(key, value);
    }
    (builder.start(), dir)
}

/// curl with its default settings lists the maildrop over POP3S as `user:secret`; returns
/// its output (`-v`, so stderr shows the AUTH command it chose).
fn curl_list(server: &Server, cafile: &Path, user: &str, secret: &str) -> Output {
    require("curl");
    let port = server.pop3s.port();
    run_bounded(
        Command::new("curl")
            .args([
                "-sS",
                "-v",
                "--noproxy",
                "*",
                "--max-time",
                "20",
                "--cacert",
            ])
            .arg(cafile)
            // The development certificate covers `localhost`; connect to the IPv4 listener.
            .arg("--resolve")
            .arg(format!("localhost:{port}:127.0.0.1"))
            .arg("-u")
            .arg(format!("{user}:{secret}"))
            .arg(format!("pop3s://localhost:{port}/")),
        b"",
    )
}

/// The mechanism named in the first `AUTH` line curl sent.
fn chosen_mechanism(output: &Output) -> String {
    text(&output.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("> AUTH "))
        .map(|rest| rest.split(' ').next().unwrap_or("").to_owned())
        .unwrap_or_else(|| panic!("curl sent no AUTH:\n{}", text(&output.stderr)))
}

fn assert_listed(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what}: curl failed ({}):\n{}",
        output.status,
        text(&output.stderr)
    );
}

// curl (like mpop) takes CRAM-MD5 whenever it is advertised. By default it is not, even
// when some user has a CRAM-MD5 secret, so everyone else logs in with curl's defaults.
#[test]
fn curl_logs_in_with_its_defaults_when_another_user_has_a_cram_md5_secret() {
    let (server, _dir) = server(&[]);
    let cafile = dev_cert_path(&server);

    let output = curl_list(&server, &cafile, LOGIN, PASSWORD);
    assert_listed("password user", &output);
    assert_ne!(chosen_mechanism(&output), "CRAM-MD5");
    let output = curl_list(&server, &cafile, CRAM_LOGIN, CRAM_PASSWORD);
    assert_listed("user with a CRAM-MD5 secret, by password", &output);

    // Not advertised, so not accepted either, on either port.
    let mut pop = pop3s(server.pop3s, &dev_config(&server), "localhost");
    let capa = pop.lines("CAPA");
    assert!(
        capa.contains(&"SASL PLAIN LOGIN OAUTHBEARER XOAUTH2".to_owned()),
        "{capa:?}"
    );
    let reply = pop.cmd("AUTH CRAM-MD5");
    assert!(reply.starts_with("-ERR"), "AUTH CRAM-MD5: {reply}");
    let mut plain = wire::plain(server.pop3);
    assert!(plain.lines("AUTH").is_empty(), "nothing offered in clear");
    let reply = plain.cmd("AUTH CRAM-MD5");
    assert!(reply.starts_with("-ERR"), "AUTH CRAM-MD5 in clear: {reply}");
}

// `pop3.sasl_mechanisms` chooses what is offered: CRAM-MD5 once listed, and a mechanism
// left out is refused.
#[test]
fn the_offered_mechanisms_follow_the_configuration() {
    let (server, _dir) = server(&[("POP3__SASL_MECHANISMS", r#"["PLAIN", "CRAM-MD5"]"#)]);
    let cafile = dev_cert_path(&server);

    let mut pop = pop3s(server.pop3s, &dev_config(&server), "localhost");
    let capa = pop.lines("CAPA");
    assert!(capa.contains(&"SASL PLAIN CRAM-MD5".to_owned()), "{capa:?}");
    assert_eq!(pop.lines("AUTH"), ["PLAIN", "CRAM-MD5"]);
    let reply = pop.cmd("AUTH LOGIN");
    assert!(
        reply.starts_with("-ERR"),
        "AUTH LOGIN, not offered: {reply}"
    );
    // CRAM-MD5 sends no reusable secret, so it is offered without TLS too (RFC 2195).
    let mut plain = wire::plain(server.pop3);
    assert_eq!(plain.lines("AUTH"), ["CRAM-MD5"]);

    let output = curl_list(&server, &cafile, CRAM_LOGIN, CRAM_SECRET);
    assert_listed("CRAM-MD5 user", &output);
    assert_eq!(chosen_mechanism(&output), "CRAM-MD5");

    // A name that is no mechanism is a clear start-up error.
    let dir = tempfile::tempdir().unwrap();
    let env = std::collections::HashMap::from([
        (
            "CLOUDPOP_POP3__SASL_MECHANISMS".to_owned(),
            r#"["PLAIN", "SCRAM-SHA-1"]"#.to_owned(),
        ),
        (
            "CLOUDPOP_DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        ),
    ]);
    let checked = support::run_cli(&env, Some(dir.path()), &["check-config"], "");
    assert!(!checked.status.success(), "{checked:?}");
    assert!(
        checked.stderr.contains("pop3.sasl_mechanisms") && checked.stderr.contains("SCRAM-SHA-1"),
        "{}",
        checked.stderr
    );
}

/// Logs in over TLS with Python's `ssl` (POP3S, or STLS on the plain port), sends QUIT, reads
/// its `+OK`, then reads on: prints `QUIT <reply>` and `clean` when the server ended TLS
/// with close_notify, or `ragged <error>` when it only closed the TCP connection.
const CLOSURE_SCRIPT: &str = r#"
import os, socket, ssl, sys
mode, port, cafile, user = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cafile=cafile)
raw = socket.create_connection(("127.0.0.1", port), timeout=20)
buffer = b""
def line(sock):
    global buffer
    while b"\r\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("closed early: %r" % buffer)
        buffer += chunk
    first, buffer = buffer.split(b"\r\n", 1)
    return first.decode()
if mode == "stls":
    assert line(raw).startswith("+OK")
    raw.sendall(b"STLS\r\n")
    assert line(raw).startswith("+OK")
# Ragged EOFs are errors, so that a close without close_notify shows.
sock = context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
if mode == "pop3s":
    assert line(sock).startswith("+OK")
sock.sendall(("USER %s\r\n" % user).encode())
assert line(sock).startswith("+OK")
sock.sendall(("PASS %s\r\n" % os.environ["POP3_PASSWORD"]).encode())
reply = line(sock)
assert reply.startswith("+OK"), reply
sock.sendall(b"QUIT\r\n")
print("QUIT", line(sock))
try:
    rest = sock.recv(4096)
    print("clean" if rest == b"" else "data %r" % rest)
except (ssl.SSLError, OSError) as e:
    print("ragged", repr(e))
"#;

// RFC 8314 §5.1: the server sends close_notify before closing a TLS connection, so the
// client can tell the end of the session from a truncation.
#[test]
fn quit_on_tls_ends_with_close_notify() {
    require("python3");
    let (server, _dir) = server(&[]);
    let cafile = dev_cert_path(&server);
    for (mode, port) in [("pop3s", server.pop3s.port()), ("stls", server.pop3.port())] {
        let output = run_bounded(
            Command::new("python3")
                .arg("-c")
                .arg(CLOSURE_SCRIPT)
                .args([mode, &port.to_string()])
                .arg(&cafile)
                .arg(LOGIN)
                .env("POP3_PASSWORD", PASSWORD),
            b"",
        );
        let said = text(&output.stdout);
        assert!(
            output.status.success() && said.contains("QUIT +OK") && said.ends_with("clean\n"),
            "{mode}: {said}\n{}",
            text(&output.stderr)
        );
    }
}

/// Asserts `+OK`, one space, then text (RFC 1957: some clients need the text).
fn assert_ok_with_text(what: &str, reply: &str) {
    let rest = reply
        .strip_prefix("+OK ")
        .unwrap_or_else(|| panic!("{what}: {reply:?} is not `+OK <text>`"));
    assert!(
        !rest.trim().is_empty(),
        "{what}: {reply:?} has no text after +OK"
    );
}

// RFC 1957: every positive answer, NOOP's included, carries text after `+OK `.
#[test]
fn every_ok_carries_text() {
    let server = Server::builder().user(LOGIN, PASSWORD).start();
    server.deliver_ok(LOGIN, &support::message("text", "hello\r\n"));
    let mut pop = server.pop3();
    assert_ok_with_text("greeting", &pop.greeting);
    let status = pop.multi("CAPA").0;
    assert_ok_with_text("CAPA", &status);
    let status = pop.multi("AUTH").0;
    assert_ok_with_text("AUTH", &status);
    let reply = pop.cmd(&format!("USER {LOGIN}"));
    assert_ok_with_text("USER", &reply);
    let reply = pop.cmd(&format!("PASS {PASSWORD}"));
    assert_ok_with_text("PASS", &reply);
    for command in ["NOOP", "STAT", "LIST 1", "UIDL 1", "DELE 1", "RSET"] {
        let reply = pop.cmd(command);
        assert_ok_with_text(command, &reply);
    }
    for command in ["LIST", "UIDL", "TOP 1 0", "RETR 1"] {
        let status = pop.multi(command).0;
        assert_ok_with_text(command, &status);
    }
    let reply = pop.quit();
    assert_ok_with_text("QUIT", &reply);

    let mut pop = server.pop3();
    let reply = pop.cmd("STLS");
    assert_ok_with_text("STLS", &reply);
    let mut pop = server.pop3();
    let reply = pop.quit();
    assert_ok_with_text("QUIT before login", &reply);
}
