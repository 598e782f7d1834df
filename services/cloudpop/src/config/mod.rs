//! The typed configuration of every role: parsed and validated once at start-up.
//!
//! Sources, later ones winning: built-in defaults, the TOML file, then environment
//! variables `CLOUDPOP_<SECTION>__<KEY>` (for example `CLOUDPOP_POP3__LISTEN=0.0.0.0:1110`,
//! `CLOUDPOP_DATA_DIR=/var/lib/cloudpop`). Every option is documented in the README.

pub mod duration;
mod load;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use load::load;

/// All options. Unknown keys are errors, so a typo never goes unnoticed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the embedded default keeps its files (mail, users file, spool).
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub pop3: Pop3Section,
    pub lmtp: LmtpSection,
    pub admin: AdminSection,
    pub users: UsersSection,
    pub store: StoreSection,
    pub shutdown: ShutdownSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            log: LogConfig::default(),
            pop3: Pop3Section::default(),
            lmtp: LmtpSection::default(),
            admin: AdminSection::default(),
            users: UsersSection::default(),
            store: StoreSection::default(),
            shutdown: ShutdownSection::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level (`error` … `trace`) or per-module directives (`info,cloudpop_pop3=debug`).
    pub level: String,
    /// `text` (human-readable) or `json` (one object per line).
    pub format: LogFormatName,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormatName::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatName {
    Text,
    Json,
}

/// `[pop3]`: the POP3 listener and its limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3Section {
    pub listen: SocketAddr,
    pub hostname: String,
    pub max_line_length: usize,
    pub max_auth_failures: u32,
    pub max_bad_commands: u32,
    #[serde(with = "duration")]
    pub idle_timeout_authorization: Duration,
    #[serde(with = "duration")]
    pub idle_timeout_transaction: Duration,
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    #[serde(with = "duration")]
    pub lock_ttl: Duration,
    pub max_connections: usize,
    pub stream_buffer: usize,
    /// LOGIN-DELAY advertised before login, in seconds.
    pub login_delay: u64,
    /// EXPIRE advertised before login: `"never"` or a number of days.
    pub expire: ExpireSetting,
}

impl Default for Pop3Section {
    fn default() -> Self {
        let d = cloudpop_pop3::Pop3Config::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 1110)),
            hostname: d.hostname,
            max_line_length: d.max_line_length,
            max_auth_failures: d.max_auth_failures,
            max_bad_commands: d.max_bad_commands,
            idle_timeout_authorization: d.idle_timeout_authorization,
            idle_timeout_transaction: d.idle_timeout_transaction,
            write_timeout: d.write_timeout,
            lock_ttl: d.lock_ttl,
            max_connections: d.max_connections,
            stream_buffer: d.stream_buffer,
            login_delay: d.login_delay,
            expire: ExpireSetting::Never(Never::Never),
        }
    }
}

/// `"never"` or a number of days.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ExpireSetting {
    Never(Never),
    Days(u32),
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Never {
    Never,
}

/// `[lmtp]`: the LMTP delivery listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmtpSection {
    pub listen: SocketAddr,
    pub hostname: String,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_line_length: usize,
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for LmtpSection {
    fn default() -> Self {
        let d = cloudpop_lmtp::LmtpConfig::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 2424)),
            hostname: d.hostname,
            max_message_size: d.max_message_size,
            max_recipients: d.max_recipients,
            max_line_length: d.max_line_length,
            idle_timeout: d.idle_timeout,
            max_connections: d.max_connections,
        }
    }
}

/// `[admin]`: the admin HTTP port (`/livez`, `/readyz`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub listen: SocketAddr,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

/// `[users]`: the users file of the embedded default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsersSection {
    /// Default: `<data_dir>/users.toml`.
    pub file: Option<PathBuf>,
    /// How often the file is checked for changes.
    #[serde(with = "duration")]
    pub reload_interval: Duration,
    /// Create a demo user with a random password when the file has no users.
    pub create_demo_user: bool,
}

impl Default for UsersSection {
    fn default() -> Self {
        Self {
            file: None,
            reload_interval: Duration::from_secs(1),
            create_demo_user: true,
        }
    }
}

/// `[store]`: where messages live.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Root of the filesystem store. Default: `<data_dir>/mail`.
    pub path: Option<PathBuf>,
}

/// `[shutdown]`: draining on SIGTERM.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSection {
    /// Longest time sessions get to finish after SIGTERM before the process exits.
    #[serde(with = "duration")]
    pub grace_period: Duration,
}

impl Default for ShutdownSection {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(25),
        }
    }
}

impl Config {
    /// The users file in effect.
    pub fn users_file(&self) -> PathBuf {
        self.users
            .file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("users.toml"))
    }

    /// The root of the filesystem store in effect.
    pub fn store_path(&self) -> PathBuf {
        self.store
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("mail"))
    }

    /// POP3 settings for the front-end crate.
    pub fn pop3_config(&self) -> cloudpop_pop3::Pop3Config {
        let p = &self.pop3;
        cloudpop_pop3::Pop3Config {
            hostname: p.hostname.clone(),
            max_line_length: p.max_line_length,
            max_auth_failures: p.max_auth_failures,
            max_bad_commands: p.max_bad_commands,
            idle_timeout_authorization: p.idle_timeout_authorization,
            idle_timeout_transaction: p.idle_timeout_transaction,
            write_timeout: p.write_timeout,
            lock_ttl: p.lock_ttl,
            max_connections: p.max_connections,
            stream_buffer: p.stream_buffer,
            login_delay: p.login_delay,
            expire: match p.expire {
                ExpireSetting::Never(_) => cloudpop_pop3::ExpirePolicy::Never,
                ExpireSetting::Days(days) => cloudpop_pop3::ExpirePolicy::Days(days),
            },
        }
    }

    /// LMTP settings for the delivery crate.
    pub fn lmtp_config(&self) -> cloudpop_lmtp::LmtpConfig {
        let l = &self.lmtp;
        cloudpop_lmtp::LmtpConfig {
            hostname: l.hostname.clone(),
            max_message_size: l.max_message_size,
            max_recipients: l.max_recipients,
            max_line_length: l.max_line_length,
            idle_timeout: l.idle_timeout,
            max_connections: l.max_connections,
        }
    }

    /// Checks every rule that types alone don't; the message names the option.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.pop3;
        let rules: [(bool, &str); 14] = [
            (
                p.max_line_length >= 255,
                "pop3.max_line_length must be at least 255 (RFC 2449 §4)",
            ),
            (
                p.max_line_length <= 65_536,
                "pop3.max_line_length must be at most 65536",
            ),
            (
                p.max_auth_failures >= 1,
                "pop3.max_auth_failures must be at least 1",
            ),
            (
                p.max_bad_commands >= 1,
                "pop3.max_bad_commands must be at least 1",
            ),
            (
                p.idle_timeout_authorization >= Duration::from_secs(1),
                "pop3.idle_timeout_authorization must be at least 1s",
            ),
            (
                p.idle_timeout_transaction >= Duration::from_secs(600),
                "pop3.idle_timeout_transaction must be at least 10m (RFC 1939 §3)",
            ),
            (
                p.write_timeout >= Duration::from_secs(1),
                "pop3.write_timeout must be at least 1s",
            ),
            (
                p.lock_ttl >= Duration::from_secs(3),
                "pop3.lock_ttl must be at least 3s",
            ),
            (
                p.max_connections >= 1,
                "pop3.max_connections must be at least 1",
            ),
            (
                p.stream_buffer >= 4096 && p.stream_buffer <= 16 << 20,
                "pop3.stream_buffer must be between 4096 and 16777216",
            ),
            (
                !p.hostname.is_empty() && !p.hostname.contains(char::is_whitespace),
                "pop3.hostname must be one word",
            ),
            (
                self.lmtp.max_message_size >= 1024,
                "lmtp.max_message_size must be at least 1024",
            ),
            (
                self.lmtp.max_recipients >= 1 && self.lmtp.max_connections >= 1,
                "lmtp.max_recipients and lmtp.max_connections must be at least 1",
            ),
            (
                self.lmtp.max_line_length >= 512,
                "lmtp.max_line_length must be at least 512 (RFC 5321 §4.5.3.1.4)",
            ),
        ];
        match rules.iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err((*message).to_owned()),
            None => Ok(()),
        }
    }
}
