//! Real dependencies for end-to-end tests: a `redis-server` and an `s3s-fs` S3 server, each
//! on its own free loopback port, stoppable and restartable on the same port and data.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bucket the S3 server starts with, and the credentials it accepts.
pub const BUCKET: &str = "cloudpop-e2e";
pub const ACCESS_KEY: &str = "e2e-access";
pub const SECRET_KEY: &str = "e2e-secret-key";

const S3S_INSTALL: &str =
    "cargo install s3s-fs --version 0.14.1 --features binary --locked (tests/run.sh does this)";

/// A free loopback port (there is a small window before the server binds it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until_accepting(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before accepting connections on {port}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what} did not accept connections on port {port}");
}

/// One external server process that can be stopped and started again.
pub struct Process {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Process {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server abruptly (SIGKILL), as a crash or a network partition would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP), as a stalled host would be: the kernel still accepts
    /// connections and buffers requests, but nothing is answered until [`Process::thaw`].
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT); it then serves what was buffered.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}: {status}");
    }

    /// Starts it again on the same port with the same data.
    pub fn start(&mut self) {
        self.stop();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        wait_until_accepting(self.port, self.name, &mut child);
        self.child = Some(child);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `redis-server` of our own (never the system one on 6379).
pub fn redis() -> Process {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([dir.path().display().to_string()])
    .collect();
    let mut process = Process {
        name: "redis-server",
        program: "redis-server".into(),
        args,
        port,
        child: None,
        _dir: dir,
    };
    process.start();
    process
}

/// A `moto_server` S3 server (in memory, signatures not checked) with an empty bucket
/// [`BUCKET`]. Unlike `s3s-fs`, it finishes a request whose client hung up, so a PUT it
/// buffered while frozen is stored when it resumes.
pub fn moto() -> Process {
    let port = free_port();
    let mut process = Process {
        name: "moto_server",
        program: "moto_server".into(),
        args: vec![
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ],
        port,
        child: None,
        _dir: tempfile::tempdir().unwrap(),
    };
    process.start();
    let created = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            &format!("http://127.0.0.1:{port}/{BUCKET}"),
        ])
        .stdout(Stdio::null())
        .status()
        .expect("run curl");
    assert!(created.success(), "CreateBucket on moto: {created}");
    process
}

/// An `s3s-fs` S3 server (SigV4 checked) with an empty bucket [`BUCKET`].
pub fn s3() -> Process {
    let program = std::env::var_os("S3S_FS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| "s3s-fs".into());
    let found = Command::new(&program)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "s3s-fs is not installed; install it with: {S3S_INSTALL}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(BUCKET)).unwrap();
    let port = free_port();
    let args = vec![
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--access-key".into(),
        ACCESS_KEY.into(),
        "--secret-key".into(),
        SECRET_KEY.into(),
        dir.path().display().to_string(),
    ];
    let mut process = Process {
        name: "s3s-fs",
        program,
        args,
        port,
        child: None,
        _dir: dir,
    };
    process.start();
    process
}
