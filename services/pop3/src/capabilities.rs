//! The CAPA response (RFC 2449 §5), before and after login.

use cloudpop_auth::Policy;

use crate::config::{ExpirePolicy, Pop3Config};
use crate::reply::MultilineBody;

/// Capabilities in the AUTHORIZATION state.
///
/// LOGIN-DELAY and EXPIRE carry the `USER` suffix where a number is advertised, because each
/// tenant's policy may differ (RFC 2449 §6.7, §6.8); the exact value follows after login.
pub fn before_login(config: &Pop3Config) -> MultilineBody {
    let mut body = common();
    body.push_line("USER");
    body.push_line(format_args!("LOGIN-DELAY {} USER", config.login_delay));
    match config.expire {
        ExpirePolicy::Never => body.push_line("EXPIRE NEVER"),
        ExpirePolicy::Days(days) => body.push_line(format_args!("EXPIRE {days} USER")),
    }
    body.push_line("IMPLEMENTATION cloudpop");
    body
}

/// Capabilities in the TRANSACTION state, with the logged-in user's own policy.
///
/// Everything announced before login stays announced (RFC 2449 §5).
pub fn after_login(policy: &Policy) -> MultilineBody {
    let mut body = common();
    body.push_line("USER");
    body.push_line(format_args!("LOGIN-DELAY {}", policy.login_delay.as_secs()));
    match policy.expire_days {
        None => body.push_line("EXPIRE NEVER"),
        Some(days) => body.push_line(format_args!("EXPIRE {days}")),
    }
    body.push_line("IMPLEMENTATION cloudpop");
    body
}

fn common() -> MultilineBody {
    let mut body = MultilineBody::new();
    for capability in ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"] {
        body.push_line(capability);
    }
    body
}
