//! What the server sends: status lines, multi-line bodies, streamed messages. Encoding is
//! here and only here: every `+OK`/`-ERR`, CRLF, stuffing byte and terminator.

use std::fmt;

use bytes::{BufMut, BytesMut};
use cloudpop_maildrop::MessageReader;

/// Extended response codes (RFC 2449 §8, RFC 3206).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespCode {
    /// RFC 2449 §8.1.1: the maildrop is locked by another session.
    InUse,
    /// RFC 2449 §8.1.2: logged in too soon after the previous login.
    LoginDelay,
    /// RFC 3206 §4: temporary system problem; retry later.
    SysTemp,
    /// RFC 3206 §4: permanent system problem; don't retry unchanged.
    SysPerm,
    /// RFC 3206 §5: the credentials were wrong.
    Auth,
}

impl RespCode {
    fn as_str(self) -> &'static str {
        match self {
            RespCode::InUse => "IN-USE",
            RespCode::LoginDelay => "LOGIN-DELAY",
            RespCode::SysTemp => "SYS/TEMP",
            RespCode::SysPerm => "SYS/PERM",
            RespCode::Auth => "AUTH",
        }
    }
}

/// A single status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Ok(String),
    Err {
        code: Option<RespCode>,
        text: String,
    },
}

impl Response {
    pub fn ok(text: impl Into<String>) -> Self {
        Response::Ok(text.into())
    }

    pub fn err(text: impl Into<String>) -> Self {
        Response::Err {
            code: None,
            text: text.into(),
        }
    }

    pub fn err_code(code: RespCode, text: impl Into<String>) -> Self {
        Response::Err {
            code: Some(code),
            text: text.into(),
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Response::Ok(_))
    }

    /// Writes the status line with its CRLF. Control characters in the text are replaced, so
    /// a response can never split into two lines.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Response::Ok(text) => {
                out.put_slice(b"+OK");
                put_text(out, text);
            }
            Response::Err { code, text } => {
                out.put_slice(b"-ERR");
                if let Some(code) = code {
                    out.put_slice(b" [");
                    out.put_slice(code.as_str().as_bytes());
                    out.put_u8(b']');
                }
                put_text(out, text);
            }
        }
        out.put_slice(b"\r\n");
    }
}

fn put_text(out: &mut BytesMut, text: &str) {
    if text.is_empty() {
        return;
    }
    out.put_u8(b' ');
    for b in text.bytes() {
        out.put_u8(if b < 0x20 || b == 0x7f { b'?' } else { b });
    }
}

/// The lines of a multi-line response (CAPA, LIST, UIDL), stuffed as they are pushed.
#[derive(Default)]
pub struct MultilineBody(BytesMut);

impl MultilineBody {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one line (without line end); a leading '.' is doubled (RFC 1939 §3).
    pub fn push_line(&mut self, line: impl fmt::Display) {
        let start = self.0.len();
        // `BytesMut` implements `fmt::Write` and cannot fail.
        let _ = fmt::Write::write_fmt(&mut self.0, format_args!("{line}"));
        if self.0.get(start) == Some(&b'.') {
            let rest = self.0.split_off(start);
            self.0.put_u8(b'.');
            self.0.unsplit(rest);
        }
        self.0.put_slice(b"\r\n");
    }

    fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&self.0);
        out.put_slice(b".\r\n");
    }
}

impl fmt::Debug for MultilineBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MultilineBody({} bytes)", self.0.len())
    }
}

/// How much of a streamed message to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// RETR: all of it.
    Whole,
    /// TOP n k: the header, the blank line, and at most this many body lines.
    TopLines(u32),
}

/// What a session handler answers with. The connection writes it; handlers never do I/O.
pub enum Reply {
    /// One status line.
    Single(Response),
    /// `+OK` line, then stuffed lines, then the terminating `.`.
    Multiline(Response, MultilineBody),
    /// `+OK` line, then a message streamed from the store, stuffed on the fly, then `.`.
    Message {
        status: Response,
        body: MessageReader,
        limit: BodyLimit,
        size: u64,
    },
    /// A status line after which the connection is closed.
    Close(Response),
    /// RFC 5034 §4: a SASL challenge, `+ ` and the base64 of these bytes.
    Continue(Vec<u8>),
    /// RFC 2595 §4: `+OK`, after which the connection starts TLS.
    StartTls(Response),
}

impl Reply {
    /// Encodes everything except a streamed body (the connection streams that).
    pub fn encode_head(&self, out: &mut BytesMut) {
        match self {
            Reply::Single(r) | Reply::Close(r) | Reply::StartTls(r) => r.encode(out),
            Reply::Continue(challenge) => {
                use base64::Engine;
                out.put_slice(b"+ ");
                out.put_slice(
                    base64::engine::general_purpose::STANDARD
                        .encode(challenge)
                        .as_bytes(),
                );
                out.put_slice(b"\r\n");
            }
            Reply::Multiline(r, body) => {
                r.encode(out);
                body.encode(out);
            }
            Reply::Message { status, .. } => status.encode(out),
        }
    }

    /// Whether this answers the command positively (a challenge counts as going on).
    pub fn is_ok(&self) -> bool {
        match self {
            Reply::Single(r) | Reply::Close(r) | Reply::Multiline(r, _) | Reply::StartTls(r) => {
                r.is_ok()
            }
            Reply::Message { status, .. } => status.is_ok(),
            Reply::Continue(_) => true,
        }
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Single(r) => f.debug_tuple("Single").field(r).finish(),
            Reply::Multiline(r, b) => f.debug_tuple("Multiline").field(r).field(b).finish(),
            Reply::Message {
                status,
                limit,
                size,
                ..
            } => f
                .debug_struct("Message")
                .field("status", status)
                .field("limit", limit)
                .field("size", size)
                .finish(),
            Reply::Close(r) => f.debug_tuple("Close").field(r).finish(),
            Reply::StartTls(r) => f.debug_tuple("StartTls").field(r).finish(),
            // A challenge may carry a CRAM-MD5 nonce: harmless, but kept out of logs anyway.
            Reply::Continue(c) => write!(f, "Continue({} bytes)", c.len()),
        }
    }
}

impl From<Response> for Reply {
    fn from(r: Response) -> Self {
        Reply::Single(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(r: &Reply) -> String {
        let mut out = BytesMut::new();
        r.encode_head(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn status_lines() {
        assert_eq!(encoded(&Response::ok("2 320").into()), "+OK 2 320\r\n");
        assert_eq!(encoded(&Response::ok("").into()), "+OK\r\n");
        assert_eq!(
            encoded(&Response::err_code(RespCode::InUse, "locked").into()),
            "-ERR [IN-USE] locked\r\n"
        );
        assert_eq!(encoded(&Response::err("a\r\nb").into()), "-ERR a??b\r\n");
    }

    #[test]
    fn multiline_is_stuffed_and_terminated() {
        let mut body = MultilineBody::new();
        body.push_line("TOP");
        body.push_line(".hidden");
        body.push_line("");
        assert_eq!(
            encoded(&Reply::Multiline(Response::ok("x"), body)),
            "+OK x\r\nTOP\r\n..hidden\r\n\r\n.\r\n"
        );
    }
}
