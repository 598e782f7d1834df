//! The LMTP decoders (`cloudpop_lmtp::codec`): command lines, and the DATA phase after each
//! `DATA` command, as the server switches between them.
//!
//! Input: 7 parameter bytes (line limit, message size limit, chunking seed, largest chunk,
//! whether the input starts inside DATA), then what a client sends.
//!
//! Checked:
//! - The input in chunks gives the same commands, messages and final state as the whole
//!   input at once.
//! - Memory: while waiting for a line end the command decoder holds less than one line;
//!   the DATA decoder consumes all it is given, never keeps more than the size limit of
//!   message, and never reserves more than that.
//! - A stored message has CRLF line endings only, and ends with CRLF unless it is empty.
//! - Round trips: every command written back as a canonical line parses to itself, and
//!   every message, dot-stuffed by the POP3 encoder (`DotStuffer`, as RETR sends it), decodes
//!   back to itself.
//! - Replies built from errors and accepted addresses encode as exactly one line.

#![no_main]

use bytes::BytesMut;
use cloudpop_fuzz::{Input, chunks};
use cloudpop_lmtp::codec::{
    BodyType, CodecError, Command, CommandDecoder, DataDecoder, DataEnd, EnhancedStatus, Reply,
};
use cloudpop_pop3::reply::BodyLimit;
use cloudpop_pop3::stuffing::DotStuffer;
use libfuzzer_sys::fuzz_target;

/// What the server puts before the message it receives (a trace header field).
const PREFIX: &[u8] = b"Return-Path: <a@b.example>\r\n";

#[derive(Debug, PartialEq)]
enum Event {
    Command(Result<Command, CodecError>),
    Message(Vec<u8>, DataEnd),
}

/// Where decoding stopped when the input ran out.
#[derive(Debug, PartialEq)]
enum Rest {
    /// Between commands: the start of the next line.
    Command(Vec<u8>),
    /// Inside DATA: the message so far.
    Data(Vec<u8>),
}

struct Settings {
    max_line: usize,
    max_size: u64,
    starts_in_data: bool,
}

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data, 7);
    let settings = Settings {
        max_line: usize::from(input.byte(0)),
        max_size: u64::from(input.u16(1) % 2048),
        starts_in_data: input.byte(6) & 1 != 0,
    };
    let script = input.payload();

    let whole = decode(std::iter::once(script), &settings);
    let max_chunk = 1 + usize::from(input.byte(5));
    let split = decode(chunks(script, input.u16(3), max_chunk), &settings);
    assert_eq!(split, whole, "input in chunks of at most {max_chunk}");

    for event in &whole.0 {
        match event {
            Event::Command(Ok(command)) => {
                let line = canonical_line(command);
                assert_eq!(
                    Command::parse(line.as_bytes()).as_ref(),
                    Ok(command),
                    "{line:?}"
                );
                for address in addresses(command) {
                    one_line(&Reply::new(
                        250,
                        EnhancedStatus::new(2, 1, 5),
                        format!("<{address}> OK"),
                    ));
                }
            }
            Event::Command(Err(error)) => one_line(&Reply::new(
                501,
                EnhancedStatus::new(5, 5, 4),
                error.to_string(),
            )),
            Event::Message(body, end) if !end.too_large => {
                assert!(body.len() as u64 <= settings.max_size);
                assert_crlf_only(body);
                stuffed_round_trip(body, input.u16(3));
            }
            Event::Message(body, _) => assert!(body.is_empty(), "a refused message is dropped"),
        }
    }
});

/// Decodes the chunks as the server does: commands, and a message after each DATA.
fn decode<'a>(chunks: impl Iterator<Item = &'a [u8]>, settings: &Settings) -> (Vec<Event>, Rest) {
    let mut commands = CommandDecoder::new(settings.max_line);
    let line_limit = settings.max_line.max(2);
    let new_message = || (DataDecoder::new(settings.max_size), BytesMut::from(PREFIX));
    let mut data = settings.starts_in_data.then(new_message);
    let mut src = BytesMut::new();
    let mut events = Vec::new();
    for chunk in chunks {
        src.extend_from_slice(chunk);
        loop {
            if let Some((decoder, message)) = &mut data {
                let end = decoder.decode(&mut src, message);
                let bound = PREFIX.len() as u64 + settings.max_size;
                assert!(message.len() as u64 <= bound, "{} > {bound}", message.len());
                assert!(
                    message.capacity() as u64 <= bound,
                    "capacity {}",
                    message.capacity()
                );
                let Some(end) = end else {
                    assert!(src.is_empty(), "an unfinished message consumes all input");
                    break;
                };
                let body = if end.too_large {
                    assert!(message.is_empty(), "a message over the limit is dropped");
                    Vec::new()
                } else {
                    let body = message.strip_prefix(PREFIX);
                    body.expect("the prefix is kept").to_vec()
                };
                events.push(Event::Message(body, end));
                data = None;
            } else {
                match commands.decode(&mut src) {
                    Ok(None) => {
                        assert!(src.len() < line_limit, "{} bytes held", src.len());
                        break;
                    }
                    Ok(Some(Command::Data)) => {
                        events.push(Event::Command(Ok(Command::Data)));
                        data = Some(new_message());
                    }
                    Ok(Some(command)) => events.push(Event::Command(Ok(command))),
                    Err(error) => events.push(Event::Command(Err(error))),
                }
            }
        }
    }
    let rest = match data {
        Some((_, message)) => Rest::Data(message.to_vec()),
        None => Rest::Command(src.to_vec()),
    };
    (events, rest)
}

/// RFC 5322 §2.3: CR and LF occur only together, as CRLF; the message ends with one.
fn assert_crlf_only(body: &[u8]) {
    assert!(body.is_empty() || body.ends_with(b"\r\n"), "{body:?}");
    for (i, &b) in body.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(body.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            b'\n' => assert!(i > 0 && body[i - 1] == b'\r', "bare LF at {i}"),
            _ => {}
        }
    }
}

/// What POP3 sends for RETR, read back by the LMTP DATA decoder, is the message again.
fn stuffed_round_trip(body: &[u8], seed: u16) {
    let mut wire = BytesMut::new();
    let mut stuffer = DotStuffer::new(BodyLimit::Whole);
    for piece in chunks(body, seed, 97) {
        stuffer.push(piece, &mut wire);
    }
    stuffer.finish(&mut wire);
    wire.extend_from_slice(b"QUIT\r\n");
    let mut decoder = DataDecoder::new(body.len() as u64);
    let mut out = BytesMut::new();
    let end = decoder.decode(&mut wire, &mut out);
    assert!(end.is_some_and(|end| !end.too_large), "{end:?}");
    assert_eq!(&out[..], body);
    assert_eq!(
        &wire[..],
        b"QUIT\r\n",
        "the end marker is consumed, nothing more"
    );
}

/// The command as a client would write it, without line end.
fn canonical_line(command: &Command) -> String {
    match command {
        Command::Lhlo { client } => format!("LHLO {client}"),
        Command::SmtpGreeting => "HELO client.example".into(),
        Command::Mail { from, params } => {
            let mut line = format!("MAIL FROM:<{}>", from.as_ref().map_or("", |a| a.as_str()));
            if let Some(size) = params.size {
                line.push_str(&format!(" SIZE={size}"));
            }
            match params.body {
                Some(BodyType::SevenBit) => line.push_str(" BODY=7BIT"),
                Some(BodyType::EightBitMime) => line.push_str(" BODY=8BITMIME"),
                None => {}
            }
            line
        }
        Command::Rcpt { to } => format!("RCPT TO:<{to}>"),
        Command::Data => "DATA".into(),
        Command::Rset => "RSET".into(),
        Command::Noop => "NOOP".into(),
        Command::Quit => "QUIT".into(),
        Command::Vrfy => "VRFY postmaster".into(),
    }
}

/// The addresses a command carries, which replies and header fields echo.
fn addresses(command: &Command) -> Vec<String> {
    let address = match command {
        Command::Mail { from: Some(a), .. } | Command::Rcpt { to: a } => a,
        _ => return Vec::new(),
    };
    let text = address.as_str();
    assert!((1..=254).contains(&text.len()), "{text:?}");
    assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{text:?}");
    assert!(!text.starts_with('@'), "{text:?} reads as a source route");
    vec![text.to_owned()]
}

fn one_line(reply: &Reply) {
    let mut out = BytesMut::new();
    reply.encode(&mut out);
    assert!(out.ends_with(b"\r\n"));
    let body = &out[..out.len() - 2];
    assert!(!body.contains(&b'\r') && !body.contains(&b'\n'), "{out:?}");
}
