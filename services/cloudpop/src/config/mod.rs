//! The typed configuration of every role: parsed and validated once at start-up.
//!
//! Sources, later ones winning: built-in defaults, the TOML file, then environment
//! variables `CLOUDPOP_<SECTION>__<KEY>` (for example `CLOUDPOP_POP3__LISTEN=0.0.0.0:1110`,
//! `CLOUDPOP_DATA_DIR=/var/lib/cloudpop`). Every option is documented in the README.

pub mod duration;
mod load;
mod paths;
mod redact;
mod sanity;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cloudpop_auth::{PasswordCheckSettings, RemovalLimit};
use serde::{Deserialize, Serialize};

pub use load::load_reporting;
pub use redact::redacted_toml;

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
    pub auth: AuthSection,
    pub store: StoreSection,
    pub lock: LockSection,
    pub limits: LimitsSection,
    pub tls: TlsSection,
    pub shutdown: ShutdownSection,
    pub telemetry: TelemetrySection,
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
            auth: AuthSection::default(),
            store: StoreSection::default(),
            lock: LockSection::default(),
            limits: LimitsSection::default(),
            tls: TlsSection::default(),
            shutdown: ShutdownSection::default(),
            telemetry: TelemetrySection::default(),
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
    /// POP3S, TLS from the first byte (RFC 8314); served whenever TLS is configured.
    pub listen_tls: SocketAddr,
    /// Longest AUTH line or SASL response, CRLF included (bearer tokens are kilobytes).
    pub max_sasl_line_length: usize,
    /// Advertise USER and PLAIN/LOGIN/OAUTHBEARER/XOAUTH2 without TLS. Each tenant's
    /// `cleartext_allowed` still decides whether such a login is accepted.
    pub offer_cleartext_without_tls: bool,
    /// SASL mechanisms AUTH offers, by name; CRAM-MD5 is left out by default.
    pub sasl_mechanisms: Vec<String>,
    /// Expect a PROXY protocol (v1 or v2) header from `proxy_trusted_networks`.
    pub proxy_protocol: bool,
    /// Networks of the load balancers allowed to send PROXY headers, e.g. `["10.0.0.0/8"]`.
    pub proxy_trusted_networks: Vec<String>,
    #[serde(with = "duration")]
    pub proxy_header_timeout: Duration,
    /// Total time allowed before login, however active the client is (slowloris guard).
    #[serde(with = "duration")]
    pub login_timeout: Duration,
    /// Concurrent connections per client address (IPv6: per /64), across pods.
    pub max_connections_per_ip: u32,
    /// Concurrent logged-in sessions per user, across pods.
    pub max_sessions_per_user: u32,
    /// Spacing of login attempts beyond the free ones, per login and per client network:
    /// it doubles with each further attempt, up to `auth_failure_delay_max`.
    #[serde(with = "duration")]
    pub auth_failure_delay: Duration,
    #[serde(with = "duration")]
    pub auth_failure_delay_max: Duration,
    /// How long attempts are remembered after the latest one.
    #[serde(with = "duration")]
    pub auth_failure_window: Duration,
    /// Attempts at one login (from any address), failed or unfinished, that are not spaced.
    pub auth_free_attempts_per_login: u64,
    /// Attempts from one client address (IPv6: /64), at any login, that are not spaced.
    pub auth_free_attempts_per_ip: u64,
    /// Longest wait for a turn; an attempt whose turn is further out is refused unchecked.
    #[serde(with = "duration")]
    pub auth_throttle_max_wait: Duration,
    /// Time the backend calls of one login may take together.
    #[serde(with = "duration")]
    pub login_deadline: Duration,
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
            listen_tls: SocketAddr::from(([127, 0, 0, 1], 1995)),
            max_sasl_line_length: d.max_sasl_line_length,
            offer_cleartext_without_tls: d.offer_cleartext_without_tls,
            sasl_mechanisms: d
                .sasl_mechanisms
                .iter()
                .map(|m| m.name().to_owned())
                .collect(),
            proxy_protocol: false,
            proxy_trusted_networks: Vec::new(),
            proxy_header_timeout: d.proxy_header_timeout,
            login_timeout: d.login_timeout,
            max_connections_per_ip: d.max_connections_per_ip,
            max_sessions_per_user: d.max_sessions_per_user,
            auth_failure_delay: d.login_throttle.per_login.base,
            auth_failure_delay_max: d.login_throttle.per_login.max,
            auth_failure_window: d.login_throttle.per_login.window,
            auth_free_attempts_per_login: d.login_throttle.per_login.free_attempts,
            auth_free_attempts_per_ip: d.login_throttle.per_network.free_attempts,
            auth_throttle_max_wait: d.login_throttle.max_wait,
            login_deadline: d.login_deadline,
        }
    }
}

impl Pop3Section {
    /// The login throttle: the same spacing per login and per client network, each with its
    /// own free attempts.
    fn login_throttle(&self) -> cloudpop_limits::LoginThrottle {
        let per_login = cloudpop_limits::ThrottlePolicy {
            free_attempts: self.auth_free_attempts_per_login,
            base: self.auth_failure_delay,
            max: self.auth_failure_delay_max,
            window: self.auth_failure_window,
        };
        cloudpop_limits::LoginThrottle {
            per_login,
            per_network: cloudpop_limits::ThrottlePolicy {
                free_attempts: self.auth_free_attempts_per_ip,
                ..per_login
            },
            max_wait: self.auth_throttle_max_wait,
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

/// `pop3.sasl_mechanisms`: names (any case) of mechanisms the POP3 crate implements.
fn sasl_mechanisms(names: &[String]) -> Result<Vec<cloudpop_pop3::sasl::Mechanism>, String> {
    use cloudpop_pop3::sasl::Mechanism;
    let mut mechanisms = Vec::new();
    for name in names {
        let Some(mechanism) = Mechanism::from_name(&name.to_ascii_uppercase()) else {
            let known: Vec<&str> = Mechanism::ALL.iter().map(|m| m.name()).collect();
            return Err(format!(
                "pop3.sasl_mechanisms: unknown mechanism {name:?} (known: {})",
                known.join(", ")
            ));
        };
        if !mechanisms.contains(&mechanism) {
            mechanisms.push(mechanism);
        }
    }
    Ok(mechanisms)
}

/// `[lmtp]`: the LMTP delivery listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmtpSection {
    pub listen: SocketAddr,
    pub hostname: String,
    pub max_message_size: u64,
    pub max_in_flight_bytes: u64,
    pub max_recipients: usize,
    pub max_line_length: usize,
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    #[serde(with = "duration")]
    pub data_timeout: Duration,
    pub max_connections: usize,
}

impl Default for LmtpSection {
    fn default() -> Self {
        let d = cloudpop_lmtp::LmtpConfig::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 2424)),
            hostname: d.hostname,
            max_message_size: d.max_message_size,
            max_in_flight_bytes: d.max_in_flight_bytes,
            max_recipients: d.max_recipients,
            max_line_length: d.max_line_length,
            idle_timeout: d.idle_timeout,
            data_timeout: d.data_timeout,
            max_connections: d.max_connections,
        }
    }
}

/// `[admin]`: the admin HTTP port (`/livez`, `/readyz`, `/metrics`).
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
    /// How often the file is checked for changes. A changed file is taken once two
    /// consecutive checks find it the same.
    #[serde(with = "duration")]
    pub reload_interval: Duration,
    /// The share of the users in use (0 to 1) that one reload may remove; a version of the
    /// file that removes more is refused unless approved (`cloudpop admin user
    /// approve-removals`). 1 turns the check off.
    pub max_removed_fraction: f64,
    /// Create a demo user with a random password when the file has no users.
    pub create_demo_user: bool,
    /// Threads that run argon2id password checks; each keeps one hash's worth of memory
    /// (19 MiB with the default parameters). Default: one per CPU.
    pub password_check_threads: usize,
    /// Correct passwords remembered, as keyed digests, so that the next login skips
    /// argon2id; 0 turns the cache off. A changed password takes effect at the next reload.
    pub password_cache_entries: usize,
    /// How long a remembered password is trusted.
    #[serde(with = "duration")]
    pub password_cache_ttl: Duration,
}

impl Default for UsersSection {
    fn default() -> Self {
        let passwords = PasswordCheckSettings::default();
        Self {
            file: None,
            reload_interval: Duration::from_secs(1),
            max_removed_fraction: RemovalLimit::DEFAULT_MAX_FRACTION,
            create_demo_user: true,
            password_check_threads: passwords.threads,
            password_cache_entries: passwords.cache_entries,
            password_cache_ttl: passwords.cache_ttl,
        }
    }
}

impl UsersSection {
    /// How many users one reload of the users file may remove. Validated by
    /// [`Config::validate`]; an invalid share falls back to the default.
    pub fn removal_limit(&self) -> RemovalLimit {
        RemovalLimit::new(self.max_removed_fraction).unwrap_or_default()
    }

    /// How the users file's passwords are checked.
    pub fn password_checks(&self) -> PasswordCheckSettings {
        PasswordCheckSettings {
            threads: self.password_check_threads,
            cache_entries: self.password_cache_entries,
            cache_ttl: self.password_cache_ttl,
        }
    }
}

/// `[auth]`: how logins and recipients are checked.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// `file`: the users file, checked in this process (the embedded default).
    /// `grpc`: the auth service at `endpoint` (role `auth`).
    pub backend: AuthBackend,
    /// The auth service, for `backend = "grpc"` and for `cloudpop admin --remote`.
    pub endpoint: String,
    /// Time allowed for one call to the auth service.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Attempts per call when the auth service is unreachable (at least 1).
    pub max_attempts: u32,
    /// With `backend = "grpc"`: whether the greeting offers APOP before the service says so.
    pub apop: bool,
    /// Where role `auth` serves gRPC.
    pub listen: SocketAddr,
    /// A file holding the admin token. Role `auth` then requires it on every admin call,
    /// and `cloudpop admin --remote` sends it. Unset: admin calls need no token.
    pub admin_token_file: Option<PathBuf>,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            backend: AuthBackend::File,
            endpoint: "http://127.0.0.1:50051".into(),
            timeout: Duration::from_secs(2),
            max_attempts: 3,
            apop: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            admin_token_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthBackend {
    File,
    Grpc,
}

/// `[store]`: where messages live.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `fs` (files under `path`) or `s3` (the `[store.s3]` bucket).
    pub backend: StoreBackend,
    /// Root of the filesystem store. Default: `<data_dir>/mail`.
    pub path: Option<PathBuf>,
    /// Filesystem store: temporary files of deliveries older than this are removed at
    /// start (an interrupted delivery leaves one behind).
    #[serde(with = "duration")]
    pub stale_temp_file_age: Duration,
    pub s3: S3Section,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Fs,
            path: None,
            stale_temp_file_age: Duration::from_secs(3600),
            s3: S3Section::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Fs,
    S3,
}

/// `[store.s3]`: an S3-compatible bucket.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Section {
    /// Endpoint URL (`http://127.0.0.1:9000`); empty means AWS's regional endpoint.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Key prefix inside the bucket: objects are `{prefix}/{tenant}/{mailbox}/{uid}`.
    pub prefix: String,
    pub access_key_id: String,
    /// Prefer the environment variable `CLOUDPOP_STORE__S3__SECRET_ACCESS_KEY` or
    /// `secret_access_key_file` to writing the secret into a file that is shared.
    pub secret_access_key: String,
    /// A file holding the secret access key (a mounted Kubernetes Secret).
    pub secret_access_key_file: Option<PathBuf>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most non-AWS servers.
    pub force_path_style: bool,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Time allowed for one operation, retries included.
    #[serde(with = "duration")]
    pub operation_timeout: Duration,
    /// Attempts per operation (retries with exponential backoff and jitter).
    pub max_attempts: u32,
    /// How long the store keeps trying to delete what a failed PUT may still write.
    #[serde(with = "duration")]
    pub cleanup_window: Duration,
}

impl std::fmt::Debug for S3Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Section")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("force_path_style", &self.force_path_style)
            .finish_non_exhaustive()
    }
}

impl Default for S3Section {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            prefix: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            secret_access_key_file: None,
            force_path_style: true,
            connect_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(10),
            max_attempts: 3,
            cleanup_window: Duration::from_secs(5 * 60),
        }
    }
}

/// `[lock]`: the maildrop lock.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockSection {
    /// `in-process` (one process only) or `redis` (shared by every pod).
    pub backend: LockBackend,
    pub redis: RedisSection,
}

impl Default for LockSection {
    fn default() -> Self {
        Self {
            backend: LockBackend::InProcess,
            redis: RedisSection::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LockBackend {
    InProcess,
    Redis,
}

/// `[limits]`: where connection and session counts, login penalties and LOGIN-DELAY are
/// kept.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// `in-process` (one process) or `redis` (shared by every pod).
    pub backend: LockBackend,
    pub redis: RedisSection,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            backend: LockBackend::InProcess,
            redis: RedisSection::default(),
        }
    }
}

/// `[lock.redis]` and `[limits.redis]`: Redis or Redis Cluster.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    /// One URL (`redis://host:6379`, `rediss://…` for TLS), or the seed nodes of a cluster.
    pub urls: Vec<String>,
    /// Whether `urls` are Redis Cluster nodes.
    pub cluster: bool,
    /// Prefix of every key cloudpop writes.
    pub key_prefix: String,
    /// Time allowed for one Redis command.
    #[serde(with = "duration")]
    pub command_timeout: Duration,
}

impl std::fmt::Debug for RedisSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may carry a password.
        f.debug_struct("RedisSection")
            .field("urls", &format_args!("[{} url(s)]", self.urls.len()))
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

impl Default for RedisSection {
    fn default() -> Self {
        Self {
            urls: vec!["redis://127.0.0.1:6379".into()],
            cluster: false,
            key_prefix: "cloudpop".into(),
            command_timeout: Duration::from_secs(2),
        }
    }
}

/// `[tls]`: certificates for STLS and POP3S.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain of the default certificate.
    pub cert: Option<PathBuf>,
    /// PEM private key of the default certificate.
    pub key: Option<PathBuf>,
    /// Certificates chosen by SNI, for tenant domains.
    pub sni: Vec<SniSection>,
    /// How often the PEM files are checked for changes (new handshakes use new files).
    #[serde(with = "duration")]
    pub reload_interval: Duration,
    /// Role `all` without `cert`/`key`: create a self-signed development certificate under
    /// `<data_dir>/tls` on first start.
    pub dev_certificate: bool,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            sni: Vec::new(),
            reload_interval: Duration::from_secs(10),
            dev_certificate: true,
        }
    }
}

/// One `[[tls.sni]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SniSection {
    /// Names served with this certificate: exact, or `*.example.com`.
    pub domains: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[shutdown]`: draining on SIGTERM (or SIGINT).
///
/// On the signal `/readyz` fails at once; after `ready_delay` the listeners close (new
/// connections are refused), idle sessions are closed with `-ERR [SYS/TEMP]` (LMTP: `421`),
/// and a session in the middle of a response finishes it and then closes, without UPDATE.
/// The process exits once every session has ended, and at the latest when `grace_period`
/// has passed since the signal.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSection {
    /// Longest time from the signal to the exit (Kubernetes: keep it below
    /// `terminationGracePeriodSeconds` minus any preStop sleep).
    #[serde(with = "duration")]
    pub grace_period: Duration,
    /// Time between readiness failing and the listeners closing, so that load balancers
    /// that poll `/readyz` stop sending new connections first. Zero on Kubernetes with a
    /// preStop sleep (the endpoint is removed before the signal).
    #[serde(with = "duration")]
    pub ready_delay: Duration,
}

impl Default for ShutdownSection {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(25),
            ready_delay: Duration::ZERO,
        }
    }
}

/// `[telemetry]`: traces exported over OTLP/gRPC. Off unless `otlp_endpoint` is set.
/// Metrics are always served on the admin port (`/metrics`); logs are `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// The OTLP/gRPC endpoint of a collector, `http://otel-collector:4317` (or `https://`);
    /// empty: no traces.
    pub otlp_endpoint: String,
    /// Share of new traces kept, 0.0 to 1.0. A trace continued from a caller (the auth
    /// service's spans of a POP3 login) follows the caller's decision.
    pub sampling_ratio: f64,
    /// `service.name` of the spans. Empty: `cloudpop-<role>` (`cloudpop-pop3`, …).
    pub service_name: String,
    /// More resource attributes, e.g. `{ "deployment.environment" = "prod" }`.
    pub resource_attributes: BTreeMap<String, String>,
    /// Longest time one export may take; a slow collector loses spans, never sessions.
    #[serde(with = "duration")]
    pub export_timeout: Duration,
    /// How often finished spans are sent.
    #[serde(with = "duration")]
    pub export_interval: Duration,
    /// Finished spans held while waiting for export; more are dropped.
    pub max_queue_size: usize,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            sampling_ratio: 1.0,
            service_name: String::new(),
            resource_attributes: BTreeMap::new(),
            export_timeout: Duration::from_secs(5),
            export_interval: Duration::from_secs(5),
            max_queue_size: 2048,
        }
    }
}

impl TelemetrySection {
    /// The trace export settings, or `None` when traces are off. `role` names the default
    /// service.
    pub fn trace_settings(&self, role: &str) -> Option<cloudpop_telemetry::TraceSettings> {
        if self.otlp_endpoint.is_empty() {
            return None;
        }
        let service_name = if self.service_name.is_empty() {
            format!("cloudpop-{role}")
        } else {
            self.service_name.clone()
        };
        Some(cloudpop_telemetry::TraceSettings {
            endpoint: self.otlp_endpoint.clone(),
            sampling_ratio: self.sampling_ratio,
            service_name,
            resource_attributes: self
                .resource_attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            export_timeout: self.export_timeout,
            export_interval: self.export_interval,
            max_queue_size: self.max_queue_size,
        })
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
    pub fn pop3_config(&self) -> Result<cloudpop_pop3::Pop3Config, String> {
        let p = &self.pop3;
        let proxy_protocol = if p.proxy_protocol {
            let trusted = cloudpop_pop3::proxy_protocol::TrustedNetworks::try_from(
                &p.proxy_trusted_networks[..],
            )
            .map_err(|e| format!("pop3.proxy_trusted_networks: {e}"))?;
            Some(trusted)
        } else {
            None
        };
        let sasl_mechanisms = sasl_mechanisms(&p.sasl_mechanisms)?;
        Ok(cloudpop_pop3::Pop3Config {
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
            max_sasl_line_length: p.max_sasl_line_length,
            offer_cleartext_without_tls: p.offer_cleartext_without_tls,
            sasl_mechanisms,
            proxy_protocol,
            proxy_header_timeout: p.proxy_header_timeout,
            login_timeout: p.login_timeout,
            max_connections_per_ip: p.max_connections_per_ip,
            max_sessions_per_user: p.max_sessions_per_user,
            login_throttle: p.login_throttle(),
            login_deadline: p.login_deadline,
        })
    }

    /// LMTP settings for the delivery crate.
    pub fn lmtp_config(&self) -> cloudpop_lmtp::LmtpConfig {
        let l = &self.lmtp;
        cloudpop_lmtp::LmtpConfig {
            hostname: l.hostname.clone(),
            max_message_size: l.max_message_size,
            max_in_flight_bytes: l.max_in_flight_bytes,
            max_recipients: l.max_recipients,
            max_line_length: l.max_line_length,
            idle_timeout: l.idle_timeout,
            data_timeout: l.data_timeout,
            max_connections: l.max_connections,
        }
    }

    /// Checks every rule that types alone don't; the message names the option.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.pop3;
        let rules = [
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
                p.login_deadline >= Duration::from_millis(100),
                "pop3.login_deadline must be at least 100ms",
            ),
            (
                p.auth_free_attempts_per_login >= 1,
                "pop3.auth_free_attempts_per_login must be at least 1",
            ),
            (
                p.auth_free_attempts_per_ip >= 1,
                "pop3.auth_free_attempts_per_ip must be at least 1",
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
            (
                self.lmtp.max_in_flight_bytes >= self.lmtp_config().min_in_flight_bytes(),
                "lmtp.max_in_flight_bytes must be at least twice lmtp.max_message_size plus \
                 65536, so that a message of the largest size can be received",
            ),
            (
                self.lmtp.data_timeout >= Duration::from_secs(1),
                "lmtp.data_timeout must be at least 1s",
            ),
            (
                (1..=256).contains(&self.users.password_check_threads),
                "users.password_check_threads must be between 1 and 256",
            ),
            (
                RemovalLimit::new(self.users.max_removed_fraction).is_ok(),
                "users.max_removed_fraction must be between 0 and 1",
            ),
            (
                self.auth.max_attempts >= 1,
                "auth.max_attempts must be at least 1",
            ),
            (
                self.auth.timeout >= Duration::from_millis(10),
                "auth.timeout must be at least 10ms",
            ),
            (
                self.store.backend != StoreBackend::S3 || !self.store.s3.bucket.is_empty(),
                "store.s3.bucket is required when store.backend = \"s3\"",
            ),
            (
                self.store.s3.max_attempts >= 1,
                "store.s3.max_attempts must be at least 1",
            ),
            (
                self.store.s3.cleanup_window >= Duration::from_secs(1),
                "store.s3.cleanup_window must be at least 1s",
            ),
            (
                self.lock.backend != LockBackend::Redis || !self.lock.redis.urls.is_empty(),
                "lock.redis.urls must name at least one server when lock.backend = \"redis\"",
            ),
            (
                self.lock.redis.command_timeout >= Duration::from_millis(10),
                "lock.redis.command_timeout must be at least 10ms",
            ),
        ];
        let t = &self.telemetry;
        let more_rules = [
            (
                self.shutdown.grace_period >= Duration::from_secs(1),
                "shutdown.grace_period must be at least 1s",
            ),
            (
                self.shutdown.ready_delay < self.shutdown.grace_period,
                "shutdown.ready_delay must be shorter than shutdown.grace_period",
            ),
            (
                (0.0..=1.0).contains(&t.sampling_ratio),
                "telemetry.sampling_ratio must be between 0.0 and 1.0",
            ),
            (
                t.otlp_endpoint.is_empty()
                    || t.otlp_endpoint.starts_with("http://")
                    || t.otlp_endpoint.starts_with("https://"),
                "telemetry.otlp_endpoint must be an http:// or https:// URL (or empty: no traces)",
            ),
            (
                t.export_timeout >= Duration::from_millis(100),
                "telemetry.export_timeout must be at least 100ms",
            ),
            (
                t.export_interval >= Duration::from_millis(10),
                "telemetry.export_interval must be at least 10ms",
            ),
            (
                t.max_queue_size >= 1,
                "telemetry.max_queue_size must be at least 1",
            ),
        ];
        if let Some((_, message)) = rules.iter().chain(&more_rules).find(|(ok, _)| !ok) {
            return Err((*message).to_owned());
        }
        sanity::check(self)?;
        self.pop3_config().map(|_| ())
    }
}
