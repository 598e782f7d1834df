//! Logins: `local@domain`, parsed once at the edge.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// Longest login as a whole (RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the
/// angle brackets, which leaves 254 for the address).
const MAX_LOGIN_LEN: usize = 254;
/// Longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_LEN: usize = 64;
/// Longest domain name (RFC 1035 §2.3.4, without the trailing root dot).
const MAX_DOMAIN_LEN: usize = 253;
/// Longest domain label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// Why a string is not a valid login. Messages never repeat the input: a client may have
/// typed its password into the login field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// No '@', or more than one.
    #[error("login must contain exactly one '@'")]
    At,
    /// Longer than 254 characters.
    #[error("login must be at most {MAX_LOGIN_LEN} characters long")]
    TooLong,
    /// Empty or over-long local part.
    #[error("local part must be 1 to {MAX_LOCAL_LEN} characters long")]
    LocalLength,
    /// A character not allowed in a local part.
    #[error(
        "local part may contain only printable ASCII (0x21-0x7E) without '@', '/', '\\' or '%'"
    )]
    LocalCharset,
    /// The domain is not a valid DNS name.
    #[error(
        "domain must be a DNS name: labels of 1 to {MAX_LABEL_LEN} letters, digits or '-' \
         (not at either end of a label), separated by '.', at most {MAX_DOMAIN_LEN} characters"
    )]
    Domain,
}

/// A validated login `local@domain`.
///
/// The domain is lower-cased on parse (DNS names are case-insensitive, RFC 4343). The local
/// part is kept as given, for display, but two logins compare equal when their local parts
/// differ only in ASCII case: RFC 5321 §2.4 allows case-sensitive local parts, yet nearly all
/// providers treat them case-insensitively, and users expect `Alice@` and `alice@` to be the
/// same mailbox rather than two accounts that an attacker could register side by side.
#[derive(Clone)]
pub struct Login {
    local: String,
    domain: String,
}

impl Login {
    /// Parses and validates `local@domain`.
    pub fn parse(s: &str) -> Result<Login, LoginError> {
        if s.len() > MAX_LOGIN_LEN {
            return Err(LoginError::TooLong);
        }
        let mut parts = s.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(LoginError::At);
        };
        validate_local(local)?;
        let domain = parse_domain(domain).map_err(|_| LoginError::Domain)?;
        Ok(Login {
            local: local.to_owned(),
            domain,
        })
    }

    /// The local part, as given.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The domain, lower-cased.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The form two logins are compared by: the whole login in ASCII lower case.
    pub fn key(&self) -> String {
        format!("{}@{}", self.local.to_ascii_lowercase(), self.domain)
    }
}

fn validate_local(local: &str) -> Result<(), LoginError> {
    if local.is_empty() || local.len() > MAX_LOCAL_LEN {
        return Err(LoginError::LocalLength);
    }
    // '/', '\' and '%' are legal in RFC 5322 local parts but have no business in a hosted
    // mailbox name and are the raw material of path traversal and encoded-slash tricks.
    let allowed = |b: u8| (0x21..=0x7e).contains(&b) && !matches!(b, b'@' | b'/' | b'\\' | b'%');
    if !local.bytes().all(allowed) {
        return Err(LoginError::LocalCharset);
    }
    Ok(())
}

/// Why a string is not a valid domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid domain name")]
pub(crate) struct DomainError;

/// Validates a DNS name (letters, digits, '-' and '.'; RFC 1035 §2.3.1 with RFC 1123 §2.1's
/// leading digits) and returns it lower-cased. A trailing root dot is refused: the same
/// domain must always be spelled the same way.
pub(crate) fn parse_domain(domain: &str) -> Result<String, DomainError> {
    if domain.is_empty() || domain.len() > MAX_DOMAIN_LEN {
        return Err(DomainError);
    }
    let label_ok = |label: &str| {
        (1..=MAX_LABEL_LEN).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !domain.split('.').all(label_ok) {
        return Err(DomainError);
    }
    Ok(domain.to_ascii_lowercase())
}

impl PartialEq for Login {
    fn eq(&self, other: &Self) -> bool {
        self.domain == other.domain && self.local.eq_ignore_ascii_case(&other.local)
    }
}

impl Eq for Login {}

impl Hash for Login {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Consistent with `eq`: hash the case-folded form.
        self.key().hash(state);
    }
}

impl fmt::Display for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Login({self})")
    }
}

impl FromStr for Login {
    type Err = LoginError;

    fn from_str(s: &str) -> Result<Self, LoginError> {
        Login::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_lower_cases_the_domain_only() {
        let login = Login::parse("Alice.Smith+pop@Mail.Example.COM").unwrap();
        assert_eq!(login.local(), "Alice.Smith+pop");
        assert_eq!(login.domain(), "mail.example.com");
        assert_eq!(login.to_string(), "Alice.Smith+pop@mail.example.com");
        assert_eq!(login.key(), "alice.smith+pop@mail.example.com");
    }

    #[test]
    fn compares_local_parts_case_insensitively() {
        let a = Login::parse("Alice@example.com").unwrap();
        let b = Login::parse("alice@EXAMPLE.com").unwrap();
        assert_eq!(a, b);
        let set: std::collections::HashSet<_> = [a, b].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert_ne!(
            Login::parse("bob@example.com").unwrap(),
            Login::parse("bob@example.org").unwrap()
        );
    }

    #[test]
    fn accepts_boundary_lengths() {
        let local = "a".repeat(MAX_LOCAL_LEN);
        assert!(Login::parse(&format!("{local}@x.example")).is_ok());
        let label = "b".repeat(MAX_LABEL_LEN);
        assert!(Login::parse(&format!("a@{label}.example")).is_ok());
        assert!(Login::parse("a@localhost").is_ok());
        assert!(Login::parse("a@1st.example").is_ok());
    }

    #[test]
    fn refuses_crafted_logins() {
        let long_local = format!("{}@example.com", "a".repeat(MAX_LOCAL_LEN + 1));
        let long_label = format!("a@{}.com", "b".repeat(MAX_LABEL_LEN + 1));
        let long_login = format!("a@{}", vec!["c".repeat(60); 5].join("."));
        let cases: &[(&str, LoginError)] = &[
            ("", LoginError::At),
            ("alice", LoginError::At),
            ("a@b@example.com", LoginError::At),
            ("@example.com", LoginError::LocalLength),
            (&long_local, LoginError::LocalLength),
            ("../x@example.com", LoginError::LocalCharset),
            ("a/b@example.com", LoginError::LocalCharset),
            ("a\\b@example.com", LoginError::LocalCharset),
            ("a%2fb@example.com", LoginError::LocalCharset),
            ("a\0b@example.com", LoginError::LocalCharset),
            ("a\r\nb@example.com", LoginError::LocalCharset),
            ("a b@example.com", LoginError::LocalCharset),
            ("a\x7f@example.com", LoginError::LocalCharset),
            ("é@example.com", LoginError::LocalCharset),
            ("a@", LoginError::Domain),
            ("a@.example.com", LoginError::Domain),
            ("a@example.com.", LoginError::Domain),
            ("a@example..com", LoginError::Domain),
            ("a@-example.com", LoginError::Domain),
            ("a@example-.com", LoginError::Domain),
            ("a@exa_mple.com", LoginError::Domain),
            ("a@../etc", LoginError::Domain),
            ("a@exämple.com", LoginError::Domain),
            (&long_label, LoginError::Domain),
            (&long_login, LoginError::TooLong),
        ];
        for (input, expected) in cases {
            assert_eq!(
                Login::parse(input).as_ref().err(),
                Some(expected),
                "{input:?}"
            );
        }
    }

    #[test]
    fn errors_do_not_repeat_the_input() {
        let err = Login::parse("hunter2").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }
}
