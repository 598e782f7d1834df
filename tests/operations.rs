//! The binary as an operator uses it: the first start and its demo user, `cloudpop admin
//! user …` against a running server, configuration errors, health endpoints, and SIGTERM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{Output, Server, WAIT, http_get, run_cli, without_trace_headers};

/// Logs in the way an operator's client would, and lists the maildrop: curl over POP3S,
/// checking the server's self-signed development certificate (role `all` creates one under
/// `<data_dir>/tls`; passwords need TLS unless a tenant allows cleartext). `Err` carries
/// curl's exit status and message (`exit 67` is a refused login).
fn login(server: &Server, user: &str, password: &str) -> Result<String, String> {
    let cert = server.dir.path().join("tls").join("dev-cert.pem");
    let output = Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--max-time", "30", "--cacert"])
        .arg(&cert)
        .arg("-u")
        .arg(format!("{user}:{password}"))
        .arg(format!("pop3s://127.0.0.1:{}/", server.pop3s.port()))
        .stdin(Stdio::null())
        .output()
        .expect("run curl; `bash tests/run.sh` installs it");
    match output.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
        code => Err(format!(
            "exit {}: {}",
            code.map_or("by signal".to_owned(), |c| c.to_string()),
            String::from_utf8_lossy(&output.stderr).trim_end()
        )),
    }
}

/// A refused login, as curl reports it (CURLE_LOGIN_DENIED).
fn denied(result: &Result<String, String>) -> bool {
    matches!(result, Err(e) if e.starts_with("exit 67:"))
}

/// Polls until `done` holds: a running server picks up users-file changes within
/// `users.reload_interval` (100 ms in tests).
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn first_start_prints_a_demo_user_once() {
    let shared = tempfile::tempdir().unwrap();
    let users = shared.path().join("users.toml");
    let store = shared.path().join("mail");
    // Both starts share the users file and the store, as two starts in one data directory do.
    let start = || {
        Server::builder()
            .option("USERS__CREATE_DEMO_USER", "true")
            .option("USERS__FILE", users.to_str().unwrap())
            .option("STORE__PATH", store.to_str().unwrap())
            .start()
    };

    let mut first = start();
    let stdout = first.stdout.join("\n");
    assert!(
        stdout.contains("demo@example.com"),
        "demo login shown:\n{stdout}"
    );
    let password = first
        .stdout
        .iter()
        .find_map(|line| line.trim().strip_prefix("password:"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no password line:\n{stdout}"))
        .to_owned();
    assert!(
        password.len() >= 16,
        "a strong random password: {password:?}"
    );
    let reply = login(&first, "demo@example.com", &password);
    assert!(
        reply.is_ok(),
        "demo login with the printed password: {reply:?}"
    );
    assert!(
        !first.log().contains(&password),
        "the password is never logged"
    );
    let url = format!(
        "pop://demo%40example.com;AUTH=*@127.0.0.1:{}",
        first.pop3.port()
    );
    let url_shown = stdout.contains(&url);
    assert!(first.terminate().success());

    let second = start();
    let stdout2 = second.stdout.join("\n");
    assert!(
        !stdout2.contains("password:") && !stdout2.contains(&password),
        "second start shows no password:\n{stdout2}"
    );
    let reply = login(&second, "demo@example.com", &password);
    assert!(reply.is_ok(), "the demo user survives a restart: {reply:?}");

    assert!(
        url_shown,
        "first start shows the POP URL {url} with the port it listens on:\n{stdout}"
    );
}

#[test]
fn admin_user_commands_change_a_running_server() {
    let server = Server::start();
    let alice = "alice@example.org";

    let added = server.admin(&["user", "add", alice], "first secret");
    added.assert_success();
    assert!(
        added.stdout.contains("pop://alice%40example.org;AUTH=*@"),
        "add prints a POP URL: {}",
        added.stdout
    );
    eventually("alice can log in without a restart", || {
        login(&server, alice, "first secret").is_ok()
    });
    let users_file = server.dir.path().join("users.toml");
    let mode = std::fs::metadata(&users_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the users file holds password hashes");

    let duplicate = server.admin(&["user", "add", alice], "other");
    assert!(
        !duplicate.status.success(),
        "adding a user twice fails: {duplicate:?}"
    );

    server
        .admin(&["user", "passwd", alice], "second secret")
        .assert_success();
    eventually("the new password works", || {
        login(&server, alice, "second secret").is_ok()
    });
    let old = login(&server, alice, "first secret");
    assert!(denied(&old), "the old password fails: {old:?}");

    let list = server.admin(&["user", "list"], "");
    list.assert_success();
    assert!(
        list.stdout.contains(alice),
        "list shows the user: {}",
        list.stdout
    );
    let file = std::fs::read_to_string(&users_file).unwrap();
    let hash = file
        .lines()
        .find_map(|l| l.strip_prefix("password = "))
        .expect("a password hash in the users file");
    for secret in [
        "second secret",
        "first secret",
        "$argon2",
        hash.trim_matches('"'),
    ] {
        assert!(
            !list.stdout.contains(secret) && !list.stderr.contains(secret),
            "list shows no secret ({secret}): {list:?}"
        );
    }

    server.admin(&["user", "del", alice], "").assert_success();
    eventually("a removed user cannot log in", || {
        denied(&login(&server, alice, "second secret"))
    });
    let list = server.admin(&["user", "list"], "");
    assert!(
        !list.stdout.contains(alice),
        "removed from the list: {}",
        list.stdout
    );
}

#[test]
fn added_user_receives_and_downloads_mail() {
    let server = Server::start();
    server.add_user("bob@example.net", "bob's password");
    let message = support::message("hello", "Hi Bob!\r\n");
    server.deliver_ok("bob@example.net", &message);
    let mut pop = server.pop3();
    pop.login_ok("bob@example.net", "bob's password");
    assert_eq!(without_trace_headers(&pop.retr(1)), message);
    assert!(pop.quit().starts_with("+OK"));
}

/// Runs the binary with only `vars` as configuration (no `cloudpop.toml` in its directory).
fn cloudpop(vars: &[(&str, &str)], args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    env.insert("CLOUDPOP_DATA_DIR".into(), dir.path().display().to_string());
    run_cli(&env, Some(dir.path()), args, "")
}

/// Why `output` is not a refusal naming `names`, if it isn't.
fn refusal_problem(output: &Output, names: &str, context: &str) -> Option<String> {
    if output.status.success() {
        return Some(format!("{context}: exited 0; it must exit non-zero"));
    }
    if !output.stderr.to_lowercase().contains(names) {
        return Some(format!(
            "{context}: the message must name `{names}`: {}",
            output.stderr.trim_end()
        ));
    }
    None
}

fn assert_no_problems(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} case(s) wrong:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn invalid_environment_values_are_refused_naming_the_option() {
    let cases = [
        ("CLOUDPOP_POP3__MAX_LINE_LENGTH", "100", "max_line_length"),
        (
            "CLOUDPOP_POP3__MAX_AUTH_FAILURES",
            "lots",
            "max_auth_failures",
        ),
        ("CLOUDPOP_POP3__LISTEN", "nowhere", "listen"),
        (
            "CLOUDPOP_POP3__IDLE_TIMEOUT_AUTHORIZATION",
            "soon",
            "idle_timeout_authorization",
        ),
        // RFC 1939 §3: the autologout timer in TRANSACTION is at least 10 minutes.
        (
            "CLOUDPOP_POP3__IDLE_TIMEOUT_TRANSACTION",
            "5m",
            "idle_timeout_transaction",
        ),
        ("CLOUDPOP_POP3__EXPIRE", "sometimes", "expire"),
        ("CLOUDPOP_LOG__FORMAT", "xml", "format"),
        ("CLOUDPOP_POP3__NO_SUCH_OPTION", "1", "no_such_option"),
        ("CLOUDPOP_NO_SUCH_SECTION__KEY", "1", "no_such_section"),
    ];
    let mut problems = Vec::new();
    for (name, value, option) in cases {
        let output = cloudpop(&[(name, value)], &["check-config"]);
        problems.extend(refusal_problem(
            &output,
            option,
            &format!("check-config with {name}={value}"),
        ));
    }
    assert_no_problems(&problems);
}

#[test]
fn invalid_config_file_values_are_refused_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[pop3]\nmax_line_length = 100\n", "max_line_length"),
        (
            "[pop3]\nmax_auth_failures = \"lots\"\n",
            "max_auth_failures",
        ),
        (
            "[pop3]\nidle_timeout_transaction = \"5m\"\n",
            "idle_timeout_transaction",
        ),
        (
            "[pop3]\nlisten_adress = \"127.0.0.1:1110\"\n",
            "listen_adress",
        ),
        ("[lmtp]\nmax_line_length = 100\n", "lmtp.max_line_length"),
        (
            "[lmtp]\nmax_message_size = 200000000\n",
            "lmtp.max_in_flight_bytes",
        ),
        ("[lmtp]\ndata_timeout = \"0s\"\n", "lmtp.data_timeout"),
        ("[shutdown]\ngrace_period = 30\n", "grace_period"),
    ];
    let mut problems = Vec::new();
    for (i, (text, option)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let output = cloudpop(&[], &["--config", path.to_str().unwrap(), "check-config"]);
        problems.extend(refusal_problem(
            &output,
            option,
            &format!("check-config with a file containing {text:?}"),
        ));
    }
    assert_no_problems(&problems);
}

/// The server itself (not only `check-config`) refuses to start with a bad value.
#[test]
fn server_does_not_start_with_an_invalid_option() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(support::binary())
        .current_dir(dir.path())
        .env("CLOUDPOP_DATA_DIR", dir.path())
        .env("CLOUDPOP_POP3__IDLE_TIMEOUT_TRANSACTION", "5m")
        .env("CLOUDPOP_POP3__LISTEN", "127.0.0.1:0")
        .env("CLOUDPOP_LMTP__LISTEN", "127.0.0.1:0")
        .env("CLOUDPOP_ADMIN__LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cloudpop started with pop3.idle_timeout_transaction = 5m");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "exit status {status}");
    assert!(stderr.contains("idle_timeout_transaction"), "{stderr}");
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cloudpop.toml");
    std::fs::write(
        &file,
        "[pop3]\nmax_line_length = 300\nidle_timeout_transaction = \"15m\"\n",
    )
    .unwrap();
    let output = cloudpop(
        &[
            ("CLOUDPOP_CONFIG", file.to_str().unwrap()),
            ("CLOUDPOP_POP3__MAX_LINE_LENGTH", "400"),
        ],
        &["check-config"],
    );
    assert!(output.status.success(), "{output:?}");
    assert!(
        output.stdout.contains("max_line_length = 400"),
        "the environment wins over the file:\n{}",
        output.stdout
    );
    assert!(
        output.stdout.contains("idle_timeout_transaction = \"15m\""),
        "the file wins over defaults:\n{}",
        output.stdout
    );
    assert!(
        output.stdout.contains("listen = \"127.0.0.1:2424\""),
        "defaults fill the rest:\n{}",
        output.stdout
    );
}

#[test]
fn health_endpoints_answer_200() {
    let server = Server::start();
    for path in ["/livez", "/readyz"] {
        let (status, body) = http_get(server.admin, path).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
    }
}

/// [`Server::terminate`] with a deadline, so that a server that ignores SIGTERM fails the
/// test instead of hanging it.
fn terminate_within(
    server: Server,
    limit: Duration,
) -> (std::process::ExitStatus, Duration, Server) {
    let pid = server.pid();
    let started = Instant::now();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut server = server;
        let status = server.terminate();
        let _ = tx.send((status, server));
    });
    match rx.recv_timeout(limit) {
        Ok((status, server)) => (status, started.elapsed(), server),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("cloudpop did not exit within {limit:?} of SIGTERM");
        }
    }
}

/// Reads whatever the server still sends (a last `-ERR` is allowed) up to end of stream.
fn closed_by_server(pop: &support::Pop3) -> bool {
    let mut rest = Vec::new();
    match std::io::Read::read_to_end(&mut pop.stream(), &mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

fn message_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            if e.path().is_dir() {
                message_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn sigterm_exits_promptly_and_an_unfinished_session_deletes_nothing() {
    let server = Server::builder()
        .user("carol@example.com", "carol's secret")
        .start();
    server.deliver_ok(
        "carol@example.com",
        &support::message("keep me", "still here\r\n"),
    );
    let mut pop = server.pop3();
    pop.login_ok("carol@example.com", "carol's secret");
    assert!(pop.cmd("DELE 1").starts_with("+OK"));

    // A logged-in, idle session must not hold the shutdown for the whole grace period (25 s).
    let (status, took, server) = terminate_within(server, Duration::from_secs(20));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(took < Duration::from_secs(10), "took {took:?} to exit");
    assert!(
        closed_by_server(&pop),
        "the session is closed by the shutdown"
    );
    // RFC 1939 §6: only QUIT enters UPDATE; the marked message is still stored.
    assert_eq!(
        message_files(&server.mail_dir()),
        1,
        "the DELE without QUIT deleted nothing"
    );
}
