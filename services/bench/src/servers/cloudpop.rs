//! cloudpop as the bench runs it: role `all`, filesystem store, in-process lock, users made
//! with `cloudpop admin user add`, every port chosen by the kernel and read back from the
//! binary's announcements.

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
}

/// The options the bench sets (environment variables of the README's configuration).
fn environment(data_dir: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("CLOUDPOP_POP3__LISTEN", "127.0.0.1:0"),
        ("CLOUDPOP_POP3__LISTEN_TLS", "127.0.0.1:0"),
        ("CLOUDPOP_LMTP__LISTEN", "127.0.0.1:0"),
        ("CLOUDPOP_ADMIN__LISTEN", "127.0.0.1:0"),
        ("CLOUDPOP_AUTH__LISTEN", "127.0.0.1:0"),
        ("CLOUDPOP_USERS__CREATE_DEMO_USER", "false"),
        ("CLOUDPOP_LOG__LEVEL", "warn"),
        ("CLOUDPOP_STORE__BACKEND", "fs"),
        ("CLOUDPOP_LOCK__BACKEND", "in-process"),
        // The bench never fails a login on purpose, and its many sessions come from one
        // address: the abuse limits would only measure themselves.
        ("CLOUDPOP_POP3__AUTH_FAILURE_DELAY", "0s"),
        ("CLOUDPOP_POP3__MAX_CONNECTIONS_PER_IP", "1000000"),
        ("CLOUDPOP_POP3__MAX_SESSIONS_PER_USER", "1000000"),
        ("CLOUDPOP_POP3__MAX_CONNECTIONS", "100000"),
        ("CLOUDPOP_LMTP__MAX_CONNECTIONS", "10000"),
        ("CLOUDPOP_SHUTDOWN__GRACE_PERIOD", "2s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
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

/// Creates the users of `corpus` with `cloudpop admin`, lets tenant `default` accept
/// USER/PASS without TLS, and starts the server. Also returns each login's password hash
/// (PHC string), so that Dovecot can get the very same ones.
pub(crate) async fn setup(
    bin: &Path,
    corpus: &Corpus,
) -> anyhow::Result<(Cloudpop, HashMap<String, String>)> {
    if !bin.is_file() {
        bail!(
            "no cloudpop binary at {} (build it with `cargo build --release -p cloudpop`, or \
             pass --cloudpop-bin)",
            bin.display()
        );
    }
    let bin = std::fs::canonicalize(bin)?;
    let dir = tempfile::Builder::new()
        .prefix("cloudpop-bench-")
        .tempdir()?;
    let data_dir = dir.path().join("data");
    let env = environment(&data_dir);
    eprintln!(
        "bench: cloudpop: adding {} users with `cloudpop admin user add`",
        corpus.users.len()
    );
    for user in &corpus.users {
        admin(
            &bin,
            dir.path(),
            &env,
            &["user", "add", &user.login],
            &user.password,
        )
        .await?;
    }
    admin(
        &bin,
        dir.path(),
        &env,
        &["tenant", "set", "default", "--cleartext-allowed", "true"],
        "",
    )
    .await?;
    let text = std::fs::read_to_string(data_dir.join("users.toml"))
        .context("reading cloudpop's users file")?;
    let file: UsersFile = toml::from_str(&text).context("parsing cloudpop's users file")?;
    let hashes = file
        .users
        .into_iter()
        .filter_map(|u| Some((u.login, u.password?)))
        .collect();
    let (child, pop3, lmtp) = start(&bin, dir.path(), &env).await?;
    Ok((
        Cloudpop {
            bin,
            dir,
            env,
            child,
            pop3,
            lmtp,
        },
        hashes,
    ))
}

impl Cloudpop {
    /// SIGTERM, then the same start again (new ports).
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        super::terminate(&mut self.child).await?;
        let (child, pop3, lmtp) = start(&self.bin, self.dir.path(), &self.env).await?;
        self.child = child;
        self.pop3 = pop3;
        self.lmtp = lmtp;
        Ok(())
    }
}

/// `cloudpop admin ARGS`, with `stdin_line` on standard input.
async fn admin(
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

/// Starts `cloudpop all` and waits until it announced its listeners and greets on POP3.
async fn start(
    bin: &Path,
    dir: &Path,
    env: &[(String, String)],
) -> anyhow::Result<(Child, SocketAddr, SocketAddr)> {
    let log = dir.join("server.log");
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let mut command = Command::new(bin);
    command
        .arg("all")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
    clean_environment(&mut command, env);
    let mut child = command.spawn().context("starting cloudpop")?;
    let stdout = child.stdout.take().context("cloudpop's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut pop3, mut lmtp) = (None, None);
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
                "POP3" => pop3 = Some(addr),
                "LMTP" => lmtp = Some(addr),
                // The admin port is bound last (roles.rs): every listener is known now.
                "admin HTTP" => return anyhow::Ok(true),
                _ => {}
            }
        }
        anyhow::Ok(false)
    })
    .await;
    let (Ok(Ok(true)), Some(pop3), Some(lmtp)) = (announced, pop3, lmtp) else {
        bail!(
            "cloudpop did not announce its POP3 and LMTP listeners; its log {}:\n{}",
            log.display(),
            log_tail(&log)
        );
    };
    // Keep reading stdout so that the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    wait_for_greeting(pop3, b"+OK", &mut child, &log).await?;
    wait_for_greeting(lmtp, b"220", &mut child, &log).await?;
    Ok((child, pop3, lmtp))
}
