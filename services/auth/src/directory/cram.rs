//! CRAM-MD5 (RFC 2195): the shared secret and the digest check.

use std::fmt;

use hmac::{KeyInit, Mac};
use md5::Md5;
use subtle::ConstantTimeEq;

/// Longest CRAM-MD5 secret accepted, in bytes (the same bound as APOP secrets).
const MAX_CRAM_SECRET_LEN: usize = 1024;

/// A user's CRAM-MD5 secret. RFC 2195 §2 makes it the HMAC key, so it is plaintext-equivalent
/// and stored as is, which is why CRAM-MD5 is optional per user. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct CramSecret(String);

impl CramSecret {
    /// Accepts 1 to 1024 bytes of UTF-8 without control characters (the directory file is
    /// text, and a client types the secret); returns `None` otherwise.
    pub(crate) fn new(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let ok = !text.is_empty()
            && text.len() <= MAX_CRAM_SECRET_LEN
            && !text.chars().any(char::is_control);
        ok.then(|| Self(text.to_owned()))
    }

    /// The secret, for the check and for writing the directory file only.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CramSecret(..)")
    }
}

/// The CRAM-MD5 digest: lower-case hex HMAC-MD5 (RFC 2104) of the challenge, keyed with the
/// secret (RFC 2195 §2).
pub(crate) fn digest(challenge: &str, secret: &[u8]) -> String {
    // HMAC takes keys of any length (longer ones are hashed first), so this cannot fail.
    let Ok(mut mac) = <hmac::Hmac<Md5> as KeyInit>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(challenge.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `client_digest` is the digest of `challenge` under `secret`, compared in constant
/// time. Upper-case hex is accepted, as for APOP: strictness would only turn away clients
/// that know the secret.
pub(crate) fn verify(challenge: &str, secret: &[u8], client_digest: &[u8]) -> bool {
    let expected = digest(challenge, secret);
    let client = client_digest.to_ascii_lowercase();
    // An empty expected digest (impossible, see `digest`) must never match an empty answer.
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(&client))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2195 §2's example exchange.
    const CHALLENGE: &str = "<1896.697170952@postoffice.reston.mci.net>";
    const SECRET: &[u8] = b"tanstaaftanstaaf";
    const DIGEST: &str = "b913a602c7eda7a495b4e6e7334d3890";

    #[test]
    fn matches_the_rfc_2195_example() {
        assert_eq!(digest(CHALLENGE, SECRET), DIGEST);
        assert!(verify(CHALLENGE, SECRET, DIGEST.as_bytes()));
        assert!(verify(CHALLENGE, SECRET, DIGEST.to_uppercase().as_bytes()));
        // The client's response is "tim b913a6...": base64 as in the RFC.
        use base64::Engine as _;
        let response = base64::engine::general_purpose::STANDARD.encode(format!("tim {DIGEST}"));
        assert_eq!(response, "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw");
    }

    #[test]
    fn refuses_other_digests() {
        assert!(!verify(
            CHALLENGE,
            SECRET,
            b"b913a602c7eda7a495b4e6e7334d3891"
        ));
        assert!(!verify(
            CHALLENGE,
            SECRET,
            b"b913a602c7eda7a495b4e6e7334d389"
        ));
        assert!(!verify(CHALLENGE, SECRET, b""));
        assert!(!verify("<other@host>", SECRET, DIGEST.as_bytes()));
        assert!(!verify(CHALLENGE, b"tanstaaf", DIGEST.as_bytes()));
    }

    #[test]
    fn secrets_are_bounded_text() {
        assert!(CramSecret::new(SECRET).is_some());
        assert!(CramSecret::new(b"").is_none());
        assert!(CramSecret::new(b"a\tb").is_none());
        assert!(CramSecret::new(&[0xff]).is_none());
        assert!(CramSecret::new(&[b'a'; MAX_CRAM_SECRET_LEN + 1]).is_none());
        assert_eq!(
            format!("{:?}", CramSecret::new(SECRET).unwrap()),
            "CramSecret(..)"
        );
    }
}
