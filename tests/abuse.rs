//! Abuse protection across pods: two `pop3` processes share their counters in Redis
//! (`limits.backend = "redis"`), so a cap or a penalty earned on one pod holds on the other.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::cloud::Cloud;
use support::{Server, ServerBuilder};

const USER: &str = "gina@acme.example";
const PASS: &str = "gina pass";

/// Two pods whose limits live in the deployment's Redis, with extra POP3 options.
fn cloud(options: &'static [(&'static str, &'static str)]) -> Cloud {
    let cloud = Cloud::start_with(|builder: ServerBuilder| {
        let mut builder = builder.option("LIMITS__BACKEND", "redis");
        for (key, value) in options {
            builder = builder.option(key, value);
        }
        builder
    });
    cloud.tenant("acme", "acme.example");
    cloud.user(USER, PASS);
    cloud
}

/// Connects and returns the first line the server sends.
fn first_line(server: &Server) -> String {
    let stream = TcpStream::connect(server.pop3).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

#[test]
fn the_connection_cap_per_address_holds_across_pods() {
    let cloud = cloud(&[("POP3__MAX_CONNECTIONS_PER_IP", "3")]);
    let first = cloud.pop_a.pop3();
    let _second = cloud.pop_a.pop3();
    let _third = cloud.pop_b.pop3();
    for pod in [&cloud.pop_a, &cloud.pop_b] {
        let refused = first_line(pod);
        assert!(
            refused.starts_with("-ERR [SYS/TEMP] too many connections"),
            "{refused}"
        );
    }
    drop(first);
    // The slot frees once the server sees the connection close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let greeting = first_line(&cloud.pop_b);
        if greeting.starts_with("+OK") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed: {greeting}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_session_cap_per_user_holds_across_pods() {
    let cloud = cloud(&[("POP3__MAX_SESSIONS_PER_USER", "1")]);
    let mut on_a = cloud.pop_a.pop3();
    on_a.login_ok(USER, PASS);
    let mut on_b = cloud.pop_b.pop3();
    assert_eq!(
        on_b.login(USER, PASS),
        "-ERR [IN-USE] too many sessions for this user"
    );
    assert!(on_a.quit().starts_with("+OK"));
    let mut again = cloud.pop_b.pop3();
    again.login_ok(USER, PASS);
}

#[test]
fn failed_logins_wait_longer_and_longer_across_pods() {
    let cloud = cloud(&[
        ("POP3__AUTH_FAILURE_DELAY", "150ms"),
        ("POP3__AUTH_FAILURE_DELAY_MAX", "5s"),
    ]);
    let mut waits = Vec::new();
    for attempt in 0..4 {
        // Alternate pods, one connection per attempt: the count is shared in Redis.
        let pod = if attempt % 2 == 0 {
            &cloud.pop_a
        } else {
            &cloud.pop_b
        };
        let mut pop = pod.pop3();
        assert!(pop.cmd(&format!("USER {USER}")).starts_with("+OK"));
        let started = Instant::now();
        let reply = pop.cmd("PASS wrong");
        waits.push(started.elapsed());
        assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");
    }
    eprintln!("waits after failures 1..4: {waits:?}");
    // 150 ms, 300 ms, 600 ms, 1200 ms: each at least its doubled base.
    for (i, wait) in waits.iter().enumerate() {
        let floor = Duration::from_millis(150 << i);
        assert!(
            *wait >= floor,
            "failure {} waited {wait:?}, less than {floor:?}",
            i + 1
        );
    }
    // Growth, with room for a loaded machine: the fourth wait is at least 8 times the base.
    assert!(waits[3] > waits[0], "{waits:?}");
    let mut pop = cloud.pop_a.pop3();
    pop.login_ok(USER, PASS);
}

#[test]
fn login_delay_is_advertised_and_enforced_across_pods() {
    let cloud = cloud(&[]);
    cloud.admin(&["tenant", "set", "acme", "--login-delay", "1m"], "");
    let mut pop = cloud.pop_a.pop3();
    pop.login_ok(USER, PASS);
    let (_, capa) = pop.multi("CAPA");
    let capa = String::from_utf8(capa).unwrap();
    assert!(capa.lines().any(|l| l == "LOGIN-DELAY 60"), "{capa}");
    assert!(pop.quit().starts_with("+OK"));
    let mut pop = cloud.pop_b.pop3();
    let reply = pop.login(USER, PASS);
    assert!(reply.starts_with("-ERR [LOGIN-DELAY]"), "{reply}");
}
