//! The POP3 front-end's metric families, registered on the registry the binary creates and
//! passed in through [`Pop3Deps`](crate::Pop3Deps).
//!
//! Labels are bounded: `listener` is `plain` (port 110, STLS) or `tls` (port 995);
//! `command` is a POP3 command name (or `invalid` for a line that did not parse, `SASL` for
//! a SASL response line); `mechanism` is `PASS` (USER/PASS, PLAIN, LOGIN), `APOP`,
//! `CRAM-MD5`, `OAUTHBEARER` or `XOAUTH2`. No user names, no message ids.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Every label value of `listener`.
pub(crate) const LISTENERS: [&str; 2] = ["plain", "tls"];

/// Every outcome a session can end with (see the session-end log line).
pub(crate) const SESSION_OUTCOMES: [&str; 12] = [
    "closed",
    "too_many_errors",
    "dropped",
    "idle_timeout",
    "login_timeout",
    "write_timeout",
    "shutdown",
    "lock_lost",
    "store_failed",
    "tls_failed",
    "proxy_refused",
    "shed",
];

/// Latency buckets in seconds: 0.5 ms to ~16 s, doubling.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 16).unwrap_or_default()
}

/// The POP3 metric families. Cloning is cheap (the families are shared).
#[derive(Debug, Clone)]
pub struct Pop3Metrics {
    pub(crate) connections_active: IntGaugeVec,
    pub(crate) connections: IntCounterVec,
    pub(crate) connections_refused: IntCounterVec,
    pub(crate) connections_shed: IntCounter,
    pub(crate) sessions_active: IntGaugeVec,
    pub(crate) sessions: IntCounterVec,
    pub(crate) session_duration: Histogram,
    pub(crate) auth_attempts: IntCounterVec,
    pub(crate) commands: IntCounterVec,
    pub(crate) command_duration: HistogramVec,
    pub(crate) sent_bytes: IntCounterVec,
    pub(crate) retrieved: IntCounter,
    pub(crate) deleted: IntCounter,
    pub(crate) tls_handshakes: IntCounterVec,
    pub(crate) certificate_reloads: IntCounterVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

impl Pop3Metrics {
    /// Creates the families and registers them on `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            connections_active: IntGaugeVec::new(
                Opts::new(
                    "cloudpop_pop3_connections_active",
                    "POP3 connections open now, by listener (plain, tls).",
                ),
                &["listener"],
            )?,
            connections: counter(
                "cloudpop_pop3_connections_total",
                "TCP connections accepted on the POP3 listeners, by listener (plain, tls); \
                 those then refused are also in cloudpop_pop3_connections_refused_total.",
                &["listener"],
            )?,
            connections_refused: counter(
                "cloudpop_pop3_connections_refused_total",
                "POP3 connections refused before the greeting, by reason: max_connections \
                 (every place is held by a logged-in session), max_connections_per_ip, \
                 proxy_header (a trusted proxy sent no valid PROXY header).",
                &["reason"],
            )?,
            connections_shed: IntCounter::new(
                "cloudpop_pop3_connections_shed_total",
                "POP3 connections not logged in that were closed to make room for a new \
                 connection while max_connections were open (the one idle the longest first).",
            )?,
            sessions_active: IntGaugeVec::new(
                Opts::new(
                    "cloudpop_pop3_sessions_active",
                    "POP3 sessions logged in now (holding their maildrop's lock), by listener.",
                ),
                &["listener"],
            )?,
            sessions: counter(
                "cloudpop_pop3_sessions_total",
                "POP3 sessions ended, by outcome: closed (QUIT answered; the only way \
                 deletions happen), too_many_errors (closed by the server after too many \
                 failed logins or invalid commands), dropped (the client went away without \
                 QUIT), idle_timeout, login_timeout, write_timeout, shutdown (closed by a \
                 drain), lock_lost, store_failed (the store failed mid-message), tls_failed, \
                 proxy_refused, shed (closed before login to make room for a new connection).",
                &["outcome"],
            )?,
            session_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "cloudpop_pop3_session_duration_seconds",
                    "How long POP3 sessions lasted, from accept to close.",
                )
                .buckets(prometheus::exponential_buckets(0.01, 4.0, 10)?),
            )?,
            auth_attempts: counter(
                "cloudpop_pop3_auth_attempts_total",
                "Login attempts checked by the authenticator, by mechanism (PASS, APOP, \
                 CRAM-MD5, OAUTHBEARER, XOAUTH2) and outcome (success, bad_credentials, \
                 login_too_soon, temporary_failure, permanent_failure, encryption_required).",
                &["mechanism", "outcome"],
            )?,
            commands: counter(
                "cloudpop_pop3_commands_total",
                "POP3 commands answered, by command and outcome (ok for +OK, err for -ERR).",
                &["command", "outcome"],
            )?,
            command_duration: HistogramVec::new(
                HistogramOpts::new(
                    "cloudpop_pop3_command_duration_seconds",
                    "Time from reading a POP3 command to having written its whole answer \
                     (streamed message bodies included), by command.",
                )
                .buckets(latency_buckets()),
                &["command"],
            )?,
            sent_bytes: counter(
                "cloudpop_pop3_sent_bytes_total",
                "Bytes written to POP3 clients (before TLS), by listener.",
                &["listener"],
            )?,
            retrieved: IntCounter::new(
                "cloudpop_pop3_messages_retrieved_total",
                "RETR commands answered +OK (each sends one whole message).",
            )?,
            deleted: IntCounter::new(
                "cloudpop_pop3_messages_deleted_total",
                "Messages deleted at UPDATE (after QUIT).",
            )?,
            tls_handshakes: counter(
                "cloudpop_pop3_tls_handshakes_total",
                "TLS handshakes, by mode (stls, implicit) and outcome (ok, failed, timeout).",
                &["mode", "outcome"],
            )?,
            certificate_reloads: counter(
                "cloudpop_certificate_reloads_total",
                "Reloads of the TLS certificate files after they changed, by outcome: success \
                 (new handshakes use them), failure (the certificates in use stay; retried \
                 every tls.reload_interval until the files are fixed).",
                &["outcome"],
            )?,
        };
        metrics.initialise();
        for collector in metrics.collectors() {
            registry.register(collector)?;
        }
        Ok(metrics)
    }

    /// Creates the series whose label values are known up front, so they read 0 rather than
    /// being absent until the first event.
    fn initialise(&self) {
        for listener in LISTENERS {
            self.connections_active.with_label_values(&[listener]);
            self.connections.with_label_values(&[listener]);
            self.sessions_active.with_label_values(&[listener]);
            self.sent_bytes.with_label_values(&[listener]);
        }
        for outcome in SESSION_OUTCOMES {
            self.sessions.with_label_values(&[outcome]);
        }
        for reason in ["max_connections", "max_connections_per_ip", "proxy_header"] {
            self.connections_refused.with_label_values(&[reason]);
        }
        for outcome in ["success", "failure"] {
            self.certificate_reloads.with_label_values(&[outcome]);
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.connections_active.clone()),
            Box::new(self.connections.clone()),
            Box::new(self.connections_refused.clone()),
            Box::new(self.connections_shed.clone()),
            Box::new(self.sessions_active.clone()),
            Box::new(self.sessions.clone()),
            Box::new(self.session_duration.clone()),
            Box::new(self.auth_attempts.clone()),
            Box::new(self.commands.clone()),
            Box::new(self.command_duration.clone()),
            Box::new(self.sent_bytes.clone()),
            Box::new(self.retrieved.clone()),
            Box::new(self.deleted.clone()),
            Box::new(self.tls_handshakes.clone()),
            Box::new(self.certificate_reloads.clone()),
        ]
    }

    /// The gauge of open connections on `listener`.
    pub(crate) fn connection_gauge(&self, listener: &str) -> IntGauge {
        self.connections_active.with_label_values(&[listener])
    }
}

/// Keeps a gauge raised for as long as it lives (also when a task is cancelled).
#[derive(Debug)]
pub(crate) struct Raised(IntGauge);

impl Raised {
    pub(crate) fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        self.0.dec();
    }
}
