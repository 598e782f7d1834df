//! Validated identifiers. Storage keys are built from these types only.

use std::fmt;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must be 1 to {max} characters long")]
    /// Empty or longer than `max` characters.
    Length { kind: &'static str, max: usize },
    #[error("{kind} may contain only {allowed}")]
    /// Holds a character outside `allowed`.
    Charset {
        kind: &'static str,
        allowed: &'static str,
    },
}

/// Longest tenant, user or mailbox id.
pub const MAX_OPAQUE_ID_LEN: usize = 64;

fn validate_opaque(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() || s.len() > MAX_OPAQUE_ID_LEN {
        return Err(IdError::Length {
            kind,
            max: MAX_OPAQUE_ID_LEN,
        });
    }
    let ok_edges = !s.starts_with('-') && !s.ends_with('-');
    if !ok_edges
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(IdError::Charset {
            kind,
            allowed: "a-z, 0-9 and '-' (not at either end)",
        });
    }
    Ok(())
}

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates `s`: 1–64 characters of `[a-z0-9-]`, not starting or ending with `-`.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate_opaque($kind, &s)?;
                Ok(Self(s))
            }

            /// The id as stored.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
    };
}

opaque_id!(
    /// A tenant: owns domains, a storage prefix and a policy.
    TenantId,
    "tenant id"
);
opaque_id!(
    /// A mailbox (maildrop) of one user within a tenant.
    MailboxId,
    "mailbox id"
);

/// One maildrop: the unit that is listed, locked and served by one session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MaildropKey {
    /// The tenant that owns the mailbox.
    pub tenant: TenantId,
    /// The mailbox within the tenant.
    pub mailbox: MailboxId,
}

impl MaildropKey {
    /// The maildrop of `mailbox` within `tenant`.
    pub fn new(tenant: TenantId, mailbox: MailboxId) -> Self {
        Self { tenant, mailbox }
    }
}

impl fmt::Display for MaildropKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.mailbox)
    }
}

/// Longest unique id (RFC 1939 §7: 1 to 70 characters).
pub const MAX_UID_LEN: usize = 70;

/// A message's unique id (UIDL): 1–70 characters in 0x21–0x7E (RFC 1939 §7).
///
/// Ids this crate generates are also safe as file names and object keys (no `/`, no
/// leading `.`); ids given to [`UniqueId::new`] are additionally refused if they contain
/// `/` or `\` or start with `.`, so that an imported id can never escape its maildrop.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UniqueId(String);

impl UniqueId {
    /// Validates `s` as described on the type; use this for imported ids.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        if s.is_empty() || s.len() > MAX_UID_LEN {
            return Err(IdError::Length {
                kind: "unique id",
                max: MAX_UID_LEN,
            });
        }
        let printable = s.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if !printable || s.contains('/') || s.contains('\\') || s.starts_with('.') {
            return Err(IdError::Charset {
                kind: "unique id",
                allowed: "printable ASCII 0x21-0x7E without '/' or '\\', not starting with '.'",
            });
        }
        Ok(Self(s))
    }

    /// The id as stored and as sent in a UIDL response.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps an id built by [`crate::UidGenerator`], whose alphabet (lowercase Crockford
    /// base32, fixed length) is valid by construction, so there is no error to handle.
    pub(crate) fn from_generated(s: String) -> Self {
        debug_assert!(
            Self::new(s.as_str()).is_ok(),
            "generated uid {s:?} is invalid"
        );
        Self(s)
    }
}

impl fmt::Display for UniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_ids_refuse_crafted_input() {
        for bad in [
            "",
            "../x",
            "a/b",
            "A",
            "a%2fb",
            "a\0b",
            "-a",
            "a-",
            "a b",
            &"a".repeat(65),
        ] {
            assert!(TenantId::new(bad).is_err(), "{bad:?} accepted");
            assert!(MailboxId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(TenantId::new("acme-1").is_ok());
    }

    #[test]
    fn unique_ids_follow_rfc_1939_section_7() {
        assert!(UniqueId::new("a").is_ok());
        assert!(UniqueId::new("x".repeat(70)).is_ok());
        for bad in [
            "",
            " a",
            "a b",
            "a\x7f",
            "../a",
            "a/b",
            ".hidden",
            &"x".repeat(71),
        ] {
            assert!(UniqueId::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
