//! Conversions between cloudpop's types and the gRPC messages, in both directions.
//!
//! Outgoing conversions cannot fail. Incoming ones validate every id, login and enum with
//! the same parsers the rest of cloudpop uses, so a confused or compromised peer cannot
//! smuggle an id into a storage key.

use std::time::Duration;

use cloudpop_maildrop::{MailboxId, MaildropKey, TenantId};
use cloudpop_proto::admin::v1 as admin_pb;
use cloudpop_proto::auth::v1 as pb;

use crate::authenticator::{AuthFailure, Policy, Principal};
use crate::directory::{TenantInfo, UserId, UserInfo};
use crate::login::Login;

/// Longest failure message taken from the server; longer ones are cut.
const MAX_MESSAGE_LEN: usize = 200;

/// Something the other side sent that does not validate. The message names the field and
/// the rule, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid response from the auth service: {0}")]
pub(crate) struct InvalidResponse(pub(crate) String);

fn invalid(field: &str, error: impl std::fmt::Display) -> InvalidResponse {
    InvalidResponse(format!("{field}: {error}"))
}

pub(crate) fn policy_to_proto(policy: &Policy) -> pb::Policy {
    pb::Policy {
        login_delay_seconds: policy.login_delay.as_secs(),
        expire_days: policy.expire_days,
        cleartext_allowed: policy.cleartext_allowed,
    }
}

pub(crate) fn policy_from_proto(policy: Option<pb::Policy>) -> Result<Policy, InvalidResponse> {
    let policy = policy.ok_or_else(|| invalid("policy", "missing"))?;
    Ok(Policy {
        login_delay: Duration::from_secs(policy.login_delay_seconds),
        expire_days: policy.expire_days,
        cleartext_allowed: policy.cleartext_allowed,
    })
}

pub(crate) fn principal_to_proto(principal: &Principal) -> pb::Principal {
    pb::Principal {
        tenant_id: principal.tenant.to_string(),
        user_id: principal.user.clone(),
        mailbox_id: principal.maildrop.mailbox.to_string(),
        login: principal.login.clone(),
        policy: Some(policy_to_proto(&principal.policy)),
    }
}

/// Validates a principal received from the auth service.
pub(crate) fn principal_from_proto(principal: pb::Principal) -> Result<Principal, InvalidResponse> {
    let tenant = TenantId::new(principal.tenant_id).map_err(|e| invalid("tenant_id", e))?;
    let mailbox = MailboxId::new(principal.mailbox_id).map_err(|e| invalid("mailbox_id", e))?;
    let user = UserId::new(principal.user_id).map_err(|e| invalid("user_id", e))?;
    let login = Login::parse(&principal.login).map_err(|e| invalid("login", e))?;
    Ok(Principal {
        maildrop: MaildropKey::new(tenant.clone(), mailbox),
        tenant,
        user: user.to_string(),
        login: login.to_string(),
        policy: policy_from_proto(principal.policy)?,
    })
}

pub(crate) fn failure_to_proto(failure: &AuthFailure) -> pb::Failure {
    let reason = match failure {
        AuthFailure::BadCredentials => pb::FailureReason::BadCredentials,
        AuthFailure::LoginTooSoon => pb::FailureReason::LoginTooSoon,
        AuthFailure::Temporary(_) => pb::FailureReason::Temporary,
        AuthFailure::Permanent(_) => pb::FailureReason::Permanent,
        AuthFailure::EncryptionRequired => pb::FailureReason::EncryptionRequired,
    };
    let message = match failure {
        AuthFailure::Temporary(message) | AuthFailure::Permanent(message) => message.clone(),
        other => other.to_string(),
    };
    pb::Failure {
        reason: reason.into(),
        message,
    }
}

/// The failure the server reported. An unknown reason is temporary: the check's outcome is
/// unknown, and only a definite "wrong credentials" may become `[AUTH]`.
pub(crate) fn failure_from_proto(failure: &pb::Failure) -> AuthFailure {
    let message = || safe_message(&failure.message);
    match pb::FailureReason::try_from(failure.reason) {
        Ok(pb::FailureReason::BadCredentials) => AuthFailure::BadCredentials,
        Ok(pb::FailureReason::LoginTooSoon) => AuthFailure::LoginTooSoon,
        Ok(pb::FailureReason::Permanent) => AuthFailure::Permanent(message()),
        Ok(pb::FailureReason::Temporary) => AuthFailure::Temporary(message()),
        Ok(pb::FailureReason::EncryptionRequired) => AuthFailure::EncryptionRequired,
        Ok(pb::FailureReason::Unspecified) | Err(_) => {
            AuthFailure::Temporary("auth service sent an unknown failure reason".to_owned())
        }
    }
}

/// A message from the network made safe to log or to put in a protocol line: printable ASCII
/// only (no CR or LF to inject a line with), and bounded.
pub(crate) fn safe_message(message: &str) -> String {
    message
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .take(MAX_MESSAGE_LEN)
        .collect()
}

pub(crate) fn tenant_to_proto(tenant: &TenantInfo) -> admin_pb::Tenant {
    admin_pb::Tenant {
        id: tenant.id.to_string(),
        domains: tenant.domains.clone(),
        policy: Some(policy_to_proto(&tenant.policy)),
    }
}

pub(crate) fn tenant_from_proto(tenant: admin_pb::Tenant) -> Result<TenantInfo, InvalidResponse> {
    let id = TenantId::new(tenant.id).map_err(|e| invalid("tenant id", e))?;
    let domains = tenant
        .domains
        .iter()
        .map(|d| crate::login::parse_domain(d).map_err(|e| invalid("domain", e)))
        .collect::<Result<_, _>>()?;
    Ok(TenantInfo {
        id,
        domains,
        policy: policy_from_proto(tenant.policy)?,
    })
}

pub(crate) fn user_to_proto(user: &UserInfo) -> admin_pb::User {
    admin_pb::User {
        login: user.login.to_string(),
        user_id: user.id.to_string(),
        tenant_id: user.tenant.to_string(),
        disabled: user.disabled,
        has_apop_secret: user.has_apop_secret,
        has_cram_secret: user.has_cram_secret,
    }
}

pub(crate) fn user_from_proto(user: admin_pb::User) -> Result<UserInfo, InvalidResponse> {
    Ok(UserInfo {
        login: Login::parse(&user.login).map_err(|e| invalid("login", e))?,
        id: UserId::new(user.user_id).map_err(|e| invalid("user_id", e))?,
        tenant: TenantId::new(user.tenant_id).map_err(|e| invalid("tenant_id", e))?,
        disabled: user.disabled,
        has_apop_secret: user.has_apop_secret,
        has_cram_secret: user.has_cram_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        let tenant = TenantId::new("acme").unwrap();
        Principal {
            tenant: tenant.clone(),
            user: "u-alice".into(),
            login: "Alice@acme.example".into(),
            maildrop: MaildropKey::new(tenant, MailboxId::new("u-alice").unwrap()),
            policy: Policy {
                login_delay: Duration::from_secs(300),
                expire_days: Some(30),
                cleartext_allowed: false,
            },
        }
    }

    #[test]
    fn principals_round_trip() {
        let p = principal();
        assert_eq!(principal_from_proto(principal_to_proto(&p)).unwrap(), p);
        let never = Principal {
            policy: Policy::default(),
            ..p
        };
        let wire = principal_to_proto(&never);
        assert_eq!(wire.policy.unwrap().expire_days, None);
        assert_eq!(principal_from_proto(wire).unwrap(), never);
    }

    #[test]
    fn crafted_ids_are_refused() {
        let good = principal_to_proto(&principal());
        let cases: Vec<(&str, pb::Principal)> = vec![
            (
                "tenant_id",
                pb::Principal {
                    tenant_id: "../x".into(),
                    ..good.clone()
                },
            ),
            (
                "tenant_id",
                pb::Principal {
                    tenant_id: String::new(),
                    ..good.clone()
                },
            ),
            (
                "mailbox_id",
                pb::Principal {
                    mailbox_id: "a/b".into(),
                    ..good.clone()
                },
            ),
            (
                "mailbox_id",
                pb::Principal {
                    mailbox_id: "a%2fb".into(),
                    ..good.clone()
                },
            ),
            (
                "mailbox_id",
                pb::Principal {
                    mailbox_id: "a\0b".into(),
                    ..good.clone()
                },
            ),
            (
                "user_id",
                pb::Principal {
                    user_id: "U".into(),
                    ..good.clone()
                },
            ),
            (
                "login",
                pb::Principal {
                    login: "x".into(),
                    ..good.clone()
                },
            ),
            (
                "policy",
                pb::Principal {
                    policy: None,
                    ..good.clone()
                },
            ),
        ];
        for (field, wire) in cases {
            let error = principal_from_proto(wire).unwrap_err();
            assert!(error.0.starts_with(field), "{error}");
        }
        let long = pb::Principal {
            mailbox_id: "a".repeat(65),
            ..good
        };
        assert!(principal_from_proto(long).is_err());
    }

    #[test]
    fn failures_round_trip_and_unknown_reasons_are_temporary() {
        for failure in [
            AuthFailure::BadCredentials,
            AuthFailure::LoginTooSoon,
            AuthFailure::Temporary("store down".into()),
            AuthFailure::Permanent("account disabled".into()),
            AuthFailure::EncryptionRequired,
        ] {
            assert_eq!(failure_from_proto(&failure_to_proto(&failure)), failure);
        }
        for reason in [0, 99] {
            let wire = pb::Failure {
                reason,
                message: String::new(),
            };
            assert!(matches!(
                failure_from_proto(&wire),
                AuthFailure::Temporary(_)
            ));
        }
    }

    #[test]
    fn server_messages_cannot_inject_lines() {
        let wire = pb::Failure {
            reason: pb::FailureReason::Permanent.into(),
            message: format!("bad\r\n+OK injected{}", "x".repeat(500)),
        };
        let AuthFailure::Permanent(message) = failure_from_proto(&wire) else {
            panic!("not permanent");
        };
        assert!(!message.contains('\r') && !message.contains('\n'));
        assert_eq!(message.len(), MAX_MESSAGE_LEN);
    }

    #[test]
    fn listed_users_and_tenants_round_trip() {
        let tenant = TenantInfo {
            id: TenantId::new("acme").unwrap(),
            domains: vec!["acme.example".into(), "b.example".into()],
            policy: Policy::default(),
        };
        assert_eq!(tenant_from_proto(tenant_to_proto(&tenant)).unwrap(), tenant);
        let user = UserInfo {
            login: Login::parse("bob@acme.example").unwrap(),
            id: UserId::new("u-bob").unwrap(),
            tenant: TenantId::new("acme").unwrap(),
            disabled: true,
            has_apop_secret: true,
            has_cram_secret: true,
        };
        assert_eq!(user_from_proto(user_to_proto(&user)).unwrap(), user);
        let bad = admin_pb::User {
            user_id: "../etc".into(),
            ..user_to_proto(&user)
        };
        assert!(user_from_proto(bad).is_err());
    }
}
