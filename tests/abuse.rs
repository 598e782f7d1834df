//! Abuse protection across pods: two `pop3` processes share their counters in Redis
//! (`limits.backend = "redis"`), so a cap or a penalty earned on one pod holds on the other.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
fn attempts_at_one_login_wait_longer_and_longer_across_pods_right_password_too() {
    let cloud = cloud(&[
        ("POP3__AUTH_FAILURE_DELAY", "1s"),
        ("POP3__AUTH_FAILURE_DELAY_MAX", "8s"),
        ("POP3__AUTH_FREE_ATTEMPTS_PER_LOGIN", "1"),
    ]);
    // One connection per attempt, alternating pods: the count is shared in Redis. After the
    // free attempt, each turn comes 1 s, 2 s, 4 s after the previous one, and an attempt
    // waits for its turn *before* its password is checked.
    let first_sent = Instant::now();
    let (mut answered, mut waits) = (Vec::new(), Vec::new());
    for (attempt, password) in ["wrong 1", "wrong 2", "wrong 3", PASS].iter().enumerate() {
        let pod = [&cloud.pop_a, &cloud.pop_b][attempt % 2];
        let mut pop = pod.pop3();
        assert!(pop.cmd(&format!("USER {USER}")).starts_with("+OK"));
        let sent = Instant::now();
        let reply = pop.cmd(&format!("PASS {password}"));
        waits.push(sent.elapsed());
        answered.push(first_sent.elapsed());
        let expected = if *password == PASS {
            "+OK"
        } else {
            "-ERR [AUTH]"
        };
        assert!(reply.starts_with(expected), "{password}: {reply}");
    }
    eprintln!("attempts 1..4 answered after {answered:?}, each waited {waits:?}");
    // Floors only (a loaded machine is slower, never faster): the turns are 1, 3 and 7 s
    // after the first.
    for (i, floor) in [(1, 1), (2, 3), (3, 7)] {
        assert!(
            answered[i] >= Duration::from_secs(floor),
            "attempt {} answered after {:?}, before its turn at {floor} s",
            i + 1,
            answered[i]
        );
    }
    // The right password waited for its turn like a wrong one (4 s after the third turn,
    // less the time the third check and this connection took).
    assert!(
        waits[3] >= Duration::from_secs(2),
        "the right password was answered after {:?}",
        waits[3]
    );
    // It forgot the login's count: the next login goes through at once.
    let mut pop = cloud.pop_b.pop3();
    let started = Instant::now();
    pop.login_ok(USER, PASS);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_throttled_login_answers_right_and_wrong_passwords_alike() {
    // After the free attempt, turns are 5 s apart but attempts wait at most 1 s: the next
    // attempts are refused without being checked.
    let cloud = cloud(&[
        ("POP3__AUTH_FAILURE_DELAY", "5s"),
        ("POP3__AUTH_FREE_ATTEMPTS_PER_LOGIN", "1"),
        ("POP3__AUTH_THROTTLE_MAX_WAIT", "1s"),
    ]);
    let mut pop = cloud.pop_a.pop3();
    assert!(pop.login(USER, "wrong 1").starts_with("-ERR [AUTH]"));
    let mut answers = Vec::new();
    for (pod, password) in [(&cloud.pop_a, "wrong 2"), (&cloud.pop_b, PASS)] {
        let mut pop = pod.pop3();
        assert!(pop.cmd(&format!("USER {USER}")).starts_with("+OK"));
        answers.push(pop.cmd(&format!("PASS {password}")));
    }
    assert_eq!(
        answers[0], answers[1],
        "a throttled login must not tell a right password from a wrong one"
    );
    assert!(answers[0].starts_with("-ERR [SYS/TEMP]"), "{}", answers[0]);
    // Another login is not throttled.
    cloud.user("hank@acme.example", "hank pass");
    let mut pop = cloud.pop_b.pop3();
    pop.login_ok("hank@acme.example", "hank pass");
}

/// A self-signed certificate for 127.0.0.1, written to `dir`: (certificate, key) paths.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

/// Starts `tests/clients/guess_passwords.py` against `login` on both pods' POP3S ports:
/// `candidates` in order, 250 source addresses in 127.`net`.0.0/16, 16 connections at a
/// time, hanging up on any answer slower than `hang_up`.
fn start_attacker(
    cloud: &Cloud,
    cafile: &str,
    login: &str,
    candidates: &[String],
    net: u8,
    hang_up: &str,
    attack: Duration,
) -> Child {
    let mut attacker = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/guess_passwords.py"))
        .args(["--cafile", cafile, "--login", login, "--hang-up", hang_up])
        .args(["--port", &cloud.pop_a.pop3s.port().to_string()])
        .args(["--port", &cloud.pop_b.pop3s.port().to_string()])
        .args(["--sources", "250", "--source-net", &net.to_string()])
        .args(["--parallel", "16"])
        .args(["--duration", &attack.as_secs().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the attacker");
    let mut stdin = attacker.stdin.take().unwrap();
    stdin.write_all(candidates.join("\n").as_bytes()).unwrap();
    attacker
}

/// The attacker's summary, after it ends; prints it with the rate of answered guesses.
fn attack_summary(attacker: Child, what: &str) -> serde_json::Value {
    let output = attacker.wait_with_output().unwrap();
    assert!(output.status.success(), "{what} failed: {output:?}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let answered = summary["answered"].as_u64().unwrap();
    let elapsed = summary["elapsed"].as_f64().unwrap();
    eprintln!("{what}: {answered} answered guesses in {elapsed:.1} s; {summary}");
    assert!(
        summary["attempts"].as_u64().unwrap() > 50,
        "{what} ran: {summary}"
    );
    summary
}

#[test]
fn distributed_guessing_gets_a_few_answers_a_minute_while_others_log_in() {
    // The default throttle, on two pods over POP3S. Two attackers, each with 250 source
    // addresses and 16 connections at a time, at two accounts: one hangs up on any answer
    // slower than 0.6 s, the other waits for every answer.
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(certs.path());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let cloud = Cloud::start_with(|builder: ServerBuilder| {
        builder
            .option("LIMITS__BACKEND", "redis")
            .option("POP3__AUTH_FAILURE_DELAY", "1s")
            .option("TLS__CERT", &cert)
            .option("TLS__KEY", &key)
    });
    cloud.tenant("acme", "acme.example");
    let patient_victim = ("ida@acme.example", "ida pass");
    let other = ("hank@acme.example", "hank pass");
    for (login, password) in [(USER, PASS), patient_victim, other] {
        cloud.user(login, password);
    }

    // Each right password is the 40th candidate: at the 48 guesses a second an unthrottled
    // server allowed, it would be found within a second. There are more candidates than
    // an attack can try, so it lasts its whole time.
    let candidates = |password: &str| {
        let mut candidates: Vec<String> = (1..50_000).map(|i| format!("guess {i}")).collect();
        candidates.insert(39, password.to_owned());
        candidates
    };
    let attack = Duration::from_secs(60);
    let hasty = start_attacker(&cloud, &cert, USER, &candidates(PASS), 1, "0.6", attack);
    let patient = start_attacker(
        &cloud,
        &cert,
        patient_victim.0,
        &candidates(patient_victim.1),
        2,
        "30",
        attack,
    );

    // Meanwhile another account logs in normally, on both pods, from its own address.
    let started = Instant::now();
    let mut logins = Vec::new();
    while started.elapsed() < attack - Duration::from_secs(2) {
        std::thread::sleep(Duration::from_secs(2));
        let pod = [&cloud.pop_a, &cloud.pop_b][logins.len() % 2];
        let began = Instant::now();
        let mut pop = pod.pop3();
        let reply = pop.login(other.0, other.1);
        logins.push(began.elapsed());
        assert!(
            reply.starts_with("+OK"),
            "{} during the attack: {reply}",
            other.0
        );
        assert!(pop.quit().starts_with("+OK"));
    }

    let hasty = attack_summary(hasty, "attacker hanging up after 0.6 s");
    let patient = attack_summary(patient, "attacker waiting for answers");
    eprintln!("the other account's logins during the attacks took {logins:?}");
    for summary in [&hasty, &patient] {
        assert!(summary["found"].is_null(), "password found: {summary}");
        // The first minute allows 7 turns (2 at once, then at 1, 3, 7, 15, 31 s; the next
        // is at 61 s, and an attempt made before the attack ended may still get it). The
        // target is at most 10 answered guesses a minute.
        let times: Vec<f64> = summary["answer_times"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect();
        let in_first_minute = times.iter().filter(|t| **t < 60.0).count();
        assert!(
            in_first_minute <= 7,
            "{in_first_minute} answered guesses in the first minute: {summary}"
        );
        assert!(
            times.len() <= 10,
            "{} answered guesses: {summary}",
            times.len()
        );
    }
    assert!(logins.len() >= 15, "{logins:?}");
    let slowest = logins.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_secs(5),
        "another account's login took {slowest:?} during the attack"
    );
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
