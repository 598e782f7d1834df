//! The DATA phase: dot-stuffed lines in, the message as stored out.
//!
//! Choices where the RFCs leave one:
//! - Every line ending is normalised to CRLF: CRLF stays, a bare LF and a bare CR each
//!   become CRLF. The stored message therefore always ends with CRLF (or is empty).
//! - The end of data is only `CRLF . CRLF` (RFC 5321 §4.1.1.4), or `.` CRLF as the first
//!   line. A lone `.` after a bare LF or bare CR, or a `.` followed by a bare line ending, is
//!   kept as a content line: accepting those as the end is what makes SMTP smuggling work.
//! - A leading `.` is removed from every line that has more after it, whatever ended the
//!   line before (RFC 5321 §4.5.2).
//! - The size counted is the size of the output, after unstuffing and normalisation. Once
//!   it is over the limit the output is dropped and nothing more is kept, but input is still
//!   consumed up to the end marker so the next command is read in step. The caller can
//!   also give up on the message ([`DataDecoder::discard`]) with the same effect.
//! - One call appends at most [`DataDecoder::max_output`] octets for the input it is given
//!   (a bare LF becomes two octets), so a caller can make room before decoding and the
//!   output never outgrows what was set aside for it.

use bytes::{Buf, BytesMut};

const CRLF: &[u8] = b"\r\n";
const DOT_LINE: &[u8] = b".\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line; `after_crlf` says whether the previous line ended in a real
    /// CRLF (the first line counts as such).
    LineStart { after_crlf: bool },
    /// Inside a line.
    Middle,
    /// A CR inside content: a CRLF if an LF follows, a bare CR otherwise.
    Cr,
    /// A `.` at the start of a line.
    Dot { after_crlf: bool },
    /// `.` CR at the start of a line.
    DotCr { after_crlf: bool },
    /// The end marker has been consumed.
    Done,
}

/// How the DATA phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataEnd {
    /// Octets of the message as it would be stored (unstuffed, CRLF line endings).
    pub size: u64,
    /// The size went over the limit; the output was dropped.
    pub too_large: bool,
}

/// Decodes one message body, incrementally, from the bytes after the `354` reply.
#[derive(Debug)]
pub struct DataDecoder {
    state: State,
    size: u64,
    limit: u64,
    /// The caller gave up on the message: count and consume, keep nothing.
    discarding: bool,
}

impl DataDecoder {
    /// A decoder that keeps at most `limit` octets of message.
    pub fn new(limit: u64) -> Self {
        Self {
            state: State::LineStart { after_crlf: true },
            size: 0,
            limit,
            discarding: false,
        }
    }

    /// The most octets one [`decode`](Self::decode) call appends to `out` when `src` holds
    /// `input` octets. Each input octet yields at most two (a bare LF or CR becomes CRLF), and
    /// a `.` or CR left pending by the previous call at most three more.
    pub const fn max_output(input: usize) -> usize {
        input.saturating_mul(2).saturating_add(3)
    }

    /// True once the message has gone over the limit (its output has been dropped).
    pub fn is_too_large(&self) -> bool {
        self.size > self.limit
    }

    /// Keeps nothing more of this message: later calls append nothing to `out` but still
    /// consume input up to the end marker and count the size, so the next command is read in
    /// step. What `out` already holds is the caller's to drop.
    pub fn discard(&mut self) {
        self.discarding = true;
    }

    /// Consumes message bytes from `src`, appending the decoded message to `out`.
    ///
    /// Returns `Some` once the end marker has been consumed; bytes after it stay in `src`
    /// (pipelined commands). `None`: every byte of `src` was consumed and more are needed.
    /// `out` never grows by more than `limit` octets; when the message goes over the
    /// limit, `out` is emptied (including anything the caller put there first).
    pub fn decode(&mut self, src: &mut BytesMut, out: &mut BytesMut) -> Option<DataEnd> {
        let mut i = 0;
        while i < src.len() && self.state != State::Done {
            let b = src[i];
            self.state = match self.state {
                State::Middle => {
                    let rest = &src[i..];
                    let run = rest.iter().position(|&b| b == b'\r' || b == b'\n');
                    let run = run.unwrap_or(rest.len());
                    self.emit(out, &rest[..run]);
                    i += run;
                    match src.get(i) {
                        Some(b'\r') => {
                            i += 1;
                            State::Cr
                        }
                        Some(_) => {
                            i += 1;
                            self.emit(out, CRLF);
                            State::LineStart { after_crlf: false }
                        }
                        None => State::Middle,
                    }
                }
                State::LineStart { after_crlf } => {
                    i += 1;
                    match b {
                        b'.' => State::Dot { after_crlf },
                        b'\r' => State::Cr,
                        b'\n' => {
                            self.emit(out, CRLF);
                            State::LineStart { after_crlf: false }
                        }
                        _ => {
                            self.emit(out, &[b]);
                            State::Middle
                        }
                    }
                }
                State::Cr => {
                    self.emit(out, CRLF);
                    if b == b'\n' {
                        i += 1;
                        State::LineStart { after_crlf: true }
                    } else {
                        State::LineStart { after_crlf: false }
                    }
                }
                State::Dot { after_crlf } => match b {
                    b'\r' => {
                        i += 1;
                        State::DotCr { after_crlf }
                    }
                    b'\n' => {
                        i += 1;
                        self.emit(out, DOT_LINE);
                        State::LineStart { after_crlf: false }
                    }
                    // RFC 5321 §4.5.2: the first `.` of a line with more on it is removed;
                    // `b` is read again as line content.
                    _ => State::Middle,
                },
                State::DotCr { after_crlf } => {
                    if b == b'\n' && after_crlf {
                        i += 1;
                        State::Done
                    } else if b == b'\n' {
                        i += 1;
                        self.emit(out, DOT_LINE);
                        State::LineStart { after_crlf: true }
                    } else {
                        self.emit(out, DOT_LINE);
                        State::LineStart { after_crlf: false }
                    }
                }
                State::Done => State::Done,
            };
        }
        src.advance(i);
        (self.state == State::Done).then_some(DataEnd {
            size: self.size,
            too_large: self.size > self.limit,
        })
    }

    fn emit(&mut self, out: &mut BytesMut, bytes: &[u8]) {
        let before = self.size;
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.discarding {
            return;
        }
        if self.size <= self.limit {
            if out.capacity() - out.len() < bytes.len() {
                let allowed = usize::try_from(self.limit - before).unwrap_or(usize::MAX);
                grow(out, bytes.len(), allowed);
            }
            out.extend_from_slice(bytes);
        } else if before <= self.limit {
            *out = BytesMut::new();
        }
    }
}

/// Makes room for `needed` more bytes, doubling like a `Vec` would, but never reserving
/// more than the `allowed` bytes the limit still lets in, so the buffer's capacity stays
/// within what it was given plus the limit.
fn grow(out: &mut BytesMut, needed: usize, allowed: usize) {
    let extra = out.len().max(needed).min(allowed).max(needed);
    let mut bigger = BytesMut::with_capacity(out.len() + extra);
    bigger.extend_from_slice(out);
    *out = bigger;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in chunks of `chunk` bytes; returns output, end, leftover.
    fn decode_chunked(
        input: &[u8],
        chunk: usize,
        limit: u64,
    ) -> (Vec<u8>, Option<DataEnd>, Vec<u8>) {
        let mut decoder = DataDecoder::new(limit);
        let mut src = BytesMut::new();
        let mut out = BytesMut::new();
        let mut end = None;
        for piece in input.chunks(chunk.max(1)) {
            src.extend_from_slice(piece);
            if end.is_none() {
                end = decoder.decode(&mut src, &mut out);
                assert!(out.len() as u64 <= limit);
                if end.is_none() {
                    assert!(src.is_empty(), "unfinished decode must consume everything");
                }
            }
        }
        (out.to_vec(), end, src.to_vec())
    }

    fn decode(input: &[u8]) -> (Vec<u8>, Option<DataEnd>, Vec<u8>) {
        decode_chunked(input, input.len(), 1 << 20)
    }

    fn body(input: &[u8]) -> Vec<u8> {
        let (out, end, _) = decode(input);
        assert!(end.is_some(), "no end marker found in {input:?}");
        out
    }

    #[test]
    fn plain_message_and_pipelined_leftover() {
        let (out, end, rest) = decode(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
        assert_eq!(out, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(
            end,
            Some(DataEnd {
                size: 21,
                too_large: false
            })
        );
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn empty_message() {
        assert_eq!(body(b".\r\n"), b"");
        assert_eq!(body(b"\r\n.\r\n"), b"\r\n");
    }

    #[test]
    fn dot_unstuffing() {
        assert_eq!(
            body(b"..a\r\n...\r\n..\r\nb.c\r\n.\r\n"),
            b".a\r\n..\r\n.\r\nb.c\r\n"
        );
    }

    #[test]
    fn line_endings_are_normalised() {
        assert_eq!(body(b"a\nb\r\n.\r\n"), b"a\r\nb\r\n");
        assert_eq!(body(b"a\rb\r\n.\r\n"), b"a\r\nb\r\n");
        assert_eq!(body(b"a\r\r\nb\n\n\r\n.\r\n"), b"a\r\n\r\nb\r\n\r\n\r\n");
        assert_eq!(body(b"a\n..b\r\n.\r\n"), b"a\r\n.b\r\n");
        assert_eq!(body(b"\n\r\n.\r\n"), b"\r\n\r\n");
    }

    #[test]
    fn only_crlf_dot_crlf_ends_the_data() {
        // RFC 5321 §4.1.1.4: only CRLF.CRLF ends the data; other lone dots are content.
        assert_eq!(body(b"a\n.\r\nb\r\n.\r\n"), b"a\r\n.\r\nb\r\n");
        assert_eq!(body(b"a\r.\r\nb\r\n.\r\n"), b"a\r\n.\r\nb\r\n");
        assert_eq!(body(b"a\r\n.\nb\r\n.\r\n"), b"a\r\n.\r\nb\r\n");
        assert_eq!(body(b"a\r\n.\rb\r\n.\r\n"), b"a\r\n.\r\nb\r\n");
        let (_, end, _) = decode(b"a\n.\n");
        assert_eq!(end, None);
    }

    #[test]
    fn too_large_is_flagged_but_consumed_to_the_end() {
        let input = b"0123456789\r\n0123456789\r\n.\r\nNOOP\r\n";
        let (out, end, rest) = decode_chunked(input, input.len(), 12);
        assert!(out.is_empty());
        assert_eq!(
            end,
            Some(DataEnd {
                size: 24,
                too_large: true
            })
        );
        assert_eq!(rest, b"NOOP\r\n");

        let (out, end, _) = decode_chunked(input, 3, 24);
        assert_eq!(out.len(), 24);
        assert_eq!(
            end,
            Some(DataEnd {
                size: 24,
                too_large: false
            })
        );
    }

    #[test]
    fn the_caller_prefix_is_kept_and_dropped_when_too_large() {
        let mut decoder = DataDecoder::new(4);
        let mut out = BytesMut::from(&b"X-Prefix: 1\r\n"[..]);
        let mut src = BytesMut::from(&b"ab\r\n.\r\n"[..]);
        assert!(decoder.decode(&mut src, &mut out).is_some());
        assert_eq!(&out[..], b"X-Prefix: 1\r\nab\r\n");

        let mut decoder = DataDecoder::new(3);
        let mut out = BytesMut::from(&b"X-Prefix: 1\r\n"[..]);
        let mut src = BytesMut::from(&b"ab\r\n.\r\n"[..]);
        assert!(
            decoder
                .decode(&mut src, &mut out)
                .is_some_and(|e| e.too_large)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn buffer_capacity_stays_within_the_limit() {
        let limit = 10_000;
        let mut decoder = DataDecoder::new(limit);
        let prefix = b"Return-Path: <>\r\n";
        let mut out = BytesMut::from(&prefix[..]);
        let mut src = BytesMut::new();
        for _ in 0..1000 {
            src.extend_from_slice(b"12345678\r\n");
            assert_eq!(decoder.decode(&mut src, &mut out), None);
        }
        assert_eq!(out.len() as u64, prefix.len() as u64 + limit);
        assert!(
            out.capacity() as u64 <= prefix.len() as u64 + limit,
            "{}",
            out.capacity()
        );
        src.extend_from_slice(b".\r\n");
        assert!(
            decoder
                .decode(&mut src, &mut out)
                .is_some_and(|end| !end.too_large)
        );
    }

    #[test]
    fn every_chunk_size_gives_the_same_result() {
        let script: &[u8] = b"From: a\r\n\r\n..x\n.\r\ny\rz\r\r\n\n.\nend\r\n.\r\nRSET\r\n";
        let whole = decode(script);
        assert!(whole.1.is_some());
        for chunk in 1..=script.len() {
            assert_eq!(
                decode_chunked(script, chunk, 1 << 20),
                whole,
                "chunk size {chunk}"
            );
        }
        for limit in 0..40 {
            let whole = decode_chunked(script, script.len(), limit);
            for chunk in 1..=script.len() {
                assert_eq!(
                    decode_chunked(script, chunk, limit),
                    whole,
                    "chunk {chunk} limit {limit}"
                );
            }
        }
    }

    #[test]
    fn discarding_consumes_to_the_end_and_keeps_nothing_more() {
        let mut decoder = DataDecoder::new(1000);
        let mut out = BytesMut::new();
        let mut src = BytesMut::from(&b"kept\r\n"[..]);
        assert_eq!(decoder.decode(&mut src, &mut out), None);
        decoder.discard();
        let mut src = BytesMut::from(&b"dropped\n..x\r\n.\r\nNOOP\r\n"[..]);
        let end = decoder.decode(&mut src, &mut out);
        assert_eq!(&out[..], b"kept\r\n");
        assert_eq!(
            end,
            Some(DataEnd {
                size: 19,
                too_large: false
            })
        );
        assert_eq!(&src[..], b"NOOP\r\n");
    }

    #[test]
    fn bare_lf_growth_counts_against_the_limit() {
        // 605 octets sent, 802 as stored: over a limit of 700.
        let input = b"ab\n".repeat(200);
        let mut with_end = input.clone();
        with_end.extend_from_slice(b"\r\n.\r\n");
        let (out, end, _) = decode_chunked(&with_end, 7, 700);
        assert!(out.is_empty());
        assert_eq!(
            end,
            Some(DataEnd {
                size: 802,
                too_large: true
            })
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn data_bytes() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(
                prop_oneof![
                    3 => Just(b'.'),
                    3 => Just(b'\r'),
                    3 => Just(b'\n'),
                    4 => any::<u8>(),
                ],
                0..400,
            )
        }

        proptest! {
            #[test]
            fn one_call_appends_at_most_max_output(
                input in data_bytes(),
                chunk in 1usize..64,
            ) {
                let mut decoder = DataDecoder::new(u64::MAX);
                let mut out = BytesMut::new();
                let mut src = BytesMut::new();
                for piece in input.chunks(chunk) {
                    src.extend_from_slice(piece);
                    let (given, before) = (src.len(), out.len());
                    let end = decoder.decode(&mut src, &mut out);
                    prop_assert!(out.len() - before <= DataDecoder::max_output(given));
                    if end.is_some() {
                        break;
                    }
                }
            }

            #[test]
            fn never_panics_bounded_and_chunk_invariant(
                input in data_bytes(),
                chunk in 1usize..64,
                limit in 0u64..200,
            ) {
                let whole = decode_chunked(&input, input.len(), limit);
                let split = decode_chunked(&input, chunk, limit);
                prop_assert_eq!(&whole, &split);
                prop_assert!(whole.0.len() as u64 <= limit);
                if let Some(end) = whole.1 {
                    prop_assert_eq!(end.too_large, end.size > limit);
                    if !end.too_large {
                        prop_assert_eq!(end.size, whole.0.len() as u64);
                        // RFC 5322 §2.3: CR and LF occur only together, as CRLF.
                        prop_assert!(whole.0.is_empty() || whole.0.ends_with(b"\r\n"));
                        let bare = whole.0.windows(2).enumerate().any(|(i, w)| {
                            (w[0] == b'\r' && w[1] != b'\n')
                                || (w[1] == b'\n' && w[0] != b'\r')
                                || (i == 0 && w[0] == b'\n')
                        });
                        prop_assert!(!bare);
                    }
                }
            }
        }
    }
}
