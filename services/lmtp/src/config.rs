//! Settings of the LMTP endpoint. Parsed by the binary; defaults and validation here.

use std::time::Duration;

/// Limits and names of the LMTP endpoint. Every field is a documented configuration option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmtpConfig {
    /// Name in the greeting, the LHLO reply and the `Received:` header field. Printable
    /// ASCII without spaces.
    pub hostname: String,
    /// Largest message accepted, in octets as stored: after unstuffing and with every line
    /// ending a CRLF (advertised as `SIZE`, RFC 1870). A message is held in memory while it
    /// arrives, so this also bounds the memory of one connection.
    pub max_message_size: u64,
    /// Octets of message buffers all connections together may hold at once. A message
    /// whose buffer cannot grow within it is read to its end, discarded, and refused with
    /// `452 4.3.1` for every recipient; the client retries later. At least
    /// [`min_in_flight_bytes`](Self::min_in_flight_bytes), so that a message of the largest
    /// size can always be received on its own.
    pub max_in_flight_bytes: u64,
    /// Recipients accepted per transaction (RFC 5321 §4.5.3.1.8: at least 100); more are
    /// answered `452 4.5.3`.
    pub max_recipients: usize,
    /// Longest command line in octets, CRLF included (RFC 5321 §4.5.3.1.4: at least 512).
    /// Message lines are not limited, other than by `max_message_size`.
    pub max_line_length: usize,
    /// Time allowed waiting for the client (a command, a piece of message, or a write);
    /// then `421 4.4.2` and the connection is closed (RFC 5321 §4.5.3.2.7: at least 5
    /// minutes between commands).
    pub idle_timeout: Duration,
    /// Time allowed for the whole DATA phase, from the `354` reply to the end marker; then
    /// `421 4.4.2`, the connection is closed and nothing is stored. Bounds a client that
    /// sends one octet just often enough to never be idle.
    pub data_timeout: Duration,
    /// Connections served at once; more are answered `421 4.3.2` and closed.
    pub max_connections: usize,
}

impl Default for LmtpConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".to_owned(),
            max_message_size: 64 * 1024 * 1024,
            max_in_flight_bytes: 256 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: 2048,
            idle_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
            max_connections: 256,
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("lmtp hostname must be 1 to 255 printable ASCII characters without spaces")]
    Hostname,
    #[error("lmtp {field} must be at least {min}")]
    TooSmall { field: &'static str, min: u64 },
    #[error(
        "lmtp max_in_flight_bytes must be at least {min}: twice max_message_size plus 64 KiB, \
         so that a message of the largest size can be received"
    )]
    BudgetTooSmall { min: u64 },
}

/// Room for the trace fields in front of a message: every name in them is bounded
/// (addresses at 254 octets, domains at 255), so they stay well under this.
const TRACE_FIELDS_ROOM: u64 = 32 * 1024;

/// Smallest command line limit (RFC 5321 §4.5.3.1.4: 512 octets including CRLF).
const MIN_LINE_LENGTH: usize = 512;

impl LmtpConfig {
    /// The smallest `max_in_flight_bytes` that works: while a buffer grows, its old and
    /// its new allocation are both held, so a message of the largest size needs up to
    /// twice its size (trace fields included) for a moment.
    pub fn min_in_flight_bytes(&self) -> u64 {
        self.max_message_size
            .saturating_add(TRACE_FIELDS_ROOM)
            .saturating_mul(2)
    }

    /// Checks that every value can work; called once at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let h = &self.hostname;
        if h.is_empty() || h.len() > 255 || !h.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::Hostname);
        }
        let at_least = |field, value: u64, min: u64| {
            if value < min {
                Err(ConfigError::TooSmall { field, min })
            } else {
                Ok(())
            }
        };
        at_least("max_message_size", self.max_message_size, 1)?;
        at_least("max_recipients", self.max_recipients as u64, 1)?;
        at_least(
            "max_line_length",
            self.max_line_length as u64,
            MIN_LINE_LENGTH as u64,
        )?;
        at_least("idle_timeout (ms)", self.idle_timeout.as_millis() as u64, 1)?;
        at_least("data_timeout (ms)", self.data_timeout.as_millis() as u64, 1)?;
        at_least("max_connections", self.max_connections as u64, 1)?;
        let min = self.min_in_flight_bytes();
        if self.max_in_flight_bytes < min {
            return Err(ConfigError::BudgetTooSmall { min });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(LmtpConfig::default().validate(), Ok(()));
    }

    #[test]
    fn bad_values_are_refused() {
        let bad_host = LmtpConfig {
            hostname: "a b".into(),
            ..LmtpConfig::default()
        };
        assert_eq!(bad_host.validate(), Err(ConfigError::Hostname));
        let short = LmtpConfig {
            max_line_length: 100,
            ..LmtpConfig::default()
        };
        assert!(matches!(
            short.validate(),
            Err(ConfigError::TooSmall { .. })
        ));
        let none = LmtpConfig {
            max_connections: 0,
            ..LmtpConfig::default()
        };
        assert!(matches!(none.validate(), Err(ConfigError::TooSmall { .. })));
        let no_time = LmtpConfig {
            data_timeout: Duration::ZERO,
            ..LmtpConfig::default()
        };
        assert!(matches!(
            no_time.validate(),
            Err(ConfigError::TooSmall { .. })
        ));
    }

    #[test]
    fn the_budget_must_fit_a_message_of_the_largest_size() {
        let config = LmtpConfig {
            max_message_size: 1_000_000,
            max_in_flight_bytes: 2_065_535,
            ..LmtpConfig::default()
        };
        assert_eq!(
            config.validate(),
            Err(ConfigError::BudgetTooSmall { min: 2_065_536 })
        );
        let config = LmtpConfig {
            max_in_flight_bytes: 2_065_536,
            ..config
        };
        assert_eq!(config.validate(), Ok(()));
    }
}
