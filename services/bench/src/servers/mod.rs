//! The servers under test: each started by the bench on loopback, in a temporary directory
//! of its own, and stopped at the end.

pub(crate) mod backing;
pub(crate) mod cloud;
pub(crate) mod cloudpop;
pub(crate) mod dovecot;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::process::Child;

use crate::wire::Conn;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    /// cloudpop embedded: role `all`, filesystem store, in-process lock, users file.
    Cloudpop,
    /// cloudpop in cloud mode: S3 store, Redis lock, gRPC auth service, one process each.
    CloudpopCloud,
    Dovecot,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Cloudpop => "cloudpop",
            Kind::CloudpopCloud => "cloudpop-cloud",
            Kind::Dovecot => "dovecot",
        }
    }
}

/// A running server.
#[derive(Debug)]
pub(crate) enum Server {
    Cloudpop(cloudpop::Cloudpop),
    // Boxed: it holds five processes, the other variants one.
    CloudpopCloud(Box<cloud::CloudpopCloud>),
    Dovecot(dovecot::Dovecot),
}

impl Server {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Server::Cloudpop(_) => Kind::Cloudpop,
            Server::CloudpopCloud(_) => Kind::CloudpopCloud,
            Server::Dovecot(_) => Kind::Dovecot,
        }
    }

    /// Where it serves POP3.
    pub(crate) fn pop3(&self) -> SocketAddr {
        match self {
            Server::Cloudpop(s) => s.pop3,
            Server::CloudpopCloud(s) => s.pop3(),
            Server::Dovecot(s) => s.pop3,
        }
    }

    /// Where it accepts LMTP.
    pub(crate) fn lmtp(&self) -> SocketAddr {
        match self {
            Server::Cloudpop(s) => s.lmtp,
            Server::CloudpopCloud(s) => s.lmtp(),
            Server::Dovecot(s) => s.lmtp,
        }
    }

    /// The process whose tree holds the server's memory (the POP3 front-end of the cloud
    /// target, whose memory modes are skipped).
    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            Server::Cloudpop(s) => s.child.id(),
            Server::CloudpopCloud(s) => s.pid(),
            Server::Dovecot(s) => s.child.id(),
        }
    }

    /// The admin ports of cloudpop's processes, whose `/metrics` count the calls to the
    /// backends; none for Dovecot.
    pub(crate) fn admins(&self) -> Vec<SocketAddr> {
        match self {
            Server::Cloudpop(s) => vec![s.admin],
            Server::CloudpopCloud(s) => s.admins(),
            Server::Dovecot(_) => Vec::new(),
        }
    }

    /// The processes whose CPU time a mode reports, each with its descendants: cloudpop's
    /// one process, the cloud setup's five, Dovecot's master.
    pub(crate) fn processes(&self) -> Vec<(&'static str, u32)> {
        let (name, child) = match self {
            Server::CloudpopCloud(s) => return s.processes(),
            Server::Cloudpop(s) => ("cloudpop", &s.child),
            Server::Dovecot(s) => ("dovecot", &s.child),
        };
        child.id().map(|pid| (name, pid)).into_iter().collect()
    }

    /// Stops the server and starts it again on the same data.
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        match self {
            Server::Cloudpop(s) => s.restart().await,
            Server::CloudpopCloud(s) => s.restart().await,
            Server::Dovecot(s) => s.restart().await,
        }
    }

    /// Stops the server; keeps its directory when `keep` (and says where).
    pub(crate) async fn stop(self, keep: bool) -> anyhow::Result<()> {
        let kind = self.kind();
        let (stopped, dir) = match self {
            Server::Cloudpop(mut s) => (terminate(&mut s.child).await, s.dir),
            Server::CloudpopCloud(s) => s.stop().await,
            Server::Dovecot(mut s) => (terminate(&mut s.child).await, s.dir),
        };
        if keep {
            let path: PathBuf = dir.keep();
            eprintln!(
                "bench: kept the {} directory {}",
                kind.name(),
                path.display()
            );
        } else {
            // Hundreds of thousands of delivered messages take a while to delete: do it off
            // the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || drop(dir)).await;
        }
        stopped
    }
}

/// SIGTERM, then up to 20 s for the process to exit, then SIGKILL.
pub(crate) async fn terminate(child: &mut Child) -> anyhow::Result<()> {
    if let Some(pid) = child.id() {
        // No libc in the workspace: the `kill` utility sends the signal.
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
        Ok(status) => {
            status.context("waiting for the server to exit")?;
            Ok(())
        }
        Err(_) => {
            child.start_kill().context("killing the server")?;
            let _ = child.wait().await;
            bail!("the server did not exit within 20 s of SIGTERM; killed it")
        }
    }
}

/// Waits until `addr` answers with a greeting starting with `prefix`, failing early if the
/// server process exits.
pub(crate) async fn wait_for_greeting(
    addr: SocketAddr,
    prefix: &[u8],
    child: &mut Child,
    log: &std::path::Path,
) -> anyhow::Result<()> {
    let what = format!("a greeting on {addr}");
    wait_until(
        ("the server", &what),
        child,
        log,
        Duration::from_secs(30),
        || async {
            match Conn::connect(addr, Duration::from_secs(2)).await {
                Ok(mut conn) => conn
                    .read_line()
                    .await
                    .is_ok_and(|line| line.starts_with(prefix)),
                Err(_) => false,
            }
        },
    )
    .await
}

/// Polls `ready` until it answers true. Fails, with the end of `log`, as soon as `child`
/// exits, or after `within`; `(name, what)` name the process and what was awaited.
pub(crate) async fn wait_until<F, Fut>(
    (name, what): (&str, &str),
    child: &mut Child,
    log: &std::path::Path,
    within: Duration,
    mut ready: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{name} exited ({status}) while waiting for {what}; its log {}:\n{}",
                log.display(),
                log_tail(log)
            );
        }
        if ready().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name}: no {what} within {} s; its log {}:\n{}",
                within.as_secs(),
                log.display(),
                log_tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last lines of a log file, for an error message.
pub(crate) fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A free loopback port, for a server that cannot bind port 0 and announce it (Dovecot).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
