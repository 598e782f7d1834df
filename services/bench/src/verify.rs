//! Checks of what a server returned against what was seeded.
//!
//! A retrieved message must be the seeded message, byte for byte, preceded only by header
//! lines the server added at delivery (`Return-Path:`, `Received:`, …). Its size must be
//! the one LIST announced, and a UID must name the same message in every session.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::content;
use crate::corpus::User;
use crate::pop3::{MAX_PREFIX, Outcome};
use crate::wire::SessionError;

/// Which part of a message was retrieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// `RETR n`.
    Whole,
    /// `TOP n 0`: the header block and the blank line.
    Header,
}

/// How many octets the server added in front of a message LIST sized `listed`.
pub(crate) fn prefix_len(user: &User, listed: u64) -> Result<usize, SessionError> {
    let seeded = user.size as u64;
    if listed < seeded || listed - seeded > MAX_PREFIX {
        return Err(SessionError::Verify(format!(
            "{}: LIST size {listed} cannot hold a seeded message of {seeded} octets",
            user.login
        )));
    }
    Ok(usize::try_from(listed - seeded).unwrap_or(usize::MAX))
}

/// Checks one retrieval; returns the seed index of the message.
pub(crate) fn check_message(
    user: &User,
    listed: u64,
    got: &Outcome,
    part: Part,
) -> Result<u32, SessionError> {
    let fail = |what: String| Err(SessionError::Verify(format!("{}: {what}", user.login)));
    if !is_header_lines(&got.prefix) {
        return fail("the lines in front of the seeded message are not header lines".into());
    }
    let Some((login, index)) = content::parse_id_line(&got.first_line) else {
        return fail(format!(
            "no X-Bench-Id line after {} octets of server header lines (got {:?})",
            got.prefix.len(),
            String::from_utf8_lossy(&got.first_line)
        ));
    };
    if login != user.login {
        return fail(format!("retrieved a message of {login}"));
    }
    let Some(digest) = user.digests.get(index as usize) else {
        return fail(format!("retrieved message {index}, which was never seeded"));
    };
    let (want_len, want_hash) = match part {
        Part::Whole => (user.size as u64, digest.full),
        Part::Header => (u64::from(digest.header_len), digest.header),
    };
    let got_len = got.total - got.prefix.len() as u64;
    if got_len != want_len {
        return fail(format!(
            "message {index}: got {} octets, LIST said {listed}, expected {want_len} after {} \
             octets of server headers",
            got.total,
            got.prefix.len()
        ));
    }
    if got.hash != want_hash {
        return fail(format!(
            "message {index}: content differs from what was seeded"
        ));
    }
    Ok(index)
}

/// Whether `prefix` is zero or more complete header lines (RFC 5322 §2.2), CRLF-ended.
fn is_header_lines(prefix: &[u8]) -> bool {
    if prefix.is_empty() {
        return true;
    }
    let Some(body) = prefix.strip_suffix(b"\r\n") else {
        return false;
    };
    body.split(|&b| b == b'\n').all(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match line.first() {
            None => false,
            Some(b' ' | b'\t') => true,
            Some(_) => line
                .iter()
                .position(|&b| b == b':')
                .is_some_and(|colon| colon > 0 && !line[..colon].contains(&b' ')),
        }
    })
}

/// What a UID named the first time it was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) index: u32,
    pub(crate) size: u64,
    /// xxh3 of the server-added header lines.
    pub(crate) prefix: u64,
}

/// The UIDs one server gave each user, so that every later session can be checked against
/// the first (RFC 1939 §7: a UID names the same message across sessions).
#[derive(Debug)]
pub(crate) struct Registry {
    uids: Vec<Mutex<HashMap<String, Seen>>>,
}

impl Registry {
    pub(crate) fn new(users: usize) -> Self {
        Self {
            uids: (0..users).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Records `uid` of `user`, or checks it against what it named before.
    pub(crate) fn check(
        &self,
        user: usize,
        login: &str,
        uid: &str,
        seen: Seen,
    ) -> Result<(), SessionError> {
        let Some(map) = self.uids.get(user) else {
            return Err(SessionError::Verify(format!("{login}: unknown user")));
        };
        let mut map = map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(uid) {
            None => {
                map.insert(uid.to_owned(), seen);
                Ok(())
            }
            Some(before) if *before == seen => Ok(()),
            Some(before) => Err(SessionError::Verify(format!(
                "{login}: UID {uid} named {before:?} before and {seen:?} now"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines() {
        assert!(is_header_lines(b""));
        assert!(is_header_lines(
            b"Return-Path: <a@b>\r\nReceived: from x\r\n\tby y\r\n"
        ));
        assert!(!is_header_lines(b"Return-Path: <a@b>\r\n\r\n"));
        assert!(!is_header_lines(b"Return-Path: <a@b>"));
        assert!(!is_header_lines(b"not a header\r\n"));
    }

    fn user() -> User {
        let login = "v@example.com".to_owned();
        let digests = (0..3)
            .map(|i| content::digest(&content::message(9, &login, i, 1000), &login, i))
            .collect();
        User {
            login,
            password: String::new(),
            size: 1000,
            digests,
        }
    }

    /// What a server returns for seed message `index`, with `prefix` in front.
    fn served(user: &User, index: u32, prefix: &[u8], part: Part) -> (u64, Outcome) {
        let message = user.message(9, index);
        let mut wire = prefix.to_vec();
        wire.extend_from_slice(&message);
        let listed = wire.len() as u64;
        if part == Part::Header {
            let header = content::header_block(&user.login, index).len();
            wire.truncate(prefix.len() + header);
        }
        let rest = &wire[prefix.len()..];
        let line_end = rest.iter().position(|&b| b == b'\n').unwrap() + 1;
        let got = Outcome {
            prefix: prefix.to_vec(),
            first_line: rest[..line_end].to_vec(),
            total: wire.len() as u64,
            hash: xxhash_rust::xxh3::xxh3_64(rest),
        };
        (listed, got)
    }

    #[test]
    fn the_seeded_message_passes_and_any_change_fails() {
        let user = user();
        let prefix = b"Return-Path: <bench@example.net>\r\nReceived: by x\r\n\tfor y\r\n";
        for part in [Part::Whole, Part::Header] {
            let (listed, got) = served(&user, 2, prefix, part);
            assert_eq!(prefix_len(&user, listed).unwrap(), prefix.len());
            assert_eq!(check_message(&user, listed, &got, part).unwrap(), 2);

            let flipped = Outcome {
                hash: got.hash ^ 1,
                ..got.clone()
            };
            assert!(check_message(&user, listed, &flipped, part).is_err());
            let short = Outcome {
                total: got.total - 1,
                ..got.clone()
            };
            assert!(check_message(&user, listed, &short, part).is_err());
            let bad_prefix = Outcome {
                prefix: b"Return-Path: <x>\r\n\r\n".to_vec(),
                ..got.clone()
            };
            assert!(check_message(&user, listed, &bad_prefix, part).is_err());
        }
        let (listed, mut got) = served(&user, 1, b"", Part::Whole);
        got.first_line = content::id_line("other@example.com", 1).into_bytes();
        assert!(check_message(&user, listed, &got, Part::Whole).is_err());
        assert!(prefix_len(&user, 999).is_err());
    }

    #[test]
    fn a_uid_must_keep_naming_the_same_message() {
        let registry = Registry::new(1);
        let seen = Seen {
            index: 1,
            size: 10,
            prefix: 3,
        };
        registry.check(0, "a", "u1", seen).unwrap();
        registry.check(0, "a", "u1", seen).unwrap();
        let other = Seen { index: 2, ..seen };
        assert!(registry.check(0, "a", "u1", other).is_err());
    }
}
