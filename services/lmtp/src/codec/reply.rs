//! Replies: a code, an optional enhanced status code, one or more lines of text.

use std::fmt;

use bytes::{BufMut, BytesMut};

/// An enhanced mail system status code, `class.subject.detail` (RFC 3463 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedStatus {
    class: u8,
    subject: u16,
    detail: u16,
}

impl EnhancedStatus {
    /// `class` is 2, 4 or 5 and agrees with the reply code (RFC 2034 §4).
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    pub fn class(self) -> u8 {
        self.class
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One reply, single- or multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    status: Option<EnhancedStatus>,
    lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code: every 2xx, 4xx and 5xx reply except
    /// the greeting and the LHLO reply (RFC 2034 §3).
    pub fn new(code: u16, status: EnhancedStatus, text: impl Into<String>) -> Self {
        debug_assert_eq!(
            u16::from(status.class),
            code / 100,
            "RFC 2034 §4: classes agree"
        );
        Self {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced status code: the greeting, the LHLO reply, and 3xx
    /// replies (RFC 2034 §3).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Self::multiline(code, vec![text.into()])
    }

    /// A multi-line reply without an enhanced status code (the LHLO reply).
    pub fn multiline(code: u16, lines: Vec<String>) -> Self {
        Self {
            code,
            status: None,
            lines,
        }
    }

    /// The three-digit reply code.
    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn status(&self) -> Option<EnhancedStatus> {
        self.status
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Writes the reply, every line with its CRLF. Characters outside printable ASCII in the
    /// text are replaced by `?`, so a reply can never split or carry control bytes.
    pub fn encode(&self, dst: &mut BytesMut) {
        let last = self.lines.len().saturating_sub(1);
        if self.lines.is_empty() {
            self.encode_line(dst, "", true);
        }
        for (i, line) in self.lines.iter().enumerate() {
            self.encode_line(dst, line, i == last);
        }
    }

    fn encode_line(&self, dst: &mut BytesMut, text: &str, last: bool) {
        // RFC 5321 §4.2.1: `code-` on every line but the last, `code ` on the last.
        dst.put_slice(self.code.to_string().as_bytes());
        dst.put_u8(if last { b' ' } else { b'-' });
        // RFC 2034 §4: the same status code begins the text of every line.
        if let Some(status) = self.status {
            dst.put_slice(status.to_string().as_bytes());
            dst.put_u8(b' ');
        }
        // RFC 5321 §4.2: textstring is HT, SP and printable US-ASCII.
        for c in text.chars() {
            let printable = c == '\t' || (' '..='~').contains(&c);
            dst.put_u8(if printable { c as u8 } else { b'?' });
        }
        dst.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(reply: &Reply) -> String {
        let mut buf = BytesMut::new();
        reply.encode(&mut buf);
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[test]
    fn single_line_with_status() {
        let reply = Reply::new(250, EnhancedStatus::new(2, 1, 5), "<a@b> OK");
        assert_eq!(encoded(&reply), "250 2.1.5 <a@b> OK\r\n");
    }

    #[test]
    fn multiline_without_status() {
        let reply = Reply::multiline(
            250,
            vec!["host".into(), "PIPELINING".into(), "8BITMIME".into()],
        );
        assert_eq!(
            encoded(&reply),
            "250-host\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        );
        assert_eq!(encoded(&Reply::plain(354, "go")), "354 go\r\n");
        assert_eq!(encoded(&Reply::multiline(250, vec![])), "250 \r\n");
    }

    #[test]
    fn text_cannot_inject_lines() {
        let reply = Reply::new(550, EnhancedStatus::new(5, 1, 1), "<a\r\n250 b\u{e9}>");
        assert_eq!(encoded(&reply), "550 5.1.1 <a??250 b?>\r\n");
    }
}
