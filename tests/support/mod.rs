//! Test support: start the real `cloudpop` binary on free ports, talk POP3 and LMTP to it.
//!
//! Every server gets its own temporary data directory and users file; ports are chosen by
//! the kernel (port 0) and read back from the binary's announcement on stdout.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a panic is a test failure"
)]

pub mod backends;
pub mod cloud;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test, built by Cargo before the tests run.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cloudpop"))
}

/// How long to wait for anything that should be quick.
pub const WAIT: Duration = Duration::from_secs(20);

/// A program the tests drive; missing, the test fails and says how to get it.
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "`{tool}` is not installed; `bash tests/run.sh` (the README's test command) installs it"
    );
}

/// Runs `command` with `stdin` as its input to its end, and fails the test if it outlives
/// [`WAIT`].
pub fn run_bounded(command: &mut Command, stdin: &[u8]) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    // A program that exits without reading its input closes the pipe; that is its answer.
    let _ = input.write_all(stdin);
    drop(input);
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("wait");
            panic!(
                "{command:?} did not finish within {WAIT:?}:\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("wait")
}

/// The kernel's queues of one loopback TCP connection, in bytes, from both ends (Linux
/// `/proc/net/tcp`): what each end has not sent yet and what it has not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketQueues {
    pub client_unsent: u64,
    pub client_unread: u64,
    pub server_unsent: u64,
    pub server_unread: u64,
}

/// The queues of the IPv4 loopback connection `stream` (the client's end), once both of its
/// ends are listed.
pub fn socket_queues(stream: &TcpStream) -> Option<SocketQueues> {
    let (client, server) = (
        stream.local_addr().ok()?.port(),
        stream.peer_addr().ok()?.port(),
    );
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    // `tx_queue:rx_queue`, in hex.
    let queues = |field: &str| -> Option<(u64, u64)> {
        let (tx, rx) = field.split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    };
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let (mut client_end, mut server_end) = (None, None);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote)) = (port(fields[1]), port(fields[2])) else {
            continue;
        };
        if (local, remote) == (client, server) {
            client_end = queues(fields[4]);
        } else if (local, remote) == (server, client) {
            server_end = queues(fields[4]);
        }
    }
    let ((client_unsent, client_unread), (server_unsent, server_unread)) =
        (client_end?, server_end?);
    Some(SocketQueues {
        client_unsent,
        client_unread,
        server_unsent,
        server_unread,
    })
}

/// Waits until the queues of `stream` satisfy `ready`; fails the test after `within`.
pub fn wait_for_queues(
    stream: &TcpStream,
    within: Duration,
    what: &str,
    ready: impl Fn(&SocketQueues) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        let queues = socket_queues(stream);
        if queues.as_ref().is_some_and(&ready) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: queues {queues:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `cloudpop` process and where it listens.
pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub pop3: SocketAddr,
    /// POP3S (implicit TLS), when TLS is on.
    pub pop3s: SocketAddr,
    pub lmtp: SocketAddr,
    pub admin: SocketAddr,
    /// The auth service's gRPC address (role `auth`).
    pub grpc: SocketAddr,
    env: HashMap<String, String>,
    role: Option<&'static str>,
    pub stdout: Vec<String>,
    stderr_path: PathBuf,
}

/// Options for [`Server`].
pub struct ServerBuilder {
    env: HashMap<String, String>,
    role: Option<&'static str>,
    users: Vec<(String, String)>,
    cleartext: bool,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    pub fn new() -> Self {
        let mut env = HashMap::new();
        for (k, v) in [
            ("CLOUDPOP_POP3__LISTEN", "127.0.0.1:0"),
            ("CLOUDPOP_POP3__LISTEN_TLS", "127.0.0.1:0"),
            ("CLOUDPOP_LMTP__LISTEN", "127.0.0.1:0"),
            ("CLOUDPOP_ADMIN__LISTEN", "127.0.0.1:0"),
            ("CLOUDPOP_AUTH__LISTEN", "127.0.0.1:0"),
            ("CLOUDPOP_USERS__CREATE_DEMO_USER", "false"),
            ("CLOUDPOP_USERS__RELOAD_INTERVAL", "100ms"),
            ("CLOUDPOP_LOG__LEVEL", "info"),
            // Wrong passwords are part of many tests; the growing delay has its own test.
            ("CLOUDPOP_POP3__AUTH_FAILURE_DELAY", "0s"),
        ] {
            env.insert(k.to_owned(), v.to_owned());
        }
        Self {
            env,
            role: None,
            users: Vec::new(),
            cleartext: true,
        }
    }

    /// Sets an option through its environment variable, e.g. `("POP3__MAX_LINE_LENGTH", "300")`.
    pub fn option(mut self, key: &str, value: &str) -> Self {
        self.env.insert(format!("CLOUDPOP_{key}"), value.to_owned());
        self
    }

    pub fn role(mut self, role: &'static str) -> Self {
        self.role = Some(role);
        self
    }

    /// A user created with `cloudpop admin user add` before the server starts.
    /// Whether the `default` tenant accepts passwords without TLS (its policy
    /// `cleartext_allowed`). Most wire tests talk plain TCP and want that; TLS tests don't.
    pub fn cleartext(mut self, allowed: bool) -> Self {
        self.cleartext = allowed;
        self
    }

    pub fn user(mut self, login: &str, password: &str) -> Self {
        self.users.push((login.to_owned(), password.to_owned()));
        self
    }

    pub fn start(self) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env = self.env;
        env.insert("CLOUDPOP_DATA_DIR".into(), dir.path().display().to_string());
        for (login, password) in &self.users {
            admin(&env, &["user", "add", login], password).assert_success();
        }
        if self.cleartext && !self.users.is_empty() {
            admin(
                &env,
                &["tenant", "set", "default", "--cleartext-allowed", "true"],
                "",
            )
            .assert_success();
        }
        let stderr_path = dir.path().join("server.log");
        let mut server = Server {
            child: None,
            dir,
            pop3: unspecified(),
            pop3s: unspecified(),
            lmtp: unspecified(),
            admin: unspecified(),
            grpc: unspecified(),
            env,
            role: self.role,
            stdout: Vec::new(),
            stderr_path,
        };
        server.spawn();
        server
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

impl Server {
    /// Role `all` with test defaults.
    pub fn start() -> Server {
        ServerBuilder::new().start()
    }

    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }

    /// Starts the process (again), appending to the same log, and waits until it is ready.
    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .expect("log file");
        let mut command = Command::new(binary());
        command
            .current_dir(self.dir.path())
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(role) = self.role {
            command.arg(role);
        }
        let mut child = command.spawn().expect("spawn cloudpop");
        let stdout = child.stdout.take().expect("stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.child = Some(child);
        self.pop3 = unspecified();
        self.pop3s = unspecified();
        self.lmtp = unspecified();
        self.admin = unspecified();
        self.wait_for_listeners(&lines_rx);
        self.wait_ready();
    }

    /// Stops the server with SIGTERM and starts it again on the same data directory.
    pub fn restart(&mut self) {
        let status = self.terminate();
        assert!(status.success(), "exit status {status}");
        self.spawn();
    }

    fn child(&self) -> &Child {
        self.child.as_ref().expect("server process")
    }

    fn wait_for_listeners(&mut self, lines: &mpsc::Receiver<String>) {
        let deadline = Instant::now() + WAIT;
        let role = self.role.unwrap_or("all");
        let want_pop3 = matches!(role, "all" | "pop3");
        let want_lmtp = matches!(role, "all" | "lmtp");
        let want_grpc = role == "auth";
        loop {
            let done = (!want_pop3 || self.pop3.port() != 0)
                && (!want_lmtp || self.lmtp.port() != 0)
                && (!want_grpc || self.grpc.port() != 0)
                && self.admin.port() != 0;
            if done {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!(
                    "cloudpop did not announce its listeners; log:\n{}",
                    self.log()
                ),
            };
            if let Some(addr) = line.strip_prefix("cloudpop: POP3 listening on ") {
                self.pop3 = addr.parse().expect("pop3 addr");
            } else if let Some(addr) = line.strip_prefix("cloudpop: POP3S listening on ") {
                self.pop3s = addr.parse().expect("pop3s addr");
            } else if let Some(addr) = line.strip_prefix("cloudpop: LMTP listening on ") {
                self.lmtp = addr.parse().expect("lmtp addr");
            } else if let Some(addr) = line.strip_prefix("cloudpop: auth gRPC listening on ") {
                self.grpc = addr.parse().expect("grpc addr");
            } else if let Some(addr) = line.strip_prefix("cloudpop: admin HTTP listening on ") {
                self.admin = addr.parse().expect("admin addr");
            }
            self.stdout.push(line);
        }
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok((200, _)) = http_get(self.admin, "/readyz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("cloudpop never became ready; log:\n{}", self.log());
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The log once `needle` appears in it at least `count` times: a line is logged a
    /// moment after the client sees the connection end. Fails the test after [`WAIT`].
    pub fn log_with(&self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {count} of {needle:?} logged:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// Runs `cloudpop admin ARGS` against this server's users file, with `stdin` as input.
    pub fn admin(&self, args: &[&str], stdin: &str) -> Output {
        admin(&self.env, args, stdin)
    }

    /// Adds a user while the server runs and waits until it can log in.
    pub fn add_user(&self, login: &str, password: &str) {
        self.admin(&["user", "add", login], password)
            .assert_success();
        self.admin(
            &["tenant", "set", "default", "--cleartext-allowed", "true"],
            "",
        )
        .assert_success();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let mut c = self.pop3();
            if c.login(login, password).starts_with("+OK") {
                c.quit();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{login} could not log in after being added");
    }

    pub fn pop3(&self) -> Pop3 {
        Pop3::connect(self.pop3)
    }

    /// Delivers `message` over LMTP to `recipients`; returns the reply to DATA per recipient.
    pub fn deliver(&self, recipients: &[&str], message: &[u8]) -> Vec<String> {
        let mut lmtp = Lmtp::connect(self.lmtp);
        let replies = lmtp.send(recipients, message);
        lmtp.quit();
        replies
    }

    /// Delivers one message to one recipient and asserts it was accepted.
    pub fn deliver_ok(&self, recipient: &str, message: &[u8]) {
        let replies = self.deliver(&[recipient], message);
        assert!(
            replies.iter().all(|r| r.starts_with("250")),
            "delivery failed: {replies:?}"
        );
    }

    /// Starts a killed or stopped auth service again on the same gRPC address.
    pub fn restart_on(&mut self, grpc: SocketAddr) {
        self.kill();
        self.env
            .insert("CLOUDPOP_AUTH__LISTEN".into(), grpc.to_string());
        self.spawn();
    }

    /// Kills the process with SIGKILL, as a crashed node: nothing runs on its way out.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server process");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child.wait().expect("wait")
    }

    /// Resident memory of the server, in KiB (Linux /proc).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// The messages stored for `login` (file names under the maildrop), for white-box checks.
    pub fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The result of a `cloudpop` CLI run.
#[derive(Debug)]
pub struct Output {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "cloudpop failed: {}\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs the binary with `args`, environment `env` and `stdin`.
pub fn run_cli(
    env: &HashMap<String, String>,
    cwd: Option<&Path>,
    args: &[&str],
    stdin: &str,
) -> Output {
    let mut command = Command::new(binary());
    command
        .args(args)
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let mut child = command.spawn().expect("spawn");
    let written = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{stdin}\n").as_bytes());
    // A command that exits without reading its input (a refused configuration) closes the pipe.
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
    }
    let out = child.wait_with_output().expect("wait");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `cloudpop admin --remote ARGS` against the auth service at `grpc`.
/// Runs `cloudpop admin --remote ARGS` against the auth service at `grpc`, sending the admin
/// token in `token_file` when given.
pub fn admin_remote(
    grpc: SocketAddr,
    token_file: Option<&std::path::Path>,
    args: &[&str],
    stdin: &str,
) -> Output {
    let mut env = HashMap::from([(
        "CLOUDPOP_AUTH__ENDPOINT".to_owned(),
        format!("http://{grpc}"),
    )]);
    if let Some(path) = token_file {
        env.insert(
            "CLOUDPOP_AUTH__ADMIN_TOKEN_FILE".to_owned(),
            path.display().to_string(),
        );
    }
    let mut full = vec!["admin", "--remote"];
    full.extend_from_slice(args);
    run_cli(&env, None, &full, stdin)
}

fn admin(env: &HashMap<String, String>, args: &[&str], stdin: &str) -> Output {
    let mut full = vec!["admin"];
    full.extend_from_slice(args);
    run_cli(env, None, &full, stdin)
}

/// A minimal HTTP/1.0 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Ok((status, body))
}

/// A line-oriented POP3 client that shows exactly what the server sent.
pub struct Pop3 {
    reader: BufReader<TcpStream>,
    pub greeting: String,
}

impl Pop3 {
    pub fn connect(addr: SocketAddr) -> Pop3 {
        let stream = TcpStream::connect(addr).expect("connect pop3");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut pop = Pop3 {
            reader: BufReader::new(stream),
            greeting: String::new(),
        };
        pop.greeting = pop.line();
        assert!(
            pop.greeting.starts_with("+OK"),
            "greeting {:?}",
            pop.greeting
        );
        pop
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// The buffered reader, for tests that read large bodies in bulk.
    pub fn reader(&mut self) -> &mut BufReader<TcpStream> {
        &mut self.reader
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    /// Reads one line, CRLF included, asserting the CRLF.
    pub fn raw_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).expect("read");
        assert!(
            line.ends_with(b"\r\n"),
            "line without CRLF: {:?}",
            String::from_utf8_lossy(&line)
        );
        line
    }

    /// Reads one status line without its CRLF.
    pub fn line(&mut self) -> String {
        let line = self.raw_line();
        String::from_utf8_lossy(&line[..line.len() - 2]).into_owned()
    }

    /// Sends one command line and returns the status line.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// Reads a multi-line body up to the terminating dot; returns it un-stuffed, CRLFs kept.
    pub fn body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.raw_line();
            if line == b".\r\n" {
                return body;
            }
            let unstuffed = if line.starts_with(b".") {
                &line[1..]
            } else {
                &line[..]
            };
            body.extend_from_slice(unstuffed);
        }
    }

    /// Reads a multi-line body exactly as sent (stuffed), terminator included.
    pub fn raw_body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.raw_line();
            body.extend_from_slice(&line);
            if line == b".\r\n" {
                return body;
            }
        }
    }

    /// Sends a command expecting a multi-line answer; returns (status, unstuffed body).
    pub fn multi(&mut self, line: &str) -> (String, Vec<u8>) {
        let status = self.cmd(line);
        assert!(status.starts_with("+OK"), "{line}: {status}");
        let body = self.body();
        (status, body)
    }

    /// USER + PASS; returns the answer to PASS (or to USER if that failed).
    pub fn login(&mut self, user: &str, pass: &str) -> String {
        let reply = self.cmd(&format!("USER {user}"));
        if !reply.starts_with("+OK") {
            return reply;
        }
        self.cmd(&format!("PASS {pass}"))
    }

    pub fn login_ok(&mut self, user: &str, pass: &str) {
        let reply = self.login(user, pass);
        assert!(reply.starts_with("+OK"), "login of {user}: {reply}");
    }

    pub fn retr(&mut self, n: u32) -> Vec<u8> {
        self.multi(&format!("RETR {n}")).1
    }

    pub fn quit(&mut self) -> String {
        self.cmd("QUIT")
    }

    /// True if the server closed the connection (EOF) within the read timeout.
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.reader.read(&mut buf), Ok(0) | Err(_))
    }
}

/// A minimal LMTP client.
pub struct Lmtp {
    reader: BufReader<TcpStream>,
}

impl Lmtp {
    pub fn connect(addr: SocketAddr) -> Lmtp {
        let stream = TcpStream::connect(addr).expect("connect lmtp");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut lmtp = Lmtp {
            reader: BufReader::new(stream),
        };
        let greeting = lmtp.reply();
        assert!(greeting.starts_with("220"), "{greeting}");
        let lhlo = lmtp.cmd("LHLO test.example");
        assert!(lhlo.starts_with("250"), "{lhlo}");
        lmtp
    }

    /// Reads one (possibly multi-line) reply; returns its last line.
    pub fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("read");
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.trim_end().to_owned();
            }
        }
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.reader
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write");
        self.reply()
    }

    /// MAIL, RCPT per recipient, DATA with dot-stuffing; returns the per-recipient replies.
    pub fn send(&mut self, recipients: &[&str], message: &[u8]) -> Vec<String> {
        let mail = self.cmd("MAIL FROM:<sender@example.net>");
        assert!(mail.starts_with("250"), "{mail}");
        let mut accepted = 0;
        for rcpt in recipients {
            if self.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250") {
                accepted += 1;
            }
        }
        if accepted == 0 {
            self.cmd("RSET");
            return vec!["550 no recipient accepted".into()];
        }
        let data = self.cmd("DATA");
        assert!(data.starts_with("354"), "{data}");
        let mut wire = Vec::with_capacity(message.len() + 64);
        let mut at_line_start = true;
        for &b in message {
            if at_line_start && b == b'.' {
                wire.push(b'.');
            }
            wire.push(b);
            at_line_start = b == b'\n';
        }
        if !wire.ends_with(b"\r\n") {
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\n");
        self.reader.get_mut().write_all(&wire).expect("write data");
        (0..accepted).map(|_| self.reply()).collect()
    }

    pub fn quit(&mut self) {
        let _ = self.cmd("QUIT");
    }
}

/// A message whose body is `body`, with a unique subject.
pub fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: sender@example.net\r\nTo: someone@example.com\r\nSubject: {subject}\r\n\r\n{body}"
    )
    .into_bytes()
}

/// Strips the Return-Path and Received headers that delivery adds, for byte comparisons.
pub fn without_trace_headers(stored: &[u8]) -> Vec<u8> {
    let mut rest = stored;
    let mut in_trace = false;
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(rest.len(), |i| i + 2);
        let line = &rest[..end];
        let folded = line.starts_with(b" ") || line.starts_with(b"\t");
        in_trace = line.starts_with(b"Return-Path:")
            || line.starts_with(b"Received:")
            || (in_trace && folded);
        if !in_trace || line.is_empty() {
            return rest.to_vec();
        }
        rest = &rest[end..];
    }
}
