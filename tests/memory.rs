//! Memory stays bounded, measured with the kernel's peak-RSS counter: retrieving a 50 MB
//! message grows the server's memory by a small amount, not by the message size (RETR
//! streams), and many large LMTP deliveries at once stay within `lmtp.max_in_flight_bytes`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::io::Read;

use support::Server;

const USER: &str = "big@example.com";
const PASS: &str = "big secret";
const MESSAGE_SIZE: usize = 50 * 1024 * 1024;

/// Peak resident set since the last reset, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Resets the peak counter (Linux: writing 5 to clear_refs).
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

fn big_message() -> Vec<u8> {
    let mut message = b"From: a@example.net\r\nSubject: big\r\n\r\n".to_vec();
    let line = b".a line that starts with a dot, so every line is stuffed on the way out\r\n";
    while message.len() + line.len() <= MESSAGE_SIZE {
        message.extend_from_slice(line);
    }
    message
}

#[test]
fn retrieving_50_mb_grows_memory_by_a_bounded_amount() {
    let mut server = Server::builder()
        .user(USER, PASS)
        .option("LMTP__MAX_MESSAGE_SIZE", "100000000")
        .start();
    let message = big_message();
    server.deliver_ok(USER, &message);
    // A fresh process, so that delivery's buffers don't hide or inflate the measurement.
    server.restart();
    let mut pop = server.pop3();
    pop.login_ok(USER, PASS);
    let status = pop.cmd("LIST 1");
    let size: usize = status.split(' ').nth(2).unwrap().parse().unwrap();
    assert!(size > MESSAGE_SIZE - 1000, "{status}");

    let pid = server.pid();
    let before = server.rss_kib();
    if !reset_peak(pid) {
        eprintln!("cannot reset the peak RSS counter; measuring against the process's whole peak");
    }
    assert!(pop.cmd("RETR 1").starts_with("+OK"));
    // Read the raw stream in large blocks and find the terminator ourselves: fast and exact.
    let mut received = 0usize;
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let reader = pop.reader();
    loop {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed mid-message");
        received += n;
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 5 {
            tail.drain(..tail.len() - 5);
        }
        if tail.ends_with(b"\r\n.\r\n") {
            break;
        }
    }
    let peak = peak_rss_kib(pid);
    let growth = peak.saturating_sub(before);
    eprintln!(
        "RSS before RETR {before} KiB, peak during RETR {peak} KiB, growth {growth} KiB, wire octets {received}"
    );
    // Each line that starts with '.' gains a stuffing dot, then the terminator; nothing else.
    let dot_lines = message
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"."))
        .count();
    assert_eq!(received, size + dot_lines + b".\r\n".len());
    assert!(
        growth < 4 * 1024,
        "server memory grew by {growth} KiB while sending a {size} octet message"
    );
    assert!(pop.quit().starts_with("+OK"));
}

const LMTP_USER: &str = "inbox@example.com";
/// The LMTP memory budget of the server below, and its largest message.
const BUDGET: u64 = 16 * 1024 * 1024;
const LMTP_MAX_MESSAGE: u64 = 8_000_000;
const SENDERS: usize = 12;
/// Sent with bare LF line endings, mostly empty lines: stored as CRLF, about 1.7 times as
/// large (6.7 MB).
const SENT_SIZE: usize = 4_000_000;
/// What the process may hold besides the budget: read buffers, allocator slack, threads.
const MARGIN_KIB: u64 = 16 * 1024;

/// Message `n`: a subject naming it, then numbered lines each followed by empty lines, all
/// ending in a bare LF.
fn lf_message(n: usize) -> Vec<u8> {
    let mut message = format!("Subject: sender {n}\n\n").into_bytes();
    let mut i = 0;
    while message.len() < SENT_SIZE {
        message.extend_from_slice(format!("sender {n} line {i:07}\n").as_bytes());
        message.extend_from_slice(&[b'\n'; 40]);
        i += 1;
    }
    message
}

/// Reads one LMTP reply; returns its last line.
fn lmtp_reply(reader: &mut std::io::BufReader<std::net::TcpStream>) -> String {
    use std::io::BufRead;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.ends_with("\r\n"), "reply {line:?}");
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.trim_end().to_owned();
        }
    }
}

/// Waits until the server process has read everything sent on `stream`: nothing is left
/// in the client's send queue nor in the server's receive queue.
fn wait_until_read_by_server(stream: &std::net::TcpStream) {
    support::wait_for_queues(
        stream,
        support::WAIT * 3,
        "the server did not read the message",
        |q| q.client_unsent == 0 && q.server_unread == 0,
    );
}

/// Sends message `n` over its own LMTP connection, all but its end; once the server has
/// read every sender's message that far, sends the end and returns the reply.
fn send_held(lmtp: std::net::SocketAddr, n: usize, all_sent: &std::sync::Barrier) -> String {
    use std::io::Write;
    let stream = std::net::TcpStream::connect(lmtp).unwrap();
    stream.set_read_timeout(Some(support::WAIT * 3)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = std::io::BufReader::new(stream);
    assert!(lmtp_reply(&mut reader).starts_with("220"));
    for (command, code) in [
        ("LHLO sender.example".to_owned(), "250"),
        ("MAIL FROM:<big@example.net>".to_owned(), "250"),
        (format!("RCPT TO:<{LMTP_USER}>"), "250"),
        ("DATA".to_owned(), "354"),
    ] {
        writer
            .write_all(format!("{command}\r\n").as_bytes())
            .unwrap();
        let reply = lmtp_reply(&mut reader);
        assert!(reply.starts_with(code), "{command}: {reply}");
    }
    // No line starts with a dot, so the message needs no stuffing.
    writer.write_all(&lf_message(n)).unwrap();
    wait_until_read_by_server(&writer);
    all_sent.wait();
    writer.write_all(b"\r\n.\r\n").unwrap();
    lmtp_reply(&mut reader)
}

#[test]
fn lmtp_memory_stays_within_the_budget_when_many_large_messages_arrive_at_once() {
    let server = Server::builder()
        .user(LMTP_USER, PASS)
        .option("LMTP__MAX_MESSAGE_SIZE", &LMTP_MAX_MESSAGE.to_string())
        .option("LMTP__MAX_IN_FLIGHT_BYTES", &BUDGET.to_string())
        .start();
    let pid = server.pid();
    let before = server.rss_kib();
    if !reset_peak(pid) {
        eprintln!("cannot reset the peak RSS counter; measuring against the process's whole peak");
    }
    let all_sent = std::sync::Barrier::new(SENDERS);
    let replies: Vec<String> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..SENDERS)
            .map(|n| {
                let all_sent = &all_sent;
                scope.spawn(move || send_held(server.lmtp, n, all_sent))
            })
            .collect();
        senders.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let peak = peak_rss_kib(pid);
    let growth = peak.saturating_sub(before);
    let budget_kib = BUDGET / 1024;
    let accepted: Vec<usize> = (0..SENDERS)
        .filter(|&n| replies[n].starts_with("250 2.0.0"))
        .collect();
    eprintln!(
        "{SENDERS} LMTP senders of {SENT_SIZE} octets (1.7 times that as stored): {} accepted, \
         {} refused; RSS before {before} KiB, peak {peak} KiB, growth {growth} KiB against a \
         budget of {budget_kib} KiB (+ {MARGIN_KIB} KiB margin)",
        accepted.len(),
        SENDERS - accepted.len()
    );
    for reply in &replies {
        assert!(
            reply.starts_with("250 2.0.0") || reply.starts_with("452 4.3.1"),
            "{reply}"
        );
    }
    assert!(
        !accepted.is_empty() && accepted.len() < SENDERS,
        "{replies:?}"
    );
    assert!(
        growth <= budget_kib + MARGIN_KIB,
        "memory grew by {growth} KiB, over the budget of {budget_kib} KiB + {MARGIN_KIB} KiB"
    );

    // What was accepted is stored intact, as CRLF; what was refused is not stored at all.
    let mut pop = server.pop3();
    pop.login_ok(LMTP_USER, PASS);
    let stat = pop.cmd("STAT");
    assert!(
        stat.starts_with(&format!("+OK {} ", accepted.len())),
        "{stat}"
    );
    let mut retrieved = Vec::new();
    for i in 1..=accepted.len() {
        let stored = support::without_trace_headers(&pop.retr(i as u32));
        let subject = String::from_utf8_lossy(&stored[..40]).into_owned();
        let n: usize = subject
            .strip_prefix("Subject: sender ")
            .and_then(|rest| rest.split("\r\n").next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("stored message starts {subject:?}"));
        let mut expected = String::from_utf8(lf_message(n))
            .unwrap()
            .replace('\n', "\r\n");
        expected.push_str("\r\n");
        assert!(stored == expected.as_bytes(), "message {n} differs");
        retrieved.push(n);
    }
    retrieved.sort_unstable();
    assert_eq!(retrieved, accepted);
    assert!(pop.quit().starts_with("+OK"));
}
