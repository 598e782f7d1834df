//! Graceful drain on SIGTERM, against the real binary: readiness fails first, the listeners
//! stop accepting, idle sessions close, a RETR in progress finishes byte-exact, nothing is
//! deleted without QUIT, and the process exits before `shutdown.grace_period`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Server, WAIT, http_get, message, without_trace_headers};

const CAROL: (&str, &str) = ("carol@example.com", "carol's secret");
const DAVE: (&str, &str) = ("dave@example.com", "dave's secret");

/// A message of about `size` bytes whose lines exercise dot-stuffing.
fn large_message(size: usize) -> Vec<u8> {
    let mut body = String::with_capacity(size + 100);
    let mut n = 0u64;
    while body.len() < size {
        if n.is_multiple_of(97) {
            body.push_str(".a line that starts with a dot, and must be stuffed\r\n");
        } else if n.is_multiple_of(1013) {
            body.push_str(".\r\n");
        } else {
            body.push_str(&format!(
                "line {n:08} of a large message, long enough to look like base64 text.....\r\n"
            ));
        }
        n += 1;
    }
    message("large", &body)
}

fn sigterm(server: &Server) -> Instant {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(server.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    Instant::now()
}

/// Whether the process has exited (it is gone or a zombie waiting to be reaped).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Waits for the process to exit; returns when it did, measured from `since`.
fn exit_time(pid: u32, since: Instant, limit: Duration) -> Duration {
    while !exited(pid) {
        assert!(
            since.elapsed() < limit,
            "cloudpop still running {:?} after SIGTERM",
            since.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    since.elapsed()
}

fn refused(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused
    )
}

/// Polls `done` every 10 ms until it holds; fails after `limit`.
fn within(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

fn readyz(server: &Server) -> Option<u16> {
    http_get(server.admin, "/readyz")
        .ok()
        .map(|(status, _)| status)
}

/// Undoes dot-stuffing (RFC 1939 §3) of a body received up to, not including, its ".".
fn unstuff(stuffed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stuffed.len());
    for line in stuffed.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

fn uidl(pop: &mut support::Pop3) -> Vec<u8> {
    pop.multi("UIDL").1
}

#[test]
fn sigterm_during_a_large_retr_finishes_it_refuses_newcomers_and_deletes_nothing() {
    let grace = Duration::from_secs(20);
    let mut server = Server::builder()
        .user(CAROL.0, CAROL.1)
        .user(DAVE.0, DAVE.1)
        .option("LMTP__MAX_MESSAGE_SIZE", "40000000")
        .option("SHUTDOWN__GRACE_PERIOD", "20s")
        .start();
    let large = large_message(20 << 20);
    server.deliver_ok(CAROL.0, &large);
    server.deliver_ok(CAROL.0, &message("small", "marked for deletion\r\n"));
    server.deliver_ok(DAVE.0, &message("dave's", "still here\r\n"));
    let uids_before = {
        let mut pop = server.pop3();
        pop.login_ok(CAROL.0, CAROL.1);
        let uids = uidl(&mut pop);
        pop.quit();
        uids
    };

    // Carol marks message 2 and starts the large RETR; Dave sits idle, logged in.
    let mut carol = server.pop3();
    carol.login_ok(CAROL.0, CAROL.1);
    assert!(carol.cmd("DELE 2").starts_with("+OK"));
    let mut dave = server.pop3();
    dave.login_ok(DAVE.0, DAVE.1);
    let status = carol.cmd("RETR 1");
    assert!(status.starts_with("+OK"), "{status}");
    let reader = carol.reader();
    let mut received = Vec::with_capacity(large.len() + (1 << 20));
    let mut chunk = vec![0u8; 64 * 1024];
    while received.len() < 1 << 20 {
        let n = reader.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before SIGTERM");
        received.extend_from_slice(&chunk[..n]);
    }

    let pid = server.pid();
    let sent = sigterm(&server);

    // Readiness fails, the idle session is closed, and newcomers are refused, all while
    // the RETR is still going.
    within(Duration::from_secs(2), "/readyz fails", || {
        readyz(&server) == Some(503)
    });
    let goodbye = dave.line();
    assert!(goodbye.starts_with("-ERR [SYS/TEMP]"), "{goodbye}");
    assert!(dave.is_closed(), "the idle session is closed");
    within(Duration::from_secs(2), "POP3 refuses connections", || {
        refused(server.pop3)
    });
    within(Duration::from_secs(2), "LMTP refuses connections", || {
        refused(server.lmtp)
    });
    assert!(!exited(pid), "the process waits for the RETR");

    // The RETR goes on to its end, read slowly: at most 8 MB/s, about 2.5 s for 20 MB.
    let rate = 8.0 * 1024.0 * 1024.0;
    let resumed = Instant::now();
    let resumed_at = received.len();
    let terminator = b"\r\n.\r\n";
    // Only the bytes not searched yet (and a terminator's length before them).
    let mut searched = 0;
    let end = loop {
        if let Some(at) = received[searched..]
            .windows(terminator.len())
            .position(|w| w == terminator)
        {
            break searched + at + 2;
        }
        searched = received.len().saturating_sub(terminator.len() - 1);
        let n = reader.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "the RETR was cut short after {} bytes; log:\n{}",
            received.len(),
            server.log()
        );
        received.extend_from_slice(&chunk[..n]);
        let due = Duration::from_secs_f64((received.len() - resumed_at) as f64 / rate);
        if let Some(ahead) = due.checked_sub(resumed.elapsed()) {
            std::thread::sleep(ahead);
        }
    };
    let retr_done = sent.elapsed();
    let body = unstuff(&received[..end]);
    assert!(
        without_trace_headers(&body) == large,
        "the message arrived changed ({} bytes, sent {})",
        body.len(),
        large.len()
    );
    // Then the session is told, and closed, without UPDATE.
    let mut rest = received[end + 3..].to_vec();
    reader.read_to_end(&mut rest).unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.starts_with("-ERR [SYS/TEMP]") && rest.ends_with("\r\n"),
        "after the body: {rest:?}"
    );

    // The process exits once the last session ended, well before the grace period.
    let took = exit_time(pid, sent, grace);
    assert!(took < grace, "exited {took:?} after SIGTERM");
    assert!(
        took < retr_done + Duration::from_secs(2),
        "exited {took:?} after SIGTERM though the RETR ended at {retr_done:?}"
    );
    eprintln!("RETR finished {retr_done:?} and the process exited {took:?} after SIGTERM");

    // Nothing was deleted: the DELE'd message is still there, with the same UIDs.
    server.restart();
    let mut pop = server.pop3();
    pop.login_ok(CAROL.0, CAROL.1);
    assert!(pop.cmd("STAT").starts_with("+OK 2 "));
    assert_eq!(uidl(&mut pop), uids_before);
    assert!(pop.quit().starts_with("+OK"));
    let mut pop = server.pop3();
    pop.login_ok(DAVE.0, DAVE.1);
    assert!(pop.cmd("STAT").starts_with("+OK 1 "));
}

#[test]
fn a_stalled_client_does_not_hold_the_process_past_the_grace_period() {
    let grace = Duration::from_secs(3);
    let mut server = Server::builder()
        .user(CAROL.0, CAROL.1)
        .option("LMTP__MAX_MESSAGE_SIZE", "40000000")
        .option("SHUTDOWN__GRACE_PERIOD", "3s")
        .start();
    server.deliver_ok(CAROL.0, &large_message(20 << 20));
    server.deliver_ok(CAROL.0, &message("small", "marked for deletion\r\n"));

    // The client asks for the large message and then reads nothing at all.
    let mut carol = server.pop3();
    carol.login_ok(CAROL.0, CAROL.1);
    assert!(carol.cmd("DELE 2").starts_with("+OK"));
    assert!(carol.cmd("RETR 1").starts_with("+OK"));
    // Stalled: the client's receive buffer is full and the server has more queued.
    support::wait_for_queues(
        carol.stream(),
        support::WAIT,
        "the RETR never filled the connection",
        |q| q.client_unread > 0 && q.server_unsent > 0,
    );

    let pid = server.pid();
    let sent = sigterm(&server);
    let took = exit_time(pid, sent, grace + Duration::from_secs(5));
    assert!(
        took < grace,
        "exited {took:?} after SIGTERM, grace {grace:?}"
    );
    assert!(
        took > grace / 2,
        "exited {took:?} after SIGTERM: the stalled session got no time at all"
    );
    eprintln!("with a stalled RETR, the process exited {took:?} after SIGTERM");

    // The stalled session got no UPDATE.
    let mut rest = Vec::new();
    let _ = carol.reader().read_to_end(&mut rest);
    server.restart();
    let mut pop = server.pop3();
    pop.login_ok(CAROL.0, CAROL.1);
    assert!(pop.cmd("STAT").starts_with("+OK 2 "));
}

#[test]
fn readiness_fails_a_ready_delay_before_the_listeners_close() {
    let mut server = Server::builder()
        .user(CAROL.0, CAROL.1)
        .option("SHUTDOWN__READY_DELAY", "1500ms")
        .option("SHUTDOWN__GRACE_PERIOD", "10s")
        .start();
    let mut idle = server.pop3();
    idle.login_ok(CAROL.0, CAROL.1);

    let pid = server.pid();
    let sent = sigterm(&server);
    within(Duration::from_secs(1), "/readyz fails", || {
        readyz(&server) == Some(503)
    });
    // During the delay the listeners still accept: a load balancer that has not noticed
    // yet loses nothing.
    let newcomer = server.pop3();
    assert!(newcomer.greeting.starts_with("+OK"));
    assert!(
        sent.elapsed() < Duration::from_millis(1500),
        "too slow to check the delay"
    );
    // Then they close, and the sessions are told.
    within(WAIT, "POP3 refuses connections", || refused(server.pop3));
    let closed_after = sent.elapsed();
    assert!(
        closed_after >= Duration::from_millis(1400),
        "listeners closed {closed_after:?} after SIGTERM"
    );
    let goodbye = idle.line();
    assert!(goodbye.starts_with("-ERR [SYS/TEMP]"), "{goodbye}");
    let took = exit_time(pid, sent, Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(10),
        "exited {took:?} after SIGTERM"
    );
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}
