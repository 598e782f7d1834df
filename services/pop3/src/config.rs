//! Settings of the POP3 front-end. Parsed and validated by the binary; defaults here.

use std::time::Duration;

use cloudpop_limits::LoginThrottle;

use crate::proxy_protocol::TrustedNetworks;
use crate::sasl::Mechanism;

/// RFC 2449 EXPIRE as advertised before login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpirePolicy {
    Never,
    Days(u32),
}

/// POP3 limits and behaviour. Every field is a documented configuration option.
#[derive(Debug, Clone)]
pub struct Pop3Config {
    /// Name used in the greeting and the APOP timestamp.
    pub hostname: String,
    /// Longest command line in octets, CRLF included (RFC 2449 §4: at least 255).
    pub max_line_length: usize,
    /// Failed logins on one connection before it is closed.
    pub max_auth_failures: u32,
    /// Consecutive invalid commands before the connection is closed.
    pub max_bad_commands: u32,
    /// Idle time allowed before login.
    pub idle_timeout_authorization: Duration,
    /// Idle time allowed after login (RFC 1939 §3: at least 10 minutes).
    pub idle_timeout_transaction: Duration,
    /// Time allowed for the client to accept one buffer of output.
    pub write_timeout: Duration,
    /// Lifetime of a maildrop lease; it is renewed every third of it.
    pub lock_ttl: Duration,
    /// Connections served at once. At the cap, the connection not logged in that has been
    /// idle the longest is closed to make room; only when all are logged in is a new one
    /// refused (`-ERR [SYS/TEMP]` on plain POP3, a bare close on POP3S).
    pub max_connections: usize,
    /// Size of the buffer a message streams through, per RETR/TOP in flight.
    pub stream_buffer: usize,
    /// LOGIN-DELAY advertised before login, in seconds (RFC 2449 §6.8).
    pub login_delay: u64,
    /// EXPIRE advertised before login (RFC 2449 §6.7).
    pub expire: ExpirePolicy,
    /// Longest `AUTH` line or SASL response, CRLF included (bearer tokens are kilobytes).
    pub max_sasl_line_length: usize,
    /// Advertise USER and the SASL mechanisms that send a password or token (PLAIN, LOGIN,
    /// OAUTHBEARER, XOAUTH2) on connections without TLS. Whether a login is accepted there
    /// is still each tenant's policy.
    pub offer_cleartext_without_tls: bool,
    /// SASL mechanisms offered (and accepted) by AUTH. CRAM-MD5 is also offered only when
    /// some user has a CRAM-MD5 secret; those that send a password or token only where
    /// cleartext is offered.
    pub sasl_mechanisms: Vec<Mechanism>,
    /// PROXY protocol: the networks whose connections must start with a v1 or v2 header.
    /// Everyone else connects directly and is refused if they send one. `None`: off.
    pub proxy_protocol: Option<TrustedNetworks>,
    /// Time a trusted proxy has to send its PROXY header.
    pub proxy_header_timeout: Duration,
    /// Total time allowed before login, however active the client is (slowloris guard).
    pub login_timeout: Duration,
    /// Concurrent connections per client address (IPv6: per /64), across all pods.
    pub max_connections_per_ip: u32,
    /// Concurrent logged-in sessions per user, across all pods.
    pub max_sessions_per_user: u32,
    /// How login attempts are spaced per login and per client network, checked before the
    /// credential is.
    pub login_throttle: LoginThrottle,
    /// Time the backend calls of one login may take together (throttle, credential check,
    /// LOGIN-DELAY, session cap, maildrop lock, listing), the wait for a turn excluded.
    pub login_deadline: Duration,
}

impl Default for Pop3Config {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            max_line_length: 1024,
            max_auth_failures: 3,
            max_bad_commands: 20,
            idle_timeout_authorization: Duration::from_secs(60),
            idle_timeout_transaction: Duration::from_secs(600),
            write_timeout: Duration::from_secs(60),
            lock_ttl: Duration::from_secs(60),
            max_connections: 1024,
            stream_buffer: 64 * 1024,
            login_delay: 0,
            expire: ExpirePolicy::Never,
            max_sasl_line_length: 16 * 1024,
            offer_cleartext_without_tls: false,
            sasl_mechanisms: Mechanism::OFFERED_BY_DEFAULT.to_vec(),
            proxy_protocol: None,
            proxy_header_timeout: Duration::from_secs(5),
            login_timeout: Duration::from_secs(120),
            max_connections_per_ip: 20,
            max_sessions_per_user: 5,
            login_throttle: LoginThrottle::default(),
            login_deadline: Duration::from_secs(5),
        }
    }
}
