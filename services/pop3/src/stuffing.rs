//! Byte-stuffing of a streamed message (RFC 1939 §3) and TOP's line limit (RFC 1939 §7).
//! No I/O: chunks of the stored message go in, wire bytes come out, in bounded pieces.

use bytes::{BufMut, BytesMut};

use crate::reply::BodyLimit;

/// Stuffs one message as it streams through. Create one per RETR/TOP.
#[derive(Debug)]
pub struct DotStuffer {
    limit: BodyLimit,
    at_line_start: bool,
    wrote_any: bool,
    /// Octets of the current line other than CR and LF (TOP needs to spot the blank line).
    line_content: usize,
    in_header: bool,
    body_lines_left: u32,
    done: bool,
}

impl DotStuffer {
    pub fn new(limit: BodyLimit) -> Self {
        Self {
            limit,
            at_line_start: true,
            wrote_any: false,
            line_content: 0,
            in_header: true,
            body_lines_left: 0,
            done: false,
        }
    }

    /// True once TOP's limit is reached: stop reading the store.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Stuffs `chunk` into `out`, stopping early if the limit is reached.
    pub fn push(&mut self, chunk: &[u8], out: &mut BytesMut) {
        match self.limit {
            BodyLimit::Whole => self.push_whole(chunk, out),
            BodyLimit::TopLines(_) => self.push_lines(chunk, out),
        }
    }

    /// RETR: copies runs up to the next line that starts with `.`, found with `memmem`, so
    /// a message with ordinary lines costs one copy per chunk rather than one per line.
    fn push_whole(&mut self, mut chunk: &[u8], out: &mut BytesMut) {
        while let Some(&first) = chunk.first() {
            if self.at_line_start && first == b'.' {
                // RFC 1939 §3: a line starting with the termination octet is prefixed with it.
                out.put_u8(b'.');
            }
            let run = match memchr::memmem::find(chunk, b"\n.") {
                Some(i) => &chunk[..=i],
                None => chunk,
            };
            out.put_slice(run);
            self.wrote_any = true;
            self.at_line_start = run.last() == Some(&b'\n');
            chunk = &chunk[run.len()..];
        }
    }

    /// TOP: line by line, counting the body lines.
    fn push_lines(&mut self, mut chunk: &[u8], out: &mut BytesMut) {
        while !chunk.is_empty() && !self.done {
            if self.at_line_start && chunk[0] == b'.' {
                // RFC 1939 §3: a line starting with the termination octet is prefixed with it.
                out.put_u8(b'.');
            }
            let (part, ends_line) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (&chunk[..=i], true),
                None => (chunk, false),
            };
            out.put_slice(part);
            self.wrote_any = true;
            chunk = &chunk[part.len()..];
            self.at_line_start = ends_line;
            if let BodyLimit::TopLines(lines) = self.limit {
                self.line_content += part.iter().filter(|&&b| b != b'\r' && b != b'\n').count();
                if ends_line {
                    self.end_top_line(lines);
                }
            }
        }
    }

    fn end_top_line(&mut self, lines: u32) {
        if self.in_header {
            if self.line_content == 0 {
                // RFC 1939 §7 (TOP): the header, the blank line, then `lines` body lines.
                self.in_header = false;
                self.body_lines_left = lines;
                self.done = lines == 0;
            }
        } else {
            self.body_lines_left -= 1;
            self.done = self.body_lines_left == 0;
        }
        self.line_content = 0;
    }

    /// Ends the message: a CRLF if the stored message lacked a final one, then `.` CRLF.
    pub fn finish(self, out: &mut BytesMut) {
        if self.wrote_any && !self.at_line_start {
            out.put_slice(b"\r\n");
        }
        out.put_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuff(message: &[u8], limit: BodyLimit, chunk: usize) -> Vec<u8> {
        let mut stuffer = DotStuffer::new(limit);
        let mut out = BytesMut::new();
        for piece in message.chunks(chunk.max(1)) {
            stuffer.push(piece, &mut out);
            if stuffer.is_done() {
                break;
            }
        }
        stuffer.finish(&mut out);
        out.to_vec()
    }

    fn all_chunkings(message: &[u8], limit: BodyLimit) -> Vec<u8> {
        let reference = stuff(message, limit, message.len().max(1));
        for chunk in 1..=message.len().max(1) {
            assert_eq!(
                stuff(message, limit, chunk),
                reference,
                "chunk size {chunk}"
            );
        }
        reference
    }

    #[test]
    fn stuffs_leading_dots_in_any_chunking() {
        let msg = b"Subject: x\r\n\r\n.\r\n..two\r\nmid.dle\r\n.";
        let want = b"Subject: x\r\n\r\n..\r\n...two\r\nmid.dle\r\n..\r\n.\r\n";
        assert_eq!(all_chunkings(msg, BodyLimit::Whole), want);
    }

    #[test]
    fn retr_runs_and_top_lines_stuff_alike() {
        // RETR copies runs between `\n.`; TOP goes line by line. With no line limit in
        // reach, both must give the same octets for any chunking.
        let messages: [&[u8]; 6] = [
            b".\r\n..\r\n.a\r\nb.\r\n\r\n.\r\n",
            b"no final newline\r\n.",
            b"\n.\n.\n",
            b".",
            b"Subject: x\r\n\r\nbody\r\n.dot\r\nend",
            b"",
        ];
        for message in messages {
            assert_eq!(
                all_chunkings(message, BodyLimit::Whole),
                all_chunkings(message, BodyLimit::TopLines(u32::MAX)),
                "{:?}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn adds_missing_final_crlf_only_when_needed() {
        assert_eq!(
            all_chunkings(b"a\r\nb", BodyLimit::Whole),
            b"a\r\nb\r\n.\r\n"
        );
        assert_eq!(all_chunkings(b"a\r\n", BodyLimit::Whole), b"a\r\n.\r\n");
        assert_eq!(all_chunkings(b"", BodyLimit::Whole), b".\r\n");
    }

    #[test]
    fn top_sends_header_blank_line_and_n_lines() {
        let msg = b"A: 1\r\nB: 2\r\n\r\nl1\r\n.l2\r\nl3\r\n";
        assert_eq!(
            all_chunkings(msg, BodyLimit::TopLines(0)),
            b"A: 1\r\nB: 2\r\n\r\n.\r\n"
        );
        assert_eq!(
            all_chunkings(msg, BodyLimit::TopLines(2)),
            b"A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\n.\r\n"
        );
        assert_eq!(
            all_chunkings(msg, BodyLimit::TopLines(99)),
            b"A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n"
        );
    }

    #[test]
    fn top_of_a_message_without_body_sends_it_whole() {
        assert_eq!(
            all_chunkings(b"A: 1\r\nB: 2", BodyLimit::TopLines(0)),
            b"A: 1\r\nB: 2\r\n.\r\n"
        );
    }
}
