//! The users file under accidents: emptied, rewritten in place, replaced by a FIFO. The
//! running server keeps the directory it uses, LMTP (Python's `smtplib.LMTP`) never bounces
//! a user for good, the refusals are counted, and an operator can still remove users on
//! purpose.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Server, WAIT, http_get};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const DAVE: &str = "dave@example.com";
const PASSWORD: &str = "correct horse";

/// One LMTP session of Python's `smtplib.LMTP`, driven line by line: `rcpt ADDR` answers the
/// RCPT TO reply code, `send ADDR` delivers a message and answers the final reply code.
const LMTP_CLIENT: &str = r#"
import smtplib, sys
lmtp = smtplib.LMTP(sys.argv[1], int(sys.argv[2]), timeout=30)
lmtp.ehlo()
for line in sys.stdin:
    verb, address = line.split()
    lmtp.mail("probe@example.net")
    code, _ = lmtp.rcpt(address)
    if verb == "send" and code == 250:
        code, _ = lmtp.data(b"Subject: probe\r\n\r\nprobe\r\n")
    else:
        lmtp.rset()
    print(code, flush=True)
lmtp.quit()
"#;

struct LmtpClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl LmtpClient {
    fn connect(server: &Server) -> LmtpClient {
        let mut child = Command::new("python3")
            .args(["-c", LMTP_CLIENT, "127.0.0.1"])
            .arg(server.lmtp.port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        LmtpClient {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, verb: &str, address: &str) -> u16 {
        writeln!(self.stdin, "{verb} {address}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim()
            .parse()
            .unwrap_or_else(|_| panic!("smtplib.LMTP failed: {line:?}"))
    }

    /// The reply code to `RCPT TO:<address>`.
    fn rcpt(&mut self, address: &str) -> u16 {
        self.ask("rcpt", address)
    }

    /// The final reply code of a whole delivery to `address`.
    fn send(&mut self, address: &str) -> u16 {
        self.ask("send", address)
    }
}

impl Drop for LmtpClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(users: &[&str]) -> Server {
    let mut builder = Server::builder();
    for user in users {
        builder = builder.user(user, PASSWORD);
    }
    builder.start()
}

fn users_file(server: &Server) -> PathBuf {
    server.dir.path().join("users.toml")
}

/// `cloudpop_config_reloads_total{outcome=...}` as `/metrics` shows it now.
fn reloads(server: &Server, outcome: &str) -> u64 {
    let (status, body) = http_get(server.admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    let name = format!("cloudpop_config_reloads_total{{outcome=\"{outcome}\"}} ");
    body.lines()
        .find_map(|line| line.strip_prefix(&name))
        .map_or(0, |value| value.trim().parse().unwrap())
}

fn can_log_in(server: &Server, login: &str) -> bool {
    let mut pop = server.pop3();
    let ok = pop.login(login, PASSWORD).starts_with("+OK");
    pop.quit();
    ok
}

/// Polls until `done` holds (the server checks the users file every 100 ms in tests).
fn eventually(what: &str, server: &Server, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Rewrites the file in place, as an editor without atomic saves does: same inode,
/// truncated, then written.
fn rewrite_in_place(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// Replaces the file atomically, as `cloudpop admin` and careful editors do.
fn replace(path: &Path, text: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// The users file split into its head (tenants) and one block per user.
fn blocks(text: &str) -> (String, Vec<String>) {
    let mut parts = text.split("\n[[users]]\n");
    let head = parts.next().unwrap().to_owned();
    (head, parts.map(str::to_owned).collect())
}

/// The users file with only the users whose logins are in `keep`.
fn keeping(text: &str, keep: &[&str]) -> String {
    let (head, users) = blocks(text);
    let mut out = head;
    for user in users {
        if keep
            .iter()
            .any(|login| user.contains(&format!("login = \"{login}\"")))
        {
            out.push_str("\n[[users]]\n");
            out.push_str(&user);
        }
    }
    out
}

/// The users file with `login` added, with the same password as the first user.
fn adding(text: &str, login: &str) -> String {
    let (_, users) = blocks(text);
    let first = &users[0];
    let password = first
        .lines()
        .find(|line| line.starts_with("password = "))
        .unwrap();
    format!("{text}\n[[users]]\nlogin = \"{login}\"\nid = \"u-added\"\n{password}\n")
}

#[test]
fn an_emptied_users_file_keeps_every_user_and_lmtp_never_bounces() {
    let server = start(&[ALICE, BOB]);
    let path = users_file(&server);
    let mut lmtp = LmtpClient::connect(&server);
    assert_eq!(lmtp.send(ALICE), 250);
    assert_eq!(lmtp.rcpt("nobody@example.com"), 550);

    for (round, emptied) in ["", "# the users are being edited\n"]
        .into_iter()
        .enumerate()
    {
        rewrite_in_place(&path, emptied);
        let mut codes = Vec::new();
        // Until the server has looked at this version and refused it.
        eventually("the emptied file is refused", &server, || {
            codes.push(lmtp.rcpt(ALICE));
            assert!(!codes.contains(&550), "LMTP bounced a user: {codes:?}");
            reloads(&server, "removal_refused") == round as u64 + 1
        });
        assert!(can_log_in(&server, ALICE), "{:?}", server.log());
        assert!(can_log_in(&server, BOB));
        assert_eq!(lmtp.send(ALICE), 250);
        assert_eq!(lmtp.send(BOB), 250);
        // Unknown while the file on disk is refused: deferred, not bounced.
        assert_eq!(lmtp.rcpt("nobody@example.com"), 450);
    }
    let mut raw = support::Lmtp::connect(server.lmtp);
    assert!(raw.cmd("MAIL FROM:<sender@example.net>").starts_with("250"));
    let reply = raw.cmd("RCPT TO:<nobody@example.com>");
    assert!(reply.starts_with("450 4.1.1 "), "{reply}");
    raw.quit();
    let log = server.log();
    assert!(
        log.contains("would remove 2 of the 2 users in use"),
        "no error logged: {log}"
    );
    assert!(!log.contains("$argon2id"), "a secret was logged");
}

#[test]
fn a_users_file_rewritten_in_place_is_never_taken_half_written() {
    let server = start(&[ALICE, BOB, CAROL]);
    let path = users_file(&server);
    let full = std::fs::read_to_string(&path).unwrap();
    let partial = keeping(&full, &[ALICE]);
    let last = adding(&full, DAVE);
    let rest = last[partial.len()..].to_owned();
    assert!(last.starts_with(&partial), "the partial file is a prefix");
    let mut lmtp = LmtpClient::connect(&server);
    assert_eq!(lmtp.rcpt(BOB), 250);

    // An editor that truncates, then writes the file in two pieces, slowly: the server polls
    // every 100 ms, so it sees the empty file and the part with only alice several times.
    let editor = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            std::thread::sleep(Duration::from_millis(400));
            file.write_all(partial.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(400));
            file.write_all(rest.as_bytes()).unwrap();
        })
    };
    let mut codes = Vec::new();
    while !editor.is_finished() {
        codes.push(lmtp.rcpt(BOB));
        codes.push(lmtp.rcpt(CAROL));
    }
    editor.join().unwrap();
    eventually("the complete file is taken", &server, || {
        codes.push(lmtp.rcpt(BOB));
        lmtp.rcpt(DAVE) == 250
    });
    let count = |code| codes.iter().filter(|&&c| c == code).count();
    eprintln!(
        "{} probes during the rewrite: {} × 250, {} × 4xx, {} × 550; versions refused: {}",
        codes.len(),
        count(250),
        codes.iter().filter(|&&c| (400..500).contains(&c)).count(),
        count(550),
        reloads(&server, "removal_refused")
    );
    assert_eq!(count(550), 0, "LMTP bounced a user: {codes:?}");
    assert!(can_log_in(&server, BOB));
    assert!(can_log_in(&server, DAVE));
    assert_eq!(lmtp.send(CAROL), 250);
}

#[test]
fn a_fifo_in_place_of_the_users_file_does_not_stop_reloads() {
    let server = start(&[ALICE, BOB]);
    let path = users_file(&server);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let status = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(status.success());

    eventually("the FIFO is refused", &server, || {
        reloads(&server, "failure") == 1
    });
    assert!(
        server.log().contains("is a FIFO, not a regular file"),
        "{}",
        server.log()
    );
    let mut lmtp = LmtpClient::connect(&server);
    assert_eq!(lmtp.send(ALICE), 250);
    assert!(can_log_in(&server, BOB));

    std::fs::remove_file(&path).unwrap();
    replace(&path, &adding(&text, DAVE));
    eventually("a valid file is taken again", &server, || {
        can_log_in(&server, DAVE)
    });
    assert_eq!(lmtp.send(DAVE), 250);
}

#[test]
fn an_approved_removal_is_taken() {
    let server = start(&[ALICE, BOB, CAROL]);
    let path = users_file(&server);
    let text = std::fs::read_to_string(&path).unwrap();
    // Two of three users removed by hand: more than the default share of one half.
    replace(&path, &keeping(&text, &[CAROL]));
    eventually("the removal is refused", &server, || {
        reloads(&server, "removal_refused") == 1
    });
    let mut lmtp = LmtpClient::connect(&server);
    assert_eq!(lmtp.rcpt(ALICE), 250);

    server
        .admin(&["user", "approve-removals"], "")
        .assert_success();
    eventually("the approved file is taken", &server, || {
        lmtp.rcpt(ALICE) == 550
    });
    assert_eq!(lmtp.rcpt(BOB), 550);
    assert_eq!(lmtp.send(CAROL), 250);
    assert!(!can_log_in(&server, ALICE));
}

#[test]
fn the_admin_command_removes_users_whatever_the_share() {
    let server = start(&[ALICE, BOB, CAROL]);
    // Two removals that the server may well see in one reload: two thirds of the users.
    for login in [ALICE, BOB] {
        server.admin(&["user", "del", login], "").assert_success();
    }
    let mut lmtp = LmtpClient::connect(&server);
    eventually("both removals are taken", &server, || {
        lmtp.rcpt(ALICE) == 550 && lmtp.rcpt(BOB) == 550
    });
    assert_eq!(lmtp.send(CAROL), 250);
    // The last user too.
    server.admin(&["user", "del", CAROL], "").assert_success();
    eventually("the last removal is taken", &server, || {
        !can_log_in(&server, CAROL)
    });
    assert_eq!(reloads(&server, "removal_refused"), 0);
    // No user at all is more likely an accident than a service for nobody: deferred.
    assert_eq!(lmtp.rcpt(CAROL), 450);
}

/// `cloudpop check-config` with `users.max_removed_fraction = value`.
fn check_removal_limit(value: &str) -> support::Output {
    let dir = tempfile::tempdir().unwrap();
    let env = std::collections::HashMap::from([
        (
            "CLOUDPOP_DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        ),
        (
            "CLOUDPOP_USERS__MAX_REMOVED_FRACTION".to_owned(),
            value.to_owned(),
        ),
    ]);
    support::run_cli(&env, Some(dir.path()), &["check-config"], "")
}

#[test]
fn the_removal_limit_is_a_share_between_0_and_1() {
    for good in ["0", "0.25", "1"] {
        let output = check_removal_limit(good);
        assert!(output.status.success(), "{good}: {}", output.stderr);
        assert!(
            output.stdout.contains("max_removed_fraction"),
            "{}",
            output.stdout
        );
    }
    for bad in ["1.5", "-0.1", "half"] {
        let output = check_removal_limit(bad);
        assert!(!output.status.success(), "{bad} accepted");
        assert!(
            output.stderr.contains("max_removed_fraction"),
            "{bad}: {}",
            output.stderr
        );
    }
}

#[test]
fn a_start_on_an_emptied_users_file_defers_every_recipient() {
    let mut server = Server::builder()
        .option("USERS__CREATE_DEMO_USER", "true")
        .user(ALICE, PASSWORD)
        .start();
    let path = users_file(&server);
    rewrite_in_place(&path, "");
    server.restart();
    // Not a first start: no demo user, whose file would make every other user unknown.
    assert!(
        !server.stdout.join("\n").contains("demo@example.com"),
        "{:?}",
        server.stdout
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    let mut lmtp = LmtpClient::connect(&server);
    assert_eq!(lmtp.rcpt(ALICE), 450);
    assert!(!can_log_in(&server, ALICE));
}
