//! Settings of the LMTP endpoint. Parsed by the binary; defaults and validation here.

use std::time::Duration;

/// Limits and names of the LMTP endpoint. Every field is a documented configuration option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmtpConfig {
    /// Name in the greeting, the LHLO reply and the `Received:` header field. Printable
    /// ASCII without spaces.
    pub hostname: String,
    /// Largest message accepted, in octets after unstuffing (advertised as `SIZE`,
    /// RFC 1870). Messages are spooled in memory, so this also bounds memory per connection.
    pub max_message_size: u64,
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
    /// Connections served at once; more are answered `421 4.3.2` and closed.
    pub max_connections: usize,
}

impl Default for LmtpConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".to_owned(),
            max_message_size: 64 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: 2048,
            idle_timeout: Duration::from_secs(5 * 60),
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
}

/// Smallest command line limit (RFC 5321 §4.5.3.1.4: 512 octets including CRLF).
const MIN_LINE_LENGTH: usize = 512;

impl LmtpConfig {
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
        at_least("max_connections", self.max_connections as u64, 1)
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
    }
}
