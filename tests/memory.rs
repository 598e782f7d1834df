//! RETR streams: retrieving a 50 MB message grows the server's memory by a small, bounded
//! amount, not by the message size (measured with the kernel's peak-RSS counter).

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
