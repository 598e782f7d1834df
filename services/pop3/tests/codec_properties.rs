//! The codec against whole scripts fed in every chunking, and against random input.

use bytes::BytesMut;
use cloudpop_pop3::reply::BodyLimit;
use cloudpop_pop3::stuffing::DotStuffer;
use cloudpop_pop3::{Command, Decoder, ProtocolError};
use proptest::prelude::*;

const MAX_LINE: usize = 64;

/// Decodes `input` delivered in chunks of `chunk` octets, as a connection would.
fn decode_chunked(input: &[u8], chunk: usize) -> Vec<Result<Command, ProtocolError>> {
    let mut decoder = Decoder::new(MAX_LINE);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(command)) => out.push(Ok(command)),
                Ok(None) => break,
                Err(e) => out.push(Err(e)),
            }
        }
        assert!(
            buf.len() < MAX_LINE + chunk,
            "buffer grew to {} octets",
            buf.len()
        );
    }
    out
}

const SCRIPTS: &[&[u8]] = &[
    b"CAPA\r\nUSER alice@example.com\r\nPASS secret with spaces\r\nSTAT\r\nLIST\r\nLIST 1\r\nUIDL\r\nRETR 1\r\nTOP 1 0\r\nDELE 1\r\nRSET\r\nNOOP\r\nQUIT\r\n",
    b"user a\nPASS b\r\nretr 0\r\nRETR 99999999999\r\n\r\nXYZZY\r\nAPOP alice c4c9334bac560ecc979e58001b3e22fb\r\n",
    b"USER aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nSTAT\r\n\x00\xff\r\nNOOP\r\n",
];

#[test]
fn every_script_decodes_the_same_in_every_chunking() {
    for script in SCRIPTS {
        let whole = decode_chunked(script, script.len());
        assert!(!whole.is_empty());
        for chunk in 1..=script.len() {
            assert_eq!(decode_chunked(script, chunk), whole, "chunk size {chunk}");
        }
    }
}

#[test]
fn the_first_script_decodes_as_written() {
    let got = decode_chunked(SCRIPTS[0], 7);
    let names: Vec<&str> = got
        .iter()
        .map(|c| c.as_ref().map(Command::name).unwrap_or("error"))
        .collect();
    assert_eq!(
        names,
        [
            "CAPA", "USER", "PASS", "STAT", "LIST", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET",
            "NOOP", "QUIT"
        ]
    );
}

#[test]
fn the_over_long_line_is_one_error_between_good_commands() {
    let got = decode_chunked(SCRIPTS[2], 5);
    assert_eq!(got.len(), 4);
    assert_eq!(got[0], Err(ProtocolError::LineTooLong));
    assert_eq!(got[1], Ok(Command::Stat));
    assert_eq!(got[2], Err(ProtocolError::InvalidBytes));
    assert_eq!(got[3], Ok(Command::Noop));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes: no panic, bounded buffer, every line answered once.
    #[test]
    fn random_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..600), chunk in 1usize..80) {
        let results = decode_chunked(&input, chunk);
        let line_ends = input.iter().filter(|&&b| b == b'\n').count();
        prop_assert!(results.len() <= line_ends + input.len() / MAX_LINE + 1);
    }

    /// Random command-like lines decode the same in any chunking.
    #[test]
    fn chunking_never_changes_the_result(
        lines in proptest::collection::vec("(USER|PASS|RETR|TOP|LIST|uidl|DeLe|NOOP|QUIT|STAT|CAPA|APOP|X)( [0-9a-z.@+-]{0,12}){0,3}", 1..20),
        chunk in 1usize..40,
    ) {
        let script: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
        prop_assert_eq!(decode_chunked(script.as_bytes(), chunk), decode_chunked(script.as_bytes(), script.len()));
    }

    /// Stuffing any message in any chunking gives the same wire bytes, which un-stuff to it.
    #[test]
    fn stuffing_round_trips(body in proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')], 0..300), chunk in 1usize..50) {
        let mut message = body.clone();
        // Stored messages have CRLF line ends; make it so.
        message = normalise(&message);
        let mut stuffer = DotStuffer::new(BodyLimit::Whole);
        let mut wire = BytesMut::new();
        for piece in message.chunks(chunk) {
            stuffer.push(piece, &mut wire);
        }
        stuffer.finish(&mut wire);
        prop_assert!(wire.ends_with(b".\r\n"));
        let unstuffed = unstuff(&wire);
        let mut expected = message.clone();
        if !expected.is_empty() && !expected.ends_with(b"\n") {
            expected.extend_from_slice(b"\r\n");
        }
        prop_assert_eq!(unstuffed, expected);
    }
}

fn normalise(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in raw {
        match b {
            b'\r' => {}
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
    }
    out
}

/// What a client does: split lines, drop one leading dot, stop at the lone dot.
fn unstuff(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in wire.split_inclusive(|&b| b == b'\n') {
        if line == b".\r\n" {
            return out;
        }
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    panic!("no terminator");
}
