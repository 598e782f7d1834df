//! Real `redis-server` processes for tests: a single node or a three-node Cluster, each on
//! free loopback ports with its own temporary directory, killed when dropped.
//!
//! One file for every crate whose tests need Redis (the maildrop lock, the abuse limits):
//! they include it with `#[path = "../../redis/tests/support/mod.rs"] mod redis_support;`.
//!
//! Readiness is polled (PING, `CLUSTER INFO`), never slept for. The system Redis on 6379 is
//! never touched: every port here comes from the kernel.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to answer PING, or a Cluster to report `cluster_state:ok`.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// Pause between readiness polls.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// A loopback port nobody listens on right now (bind to port 0, read it, let it go).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind to a free loopback port");
    listener.local_addr().expect("local address").port()
}

/// One `redis-server` on a fixed port; `stop` and `start` simulate an outage on that port.
pub(crate) struct RedisServer {
    port: u16,
    /// Cluster bus port when the server is a Cluster node.
    cluster_bus_port: Option<u16>,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// A stand-alone server on a free port, running and answering PING.
    pub(crate) fn start_single() -> Self {
        // A port found free may be taken before redis-server binds it (another test's server,
        // say); then a fresh port is tried.
        let mut failures = Vec::new();
        for _ in 0..3 {
            let mut server = Self::stopped(free_port());
            match server.try_start() {
                Ok(()) => return server,
                Err(why) => failures.push(why),
            }
        }
        panic!("redis-server did not start:\n{}", failures.join("\n"));
    }

    /// A stand-alone server that will use `port`; not started yet.
    pub(crate) fn stopped(port: u16) -> Self {
        Self {
            port,
            cluster_bus_port: None,
            dir: tempfile::tempdir().expect("temp dir for redis-server"),
            child: None,
        }
    }

    /// A Cluster node that will use `port` (and a free bus port); not started yet.
    fn stopped_cluster_node(port: u16) -> Self {
        let mut node = Self::stopped(port);
        node.cluster_bus_port = Some(free_port());
        node
    }

    /// The port clients connect to.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers PING.
    pub(crate) fn start(&mut self) {
        if let Err(why) = self.try_start() {
            panic!("{why}");
        }
    }

    fn try_start(&mut self) -> Result<(), String> {
        assert!(
            self.child.is_none(),
            "redis-server on {} already runs",
            self.port
        );
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(bus_port) = self.cluster_bus_port {
            command
                .args(["--cluster-enabled", "yes", "--cluster-port"])
                .arg(bus_port.to_string())
                .arg("--cluster-config-file")
                .arg(format!("nodes-{port}.conf"));
        }
        let child = command
            .spawn()
            .expect("start redis-server (is it on PATH?)");
        let pid = child.id();
        self.child = Some(child);
        // Checking the pid, not just PING, tells our server from another one on the port.
        let started = self.wait_until("answering PING", |conn| server_pid(conn) == Some(pid));
        if started.is_err() {
            self.stop();
        }
        started
    }

    /// Kills the server, as a crash would; its data is gone (no persistence).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine; the wait reaps it either way.
            let _ = child.kill();
            child.wait().expect("reap redis-server");
        }
    }

    /// A plain (non-cluster) connection to this server, to look at the keys a test wrote.
    pub(crate) fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("redis URL")
            .get_connection_with_timeout(READY_WITHIN)
            .unwrap_or_else(|e| panic!("connect to redis on {}: {e}", self.port))
    }

    /// Polls `ready` on a fresh connection until it holds; fails with the server log if the
    /// server exits or does not get there in time.
    fn wait_until(
        &mut self,
        what: &str,
        ready: impl Fn(&mut redis::Connection) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        let client = redis::Client::open(self.url()).expect("redis URL");
        loop {
            let done = client
                .get_connection_with_timeout(POLL_EVERY * 10)
                .is_ok_and(|mut conn| ready(&mut conn));
            if done {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "redis-server on {} exited ({status}) before {what}:\n{}",
                    self.port,
                    self.log()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "redis-server on {}: not {what} within {READY_WITHIN:?}:\n{}",
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.log")
    }

    fn log(&self) -> String {
        read_or_note(&self.log_path())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three master nodes joined into a Redis Cluster with all 16384 slots, no replicas.
pub(crate) struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Three nodes on free ports, not started yet, so a client can be built against a
    /// Cluster that is still down.
    pub(crate) fn stopped() -> Self {
        Self {
            nodes: (0..3)
                .map(|_| RedisServer::stopped_cluster_node(free_port()))
                .collect(),
        }
    }

    /// Seed URLs of all nodes.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, to look at each one's keys directly.
    pub(crate) fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Starts the nodes, joins them with `redis-cli --cluster create`, and waits until every
    /// node reports `cluster_state:ok`.
    pub(crate) fn start(&mut self) {
        for node in &mut self.nodes {
            node.start();
        }
        let addresses: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli (is it on PATH?)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for node in &mut self.nodes {
            let joined = node.wait_until("in cluster_state:ok", |conn| {
                redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query::<String>(conn)
                    .is_ok_and(|info| info.lines().any(|line| line == "cluster_state:ok"))
            });
            if let Err(why) = joined {
                panic!("{why}");
            }
        }
    }
}

/// The process id of the server behind `conn`, from `INFO server`.
fn server_pid(conn: &mut redis::Connection) -> Option<u32> {
    let info: String = redis::cmd("INFO").arg("server").query(conn).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

fn read_or_note(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log at {}: {e})", path.display()))
}
