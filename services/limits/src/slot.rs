//! Slots: one counted connection or session, held until closed or lapsed.

use std::fmt::Write;
use std::net::IpAddr;

use crate::limits::LimitsError;

/// Random bytes in a slot token (hex-encoded, so twice as many characters).
const TOKEN_BYTES: usize = 16;

/// One counted connection of a client, from [`crate::Limits::open_connection`].
///
/// Keep it for the connection's life: refresh it within its ttl and close it at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionSlot {
    pub(crate) client: IpAddr,
    /// Tells this slot from the client's other slots, in every process.
    pub(crate) token: String,
}

impl ConnectionSlot {
    /// The client address the slot was opened for (counted by its network, see
    /// [`crate::Limits`]).
    pub fn client(&self) -> IpAddr {
        self.client
    }
}

/// One counted session of a user, from [`crate::Limits::open_session`].
///
/// Keep it for the session's life: refresh it within its ttl and close it at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSlot {
    pub(crate) user_key: String,
    /// Tells this slot from the user's other slots, in every process.
    pub(crate) token: String,
}

impl SessionSlot {
    /// The user key the slot was opened for.
    pub fn user_key(&self) -> &str {
        &self.user_key
    }
}

/// A fresh random slot token, unique across processes.
pub(crate) fn new_token() -> Result<String, LimitsError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| LimitsError::Unavailable(format!("no randomness for a slot token: {e}")))?;
    let mut token = String::with_capacity(2 * TOKEN_BYTES);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(token, "{byte:02x}");
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        for token in [a, b] {
            assert_eq!(token.len(), 2 * TOKEN_BYTES);
            assert!(
                token
                    .bytes()
                    .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            );
        }
    }
}
