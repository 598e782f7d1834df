//! A real S3-compatible server for tests: the `s3s-fs` binary (0.14.1), which checks SigV4
//! signatures and keeps objects as files under a temporary directory.
//!
//! Each [`S3sFs`] is one server process on its own free loopback port with its own data
//! directory and an empty bucket [`BUCKET`]; it is killed when dropped.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cloudpop_maildrop::S3Config;

/// The bucket every server starts with.
pub(crate) const BUCKET: &str = "cloudpop-test";
/// Credentials the server accepts.
pub(crate) const ACCESS_KEY: &str = "cloudpop-test-access";
pub(crate) const SECRET_KEY: &str = "cloudpop-test-secret-key";

const INSTALL: &str = "cargo install s3s-fs --version 0.14.1 --features binary --locked";

/// How long a server may take to accept connections (it is usually ready in ~20 ms).
const READY_WITHIN: Duration = Duration::from_secs(10);

/// The config of the test bucket at `endpoint`: the test credentials and short timeouts.
fn test_config(endpoint: String) -> S3Config {
    S3Config {
        endpoint: Some(endpoint),
        bucket: BUCKET.to_owned(),
        access_key_id: ACCESS_KEY.to_owned(),
        secret_access_key: SECRET_KEY.to_owned(),
        connect_timeout: Duration::from_millis(500),
        operation_timeout: Duration::from_secs(5),
        max_attempts: 3,
        ..S3Config::default()
    }
}

/// A running `s3s-fs` process.
pub(crate) struct S3sFs {
    child: Option<Child>,
    port: u16,
    // Holds the data; removed on drop after the process is gone.
    dir: tempfile::TempDir,
}

impl S3sFs {
    /// Starts a server on a free port with an empty bucket [`BUCKET`].
    pub(crate) fn start() -> S3sFs {
        let dir = tempfile::tempdir().expect("temp dir for s3s-fs");
        // s3s-fs keeps bucket B as the directory DIR/B, so this creates the bucket.
        std::fs::create_dir_all(dir.path().join("data").join(BUCKET)).expect("bucket dir");
        let mut server = S3sFs {
            child: None,
            port: 0,
            dir,
        };
        // Another process may take the port between our probe and the server's bind; a
        // fresh port then works.
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(child) => {
                    server.child = Some(child);
                    return server;
                }
                Err(log) => eprintln!("s3s-fs did not start on {}: {log}", server.port),
            }
        }
        panic!("s3s-fs did not start after 5 attempts; see the logs above");
    }

    /// Kills the server as a crash would (SIGKILL) and waits until it is gone.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            match self.spawn() {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                // The old socket may linger for a moment; the port is still ours to reuse.
                Err(log) if Instant::now() < deadline => {
                    eprintln!("s3s-fs restart on {} failed, retrying: {log}", self.port)
                }
                Err(log) => panic!("s3s-fs did not restart on port {}: {log}", self.port),
            }
        }
    }

    /// `http://127.0.0.1:{port}`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A config for this server's bucket with the right credentials and short timeouts.
    pub(crate) fn config(&self) -> S3Config {
        test_config(self.endpoint())
    }

    /// Where object `key` of [`BUCKET`] lives on disk.
    pub(crate) fn object_path(&self, key: &str) -> PathBuf {
        self.data_dir().join(BUCKET).join(key)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("s3s-fs-{}.log", self.port))
    }

    /// Starts the process and waits until it accepts connections; on failure returns the
    /// server's log.
    fn spawn(&self) -> Result<Child, String> {
        let log = std::fs::File::create(self.log_path()).expect("s3s-fs log file");
        let mut child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("s3s-fs log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run s3s-fs: {e}"));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status}: {}", self.log()));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "not accepting after {READY_WITHIN:?}: {}",
                    self.log()
                ));
            }
            // A poll interval, not a guess at the start-up time.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.log_path()) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// The `s3s-fs` binary: `$S3S_FS_BIN`, else on `PATH`, else in cargo's bin directory.
/// Missing is a test failure that says how to install it, never a silent skip.
fn binary() -> PathBuf {
    let missing = |place: &str| -> ! {
        panic!(
            "the s3s-fs binary (0.14.1) is needed by the S3 store tests but was not found \
             {place}; install it with:\n    {INSTALL}\n(or point S3S_FS_BIN at it)"
        )
    };
    if let Some(path) = std::env::var_os("S3S_FS_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            missing(&format!("at S3S_FS_BIN={}", path.display()));
        }
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin"));
    on_path
        .into_iter()
        .chain(cargo_bin)
        .map(|dir| dir.join("s3s-fs"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| missing("on PATH or in ~/.cargo/bin"))
}

/// A second real S3 server: `moto_server` (Python, in memory, signatures not checked), with
/// an empty bucket [`BUCKET`]; killed when dropped.
///
/// Unlike `s3s-fs`, it finishes a request whose client has hung up: a PUT it buffered while
/// frozen is stored when it resumes, as a server behind a proxy or a busy node does.
pub(crate) struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Starts `moto_server` on a free port and creates [`BUCKET`].
    pub(crate) fn start() -> Moto {
        let port = free_port();
        let mut child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run moto_server ({e}); install it with: pip install 'moto[server]'")
            });
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + READY_WITHIN * 3;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("moto_server exited with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server not accepting on {port}"
            );
            // A poll interval, not a guess at the start-up time.
            std::thread::sleep(Duration::from_millis(20));
        }
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
        Moto { child, port }
    }

    /// A config for this server's bucket with short timeouts.
    pub(crate) fn config(&self) -> S3Config {
        test_config(format!("http://127.0.0.1:{}", self.port))
    }

    /// Freezes the server (SIGSTOP), as a stalled node would be: the kernel still accepts
    /// connections and buffers requests, but nothing is answered until [`Moto::thaw`].
    pub(crate) fn freeze(&self) {
        signal(self.child.id(), "-STOP");
    }

    /// Lets a frozen server run again (SIGCONT); it then serves what was buffered.
    pub(crate) fn thaw(&self) {
        signal(self.child.id(), "-CONT");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}: {status}");
}
