//! POP3 command decoding. No I/O: bytes in, [`Command`]s out.
//!
//! Choices where the RFCs leave one (documented in the README and tested in
//! `tests/rfc_conformance.rs`):
//! - A line ends with CRLF; a bare LF is accepted too (RFC 1939 §3 requires CRLF from the
//!   client, but tolerating LF costs nothing and helps hand-typed sessions).
//! - Keywords are case-insensitive (RFC 1939 §3).
//! - Arguments are separated by one or more spaces; trailing spaces are ignored. PASS is the
//!   exception: its argument is the rest of the line, spaces included (RFC 1939 §7, PASS).
//! - A message number is 1–10 decimal digits without sign or leading zero, and at most
//!   `u32::MAX`; anything else is `-ERR`.
//! - Commands that take no argument refuse one (`QUIT x` is `-ERR`).
//! - A line longer than the limit is answered `-ERR` once; its bytes are discarded up to the
//!   next line end, and the session continues (RFC 2449 §4 requires at least 255 octets).
//! - A NUL or other control byte in a command line is `-ERR`.

use std::fmt;
use std::num::NonZeroU32;

use bytes::{Buf, BytesMut};
use cloudpop_auth::Secret;

/// A message number as the client names it (RFC 1939 §3: 1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageNumber(NonZeroU32);

impl MessageNumber {
    /// 1-based number.
    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// 0-based index into the session's snapshot.
    pub fn index(self) -> usize {
        (self.0.get() - 1) as usize
    }

    /// The number of the message at 0-based `index`, if it fits.
    pub fn from_index(index: usize) -> Option<Self> {
        let n = u32::try_from(index.checked_add(1)?).ok()?;
        NonZeroU32::new(n).map(Self)
    }
}

impl fmt::Display for MessageNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One decoded client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    User(String),
    Pass(Secret),
    Apop {
        name: String,
        digest: Secret,
    },
    Stat,
    List(Option<MessageNumber>),
    Retr(MessageNumber),
    Dele(MessageNumber),
    Noop,
    Rset,
    Top {
        message: MessageNumber,
        lines: u32,
    },
    Uidl(Option<MessageNumber>),
    Quit,
    Capa,
    /// RFC 2595 §4: start TLS on this connection.
    Stls,
    /// RFC 5034 §4: SASL authentication. No mechanism: list the mechanisms (as Dovecot
    /// and older clients expect). `initial` is the decoded initial response (`=` is empty).
    Auth {
        mechanism: Option<String>,
        initial: Option<Secret>,
    },
}

/// A client's answer to a SASL challenge (RFC 5034 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslResponse {
    /// `*`: the client gives up.
    Cancel,
    /// The decoded response (empty for an empty line).
    Data(Secret),
}

impl Command {
    /// The keyword, upper-case, for logs and metrics (never the arguments).
    pub fn name(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Retr(_) => "RETR",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Top { .. } => "TOP",
            Command::Uidl(_) => "UIDL",
            Command::Quit => "QUIT",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Auth { .. } => "AUTH",
        }
    }
}

/// A line that is not a valid command. The line has been consumed; the session goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("line too long")]
    LineTooLong,
    #[error("empty command")]
    Empty,
    #[error("invalid characters in command")]
    InvalidBytes,
    #[error("unknown command")]
    Unknown,
    #[error("{0}")]
    BadArguments(&'static str),
    #[error("invalid base64")]
    BadBase64,
}

/// Splits the input into lines and parses them, with bounded line lengths: `max_line` for
/// commands, and `max_sasl_line` for `AUTH` lines and SASL responses (bearer tokens are
/// several kilobytes; RFC 5034 §4 lets them exceed the RFC 2449 limit).
#[derive(Debug)]
pub struct Decoder {
    max_line: usize,
    max_sasl_line: usize,
    /// Inside an over-long line whose rest is being dropped.
    discarding: bool,
}

impl Decoder {
    /// A decoder for command lines of at most `max_line` octets including the CRLF.
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            max_sasl_line: max_line,
            discarding: false,
        }
    }

    /// Allows `AUTH` lines and SASL responses up to `max_sasl_line` octets.
    pub fn with_sasl_limit(mut self, max_sasl_line: usize) -> Self {
        self.max_sasl_line = max_sasl_line.max(self.max_line);
        self
    }

    /// Decodes the next command from `buf`, consuming its line.
    ///
    /// `Ok(None)`: more bytes are needed (`buf` then holds less than one line limit).
    /// `Err(_)`: one bad line was consumed; answer `-ERR` and call again.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, ProtocolError> {
        let Some(line) = self.next_line(buf, self.max_sasl_line)? else {
            return Ok(None);
        };
        if line.len() > self.max_line && !is_auth_line(&line) {
            return Err(ProtocolError::LineTooLong);
        }
        parse_line(strip_line_end(&line)).map(Some)
    }

    /// Decodes the client's next answer during a SASL exchange (RFC 5034 §4).
    pub fn decode_sasl(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<SaslResponse>, ProtocolError> {
        let Some(line) = self.next_line(buf, self.max_sasl_line)? else {
            return Ok(None);
        };
        let content = strip_line_end(&line);
        if content == b"*" {
            return Ok(Some(SaslResponse::Cancel));
        }
        decode_base64(content).map(|data| Some(SaslResponse::Data(data)))
    }

    /// The next complete line, CRLF included, of at most `limit` octets.
    fn next_line(
        &mut self,
        buf: &mut BytesMut,
        limit: usize,
    ) -> Result<Option<BytesMut>, ProtocolError> {
        loop {
            let newline = buf.iter().position(|&b| b == b'\n');
            if self.discarding {
                match newline {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                }
            }
            let Some(i) = newline else {
                if buf.len() >= limit {
                    // Bounded memory: drop what we have and skip to the next line end.
                    buf.clear();
                    self.discarding = true;
                    return Err(ProtocolError::LineTooLong);
                }
                return Ok(None);
            };
            let line = buf.split_to(i + 1);
            if line.len() > limit {
                return Err(ProtocolError::LineTooLong);
            }
            return Ok(Some(line));
        }
    }
}

fn is_auth_line(line: &[u8]) -> bool {
    line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"AUTH ")
}

/// Decodes base64 (RFC 4648 §4, with padding), as SASL requires (RFC 5034 §4).
fn decode_base64(text: &[u8]) -> Result<Secret, ProtocolError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(Secret::new)
        .map_err(|_| ProtocolError::BadBase64)
}

fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses one command line without its line end.
pub fn parse_line(line: &[u8]) -> Result<Command, ProtocolError> {
    if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(ProtocolError::InvalidBytes);
    }
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::InvalidBytes)?;
    let trimmed = text.trim_start_matches(' ');
    if trimmed.trim_end_matches(' ').is_empty() {
        return Err(ProtocolError::Empty);
    }
    let (keyword, rest) = match trimmed.find(' ') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (trimmed, ""),
    };
    if keyword.len() > 4 {
        return Err(ProtocolError::Unknown);
    }
    let mut upper = [0u8; 4];
    for (dst, src) in upper.iter_mut().zip(keyword.bytes()) {
        *dst = src.to_ascii_uppercase();
    }
    let keyword = &upper[..keyword.len()];
    // RFC 1939 §7: PASS takes the whole rest of the line, spaces included.
    if keyword == b"PASS" {
        if rest.is_empty() {
            return Err(ProtocolError::BadArguments("PASS needs a password"));
        }
        return Ok(Command::Pass(Secret::new(rest.as_bytes())));
    }
    let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
    parse_command(keyword, &args)
}

fn parse_command(keyword: &[u8], args: &[&str]) -> Result<Command, ProtocolError> {
    match keyword {
        b"USER" => match args {
            [name] => Ok(Command::User((*name).to_owned())),
            _ => Err(ProtocolError::BadArguments(
                "USER needs exactly one argument",
            )),
        },
        b"APOP" => match args {
            [name, digest] => Ok(Command::Apop {
                name: (*name).to_owned(),
                digest: Secret::new(digest.as_bytes()),
            }),
            _ => Err(ProtocolError::BadArguments(
                "APOP needs a name and a digest",
            )),
        },
        b"STAT" => no_args(args, Command::Stat, "STAT takes no argument"),
        b"NOOP" => no_args(args, Command::Noop, "NOOP takes no argument"),
        b"RSET" => no_args(args, Command::Rset, "RSET takes no argument"),
        b"QUIT" => no_args(args, Command::Quit, "QUIT takes no argument"),
        b"CAPA" => no_args(args, Command::Capa, "CAPA takes no argument"),
        b"STLS" => no_args(args, Command::Stls, "STLS takes no argument"),
        b"AUTH" => parse_auth(args),
        b"LIST" => optional_number(args).map(Command::List),
        b"UIDL" => optional_number(args).map(Command::Uidl),
        b"RETR" => one_number(args).map(Command::Retr),
        b"DELE" => one_number(args).map(Command::Dele),
        b"TOP" => match args {
            [message, lines] => Ok(Command::Top {
                message: message_number(message)?,
                lines: line_count(lines)?,
            }),
            _ => Err(ProtocolError::BadArguments(
                "TOP needs a message number and a line count",
            )),
        },
        _ => Err(ProtocolError::Unknown),
    }
}

fn parse_auth(args: &[&str]) -> Result<Command, ProtocolError> {
    let (mechanism, initial) = match args {
        [] => (None, None),
        [mechanism] => (Some(mechanism), None),
        [mechanism, initial] => (Some(mechanism), Some(initial)),
        _ => {
            return Err(ProtocolError::BadArguments(
                "AUTH takes a mechanism and an initial response",
            ));
        }
    };
    let initial = match initial {
        // RFC 5034 §4: "=" is an empty initial response.
        Some(&"=") => Some(Secret::new(Vec::new())),
        Some(text) => Some(decode_base64(text.as_bytes())?),
        None => None,
    };
    let mechanism = mechanism.map(|m| m.to_ascii_uppercase());
    if mechanism.as_ref().is_some_and(|m| m.len() > 20) {
        return Err(ProtocolError::BadArguments("unknown SASL mechanism"));
    }
    Ok(Command::Auth { mechanism, initial })
}

fn no_args(args: &[&str], command: Command, why: &'static str) -> Result<Command, ProtocolError> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(ProtocolError::BadArguments(why))
    }
}

fn optional_number(args: &[&str]) -> Result<Option<MessageNumber>, ProtocolError> {
    match args {
        [] => Ok(None),
        [n] => message_number(n).map(Some),
        _ => Err(ProtocolError::BadArguments("too many arguments")),
    }
}

fn one_number(args: &[&str]) -> Result<MessageNumber, ProtocolError> {
    match args {
        [n] => message_number(n),
        _ => Err(ProtocolError::BadArguments("a message number is required")),
    }
}

fn digits(s: &str) -> Option<u64> {
    let canonical = !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit());
    if !canonical || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn message_number(s: &str) -> Result<MessageNumber, ProtocolError> {
    digits(s)
        .and_then(|n| u32::try_from(n).ok())
        .and_then(NonZeroU32::new)
        .map(MessageNumber)
        .ok_or(ProtocolError::BadArguments("invalid message number"))
}

fn line_count(s: &str) -> Result<u32, ProtocolError> {
    digits(s)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(ProtocolError::BadArguments("invalid line count"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(
        decoder: &mut Decoder,
        buf: &mut BytesMut,
    ) -> Vec<Result<Command, ProtocolError>> {
        let mut out = Vec::new();
        loop {
            match decoder.decode(buf) {
                Ok(Some(c)) => out.push(Ok(c)),
                Ok(None) => return out,
                Err(e) => out.push(Err(e)),
            }
        }
    }

    fn num(n: u32) -> MessageNumber {
        MessageNumber(NonZeroU32::new(n).unwrap())
    }

    #[test]
    fn parses_every_command_case_insensitively() {
        let cases: Vec<(&str, Command)> = vec![
            ("user alice", Command::User("alice".into())),
            ("PaSs a b  c", Command::Pass(Secret::new("a b  c"))),
            ("stat", Command::Stat),
            ("LIST", Command::List(None)),
            ("list 2", Command::List(Some(num(2)))),
            ("retr 1", Command::Retr(num(1))),
            ("DELE 4294967295", Command::Dele(num(u32::MAX))),
            ("noop", Command::Noop),
            ("rset", Command::Rset),
            (
                "top 1 0",
                Command::Top {
                    message: num(1),
                    lines: 0,
                },
            ),
            ("uidl", Command::Uidl(None)),
            ("quit", Command::Quit),
            ("capa", Command::Capa),
            ("QUIT   ", Command::Quit),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line.as_bytes()), Ok(want), "{line}");
        }
    }

    #[test]
    fn refuses_bad_numbers() {
        for line in [
            "RETR 0",
            "RETR -1",
            "RETR +1",
            "RETR 01",
            "RETR 99999999999",
            "RETR 4294967296",
            "RETR x",
            "RETR",
            "RETR 1 2",
            "TOP 1",
            "TOP 1 -1",
        ] {
            assert!(
                matches!(
                    parse_line(line.as_bytes()),
                    Err(ProtocolError::BadArguments(_))
                ),
                "{line}"
            );
        }
    }

    #[test]
    fn refuses_junk() {
        assert_eq!(parse_line(b""), Err(ProtocolError::Empty));
        assert_eq!(parse_line(b"   "), Err(ProtocolError::Empty));
        assert_eq!(parse_line(b"XYZZY"), Err(ProtocolError::Unknown));
        assert_eq!(parse_line(b"RETRIEVE 1"), Err(ProtocolError::Unknown));
        assert_eq!(parse_line(b"US\0ER a"), Err(ProtocolError::InvalidBytes));
        assert_eq!(parse_line(&[0xff, 0xfe]), Err(ProtocolError::InvalidBytes));
        assert!(matches!(
            parse_line(b"NOOP x"),
            Err(ProtocolError::BadArguments(_))
        ));
    }

    #[test]
    fn over_long_line_is_one_error_then_resync() {
        let mut decoder = Decoder::new(16);
        let mut buf =
            BytesMut::from(&b"NOOP\r\nUSER aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nSTAT\r\n"[..]);
        let got = decode_all(&mut decoder, &mut buf);
        assert_eq!(
            got,
            vec![
                Ok(Command::Noop),
                Err(ProtocolError::LineTooLong),
                Ok(Command::Stat)
            ]
        );
    }

    #[test]
    fn over_long_line_in_pieces_keeps_memory_bounded() {
        let mut decoder = Decoder::new(16);
        let mut buf = BytesMut::new();
        let mut errors = 0;
        for _ in 0..1000 {
            buf.extend_from_slice(b"xxxxxxxxxx");
            errors += decode_all(&mut decoder, &mut buf).len();
            assert!(buf.len() < 32);
        }
        buf.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(decode_all(&mut decoder, &mut buf), vec![Ok(Command::Noop)]);
        assert_eq!(errors, 1);
    }

    #[test]
    fn line_of_exactly_the_limit_is_accepted() {
        let mut decoder = Decoder::new(255);
        let line = format!("USER {}\r\n", "a".repeat(255 - 7));
        assert_eq!(line.len(), 255);
        let mut buf = BytesMut::from(line.as_bytes());
        assert!(matches!(
            decoder.decode(&mut buf),
            Ok(Some(Command::User(_)))
        ));
        let line = format!("USER {}\r\n", "a".repeat(255 - 6));
        let mut buf = BytesMut::from(line.as_bytes());
        assert_eq!(decoder.decode(&mut buf), Err(ProtocolError::LineTooLong));
    }

    #[test]
    fn bare_lf_ends_a_line() {
        let mut decoder = Decoder::new(64);
        let mut buf = BytesMut::from(&b"NOOP\nSTAT\r\n"[..]);
        assert_eq!(
            decode_all(&mut decoder, &mut buf),
            vec![Ok(Command::Noop), Ok(Command::Stat)]
        );
    }
}
