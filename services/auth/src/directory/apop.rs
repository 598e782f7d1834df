//! APOP (RFC 1939 §7): the shared secret and the digest check.

use std::fmt;

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// Longest APOP secret accepted, in bytes.
const MAX_APOP_SECRET_LEN: usize = 1024;

/// A user's APOP secret. RFC 1939 §7 makes it plaintext-equivalent: it is stored as is,
/// which is why APOP is optional per user. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ApopSecret(String);

impl ApopSecret {
    /// Accepts 1 to 1024 bytes of UTF-8 without control characters (the directory file is
    /// text, and a client types the secret); returns `None` otherwise.
    pub(crate) fn new(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let ok = !text.is_empty()
            && text.len() <= MAX_APOP_SECRET_LEN
            && !text.chars().any(char::is_control);
        ok.then(|| Self(text.to_owned()))
    }

    /// The secret, for writing the directory file only.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApopSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApopSecret(..)")
    }
}

/// The APOP digest: lower-case hex MD5 of the greeting's timestamp followed by the secret
/// (RFC 1939 §7).
pub(crate) fn digest(challenge: &str, secret: &[u8]) -> String {
    let mut md5 = Md5::new();
    md5.update(challenge.as_bytes());
    md5.update(secret);
    hex::encode(md5.finalize())
}

/// Whether `client_digest` is the digest of `challenge` and `secret`, compared in constant
/// time. Upper-case hex from the client is accepted: RFC 1939 shows lower case, and being
/// strict about it would only turn away clients that know the secret.
pub(crate) fn verify(challenge: &str, secret: &[u8], client_digest: &[u8]) -> bool {
    let expected = digest(challenge, secret);
    let client = client_digest.to_ascii_lowercase();
    expected.as_bytes().ct_eq(&client).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHALLENGE: &str = "<1896.697170952@dbc.mtview.ca.us>";

    #[test]
    fn matches_the_rfc_1939_example() {
        assert_eq!(
            digest(CHALLENGE, b"tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
        assert!(verify(
            CHALLENGE,
            b"tanstaaf",
            b"c4c9334bac560ecc979e58001b3e22fb"
        ));
        assert!(verify(
            CHALLENGE,
            b"tanstaaf",
            b"C4C9334BAC560ECC979E58001B3E22FB"
        ));
    }

    #[test]
    fn refuses_other_digests() {
        assert!(!verify(
            CHALLENGE,
            b"tanstaaf",
            b"c4c9334bac560ecc979e58001b3e22fc"
        ));
        assert!(!verify(
            CHALLENGE,
            b"tanstaaf",
            b"c4c9334bac560ecc979e58001b3e22f"
        ));
        assert!(!verify(CHALLENGE, b"tanstaaf", b""));
        assert!(!verify(
            "<other@host>",
            b"tanstaaf",
            b"c4c9334bac560ecc979e58001b3e22fb"
        ));
    }

    #[test]
    fn secrets_are_bounded_text() {
        assert!(ApopSecret::new(b"tanstaaf").is_some());
        assert!(ApopSecret::new(b"").is_none());
        assert!(ApopSecret::new(b"a\nb").is_none());
        assert!(ApopSecret::new(&[0xff, 0xfe]).is_none());
        assert!(ApopSecret::new(&[b'a'; MAX_APOP_SECRET_LEN + 1]).is_none());
        assert_eq!(
            format!("{:?}", ApopSecret::new(b"tanstaaf").unwrap()),
            "ApopSecret(..)"
        );
    }
}
