//! cloudpop as the bench runs it: role `all`, filesystem store, in-process lock, users made
//! with `cloudpop admin user add`, every port chosen by the kernel and read back from the
//! binary's announcements. The helpers that run the binary (its admin commands, a role with
//! the bench's environment) serve the cloud target too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use super::{log_tail, wait_for_greeting};
use crate::corpus::Corpus;

/// A running cloudpop.
#[derive(Debug)]
pub(crate) struct Cloudpop {
    bin: PathBuf,
    pub(crate) dir: TempDir,
    env: Vec<(String, String)>,
    pub(crate) child: Child,
    pub(crate) pop3: SocketAddr,
    pub(crate) lmtp: SocketAddr,
    pub(crate) admin: SocketAddr,
}

/// Options every cloudpop process of the bench gets, whatever its role.
pub(super) fn common_environment() -> Vec<(String, String)> {
    [
        ("CLOUDPOP_ADMIN__LISTEN", "127.0.0.1:0"),
        ("CLOUDPOP_USERS__CREATE_DEMO_USER", "false"),
        ("CLOUDPOP_LOG__LEVEL", "warn"),
        ("CLOUDPOP_SHUTDOWN__GRACE_PERIOD", "2s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Options of the processes that serve POP3 or LMTP.
pub(super) fn front_end_environment() -> Vec<(String, String)> {
    let mut env = common_environment();
    env.extend(
        [
            ("CLOUDPOP_POP3__LISTEN", "127.0.0.1:0"),
            ("CLOUDPOP_POP3__LISTEN_TLS", "127.0.0.1:0"),
            ("CLOUDPOP_LMTP__LISTEN", "127.0.0.1:0"),
            // The bench never fails a login on purpose, and its many sessions come from one
            // address: the abuse limits would only measure themselves.
            ("CLOUDPOP_POP3__AUTH_FAILURE_DELAY", "0s"),
            ("CLOUDPOP_POP3__MAX_CONNECTIONS_PER_IP", "1000000"),
            ("CLOUDPOP_POP3__MAX_SESSIONS_PER_USER", "1000000"),
            ("CLOUDPOP_POP3__MAX_CONNECTIONS", "100000"),
            ("CLOUDPOP_LMTP__MAX_CONNECTIONS", "10000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    env
}

/// The options the bench sets for role `all` (environment variables of the README's
/// configuration).
fn environment(data_dir: &Path) -> Vec<(String, String)> {
    let mut env = front_end_environment();
    env.extend(
        [
            ("CLOUDPOP_AUTH__LISTEN", "127.0.0.1:0"),
            ("CLOUDPOP_STORE__BACKEND", "fs"),
            ("CLOUDPOP_LOCK__BACKEND", "in-process"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    env.push(("CLOUDPOP_DATA_DIR".into(), data_dir.display().to_string()));
    env
}

/// The `[[users]]` of the users file, for their password hashes.
#[derive(Debug, Deserialize)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Debug, Deserialize)]
struct UserEntry {
    login: String,
    password: Option<String>,
}

/// The binary, as an absolute path, or an error saying how to build it.
pub(super) fn binary(bin: &Path) -> anyhow::Result<PathBuf> {
    if !bin.is_file() {
        bail!(
            "no cloudpop binary at {} (build it with `cargo build --release -p cloudpop`, or \
             pass --cloudpop-bin)",
            bin.display()
        );
    }
    std::fs::canonicalize(bin).with_context(|| format!("resolving {}", bin.display()))
}

/// Creates the users of `corpus` with `cloudpop admin` in the users file of `env`'s data
/// directory and lets tenant `default` accept USER/PASS without TLS.
pub(super) async fn add_users(
    bin: &Path,
    dir: &Path,
    env: &[(String, String)],
    corpus: &Corpus,
) -> anyhow::Result<()> {
    for user in &corpus.users {
        admin(bin, dir, env, &["user", "add", &user.login], &user.password).await?;
    }
    admin(
        bin,
        dir,
        env,
        &["tenant", "set", "default", "--cleartext-allowed", "true"],
        "",
    )
    .await
}

/// Each login's password hash (PHC string) in the users file at `path`.
pub(super) fn read_hashes(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading cloudpop's users file {}", path.display()))?;
    let file: UsersFile = toml::from_str(&text)
        .with_context(|| format!("parsing cloudpop's users file {}", path.display()))?;
    Ok(file
        .users
        .into_iter()
        .filter_map(|u| Some((u.login, u.password?)))
        .collect())
}

/// Creates the users of `corpus` with `cloudpop admin`, lets tenant `default` accept
/// USER/PASS without TLS, and starts the server. Also returns each login's password hash
/// (PHC string), so that Dovecot can get the very same ones.
pub(crate) async fn setup(
    bin: &Path,
    corpus: &Corpus,
) -> anyhow::Result<(Cloudpop, HashMap<String, String>)> {
    let bin = binary(bin)?;
    let dir = tempfile::Builder::new()
        .prefix("cloudpop-bench-")
        .tempdir()?;
    let data_dir = dir.path().join("data");
    let env = environment(&data_dir);
    eprintln!(
        "bench: cloudpop: adding {} users with `cloudpop admin user add`",
        corpus.users.len()
    );
    add_users(&bin, dir.path(), &env, corpus).await?;
    let hashes = read_hashes(&data_dir.join("users.toml"))?;
    let (child, pop3, lmtp, admin) = start(&bin, dir.path(), &env).await?;
    Ok((
        Cloudpop {
            bin,
            dir,
            env,
            child,
            pop3,
            lmtp,
            admin,
        },
        hashes,
    ))
}

impl Cloudpop {
    /// SIGTERM, then the same start again (new ports).
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        super::terminate(&mut self.child).await?;
        let (child, pop3, lmtp, admin) = start(&self.bin, self.dir.path(), &self.env).await?;
        self.child = child;
        self.pop3 = pop3;
        self.lmtp = lmtp;
        self.admin = admin;
        Ok(())
    }

    /// The users file, whose hashes another target may share.
    pub(crate) fn users_file(&self) -> PathBuf {
        self.dir.path().join("data").join("users.toml")
    }
}

/// `cloudpop admin ARGS`, with `stdin_line` on standard input.
pub(super) async fn admin(
    bin: &Path,
    dir: &Path,
    env: &[(String, String)],
    args: &[&str],
    stdin_line: &str,
) -> anyhow::Result<()> {
    let mut command = Command::new(bin);
    command
        .arg("admin")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    clean_environment(&mut command, env);
    let mut child = command.spawn().context("running cloudpop admin")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(format!("{stdin_line}\n").as_bytes())
            .await?;
    }
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!(
            "`cloudpop admin {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Only the bench's `CLOUDPOP_*` variables reach the server, never the caller's.
fn clean_environment(command: &mut Command, env: &[(String, String)]) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CLOUDPOP_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
}

/// The listeners a cloudpop process announced on stdout.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Listeners {
    pub(super) pop3: Option<SocketAddr>,
    pub(super) lmtp: Option<SocketAddr>,
    pub(super) grpc: Option<SocketAddr>,
    pub(super) admin: Option<SocketAddr>,
}

/// Starts `cloudpop ROLE` in `dir` with `env` (stderr appended to `log`) and waits until it
/// has announced its listeners; the admin port is bound last in every role (roles.rs), so
/// its announcement means every listener is known.
pub(super) async fn launch(
    bin: &Path,
    dir: &Path,
    env: &[(String, String)],
    role: &str,
    log: &Path,
) -> anyhow::Result<(Child, Listeners)> {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut command = Command::new(bin);
    command
        .arg(role)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
    clean_environment(&mut command, env);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting cloudpop {role}"))?;
    let stdout = child.stdout.take().context("cloudpop's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut listeners = Listeners::default();
    let announced = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            let Some((what, addr)) = line
                .strip_prefix("cloudpop: ")
                .and_then(|rest| rest.split_once(" listening on "))
            else {
                continue;
            };
            let addr: SocketAddr = addr.trim().parse()?;
            match what {
                "POP3" => listeners.pop3 = Some(addr),
                "LMTP" => listeners.lmtp = Some(addr),
                "auth gRPC" => listeners.grpc = Some(addr),
                "admin HTTP" => {
                    listeners.admin = Some(addr);
                    return anyhow::Ok(true);
                }
                _ => {}
            }
        }
        anyhow::Ok(false)
    })
    .await;
    if !matches!(announced, Ok(Ok(true))) {
        bail!(
            "cloudpop {role} did not announce its listeners; its log {}:\n{}",
            log.display(),
            log_tail(log)
        );
    }
    // Keep reading stdout so that the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, listeners))
}

/// Starts `cloudpop all` and waits until it announced its listeners and greets on POP3 and
/// LMTP; returns the process and its POP3, LMTP and admin addresses.
async fn start(
    bin: &Path,
    dir: &Path,
    env: &[(String, String)],
) -> anyhow::Result<(Child, SocketAddr, SocketAddr, SocketAddr)> {
    let log = dir.join("server.log");
    let (mut child, listeners) = launch(bin, dir, env, "all", &log).await?;
    let (Some(pop3), Some(lmtp), Some(admin)) = (listeners.pop3, listeners.lmtp, listeners.admin)
    else {
        bail!(
            "cloudpop did not announce its POP3 and LMTP listeners; its log {}:\n{}",
            log.display(),
            log_tail(&log)
        );
    };
    wait_for_greeting(pop3, b"+OK", &mut child, &log).await?;
    wait_for_greeting(lmtp, b"220", &mut child, &log).await?;
    Ok((child, pop3, lmtp, admin))
}
