//! Real POP3 clients download mail delivered over LMTP, byte for byte: curl, Python's
//! poplib and fetchmail, plus what a dropped connection and QUIT do to the maildrop.
//!
//! Delivery prepends `Return-Path:` and `Received:`; everything after them must be the
//! message exactly as it was sent. The messages exercise dot-stuffing (lines starting with
//! `.`, a lone `.` line, a final `.` line), 8-bit bytes and a message of a few hundred KB.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{Server, require, without_trace_headers};

const LOGIN: &str = "reader@example.com";
const PASSWORD: &str = "s3cret pass";

/// A message whose lines exercise dot-stuffing, ending with a lone `.` line.
fn dotted_message() -> Vec<u8> {
    b"From: Sender <sender@example.net>\r\n\
To: reader@example.com\r\n\
Subject: dots\r\n\
Message-ID: <dots@example.net>\r\n\
\r\n\
.a line that starts with a dot\r\n\
..two dots\r\n\
.\r\n\
after a lone dot\r\n\
 . a space, then a dot\r\n\
...\r\n\
\r\n\
.\r\n"
        .to_vec()
}

/// A message with every byte from 0x80 to 0xFF, UTF-8 and Latin-1 text, and tabs.
fn eight_bit_message() -> Vec<u8> {
    let mut m = b"From: sender@example.net\r\nTo: reader@example.com\r\nSubject: 8bit\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        .to_vec();
    m.extend_from_slice("caf\u{e9} na\u{ef}ve \u{2014} \u{1f4ec}\r\n".as_bytes());
    m.extend_from_slice(b"latin-1: caf\xe9 na\xefve\r\n\ttabbed\r\n");
    m.extend((0x80u8..=0xff).collect::<Vec<_>>());
    m.extend_from_slice(b"\r\n.\xff dot and 8-bit\r\nend\r\n");
    m
}

/// About 300 KB of pseudo-random lines; every 37th starts with a dot, every 101st is a lone dot.
fn large_message() -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ .";
    let mut m =
        b"From: sender@example.net\r\nTo: reader@example.com\r\nSubject: large\r\n\r\n".to_vec();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for line in 0..4000u32 {
        if line % 101 == 100 {
            m.extend_from_slice(b".\r\n");
            continue;
        }
        if line % 37 == 0 {
            m.push(b'.');
        }
        for _ in 0..76 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            m.push(ALPHABET[(state % ALPHABET.len() as u64) as usize]);
        }
        m.extend_from_slice(b"\r\n");
    }
    assert!(m.len() > 250_000);
    m
}

fn corpus() -> Vec<Vec<u8>> {
    vec![dotted_message(), eight_bit_message(), large_message()]
}

/// A server with one user holding `messages`, delivered over LMTP in order.
fn server_with(messages: &[Vec<u8>]) -> Server {
    // Plain POP3 on loopback: passwords are offered and accepted without TLS here (curl
    // only sends one if CAPA announces USER).
    let server = Server::builder()
        .user(LOGIN, PASSWORD)
        .option("POP3__OFFER_CLEARTEXT_WITHOUT_TLS", "true")
        .start();
    for m in messages {
        assert!(m.ends_with(b"\r\n"), "test messages end with CRLF");
        server.deliver_ok(LOGIN, m);
    }
    server
}

/// What the server stores and serves, read with the raw test client: (uid, size, bytes).
fn stored_messages(server: &Server) -> Vec<(String, usize, Vec<u8>)> {
    let mut pop = server.pop3();
    pop.login_ok(LOGIN, PASSWORD);
    let uids = numbered(&pop.multi("UIDL").1);
    let sizes = numbered(&pop.multi("LIST").1);
    let mut out = Vec::new();
    for (n, uid) in &uids {
        let bytes = pop.retr(*n);
        let size: usize = sizes[n].parse().expect("size");
        assert_eq!(
            size,
            bytes.len(),
            "LIST size of message {n} is its RETR length"
        );
        out.push((uid.clone(), size, bytes));
    }
    assert!(pop.quit().starts_with("+OK"));
    out
}

/// Parses `n value` lines of a LIST or UIDL body.
fn numbered(body: &[u8]) -> BTreeMap<u32, String> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|line| {
            let (n, value) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad listing line {line:?}"));
            (n.parse().expect("message number"), value.to_owned())
        })
        .collect()
}

/// `STAT` as (count, octets), in a session that then quits.
fn stat(server: &Server) -> (usize, u64) {
    let mut pop = server.pop3();
    pop.login_ok(LOGIN, PASSWORD);
    let reply = pop.cmd("STAT");
    assert!(pop.quit().starts_with("+OK"));
    let mut words = reply.split(' ').skip(1);
    let count = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("STAT: {reply}"));
    let octets = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("STAT: {reply}"));
    (count, octets)
}

/// Message files in the server's store (temporary files excluded).
fn stored_files(server: &Server) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.map(|e| e.expect("dir entry")) {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&server.mail_dir(), &mut out);
    out
}

fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let context = |b: &[u8]| {
            String::from_utf8_lossy(&b[at.saturating_sub(40)..(at + 40).min(b.len())]).into_owned()
        };
        panic!(
            "{what}: {} bytes, want {}; first difference at byte {at}:\n got: {:?}\nwant: {:?}",
            got.len(),
            want.len(),
            context(got),
            context(want)
        );
    }
}

fn run(command: &mut Command) -> Output {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn curl(server: &Server, path: &str, extra: &[&str]) -> Vec<u8> {
    require("curl");
    let url = format!("pop3://{}{path}", server.pop3);
    let user = format!("{LOGIN}:{PASSWORD}");
    run(Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "60",
            "-u",
            &user,
            &url,
        ])
        .args(extra))
    .stdout
}

#[test]
fn curl_lists_and_downloads_byte_exact() {
    let originals = corpus();
    let server = server_with(&originals);
    let stored = stored_messages(&server);

    // LIST: `curl pop3://host/` sends LIST; same numbers and sizes as the raw client saw.
    let listing = numbered(&curl(&server, "/", &[]));
    let want: BTreeMap<u32, String> = (1..)
        .zip(stored.iter().map(|(_, size, _)| size.to_string()))
        .collect();
    assert_eq!(listing, want, "curl LIST");

    let uidl = numbered(&curl(&server, "/", &["-X", "UIDL"]));
    let want: BTreeMap<u32, String> = (1..)
        .zip(stored.iter().map(|(uid, _, _)| uid.clone()))
        .collect();
    assert_eq!(uidl, want, "curl UIDL");

    // RETR: curl removes the dot-stuffing and the terminator; what is left is the message.
    for (i, (original, (_, _, served))) in originals.iter().zip(&stored).enumerate() {
        let n = i + 1;
        let downloaded = curl(&server, &format!("/{n}"), &[]);
        assert_same(&format!("curl RETR {n} vs raw RETR"), &downloaded, served);
        assert_same(
            &format!("curl RETR {n} without trace headers"),
            &without_trace_headers(&downloaded),
            original,
        );
    }

    // DELE through curl (single-line answer, hence -I); curl ends with QUIT, so it is applied.
    curl(&server, "/1", &["-X", "DELE", "-I"]);
    assert_eq!(
        stat(&server).0,
        originals.len() - 1,
        "message 1 deleted by curl's DELE + QUIT"
    );
    assert_eq!(stored_files(&server).len(), originals.len() - 1);
}

/// Runs tests/clients/poplib_fetch.py; returns its summary lines and the downloaded messages.
fn poplib_fetch(server: &Server, delete: bool) -> (Vec<String>, Vec<Vec<u8>>) {
    require("python3");
    let out = tempfile::tempdir().expect("tempdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/poplib_fetch.py");
    let mut command = Command::new("python3");
    command
        .arg(&script)
        .args([
            "--port",
            &server.pop3.port().to_string(),
            "--user",
            LOGIN,
            "--out",
        ])
        .arg(out.path())
        .env("POP3_PASSWORD", PASSWORD);
    if delete {
        command.arg("--delete");
    }
    run(&mut command);
    let summary = std::fs::read_to_string(out.path().join("summary.txt")).expect("summary");
    let summary: Vec<String> = summary.lines().map(str::to_owned).collect();
    let count = summary.iter().filter(|l| l.starts_with("retr ")).count();
    let messages = (1..=count)
        .map(|n| std::fs::read(out.path().join(format!("{n}.eml"))).expect("message file"))
        .collect();
    (summary, messages)
}

#[test]
fn poplib_downloads_byte_exact_then_deletes_on_quit() {
    let originals = corpus();
    let server = server_with(&originals);
    let stored = stored_messages(&server);
    let total: usize = stored.iter().map(|(_, size, _)| size).sum();

    let (summary, messages) = poplib_fetch(&server, false);
    assert_eq!(summary[0], format!("stat {} {total}", originals.len()));
    for (i, (uid, size, _)) in stored.iter().enumerate() {
        let n = i + 1;
        assert!(
            summary.contains(&format!("uidl {n} {uid}")),
            "UIDL {n} in {summary:?}"
        );
        assert!(
            summary.contains(&format!("list {n} {size}")),
            "LIST {n} in {summary:?}"
        );
    }
    assert_eq!(messages.len(), originals.len());
    for (i, (original, (_, _, served))) in originals.iter().zip(&stored).enumerate() {
        assert_same(&format!("poplib RETR {}", i + 1), &messages[i], served);
        assert_same(
            &format!("poplib RETR {} without trace headers", i + 1),
            &without_trace_headers(&messages[i]),
            original,
        );
    }
    assert!(
        summary.last().is_some_and(|l| l.starts_with("quit +OK")),
        "{summary:?}"
    );
    assert_eq!(
        stat(&server).0,
        originals.len(),
        "nothing deleted without DELE"
    );

    let (summary, messages) = poplib_fetch(&server, true);
    assert_eq!(messages.len(), originals.len());
    assert!(
        summary.last().is_some_and(|l| l.starts_with("quit +OK")),
        "{summary:?}"
    );
    assert_eq!(
        stat(&server),
        (0, 0),
        "DELE of every message, then QUIT, empties the maildrop"
    );
    assert_eq!(
        stored_files(&server),
        Vec::<PathBuf>::new(),
        "no message file left in the store"
    );
}

/// A fetchmail run against `server` that delivers each message to its own file.
struct Fetchmail {
    dir: tempfile::TempDir,
}

impl Fetchmail {
    fn new() -> Fetchmail {
        require("fetchmail");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("out")).expect("out dir");
        Fetchmail { dir }
    }

    /// Runs fetchmail once (`keep` or delete mode); returns its output for failure messages.
    fn run(&self, server: &Server, keep: bool, verbose: bool) -> Output {
        let home = self.dir.path();
        let out = home.join("out");
        // Each message goes to the MDA's standard input; number the files in arrival order.
        let mda = format!(
            "/bin/sh -c 'n=$(ls {out} | wc -l); cat > {out}/msg.$(( n + 1 ))'",
            out = out.display()
        );
        // `no stripcr` keeps the CRLF line ends; `sslproto ""` keeps fetchmail 6.4 on plain
        // POP3 (it would try STLS, and the test server's certificate is self-signed); `no
        // rewrite` leaves addresses alone.
        let rc = format!(
            "poll 127.0.0.1 protocol pop3 port {port} auth password\n  user \"{LOGIN}\" password \"{PASSWORD}\"\n  {keep} fetchall no rewrite no stripcr sslproto \"\"\n  mda \"{mda}\"\n",
            port = server.pop3.port(),
            keep = if keep { "keep" } else { "nokeep" },
            mda = mda.replace('"', "\\\""),
        );
        let rcfile = home.join("fetchmailrc");
        std::fs::File::create(&rcfile)
            .and_then(|mut f| f.write_all(rc.as_bytes()))
            .expect("write rcfile");
        // fetchmail refuses a run control file that others can read.
        std::fs::set_permissions(&rcfile, std::fs::Permissions::from_mode(0o600))
            .expect("chmod rcfile");
        let mut command = Command::new("fetchmail");
        command
            .arg("-f")
            .arg(&rcfile)
            .arg("--pidfile")
            .arg(home.join("fetchmail.pid"))
            .arg("--idfile")
            .arg(home.join("fetchids"))
            .args(["--nosyslog", "--nodetach", "--timeout", "60"])
            .env("HOME", home)
            .env("FETCHMAILHOME", home)
            .stdin(Stdio::null());
        if verbose {
            command.arg("-v");
        }
        command.output().expect("run fetchmail")
    }

    /// Runs fetchmail and asserts success (exit 0: mail was retrieved); on failure re-runs
    /// nothing but shows fetchmail's own verbose account of a second attempt.
    fn fetch(&self, server: &Server, keep: bool) -> Vec<Vec<u8>> {
        let output = self.run(server, keep, false);
        if !output.status.success() {
            let verbose = self.run(server, keep, true);
            panic!(
                "fetchmail failed ({}): {}{}\nverbose retry ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                verbose.status,
                String::from_utf8_lossy(&verbose.stdout),
                String::from_utf8_lossy(&verbose.stderr)
            );
        }
        let out = self.dir.path().join("out");
        let count = std::fs::read_dir(&out).expect("out dir").count();
        (1..=count)
            .map(|n| std::fs::read(out.join(format!("msg.{n}"))).expect("delivered message"))
            .collect()
    }
}

/// fetchmail adds exactly one header field of its own, a `Received:` naming fetchmail, which
/// it puts after the `Return-Path:` line. Returns the message with that field taken out;
/// everything else must be the message exactly as the server served it.
fn without_fetchmail_received(what: &str, delivered: &[u8]) -> Vec<u8> {
    let header_end = delivered
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(delivered.len(), |i| i + 2);
    let mut fields: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while at < header_end {
        let end = line_end(delivered, at);
        let folded = delivered[at..].starts_with(b" ") || delivered[at..].starts_with(b"\t");
        match fields.last_mut() {
            Some(field) if folded => field.1 = end,
            _ => fields.push((at, end)),
        }
        at = end;
    }
    let ours: Vec<&(usize, usize)> = fields
        .iter()
        .filter(|(start, end)| {
            let field = &delivered[*start..*end];
            field.starts_with(b"Received: ")
                && String::from_utf8_lossy(field).contains("(fetchmail-")
        })
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "{what}: one Received field added by fetchmail:\n{}",
        head(delivered)
    );
    let (start, end) = *ours[0];
    [&delivered[..start], &delivered[end..]].concat()
}

fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| from + i + 1)
}

fn head(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(600)]).into_owned()
}

fn assert_fetchmail_copies(
    delivered: &[Vec<u8>],
    stored: &[(String, usize, Vec<u8>)],
    originals: &[Vec<u8>],
) {
    assert_eq!(
        delivered.len(),
        originals.len(),
        "fetchmail delivered every message"
    );
    for (i, ((got, (_, _, served)), original)) in
        delivered.iter().zip(stored).zip(originals).enumerate()
    {
        let what = format!("fetchmail message {}", i + 1);
        let rest = without_fetchmail_received(&what, got);
        assert_same(&what, &rest, served);
        assert_same(
            &format!("{what} without trace headers"),
            &without_trace_headers(&rest),
            original,
        );
    }
}

#[test]
fn fetchmail_keep_mode_downloads_byte_exact_and_leaves_mail() {
    let originals = corpus();
    let server = server_with(&originals);
    let stored = stored_messages(&server);

    let fetchmail = Fetchmail::new();
    let delivered = fetchmail.fetch(&server, true);
    assert_fetchmail_copies(&delivered, &stored, &originals);
    assert_eq!(
        stat(&server).0,
        originals.len(),
        "keep mode leaves the messages on the server"
    );
    assert_eq!(stored_files(&server).len(), originals.len());
}

#[test]
fn fetchmail_delete_mode_downloads_byte_exact_and_empties_maildrop() {
    let originals = corpus();
    let server = server_with(&originals);
    let stored = stored_messages(&server);

    let fetchmail = Fetchmail::new();
    let delivered = fetchmail.fetch(&server, false);
    assert_fetchmail_copies(&delivered, &stored, &originals);
    assert_eq!(stat(&server), (0, 0), "delete mode removes what it fetched");
    assert_eq!(stored_files(&server), Vec::<PathBuf>::new());
}

#[test]
fn dropped_connection_deletes_nothing_and_quit_does() {
    let original = dotted_message();
    let server = server_with(std::slice::from_ref(&original));

    // RFC 1939 §6: without QUIT there is no UPDATE state, so the DELE is forgotten.
    let mut pop = server.pop3();
    pop.login_ok(LOGIN, PASSWORD);
    assert!(pop.cmd("DELE 1").starts_with("+OK"));
    pop.stream()
        .shutdown(std::net::Shutdown::Both)
        .expect("drop the connection");
    drop(pop);

    // The next session may have to wait until the server has noticed the drop and released
    // the maildrop; [IN-USE] until then is fine, a missing message is not.
    let mut pop = loop_until_logged_in(&server);
    assert_eq!(
        pop.cmd("STAT").split(' ').nth(1),
        Some("1"),
        "the dropped session deleted nothing"
    );
    assert_same(
        "message after the drop",
        &without_trace_headers(&pop.retr(1)),
        &original,
    );
    assert!(pop.cmd("DELE 1").starts_with("+OK"));
    let quit = pop.quit();
    assert!(quit.starts_with("+OK"), "QUIT: {quit}");

    assert_eq!(stat(&server), (0, 0), "QUIT after DELE deleted the message");
    assert_eq!(
        stored_files(&server),
        Vec::<PathBuf>::new(),
        "and its file is gone"
    );
}

fn loop_until_logged_in(server: &Server) -> support::Pop3 {
    let deadline = std::time::Instant::now() + support::WAIT;
    loop {
        let mut pop = server.pop3();
        let reply = pop.login(LOGIN, PASSWORD);
        if reply.starts_with("+OK") {
            return pop;
        }
        assert!(
            reply.contains("[IN-USE]"),
            "login after a dropped session: {reply}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "maildrop still locked after the client dropped"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
