//! Rules that reject values which parse but make no sense: a zero where zero would stop
//! the service or spin, a log level that would silently log nothing, a certificate without
//! its key, two listeners on one address.

use std::net::SocketAddr;
use std::time::Duration;

use super::Config;

/// The levels a `log.level` directive may name (`tracing`'s, plus `off`).
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks the rules; the message names the option.
pub fn check(config: &Config) -> Result<(), String> {
    tls_pair(config)?;
    log_level(&config.log.level)?;
    nonzero(config)?;
    distinct_listeners(config)
}

/// A certificate without its key (or the reverse) is a mistake, never a request for the
/// development certificate.
fn tls_pair(config: &Config) -> Result<(), String> {
    match (&config.tls.cert, &config.tls.key) {
        (Some(_), None) => Err("tls.cert is set but tls.key is not; set both or neither".into()),
        (None, Some(_)) => Err("tls.key is set but tls.cert is not; set both or neither".into()),
        _ => Ok(()),
    }
}

/// `LEVEL` or comma-separated `TARGET=LEVEL` directives. A bare word that is no level would
/// be read as a target with every level enabled for it and nothing else: almost certainly a
/// typo (`inof`), so it is refused.
fn log_level(level: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("log.level {level:?}: {why}"));
    if level.trim().is_empty() {
        return bad("empty; use a level such as \"info\"");
    }
    for directive in level.split(',').map(str::trim) {
        let (target, name) = match directive.rsplit_once('=') {
            Some((target, name)) => (Some(target.trim()), name.trim()),
            None => (None, directive),
        };
        if target.is_some_and(str::is_empty) {
            return bad("a directive has an empty target before '='");
        }
        if !LOG_LEVELS.contains(&name.to_ascii_lowercase().as_str()) {
            return bad(&format!(
                "{name:?} is not a level; use one of {} (or TARGET=LEVEL)",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

/// Timeouts and caps whose zero would refuse every client, time out every call, or spin.
fn nonzero(config: &Config) -> Result<(), String> {
    let p = &config.pop3;
    let ms = Duration::from_millis;
    let durations = [
        (
            "pop3.login_timeout",
            p.login_timeout,
            Duration::from_secs(1),
        ),
        ("pop3.proxy_header_timeout", p.proxy_header_timeout, ms(10)),
        (
            "lmtp.idle_timeout",
            config.lmtp.idle_timeout,
            Duration::from_secs(1),
        ),
        (
            "users.reload_interval",
            config.users.reload_interval,
            ms(10),
        ),
        ("tls.reload_interval", config.tls.reload_interval, ms(10)),
        (
            "store.s3.connect_timeout",
            config.store.s3.connect_timeout,
            ms(10),
        ),
        (
            "store.s3.operation_timeout",
            config.store.s3.operation_timeout,
            ms(10),
        ),
        (
            "limits.redis.command_timeout",
            config.limits.redis.command_timeout,
            ms(10),
        ),
        // Younger temp files may belong to a delivery of another process in progress.
        (
            "store.stale_temp_file_age",
            config.store.stale_temp_file_age,
            Duration::from_secs(60),
        ),
    ];
    for (name, value, min) in durations {
        if value < min {
            return Err(format!(
                "{name} must be at least {}",
                super::duration::format(min)
            ));
        }
    }
    let counts = [
        (
            "pop3.max_connections_per_ip",
            u64::from(p.max_connections_per_ip),
            1,
        ),
        (
            "pop3.max_sessions_per_user",
            u64::from(p.max_sessions_per_user),
            1,
        ),
        // RFC 5034 §4: a client may send AUTH lines of up to 255 octets.
        (
            "pop3.max_sasl_line_length",
            p.max_sasl_line_length as u64,
            255,
        ),
    ];
    for (name, value, min) in counts {
        if value < min {
            return Err(format!("{name} must be at least {min}"));
        }
    }
    Ok(())
}

/// Two listeners on one address would fail at bind time with only one of them named.
fn distinct_listeners(config: &Config) -> Result<(), String> {
    let listeners: [(&str, SocketAddr); 5] = [
        ("pop3.listen", config.pop3.listen),
        ("pop3.listen_tls", config.pop3.listen_tls),
        ("lmtp.listen", config.lmtp.listen),
        ("admin.listen", config.admin.listen),
        ("auth.listen", config.auth.listen),
    ];
    for (i, (a, addr_a)) in listeners.iter().enumerate() {
        for (b, addr_b) in &listeners[i + 1..] {
            // Port 0 asks the kernel for a free port: never a clash.
            if addr_a.port() != 0 && addr_a == addr_b {
                return Err(format!(
                    "{a} and {b} are both {addr_a}; give each its own port"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels() {
        for good in [
            "info",
            "WARN",
            "info,cloudpop_pop3=debug",
            "off",
            "h2=warn, info",
        ] {
            assert!(log_level(good).is_ok(), "{good}");
        }
        for bad in ["", "nonsense", "inof", "info,cloudpop=loud", "=debug"] {
            assert!(log_level(bad).is_err(), "{bad}");
        }
    }
}
