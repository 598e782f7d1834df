//! The LMTP endpoint's metric families, passed in through [`LmtpDeps`](crate::LmtpDeps).
//! Labels are bounded: no addresses, no maildrops, no message ids.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The LMTP metric families. Cloning is cheap (the families are shared).
#[derive(Debug, Clone)]
pub struct LmtpMetrics {
    pub(crate) connections_active: IntGauge,
    pub(crate) connections_refused: IntCounter,
    pub(crate) sessions: IntCounterVec,
    pub(crate) recipients: IntCounterVec,
    pub(crate) deliveries: IntCounterVec,
    pub(crate) received_bytes: IntCounter,
    pub(crate) in_flight_bytes: IntGauge,
    pub(crate) messages_over_budget: IntCounter,
}

impl LmtpMetrics {
    /// Creates the families and registers them on `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            connections_active: IntGauge::new(
                "cloudpop_lmtp_connections_active",
                "LMTP connections open now.",
            )?,
            connections_refused: IntCounter::new(
                "cloudpop_lmtp_connections_refused_total",
                "LMTP connections refused with 421 because max_connections were open.",
            )?,
            sessions: IntCounterVec::new(
                Opts::new(
                    "cloudpop_lmtp_sessions_total",
                    "LMTP sessions ended, by outcome: quit, client_closed (between commands), \
                     shutdown (closed by a drain), idle_timeout, data_timeout, closed_during_data, \
                     io_error.",
                ),
                &["outcome"],
            )?,
            recipients: IntCounterVec::new(
                Opts::new(
                    "cloudpop_lmtp_recipients_total",
                    "RCPT TO commands, by outcome: accepted, unknown (550), deferred (450, \
                     unknown while the user directory is in doubt), lookup_failed (451, the \
                     auth service did not answer), too_many (452).",
                ),
                &["outcome"],
            )?,
            deliveries: IntCounterVec::new(
                Opts::new(
                    "cloudpop_lmtp_deliveries_total",
                    "Per-recipient delivery replies after DATA, by outcome: delivered (250, \
                     stored durably), storage_failed (451, the MTA retries), too_large (552), \
                     insufficient_storage (452, the memory budget was spent; the MTA retries).",
                ),
                &["outcome"],
            )?,
            received_bytes: IntCounter::new(
                "cloudpop_lmtp_received_bytes_total",
                "Message bytes received in DATA (as stored, before trace header fields).",
            )?,
            in_flight_bytes: IntGauge::new(
                "cloudpop_lmtp_in_flight_bytes",
                "Octets of message buffers LMTP connections hold now, out of \
                 lmtp.max_in_flight_bytes.",
            )?,
            messages_over_budget: IntCounter::new(
                "cloudpop_lmtp_messages_over_budget_total",
                "Messages refused with 452 4.3.1 because lmtp.max_in_flight_bytes was spent.",
            )?,
        };
        for outcome in SESSION_OUTCOMES {
            metrics.sessions.with_label_values(&[outcome]);
        }
        for outcome in [
            "accepted",
            "unknown",
            "deferred",
            "lookup_failed",
            "too_many",
        ] {
            metrics.recipients.with_label_values(&[outcome]);
        }
        for outcome in DELIVERY_OUTCOMES {
            metrics.deliveries.with_label_values(&[outcome]);
        }
        registry.register(Box::new(metrics.connections_active.clone()))?;
        registry.register(Box::new(metrics.connections_refused.clone()))?;
        registry.register(Box::new(metrics.sessions.clone()))?;
        registry.register(Box::new(metrics.recipients.clone()))?;
        registry.register(Box::new(metrics.deliveries.clone()))?;
        registry.register(Box::new(metrics.received_bytes.clone()))?;
        registry.register(Box::new(metrics.in_flight_bytes.clone()))?;
        registry.register(Box::new(metrics.messages_over_budget.clone()))?;
        Ok(metrics)
    }
}

/// Every outcome an LMTP session can end with.
const SESSION_OUTCOMES: [&str; 7] = [
    "quit",
    "client_closed",
    "shutdown",
    "idle_timeout",
    "data_timeout",
    "closed_during_data",
    "io_error",
];

/// Every outcome of a recipient's delivery after DATA.
const DELIVERY_OUTCOMES: [&str; 4] = [
    "delivered",
    "storage_failed",
    "too_large",
    "insufficient_storage",
];
