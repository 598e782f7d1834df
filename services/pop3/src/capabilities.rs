//! The CAPA response (RFC 2449 §5), before and after login.

use cloudpop_auth::Policy;

use crate::config::{ExpirePolicy, Pop3Config};
use crate::reply::MultilineBody;
use crate::sasl::Mechanism;

/// What the connection may use right now, which CAPA must reflect exactly.
#[derive(Debug, Clone, Default)]
pub struct CapaContext {
    /// USER/PASS may be used (TLS is active, or cleartext is offered without it).
    pub user: bool,
    /// STLS is available (configured, not yet active, not logged in).
    pub stls: bool,
    /// SASL mechanisms that may be used now.
    pub mechanisms: Vec<Mechanism>,
}

/// Capabilities in the AUTHORIZATION state.
///
/// LOGIN-DELAY and EXPIRE carry the `USER` suffix where a number is advertised, because each
/// tenant's policy may differ (RFC 2449 §6.7, §6.8); the exact value follows after login.
pub fn before_login(config: &Pop3Config, context: &CapaContext) -> MultilineBody {
    let mut body = common(context);
    if context.stls {
        // RFC 2595 §4.
        body.push_line("STLS");
    }
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
/// What was announced before login stays announced (RFC 2449 §5), except STLS, which is an
/// AUTHORIZATION-state command (RFC 2595 §4).
pub fn after_login(policy: &Policy, context: &CapaContext) -> MultilineBody {
    let mut body = common(context);
    body.push_line(format_args!("LOGIN-DELAY {}", policy.login_delay.as_secs()));
    match policy.expire_days {
        None => body.push_line("EXPIRE NEVER"),
        Some(days) => body.push_line(format_args!("EXPIRE {days}")),
    }
    body.push_line("IMPLEMENTATION cloudpop");
    body
}

fn common(context: &CapaContext) -> MultilineBody {
    let mut body = MultilineBody::new();
    for capability in ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"] {
        body.push_line(capability);
    }
    if context.user {
        body.push_line("USER");
    }
    if !context.mechanisms.is_empty() {
        let names: Vec<&str> = context.mechanisms.iter().map(|m| m.name()).collect();
        // RFC 5034 §6.
        body.push_line(format_args!("SASL {}", names.join(" ")));
    }
    body
}
