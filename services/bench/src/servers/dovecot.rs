//! Dovecot as the reference server: its own configuration file (no system configuration),
//! everything under a temporary directory, POP3 and LMTP on loopback ports, the same users
//! with the same argon2id hashes as cloudpop, maildir storage.
//!
//! The configuration is Dovecot's strongest documented setup for this workload: login
//! processes in high-performance mode (`service_count = 0`, one per CPU), and the auth cache
//! on, with cached passwords verified in auth worker processes so that every core hashes.
//!
//! Passwords come from a `dict` passdb (a flat file), users from a `passwd-file` userdb. A
//! `passwd-file` passdb would be simpler, but Dovecot 2.3 gives it no cache key, so
//! `auth_cache` would silently not apply and every argon2id verification would run in the
//! single auth process. The cache keeps the stored hash, so a cache hit still verifies
//! argon2id, only in a worker.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use argon2::{Argon2, PasswordHasher};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use super::{free_port, log_tail, wait_for_greeting};
use crate::corpus::Corpus;

/// A running Dovecot.
#[derive(Debug)]
pub(crate) struct Dovecot {
    bin: PathBuf,
    conf: PathBuf,
    pub(crate) dir: TempDir,
    pub(crate) child: Child,
    pub(crate) pop3: SocketAddr,
    pub(crate) lmtp: SocketAddr,
}

/// Fails unless Dovecot is installed with argon2id support; returns its version.
pub(crate) async fn check_installed(bin: &Path) -> anyhow::Result<String> {
    let version = Command::new(bin).arg("--version").output().await;
    let Ok(version) = version.map_err(anyhow::Error::from).and_then(|o| {
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
        } else {
            bail!("{}", String::from_utf8_lossy(&o.stderr))
        }
    }) else {
        bail!(
            "Dovecot is not installed at {} (Debian: apt-get install dovecot-pop3d \
             dovecot-lmtpd; or pass --dovecot-bin)",
            bin.display()
        );
    };
    let schemes = Command::new("doveadm")
        .args(["pw", "-l"])
        .output()
        .await
        .context("running `doveadm pw -l`")?;
    let schemes = String::from_utf8_lossy(&schemes.stdout);
    if !schemes.split_whitespace().any(|s| s == "ARGON2ID") {
        bail!(
            "this Dovecot has no ARGON2ID password scheme (built without libsodium), so it \
             cannot use cloudpop's password hashes; `doveadm pw -l`: {schemes}"
        );
    }
    Ok(version)
}

/// argon2id hashes made the way `cloudpop admin` makes them (the argon2 crate's default
/// parameters), for a run against Dovecot alone.
pub(crate) fn hash_passwords(corpus: &Corpus) -> anyhow::Result<HashMap<String, String>> {
    corpus
        .users
        .iter()
        .map(|user| {
            let salt =
                xxhash_rust::xxh3::xxh3_128(format!("{}/{}", corpus.seed, user.login).as_bytes());
            let hash = Argon2::default()
                .hash_password_with_salt(user.password.as_bytes(), &salt.to_le_bytes())
                .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
            Ok((user.login.clone(), hash.to_string()))
        })
        .collect()
}

/// The users Dovecot's processes run as.
#[derive(Debug)]
struct Identity {
    internal_user: String,
    login_user: String,
    uid: u32,
    gid: u32,
    root: bool,
}

/// As root, Dovecot's own users from its package (`dovecot`, `dovenull`); otherwise the
/// current user for everything.
fn identity() -> anyhow::Result<Identity> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let id_field = |name: &str| -> Option<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let (Some(euid), Some(egid)) = (id_field("Uid:"), id_field("Gid:")) else {
        bail!("cannot read the user id from /proc/self/status");
    };
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    let entries: Vec<(String, u32, u32)> = passwd
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect();
    let by_name = |name: &str| entries.iter().find(|(n, _, _)| n == name);
    if euid == 0 {
        let (Some(internal), Some(_)) = (by_name("dovecot"), by_name("dovenull")) else {
            bail!(
                "users `dovecot` and `dovenull` are missing (the dovecot-core package creates them)"
            );
        };
        return Ok(Identity {
            internal_user: "dovecot".into(),
            login_user: "dovenull".into(),
            uid: internal.1,
            gid: internal.2,
            root: true,
        });
    }
    let Some((name, _, _)) = entries.iter().find(|(_, uid, _)| *uid == euid) else {
        bail!("user id {euid} has no name in /etc/passwd");
    };
    Ok(Identity {
        internal_user: name.clone(),
        login_user: name.clone(),
        uid: euid,
        gid: egid,
        root: false,
    })
}

/// Writes the configuration and the passwd-file, starts Dovecot and waits for its greetings.
pub(crate) async fn setup(
    bin: &Path,
    corpus: &Corpus,
    hashes: &HashMap<String, String>,
    idle_conns: usize,
) -> anyhow::Result<Dovecot> {
    let who = identity()?;
    let dir = tempfile::Builder::new()
        .prefix("dovecot-bench-")
        .tempdir()?;
    // Mail processes run as `who.uid`: they must reach the mail under the directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let mail = dir.path().join("mail");
    std::fs::create_dir(&mail)?;
    if who.root {
        std::os::unix::fs::chown(&mail, Some(who.uid), Some(who.gid))?;
    }
    let (users, passwords) = (dir.path().join("users"), dir.path().join("passwords.dict"));
    let (mut userdb, mut passdb) = (String::new(), String::new());
    for user in &corpus.users {
        let Some(hash) = hashes.get(&user.login) else {
            bail!("no password hash for {}", user.login);
        };
        // passwd-file: user:password:uid:gid:gecos:home:shell:extra (no password: userdb).
        writeln!(userdb, "{}:::::::", user.login)?;
        // dict file: a key line, then its value line; auth looks keys up under `shared/`.
        let value = serde_json::json!({ "password": format!("{{ARGON2ID}}{hash}") });
        writeln!(passdb, "shared/passdb/{}\n{value}", user.login)?;
    }
    for (path, text) in [(&users, userdb), (&passwords, passdb)] {
        std::fs::write(path, text)?;
        // Read by the auth processes, which run as the internal user.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    let dict_conf = dir.path().join("dict-auth.conf");
    std::fs::write(
        &dict_conf,
        format!(
            "uri = file:{}\ndefault_pass_scheme = ARGON2ID\niterate_disable = yes\n\
             key passdb {{\n  key = passdb/%u\n  format = json\n}}\npassdb_objects = passdb\n",
            passwords.display()
        ),
    )?;
    std::fs::set_permissions(&dict_conf, std::fs::Permissions::from_mode(0o644))?;
    let pop3 = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut lmtp = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    while lmtp.port() == pop3.port() {
        lmtp.set_port(free_port()?);
    }
    let conf = dir.path().join("dovecot.conf");
    std::fs::write(
        &conf,
        config(dir.path(), &who, pop3, lmtp, &dict_conf, &users, idle_conns),
    )?;
    let bin = bin.to_path_buf();
    let child = start(&bin, &conf, dir.path(), pop3, lmtp).await?;
    Ok(Dovecot {
        bin,
        conf,
        dir,
        child,
        pop3,
        lmtp,
    })
}

impl Dovecot {
    /// Stops the master (and with it every process) and starts it again.
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        super::terminate(&mut self.child).await?;
        self.child = start(&self.bin, &self.conf, self.dir.path(), self.pop3, self.lmtp).await?;
        Ok(())
    }
}

async fn start(
    bin: &Path,
    conf: &Path,
    dir: &Path,
    pop3: SocketAddr,
    lmtp: SocketAddr,
) -> anyhow::Result<Child> {
    let log = dir.join("dovecot.log");
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("dovecot.stderr"))?;
    let mut child = Command::new(bin)
        .arg("-F")
        .arg("-c")
        .arg(conf)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    if let Err(e) = async {
        wait_for_greeting(pop3, b"+OK", &mut child, &log).await?;
        wait_for_greeting(lmtp, b"220", &mut child, &log).await
    }
    .await
    {
        let _ = super::terminate(&mut child).await;
        let stderr = log_tail(&dir.join("dovecot.stderr"));
        return Err(e.context(format!("Dovecot did not start; its stderr:\n{stderr}")));
    }
    Ok(child)
}

fn config(
    dir: &Path,
    who: &Identity,
    pop3: SocketAddr,
    lmtp: SocketAddr,
    dict_conf: &Path,
    users: &Path,
    idle_conns: usize,
) -> String {
    let d = dir.display();
    let (dict_conf, users) = (dict_conf.display(), users.display());
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    // One pop3 process per logged-in session: the limits must exceed the idle workload.
    let processes = (idle_conns * 2).max(1000);
    let clients = processes * 2;
    let chroot = if who.root { "" } else { "\n  chroot =" };
    format!(
        r#"# Written by cloudpop-bench; no system configuration is read.
protocols = pop3 lmtp
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
# Like cloudpop's log level warn: no line per login.
info_log_path = /dev/null
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
auth_cache_size = 16M
auth_cache_ttl = 1 hours
auth_cache_negative_ttl = 1 hours
auth_cache_verify_password_with_worker = yes
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = {uid}
last_valid_uid = 0
mail_location = maildir:{d}/mail/%d/%n
postmaster_address = postmaster@example.com
default_process_limit = {processes}
default_client_limit = {clients}
default_vsz_limit = 1G

passdb {{
  driver = dict
  args = {dict_conf}
}}
userdb {{
  driver = passwd-file
  args = {users}
  default_fields = uid={uid} gid={gid} home={d}/mail/%d/%n
}}

service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
  # High-performance mode: long-lived login processes, one per CPU.
  service_count = 0
  process_min_avail = {cpus}{chroot}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
service anvil {{
  client_limit = {anvil}
}}
service auth {{
  client_limit = {anvil}
}}
protocol pop3 {{
  mail_max_userip_connections = 1000000
}}
"#,
        internal = who.internal_user,
        login = who.login_user,
        uid = who.uid,
        gid = who.gid,
        pop3_port = pop3.port(),
        lmtp_port = lmtp.port(),
        anvil = clients * 2,
    )
}
