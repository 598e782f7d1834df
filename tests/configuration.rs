//! Configuration and CLI against the real binary: values that make no sense are refused
//! with the option named, secrets are never printed, relative paths in a file are relative
//! to the file, admin output survives a reader that goes away, remote admin matches the
//! local command; and the filesystem store's files: private modes, and no leftovers of
//! interrupted deliveries.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;
#[path = "tls_clients/wire.rs"]
mod wire;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use support::{Output, Server, admin_remote, binary, message, run_cli};

/// `cloudpop check-config` with `env` (and `args` before the role).
fn check_config(env: &[(&str, &str)], args: &[&str]) -> Output {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut full = args.to_vec();
    full.push("check-config");
    run_cli(&env, None, &full, "")
}

fn assert_refused(out: &Output, needles: &[&str]) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit status; stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "{needle:?} not in: {}",
            out.stderr
        );
    }
}

#[test]
fn a_certificate_without_its_key_is_an_error_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("cert.pem");
    std::fs::write(&pem, "not read").unwrap();
    let pem = pem.display().to_string();
    let out = check_config(&[("CLOUDPOP_TLS__CERT", &pem)], &[]);
    assert_refused(&out, &["tls.cert", "tls.key"]);
    let out = check_config(&[("CLOUDPOP_TLS__KEY", &pem)], &[]);
    assert_refused(&out, &["tls.cert", "tls.key"]);
}

#[test]
fn nonsense_values_are_refused_naming_the_option() {
    let cases = [
        ("CLOUDPOP_POP3__LOGIN_TIMEOUT", "0s", "pop3.login_timeout"),
        (
            "CLOUDPOP_POP3__MAX_CONNECTIONS_PER_IP",
            "0",
            "pop3.max_connections_per_ip",
        ),
        (
            "CLOUDPOP_POP3__MAX_SESSIONS_PER_USER",
            "0",
            "pop3.max_sessions_per_user",
        ),
        (
            "CLOUDPOP_POP3__MAX_SASL_LINE_LENGTH",
            "0",
            "pop3.max_sasl_line_length",
        ),
        ("CLOUDPOP_LMTP__IDLE_TIMEOUT", "0s", "lmtp.idle_timeout"),
        (
            "CLOUDPOP_USERS__RELOAD_INTERVAL",
            "0s",
            "users.reload_interval",
        ),
        ("CLOUDPOP_TLS__RELOAD_INTERVAL", "0s", "tls.reload_interval"),
        (
            "CLOUDPOP_STORE__S3__OPERATION_TIMEOUT",
            "0s",
            "store.s3.operation_timeout",
        ),
        (
            "CLOUDPOP_LIMITS__REDIS__COMMAND_TIMEOUT",
            "0s",
            "limits.redis.command_timeout",
        ),
        ("CLOUDPOP_LOG__LEVEL", "nonsense", "log.level"),
        (
            "CLOUDPOP_LOG__LEVEL",
            "info,cloudpop_pop3=loud",
            "log.level",
        ),
        (
            "CLOUDPOP_LMTP__LISTEN",
            "127.0.0.1:1110",
            "pop3.listen and lmtp.listen",
        ),
    ];
    for (name, value, option) in cases {
        let out = check_config(&[(name, value)], &[]);
        assert_refused(&out, &[option]);
    }
    // Sensible values of the same options still pass.
    let out = check_config(
        &[
            ("CLOUDPOP_LOG__LEVEL", "warn,cloudpop_pop3=debug"),
            ("CLOUDPOP_POP3__LOGIN_TIMEOUT", "30s"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
}

// Every listener is bound before the process says it is ready; one that cannot be bound
// stops the start, naming it.
#[test]
fn a_listener_that_cannot_bind_stops_the_start_before_ready() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = HashMap::new();
    for (k, v) in [
        ("CLOUDPOP_POP3__LISTEN", "127.0.0.1:0"),
        ("CLOUDPOP_POP3__LISTEN_TLS", "127.0.0.1:0"),
        ("CLOUDPOP_ADMIN__LISTEN", "127.0.0.1:0"),
        ("CLOUDPOP_LMTP__LISTEN", taken_addr.as_str()),
        ("CLOUDPOP_USERS__CREATE_DEMO_USER", "false"),
    ] {
        env.insert(k.to_owned(), v.to_owned());
    }
    env.insert(
        "CLOUDPOP_DATA_DIR".to_owned(),
        data.path().display().to_string(),
    );
    let out = run_cli(&env, None, &["all"], "");
    assert!(!out.status.success(), "started with LMTP's port taken");
    assert!(
        out.stderr.contains("LMTP") && out.stderr.contains(&taken_addr),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("cloudpop ready"), "{}", out.stderr);
    assert!(
        !out.stdout.contains("admin HTTP listening"),
        "{}",
        out.stdout
    );
}

#[test]
fn check_config_and_its_errors_never_print_a_secret() {
    const S3_SECRET: &str = "s3-secret-Zq81x";
    const REDIS_PASSWORD: &str = "redis-pass-Qm27";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cloudpop.toml");
    std::fs::write(
        &file,
        format!(
            "[store]\nbackend = \"s3\"\n[store.s3]\nbucket = \"mail\"\n\
             secret_access_key = \"{S3_SECRET}\"\n\
             [lock]\nbackend = \"redis\"\n[lock.redis]\n\
             urls = [\"redis://cloudpop:{REDIS_PASSWORD}@10.1.2.3:6379\"]\n\
             [limits.redis]\nurls = [\"rediss://:{REDIS_PASSWORD}@10.1.2.4:6380\"]\n"
        ),
    )
    .unwrap();
    let file_arg = file.display().to_string();
    let out = check_config(&[], &["--config", &file_arg]);
    assert!(out.status.success(), "{}", out.stderr);
    for shown in [&out.stdout, &out.stderr] {
        assert!(!shown.contains(S3_SECRET), "S3 secret printed:\n{shown}");
        assert!(
            !shown.contains(REDIS_PASSWORD),
            "Redis password printed:\n{shown}"
        );
    }
    assert!(
        out.stdout.contains("secret_access_key = \"<redacted>\""),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("redis://cloudpop:<redacted>@10.1.2.3:6379"),
        "{}",
        out.stdout
    );
    // The same secret from the environment.
    let out = check_config(&[("CLOUDPOP_STORE__S3__SECRET_ACCESS_KEY", S3_SECRET)], &[]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(!out.stdout.contains(S3_SECRET), "{}", out.stdout);

    // A syntax error on the secret's line: where it is, but not the line itself.
    std::fs::write(
        &file,
        format!("[store.s3]\nbucket = \"mail\"\nsecret_access_key = \"{S3_SECRET}\n"),
    )
    .unwrap();
    let out = check_config(&[], &["--config", &file_arg]);
    assert_refused(&out, &["line 3", "secret_access_key"]);
    assert!(!out.stderr.contains(S3_SECRET), "{}", out.stderr);
    assert!(!out.stdout.contains(S3_SECRET), "{}", out.stdout);
}

// `cloudpop admin … | head -1`: the reader goes away before the command prints; the
// command still does its work and ends without a panic.
#[test]
fn admin_output_to_a_closed_pipe_ends_quietly() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary())
        .args(["admin", "user", "add", "piped@example.com"])
        .env("CLOUDPOP_DATA_DIR", data.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before the command has anything to print: it waits for the
    // password on stdin first.
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"a password\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    // The user was added all the same.
    let env = HashMap::from([(
        "CLOUDPOP_DATA_DIR".to_owned(),
        data.path().display().to_string(),
    )]);
    let list = run_cli(&env, None, &["admin", "user", "list"], "");
    assert!(list.stdout.contains("piped@example.com"), "{}", list.stdout);
}

// Like the local command, `admin --remote user add` puts a domain no tenant owns into
// tenant `default`, creating it first.
#[test]
fn remote_user_add_creates_tenant_default_like_the_local_command() {
    let auth = Server::builder().role("auth").start();
    let out = admin_remote(
        auth.grpc,
        None,
        &["user", "add", "ann@first.example"],
        "pw one",
    );
    out.assert_success();
    let out = admin_remote(
        auth.grpc,
        None,
        &["user", "add", "bob@second.example"],
        "pw two",
    );
    out.assert_success();
    let tenants = admin_remote(auth.grpc, None, &["tenant", "list"], "");
    tenants.assert_success();
    let default = tenants
        .stdout
        .lines()
        .find(|l| l.starts_with("default "))
        .unwrap_or_else(|| panic!("no tenant default:\n{}", tenants.stdout));
    assert!(
        default.contains("first.example") && default.contains("second.example"),
        "{default}"
    );
    let users = admin_remote(auth.grpc, None, &["user", "list"], "");
    assert!(
        users.stdout.contains("ann@first.example"),
        "{}",
        users.stdout
    );
    assert!(
        users.stdout.contains("bob@second.example"),
        "{}",
        users.stdout
    );
}

// Paths in a configuration file are relative to the file's folder, whatever the working
// directory of the process (here: the server's own temporary folder, and the test's for the
// admin command).
#[test]
fn relative_paths_in_a_config_file_are_relative_to_its_folder() {
    let etc = tempfile::tempdir().unwrap();
    std::fs::create_dir(etc.path().join("certs")).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(etc.path().join("certs/pop.pem"), cert.pem()).unwrap();
    std::fs::write(etc.path().join("certs/pop.key"), key.serialize_pem()).unwrap();
    let file = etc.path().join("cloudpop.toml");
    std::fs::write(
        &file,
        "[users]\nfile = \"users.toml\"\n[tls]\ncert = \"certs/pop.pem\"\nkey = \"certs/pop.key\"\n",
    )
    .unwrap();
    let server = Server::builder()
        .option("CONFIG", &file.display().to_string())
        .user("rel@example.com", "relative pw")
        .start();
    assert!(
        etc.path().join("users.toml").is_file(),
        "the admin command wrote the users file beside the config file"
    );
    let mut pop = server.pop3();
    assert!(
        pop.login("rel@example.com", "relative pw")
            .starts_with("+OK")
    );
    pop.quit();
    let config = wire::client_config(&[cert.der().clone()]);
    let pop3s = wire::pop3s(server.pop3s, &config, "localhost");
    assert_eq!(
        wire::peer_cert(&pop3s),
        *cert.der(),
        "the configured certificate"
    );
}

// `CLOUDPOP_DATADIR` (a typo of `CLOUDPOP_DATA_DIR`) sets nothing: say so. Kubernetes'
// service-link variables are not worth a word.
#[test]
fn a_variable_that_sets_no_option_is_warned_about() {
    let out = check_config(
        &[
            ("CLOUDPOP_DATADIR", "/srv/mail"),
            ("CLOUDPOP_POP3_SERVICE_HOST", "10.0.0.2"),
            ("CLOUDPOP_POP3_PORT_1110_TCP_ADDR", "10.0.0.2"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("warning") && out.stderr.contains("CLOUDPOP_DATADIR"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("SERVICE_HOST"), "{}", out.stderr);
    assert!(!out.stderr.contains("_TCP_ADDR"), "{}", out.stderr);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The one maildrop folder under `mail/<tenant>/`.
fn maildrop_dir(server: &Server) -> std::path::PathBuf {
    let tenant = server.mail_dir().join("default");
    let mut drops: Vec<_> = std::fs::read_dir(&tenant)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(drops.len(), 1, "{drops:?}");
    drops.pop().unwrap()
}

// No other local user can read mail: messages 0600, folders 0700.
#[test]
fn delivered_mail_is_readable_by_the_service_only() {
    const LOGIN: &str = "private@example.com";
    let server = Server::builder().user(LOGIN, "pw").start();
    server.deliver_ok(LOGIN, &message("private", "for my eyes only"));
    let drop = maildrop_dir(&server);
    let messages: Vec<_> = std::fs::read_dir(&drop)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(mode(&messages[0]), 0o600, "{}", messages[0].display());
    let folders = [
        server.mail_dir(),
        server.mail_dir().join("default"),
        drop.clone(),
        drop.join(".tmp"),
    ];
    for folder in folders {
        assert_eq!(mode(&folder), 0o700, "{}", folder.display());
    }
}

// A delivery killed between writing its temporary file and publishing it leaves the file
// behind; the next start removes it (only files that are ours and old), and it is never
// listed.
#[test]
fn temp_files_of_interrupted_deliveries_are_removed_at_start() {
    const LOGIN: &str = "tmp@example.com";
    let mut server = Server::builder().user(LOGIN, "pw").start();
    server.deliver_ok(LOGIN, &message("kept", "delivered"));
    let tmp = maildrop_dir(&server).join(".tmp");
    // Named like a message id, as the store names its temp files; two hours old.
    let stale = tmp.join("01jzzzzzzzzzzzzzzzzzzzzzzz");
    let fresh = tmp.join("01jzzzzzzzzzzzzzzzzzzzzzzy");
    let stranger = tmp.join("notes.txt");
    for path in [&stale, &fresh, &stranger] {
        std::fs::write(path, vec![b'x'; 40 * 1024]).unwrap();
    }
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    for path in [&stale, &stranger] {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    server.restart();
    assert!(!stale.exists(), "the stale temp file survived the restart");
    assert!(
        fresh.exists(),
        "a recent temp file may be a delivery in progress"
    );
    assert!(stranger.exists(), "a file that is not ours is left alone");
    let mut pop = server.pop3();
    assert!(pop.login(LOGIN, "pw").starts_with("+OK"));
    let stat = pop.cmd("STAT");
    assert!(stat.starts_with("+OK 1 "), "{stat}");
    pop.quit();
}
