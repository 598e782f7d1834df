//! cloudpop in cloud mode, as the bench runs it (the README's "Cloud mode" on one machine):
//! its own `redis-server` and `s3s-fs` on free loopback ports, then one `cloudpop auth` (the
//! users file, served over gRPC), one `cloudpop lmtp` and one `cloudpop pop3`, both with
//! `auth.backend = "grpc"`, `store.backend = "s3"` and `lock.backend = "redis"`, and the
//! abuse-protection counters in Redis too unless `--cloud-limits in-process`. Each is a
//! process of its own, configured with `CLOUDPOP_*` variables as in the end-to-end tests
//! (tests/support/cloud.rs).
//!
//! The users file is made with `cloudpop admin user add` in the auth service's data
//! directory, as for the embedded target; when the embedded target runs too, its users file
//! is copied instead, so that all three servers verify the very same argon2id PHC strings.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::process::Child;

use super::backing::{self, ACCESS_KEY, BUCKET, Backing, SECRET_KEY};
use super::cloudpop::{self, add_users, binary, launch, read_hashes};
use super::{log_tail, terminate, wait_for_greeting};
use crate::cli::CloudLimits;
use crate::corpus::Corpus;
use crate::plan::Plan;

/// Time allowed for one call to the auth service. The bench saturates the auth service on
/// purpose (every login is an argon2id verification), so calls queue; the default 2 s
/// would turn that queueing into failed logins instead of a lower rate.
const AUTH_TIMEOUT: &str = "10s";

/// A POP3 or LMTP front-end process.
#[derive(Debug)]
struct FrontEnd {
    child: Child,
    /// Where it serves POP3 or LMTP.
    addr: SocketAddr,
    admin: SocketAddr,
}

/// A running cloud deployment.
#[derive(Debug)]
pub(crate) struct CloudpopCloud {
    bin: PathBuf,
    pub(crate) dir: TempDir,
    front_env: Vec<(String, String)>,
    redis: Backing,
    s3: Backing,
    auth: Child,
    auth_admin: SocketAddr,
    pub(crate) grpc: SocketAddr,
    pop3: FrontEnd,
    lmtp: FrontEnd,
}

/// Creates the users (or copies `users_file`), starts Redis, S3, the auth service and the
/// two front-ends. Also returns each login's password hash (PHC string), for Dovecot.
pub(crate) async fn setup(
    plan: &Plan,
    corpus: &Corpus,
    users_file: Option<&Path>,
) -> anyhow::Result<(CloudpopCloud, HashMap<String, String>)> {
    let bin = binary(&plan.cloudpop_bin)?;
    let dir = tempfile::Builder::new()
        .prefix("cloudpop-cloud-bench-")
        .tempdir()?;
    let auth_dir = dir.path().join("auth");
    std::fs::create_dir_all(&auth_dir)
        .with_context(|| format!("creating {}", auth_dir.display()))?;
    let mut auth_env = cloudpop::common_environment();
    auth_env.push(("CLOUDPOP_AUTH__LISTEN".into(), "127.0.0.1:0".into()));
    auth_env.push(("CLOUDPOP_DATA_DIR".into(), auth_dir.display().to_string()));
    let users = auth_dir.join("users.toml");
    match users_file {
        Some(file) => {
            eprintln!(
                "bench: cloudpop-cloud: the auth service gets the embedded target's users file"
            );
            std::fs::copy(file, &users)
                .with_context(|| format!("copying {} to {}", file.display(), users.display()))?;
        }
        None => {
            eprintln!(
                "bench: cloudpop-cloud: adding {} users with `cloudpop admin user add`",
                corpus.users.len()
            );
            add_users(&bin, dir.path(), &auth_env, corpus).await?;
        }
    }
    let hashes = read_hashes(&users)?;

    let redis = backing::redis(&plan.redis_server_bin, dir.path()).await?;
    let s3 = backing::s3(&plan.s3s_fs_bin, dir.path()).await?;
    let auth_log = dir.path().join("auth.log");
    let (auth, listeners) = launch(&bin, dir.path(), &auth_env, "auth", &auth_log).await?;
    let (Some(grpc), Some(auth_admin)) = (listeners.grpc, listeners.admin) else {
        bail!(
            "cloudpop auth did not announce its gRPC listener; its log {}:\n{}",
            auth_log.display(),
            log_tail(&auth_log)
        );
    };
    let front_dir = dir.path().join("front");
    std::fs::create_dir_all(&front_dir)
        .with_context(|| format!("creating {}", front_dir.display()))?;
    let front_env = front_end_environment(plan.cloud_limits, &front_dir, grpc, &redis, &s3);
    let lmtp = start_front_end(&bin, dir.path(), &front_env, "lmtp").await?;
    let pop3 = start_front_end(&bin, dir.path(), &front_env, "pop3").await?;
    Ok((
        CloudpopCloud {
            bin,
            dir,
            front_env,
            redis,
            s3,
            auth,
            auth_admin,
            grpc,
            pop3,
            lmtp,
        },
        hashes,
    ))
}

/// The options of `cloudpop pop3` and `cloudpop lmtp`.
fn front_end_environment(
    limits: CloudLimits,
    data_dir: &Path,
    grpc: SocketAddr,
    redis: &Backing,
    s3: &Backing,
) -> Vec<(String, String)> {
    let redis_urls = format!("[\"redis://127.0.0.1:{}\"]", redis.port);
    let limits = match limits {
        CloudLimits::Redis => "redis",
        CloudLimits::InProcess => "in-process",
    };
    let mut env = cloudpop::front_end_environment();
    env.extend(
        [
            ("CLOUDPOP_DATA_DIR", data_dir.display().to_string()),
            ("CLOUDPOP_AUTH__BACKEND", "grpc".into()),
            ("CLOUDPOP_AUTH__ENDPOINT", format!("http://{grpc}")),
            ("CLOUDPOP_AUTH__TIMEOUT", AUTH_TIMEOUT.into()),
            ("CLOUDPOP_STORE__BACKEND", "s3".into()),
            (
                "CLOUDPOP_STORE__S3__ENDPOINT",
                format!("http://127.0.0.1:{}", s3.port),
            ),
            ("CLOUDPOP_STORE__S3__BUCKET", BUCKET.into()),
            ("CLOUDPOP_STORE__S3__ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("CLOUDPOP_STORE__S3__SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("CLOUDPOP_LOCK__BACKEND", "redis".into()),
            ("CLOUDPOP_LOCK__REDIS__URLS", redis_urls.clone()),
            ("CLOUDPOP_LIMITS__BACKEND", limits.into()),
            ("CLOUDPOP_LIMITS__REDIS__URLS", redis_urls),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v)),
    );
    env
}

/// Starts `cloudpop ROLE` (pop3 or lmtp) and waits until it greets.
async fn start_front_end(
    bin: &Path,
    dir: &Path,
    env: &[(String, String)],
    role: &str,
) -> anyhow::Result<FrontEnd> {
    let log = dir.join(format!("{role}.log"));
    let (mut child, listeners) = launch(bin, dir, env, role, &log).await?;
    let (addr, greeting) = match role {
        "pop3" => (listeners.pop3, &b"+OK"[..]),
        _ => (listeners.lmtp, &b"220"[..]),
    };
    let (Some(addr), Some(admin)) = (addr, listeners.admin) else {
        bail!(
            "cloudpop {role} did not announce its listener; its log {}:\n{}",
            log.display(),
            log_tail(&log)
        );
    };
    wait_for_greeting(addr, greeting, &mut child, &log).await?;
    Ok(FrontEnd { child, addr, admin })
}

impl CloudpopCloud {
    pub(crate) fn pop3(&self) -> SocketAddr {
        self.pop3.addr
    }

    pub(crate) fn lmtp(&self) -> SocketAddr {
        self.lmtp.addr
    }

    /// The POP3 front-end's process.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.pop3.child.id()
    }

    /// The admin ports of the auth service and the two front-ends.
    pub(crate) fn admins(&self) -> Vec<SocketAddr> {
        vec![self.auth_admin, self.lmtp.admin, self.pop3.admin]
    }

    /// Every process of the deployment, by name, for the CPU figures.
    pub(crate) fn processes(&self) -> Vec<(&'static str, u32)> {
        [
            ("pop3", self.pop3.child.id()),
            ("lmtp", self.lmtp.child.id()),
            ("auth", self.auth.id()),
            (self.s3.name, self.s3.child.id()),
            (self.redis.name, self.redis.child.id()),
        ]
        .into_iter()
        .filter_map(|(name, pid)| Some((name, pid?)))
        .collect()
    }

    /// Where S3 and Redis listen, for the start-up message.
    pub(crate) fn backends(&self) -> String {
        format!(
            "{} 127.0.0.1:{}, {} 127.0.0.1:{}",
            self.s3.name, self.s3.port, self.redis.name, self.redis.port
        )
    }

    /// Restarts the two front-ends (new ports); the auth service, S3 and Redis keep running.
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        terminate(&mut self.pop3.child).await?;
        terminate(&mut self.lmtp.child).await?;
        let dir = self.dir.path();
        self.lmtp = start_front_end(&self.bin, dir, &self.front_env, "lmtp").await?;
        self.pop3 = start_front_end(&self.bin, dir, &self.front_env, "pop3").await?;
        Ok(())
    }

    /// Stops every process, front-ends first; returns the first failure and the directory.
    pub(crate) async fn stop(mut self) -> (anyhow::Result<()>, TempDir) {
        let mut outcome = Ok(());
        for (what, child) in [
            ("cloudpop pop3", &mut self.pop3.child),
            ("cloudpop lmtp", &mut self.lmtp.child),
            ("cloudpop auth", &mut self.auth),
            (self.s3.name, &mut self.s3.child),
            (self.redis.name, &mut self.redis.child),
        ] {
            let stopped = terminate(child)
                .await
                .with_context(|| format!("stopping {what}"));
            if outcome.is_ok() {
                outcome = stopped;
            }
        }
        (outcome, self.dir)
    }
}
