//! The backing services of the cloud target, started the way the end-to-end tests start
//! them (tests/support/backends.rs): a `redis-server` of the bench's own, never the system
//! one, and an `s3s-fs` S3 server (SigV4 checked) with one empty bucket, each on a free
//! loopback port, with its data and log in the target's temporary directory.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

use super::{free_port, wait_until};

/// The bucket the S3 server starts with, and the credentials it accepts.
pub(crate) const BUCKET: &str = "cloudpop-bench";
pub(crate) const ACCESS_KEY: &str = "bench-access";
pub(crate) const SECRET_KEY: &str = "bench-secret-key";

/// A running backing server.
#[derive(Debug)]
pub(crate) struct Backing {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    pub(crate) port: u16,
}

/// `redis-server` on a free port: no snapshots, no append-only file, its directory under
/// `dir`.
pub(crate) async fn redis(bin: &Path, dir: &Path) -> anyhow::Result<Backing> {
    let data = dir.join("redis");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let port = free_port()?;
    let args = [
        "--port".to_owned(),
        port.to_string(),
        "--bind".to_owned(),
        "127.0.0.1".to_owned(),
        "--save".to_owned(),
        String::new(),
        "--appendonly".to_owned(),
        "no".to_owned(),
        "--dir".to_owned(),
        data.display().to_string(),
    ];
    start(
        "redis-server",
        bin,
        &args,
        port,
        &dir.join("redis.log"),
        "install it with `apt-get install redis-server`, or pass --redis-server-bin",
    )
    .await
}

/// `s3s-fs` on a free port with the bucket [`BUCKET`] (a directory of its root, which is
/// how s3s-fs stores a bucket) and SigV4 with [`ACCESS_KEY`] and [`SECRET_KEY`].
pub(crate) async fn s3(bin: &Path, dir: &Path) -> anyhow::Result<Backing> {
    let root = dir.join("s3");
    let bucket = root.join(BUCKET);
    std::fs::create_dir_all(&bucket).with_context(|| format!("creating {}", bucket.display()))?;
    let port = free_port()?;
    let args = [
        "--host".to_owned(),
        "127.0.0.1".to_owned(),
        "--port".to_owned(),
        port.to_string(),
        "--access-key".to_owned(),
        ACCESS_KEY.to_owned(),
        "--secret-key".to_owned(),
        SECRET_KEY.to_owned(),
        root.display().to_string(),
    ];
    start(
        "s3s-fs",
        bin,
        &args,
        port,
        &dir.join("s3s-fs.log"),
        "install it with `cargo install s3s-fs --version 0.14.1 --features binary --locked` \
         (tests/run.sh does this), or pass --s3s-fs-bin",
    )
    .await
}

/// `BIN --version`, first line, for the report.
pub(crate) async fn version(bin: &Path) -> String {
    match Command::new(bin).arg("--version").output().await {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned(),
        _ => format!("{} (version unknown)", bin.display()),
    }
}

/// Starts `bin ARGS` with its output in `log`, and waits until `port` accepts connections.
async fn start(
    name: &'static str,
    bin: &Path,
    args: &[String],
    port: u16,
    log: &Path,
    install: &str,
) -> anyhow::Result<Backing> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name} ({}): {install}", bin.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let what = format!("connections accepted on {addr}");
    let accepts = || async move { tokio::net::TcpStream::connect(addr).await.is_ok() };
    // On failure the child is dropped, which kills it (`kill_on_drop`).
    wait_until(
        (name, &what),
        &mut child,
        log,
        Duration::from_secs(15),
        accepts,
    )
    .await?;
    Ok(Backing { name, child, port })
}
