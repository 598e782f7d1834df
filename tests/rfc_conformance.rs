//! Wire-level POP3 conformance of the real binary. Each test names the RFC section that
//! decides the behaviour it checks; where the RFCs leave a choice, the test says which
//! choice cloudpop made (and the README documents it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::{Pop3, Server, message, without_trace_headers};

const USER: &str = "alice@example.com";
const PASS: &str = "correct horse battery";

fn server() -> Server {
    Server::builder().user(USER, PASS).start()
}

fn logged_in(server: &Server) -> Pop3 {
    let mut pop = server.pop3();
    pop.login_ok(USER, PASS);
    pop
}

/// Writes a message straight into alice's maildrop, bypassing LMTP (for shapes LMTP would
/// normalise, such as a missing final CRLF). Returns its unique id.
fn store_raw(server: &Server, uid: &str, bytes: &[u8]) -> String {
    let list = server.admin(&["user", "list"], "");
    let id = list
        .stdout
        .lines()
        .find(|l| l.starts_with(USER))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("user id")
        .to_owned();
    let dir = server.mail_dir().join("default").join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::File::create(dir.join(uid))
        .unwrap()
        .write_all(bytes)
        .unwrap();
    uid.to_owned()
}

// RFC 1939 §4: the greeting is a positive response; §7: with APOP it carries a timestamp.
#[test]
fn greeting_and_capa_before_and_after_login() {
    // Cleartext mechanisms are advertised without TLS only when the operator says so.
    let server = Server::builder()
        .user(USER, PASS)
        .option("POP3__OFFER_CLEARTEXT_WITHOUT_TLS", "true")
        .start();
    let mut pop = server.pop3();
    assert!(pop.greeting.starts_with("+OK cloudpop ready"));
    // RFC 2449 §5: CAPA in AUTHORIZATION.
    let (_, before) = pop.multi("CAPA");
    let before = String::from_utf8(before).unwrap();
    for cap in [
        "TOP",
        "UIDL",
        "USER",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "IMPLEMENTATION cloudpop",
    ] {
        assert!(
            before.lines().any(|l| l == cap),
            "{cap} missing before login: {before}"
        );
    }
    // RFC 2449 §6.7, §6.8: per-user values carry USER before login.
    assert!(
        before.lines().any(|l| l == "LOGIN-DELAY 0 USER"),
        "{before}"
    );
    assert!(before.lines().any(|l| l == "EXPIRE NEVER"), "{before}");
    pop.login_ok(USER, PASS);
    let (_, after) = pop.multi("capa");
    let after = String::from_utf8(after).unwrap();
    // RFC 2449 §5: what was announced before login stays announced; values become exact.
    for cap in [
        "TOP",
        "UIDL",
        "USER",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "LOGIN-DELAY 0",
        "EXPIRE NEVER",
    ] {
        assert!(
            after.lines().any(|l| l == cap),
            "{cap} missing after login: {after}"
        );
    }
}

// RFC 1939 §5 STAT/LIST, §3: exact octet counts; LIST sizes equal the RETR byte counts.
#[test]
fn octet_counts_are_exact() {
    let server = server();
    let messages = [
        message("one", "hello\r\n"),
        message("two", &format!("{}\r\n", "x".repeat(5000))),
        message("three", ".\r\n..\r\n"),
    ];
    for m in &messages {
        server.deliver_ok(USER, m);
    }
    let mut pop = logged_in(&server);
    let (_, list) = pop.multi("LIST");
    let sizes: Vec<u64> = String::from_utf8(list)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(sizes.len(), 3);
    let mut total = 0;
    for (i, original) in messages.iter().enumerate() {
        let n = i as u32 + 1;
        let status = pop.cmd(&format!("RETR {n}"));
        assert_eq!(status, format!("+OK {} octets", sizes[i]));
        let body = pop.body();
        assert_eq!(body.len() as u64, sizes[i], "message {n}");
        assert!(
            without_trace_headers(&body) == *original,
            "message {n} differs from what was delivered"
        );
        assert_eq!(
            pop.cmd(&format!("LIST {n}")),
            format!("+OK {n} {}", sizes[i])
        );
        total += sizes[i];
    }
    assert_eq!(pop.cmd("STAT"), format!("+OK 3 {total}"));
}

// RFC 1939 §3: lines starting with '.' are stuffed; a lone '.' body line too.
#[test]
fn dot_stuffing_on_the_wire() {
    let server = server();
    let original = message("dots", ".leading\r\n.\r\n..\r\nmid.dle\r\n");
    server.deliver_ok(USER, &original);
    let mut pop = logged_in(&server);
    assert!(pop.cmd("RETR 1").starts_with("+OK"));
    let raw = pop.raw_body();
    let raw = String::from_utf8(raw).unwrap();
    // '.leading' → '..leading', a lone '.' → '..', '..' → '...', a '.' mid-line untouched.
    assert!(
        raw.ends_with("\r\n\r\n..leading\r\n..\r\n...\r\nmid.dle\r\n.\r\n"),
        "{raw:?}"
    );
}

// RFC 1939 §3: every line ends in CRLF, even when the stored message lacks a final one.
#[test]
fn stored_message_without_final_crlf() {
    let server = server();
    store_raw(
        &server,
        "00000000000000000000000001",
        b"Subject: raw\r\n\r\nno final newline",
    );
    let mut pop = logged_in(&server);
    assert_eq!(pop.cmd("LIST 1"), "+OK 1 32");
    assert_eq!(pop.cmd("RETR 1"), "+OK 32 octets");
    assert_eq!(
        pop.raw_body(),
        b"Subject: raw\r\n\r\nno final newline\r\n.\r\n"
    );
}

// RFC 1939 §7 TOP: header, blank line, then n lines; TOP n 0 is the header alone.
#[test]
fn top_sends_headers_and_lines() {
    let server = server();
    let original = message("top", "l1\r\n.l2\r\nl3\r\n");
    server.deliver_ok(USER, &original);
    let mut pop = logged_in(&server);
    let (_, zero) = pop.multi("TOP 1 0");
    assert!(
        zero.ends_with(b"Subject: top\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&zero)
    );
    let (_, two) = pop.multi("top 1 2");
    assert!(
        two.ends_with(b"Subject: top\r\n\r\nl1\r\n.l2\r\n"),
        "{:?}",
        String::from_utf8_lossy(&two)
    );
    let (_, all) = pop.multi("TOP 1 100");
    assert_eq!(without_trace_headers(&all), original);
    assert!(pop.cmd("TOP 2 0").starts_with("-ERR"));
    assert!(pop.cmd("TOP 1").starts_with("-ERR"));
}

// RFC 1939 §3: message numbers start at 1; anything else is an error, never message 1.
#[test]
fn bad_message_numbers() {
    let server = server();
    server.deliver_ok(USER, &message("one", "x\r\n"));
    let mut pop = logged_in(&server);
    for cmd in [
        "RETR 0",
        "RETR -1",
        "RETR 99999999999",
        "RETR 2",
        "RETR +1",
        "RETR 01",
        "RETR one",
        "LIST 0",
        "DELE 0",
        "UIDL 2",
        "TOP 0 1",
    ] {
        assert!(pop.cmd(cmd).starts_with("-ERR"), "{cmd}");
    }
    // The session stays usable.
    assert_eq!(pop.cmd("STAT").split(' ').nth(1), Some("1"));
}

// RFC 1939 §3: keywords are case-insensitive; arguments up to 40 characters.
#[test]
fn case_insensitive_keywords_and_40_character_arguments() {
    let login = format!("{}@example.com", "a".repeat(40 - 12));
    assert_eq!(login.len(), 40);
    let password = "p".repeat(40);
    let server = Server::builder().user(&login, &password).start();
    let mut pop = server.pop3();
    assert!(pop.cmd(&format!("uSeR {login}")).starts_with("+OK"));
    assert!(pop.cmd(&format!("pAsS {password}")).starts_with("+OK"));
    assert!(pop.cmd("sTaT").starts_with("+OK 0 0"));
    assert!(pop.cmd("NoOp").starts_with("+OK"));
}

// RFC 2449 §4: lines of 255 octets are accepted; longer than the limit is -ERR, then resync.
#[test]
fn line_length_limit() {
    let server = Server::builder()
        .user(USER, PASS)
        .option("POP3__MAX_LINE_LENGTH", "255")
        .start();
    let mut pop = server.pop3();
    let user_255 = format!("USER {}\r\n", "u".repeat(255 - 7));
    assert_eq!(user_255.len(), 255);
    pop.send(user_255.as_bytes());
    assert!(pop.line().starts_with("+OK"));
    pop.send(format!("USER {}\r\n", "u".repeat(5000)).as_bytes());
    assert_eq!(pop.line(), "-ERR line too long");
    // Resynchronised at the next line end.
    pop.login_ok(USER, PASS);
    assert!(pop.cmd("STAT").starts_with("+OK"));
}

// RFC 1939 §3: commands are printable ASCII; NUL and binary junk are errors, not crashes.
#[test]
fn nul_bytes_and_binary_junk() {
    let server = server();
    let mut pop = server.pop3();
    pop.send(b"US\0ER x\r\n");
    assert!(pop.line().starts_with("-ERR"));
    let junk: Vec<u8> = (0..=255u8)
        .filter(|b| *b != b'\n')
        .cycle()
        .take(200)
        .collect();
    pop.send(&junk);
    pop.send(b"\r\n");
    assert!(pop.line().starts_with("-ERR"));
    pop.send(b"\xff\xfe\xfd\r\n");
    assert!(pop.line().starts_with("-ERR"));
    pop.login_ok(USER, PASS);
    assert!(pop.cmd("NOOP").starts_with("+OK"));
}

// The decoder keeps state across reads: a command split over many TCP segments works.
#[test]
fn commands_split_across_segments() {
    let server = server();
    server.deliver_ok(USER, &message("split", "body\r\n"));
    let mut pop = server.pop3();
    pop.stream().set_nodelay(true).unwrap();
    let script = format!("USER {USER}\r\nPASS {PASS}\r\nSTAT\r\n");
    for byte in script.as_bytes() {
        pop.send(&[*byte]);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(pop.line().starts_with("+OK"));
    assert!(pop.line().starts_with("+OK"));
    assert!(pop.line().starts_with("+OK 1 "));
}

// RFC 2449 §6.6 PIPELINING: 500 pipelined RETRs are answered in order.
#[test]
fn five_hundred_pipelined_retrs() {
    let server = server();
    let messages: Vec<Vec<u8>> = (0..5)
        .map(|i| message(&format!("m{i}"), &format!("body {i}\r\n")))
        .collect();
    for m in &messages {
        server.deliver_ok(USER, m);
    }
    let mut pop = logged_in(&server);
    let mut script = String::new();
    for i in 0..500 {
        script.push_str(&format!("RETR {}\r\n", i % 5 + 1));
    }
    // Write from another thread so that neither side blocks on a full socket buffer.
    let mut writer = pop.stream().try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(script.as_bytes()).unwrap());
    for i in 0..500 {
        assert!(pop.line().starts_with("+OK"), "reply {i}");
        assert!(
            without_trace_headers(&pop.body()) == messages[i % 5],
            "reply {i} differs"
        );
    }
    sender.join().unwrap();
    assert!(pop.cmd("NOOP").starts_with("+OK"));
}

// RFC 1939 §5: DELE marks; a deleted message is gone from LIST/STAT/RETR; RSET unmarks.
#[test]
fn dele_rset_and_double_dele() {
    let server = server();
    server.deliver_ok(USER, &message("a", "1\r\n"));
    server.deliver_ok(USER, &message("b", "2\r\n"));
    let mut pop = logged_in(&server);
    assert!(pop.cmd("DELE 1").starts_with("+OK"));
    assert!(pop.cmd("DELE 1").starts_with("-ERR"), "double DELE");
    assert!(pop.cmd("RETR 1").starts_with("-ERR"));
    assert!(pop.cmd("LIST 1").starts_with("-ERR"));
    assert!(pop.cmd("STAT").starts_with("+OK 1 "));
    let (_, list) = pop.multi("LIST");
    assert!(
        String::from_utf8(list).unwrap().starts_with("2 "),
        "numbering stays fixed"
    );
    assert!(pop.cmd("RSET").starts_with("+OK maildrop has 2 messages"));
    assert!(pop.cmd("STAT").starts_with("+OK 2 "));
    assert!(pop.cmd("DELE 2").starts_with("+OK"));
    assert!(pop.quit().starts_with("+OK"));
    let mut pop = logged_in(&server);
    assert!(pop.cmd("STAT").starts_with("+OK 1 "));
    let (_, top) = pop.multi("TOP 1 0");
    assert!(String::from_utf8(top).unwrap().contains("Subject: a"));
}

// RFC 1939 §6: QUIT in AUTHORIZATION closes without UPDATE.
#[test]
fn quit_in_authorization() {
    let server = server();
    let mut pop = server.pop3();
    assert!(pop.quit().starts_with("+OK"));
    assert!(pop.is_closed());
}

// RFC 1939 §8 and RFC 2449 §8.1.1: a second session on a locked maildrop gets [IN-USE].
#[test]
fn second_login_gets_in_use() {
    let server = server();
    let mut first = logged_in(&server);
    let mut second = server.pop3();
    assert!(second.login(USER, PASS).starts_with("-ERR [IN-USE]"));
    assert!(first.quit().starts_with("+OK"));
    // Released on QUIT.
    let mut third = server.pop3();
    third.login_ok(USER, PASS);
}

// RFC 3206 §5: bad credentials are [AUTH]; USER does not reveal whether a user exists.
#[test]
fn wrong_password_and_unknown_user() {
    let server = server();
    let mut pop = server.pop3();
    assert!(pop.cmd("USER nobody@example.com").starts_with("+OK"));
    assert!(pop.cmd("PASS x").starts_with("-ERR [AUTH]"));
    assert!(pop.login(USER, "wrong").starts_with("-ERR [AUTH]"));
    pop.login_ok(USER, PASS);
}

// Limit: failed logins per connection (pop3.max_auth_failures) close the connection.
#[test]
fn too_many_failures_close_the_connection() {
    let server = Server::builder()
        .user(USER, PASS)
        .option("POP3__MAX_AUTH_FAILURES", "2")
        .start();
    let mut pop = server.pop3();
    assert!(pop.login(USER, "bad").starts_with("-ERR [AUTH]"));
    assert!(pop.login(USER, "bad").starts_with("-ERR [AUTH]"));
    assert!(pop.is_closed());
}

// RFC 1939 §7: PASS only right after USER (cloudpop is strict); commands in the wrong
// state are -ERR and the session goes on.
#[test]
fn sequencing_and_wrong_state() {
    let server = server();
    let mut pop = server.pop3();
    assert!(pop.cmd(&format!("PASS {PASS}")).starts_with("-ERR"));
    assert!(pop.cmd(&format!("USER {USER}")).starts_with("+OK"));
    assert!(pop.cmd("STAT").starts_with("-ERR"), "STAT before login");
    assert!(
        pop.cmd(&format!("PASS {PASS}")).starts_with("-ERR"),
        "PASS must directly follow USER"
    );
    assert!(
        pop.cmd("NOOP").starts_with("-ERR"),
        "NOOP is a TRANSACTION command (RFC 1939 §5)"
    );
    pop.login_ok(USER, PASS);
    assert!(pop.cmd(&format!("USER {USER}")).starts_with("-ERR"));
    assert!(
        pop.cmd("QUIT now").starts_with("-ERR"),
        "QUIT takes no argument"
    );
    assert!(pop.cmd("XYZZY").starts_with("-ERR"));
    assert!(pop.cmd("").starts_with("-ERR"));
    assert!(pop.cmd("STAT").starts_with("+OK"));
}

// RFC 1939 §7 APOP: digest of the greeting timestamp and the shared secret.
#[test]
fn apop_with_a_user_secret() {
    let server = server();
    server
        .admin(&["user", "apop", USER], "tanstaaf")
        .assert_success();
    // The users file is reloaded; wait until the greeting offers APOP.
    let deadline = Instant::now() + support::WAIT;
    let mut pop = loop {
        let pop = server.pop3();
        if pop.greeting.contains('<') || Instant::now() > deadline {
            break pop;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let start = pop.greeting.find('<').expect("APOP timestamp in greeting");
    let challenge = &pop.greeting[start..];
    let digest = md5_hex(format!("{challenge}tanstaaf").as_bytes());
    assert!(
        pop.cmd(&format!("APOP {USER} {}", "0".repeat(32)))
            .starts_with("-ERR [AUTH]")
    );
    assert!(pop.cmd(&format!("APOP {USER} {digest}")).starts_with("+OK"));
}

fn md5_hex(data: &[u8]) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.md5(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .expect("python3 md5");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

// RFC 1939 §7 UIDL: unique ids stay the same across sessions and restarts.
#[test]
fn uidl_is_stable_across_sessions_and_restarts() {
    let mut server = server();
    server.deliver_ok(USER, &message("a", "1\r\n"));
    server.deliver_ok(USER, &message("b", "2\r\n"));
    let mut pop = logged_in(&server);
    let (_, first) = pop.multi("UIDL");
    let first = String::from_utf8(first).unwrap();
    for line in first.lines() {
        let uid = line.split(' ').nth(1).unwrap();
        assert!(
            (1..=70).contains(&uid.len()) && uid.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "{uid}"
        );
    }
    assert_eq!(
        pop.cmd("UIDL 2"),
        format!("+OK {}", first.lines().nth(1).unwrap())
    );
    pop.quit();
    // Ids are time-ordered: later mail sorts after.
    let uids: Vec<&str> = first
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert!(uids[0] < uids[1]);
    let mut again = logged_in(&server);
    assert_eq!(String::from_utf8(again.multi("UIDL").1).unwrap(), first);
    again.quit();
    server.restart();
    let mut after_restart = logged_in(&server);
    assert_eq!(
        String::from_utf8(after_restart.multi("UIDL").1).unwrap(),
        first
    );
}

// RFC 1939 §4: the listing is a snapshot; mail delivered during a session is not shown.
#[test]
fn snapshot_at_login() {
    let server = server();
    server.deliver_ok(USER, &message("before", "1\r\n"));
    let mut pop = logged_in(&server);
    server.deliver_ok(USER, &message("during", "2\r\n"));
    assert!(pop.cmd("STAT").starts_with("+OK 1 "));
    assert!(pop.cmd("DELE 1").starts_with("+OK"));
    assert!(pop.quit().starts_with("+OK"));
    let mut pop = logged_in(&server);
    let (_, top) = pop.multi("TOP 1 0");
    assert!(
        String::from_utf8(top).unwrap().contains("Subject: during"),
        "new mail neither shown nor deleted"
    );
}

// RFC 1939 §3: an idle timeout ends the session without UPDATE. Before login the timeout
// is shorter (pop3.idle_timeout_authorization, a documented choice).
#[test]
fn idle_timeout_before_login() {
    let server = Server::builder()
        .option("POP3__IDLE_TIMEOUT_AUTHORIZATION", "1s")
        .start();
    let mut pop = server.pop3();
    let started = Instant::now();
    assert!(pop.line().starts_with("-ERR"));
    assert!(pop.is_closed());
    assert!(started.elapsed() < Duration::from_secs(10));
}

// Limit: consecutive invalid commands (pop3.max_bad_commands) close the connection.
#[test]
fn too_many_bad_commands_close() {
    let server = Server::builder()
        .option("POP3__MAX_BAD_COMMANDS", "3")
        .start();
    let mut pop = server.pop3();
    assert_eq!(pop.cmd("BAD1"), "-ERR unknown command");
    assert_eq!(pop.cmd("BAD2"), "-ERR unknown command");
    assert!(pop.cmd("BAD3").starts_with("-ERR too many"));
    assert!(pop.is_closed());
}
