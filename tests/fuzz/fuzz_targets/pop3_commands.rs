//! The POP3 command decoder (`cloudpop_pop3::Decoder`), commands and SASL responses.
//!
//! Input: 5 parameter bytes (command line limit, SASL line limit, chunking seed, largest
//! chunk), then what a client sends. After an `AUTH` with a mechanism and no initial
//! response, the next line is decoded as a SASL response, as the connection does.
//!
//! Checked:
//! - The events equal those of a line-by-line reference (split at LF; a line over its limit
//!   is one `LineTooLong`, whatever its size; otherwise `parse_line` or base64), both for the
//!   whole input at once and for the input in chunks: decoding does not depend on chunking.
//! - Memory: while the decoder waits for a line end, it holds less than one line limit.
//! - Every decoded command, written back as a canonical line, parses to itself.
//! - Every error, put in an `-ERR` response, encodes as exactly one line.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use cloudpop_auth::Secret;
use cloudpop_fuzz::{Input, chunks};
use cloudpop_pop3::codec::{SaslResponse, parse_line};
use cloudpop_pop3::{Command, Decoder, ProtocolError, Response};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum Event {
    Command(Result<Command, ProtocolError>),
    Sasl(Result<SaslResponse, ProtocolError>),
}

impl Event {
    /// RFC 5034 §4: a mechanism without an initial response is answered with a challenge,
    /// and the client's next line is its response.
    fn starts_exchange(&self) -> bool {
        matches!(
            self,
            Event::Command(Ok(Command::Auth {
                mechanism: Some(_),
                initial: None
            }))
        )
    }
}

struct Limits {
    line: usize,
    sasl: usize,
}

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data, 5);
    let line = 8 + usize::from(input.byte(0));
    let limits = Limits {
        line,
        sasl: line + 4 * usize::from(input.byte(1)),
    };
    let script = input.payload();

    let want = reference(script, &limits);
    let whole = decode(std::iter::once(script), &limits);
    assert_eq!(whole, want, "whole input");
    let max_chunk = 1 + usize::from(input.byte(4));
    let split = decode(chunks(script, input.u16(2), max_chunk), &limits);
    assert_eq!(split, want, "input in chunks of at most {max_chunk}");

    for event in &whole {
        match event {
            Event::Command(Ok(command)) => {
                let line = canonical_line(command);
                assert_eq!(parse_line(&line).as_ref(), Ok(command), "{line:?}");
            }
            Event::Command(Err(error)) | Event::Sasl(Err(error)) => one_line(error),
            Event::Sasl(Ok(_)) => {}
        }
    }
});

/// Decodes the chunks as the connection does, checking the buffer bound after each call.
fn decode<'a>(chunks: impl Iterator<Item = &'a [u8]>, limits: &Limits) -> Vec<Event> {
    let mut decoder = Decoder::new(limits.line).with_sasl_limit(limits.sasl);
    let mut buf = BytesMut::new();
    let mut sasl = false;
    let mut events = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let event = if sasl {
                decoder.decode_sasl(&mut buf).transpose().map(Event::Sasl)
            } else {
                decoder.decode(&mut buf).transpose().map(Event::Command)
            };
            let Some(event) = event else {
                assert!(
                    buf.len() < limits.sasl,
                    "{} bytes held waiting for a line end, limit {}",
                    buf.len(),
                    limits.sasl
                );
                break;
            };
            sasl = event.starts_exchange();
            events.push(event);
        }
    }
    events
}

/// The documented framing, one line at a time.
fn reference(script: &[u8], limits: &Limits) -> Vec<Event> {
    let mut events = Vec::new();
    let mut sasl = false;
    let mut rest = script;
    while !rest.is_empty() {
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            // An unfinished line that already fills the buffer is dropped and reported.
            if rest.len() >= limits.sasl {
                events.push(if sasl {
                    Event::Sasl(Err(ProtocolError::LineTooLong))
                } else {
                    Event::Command(Err(ProtocolError::LineTooLong))
                });
            }
            break;
        };
        let (line, tail) = rest.split_at(lf + 1);
        rest = tail;
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        let event = if sasl {
            Event::Sasl(if line.len() > limits.sasl {
                Err(ProtocolError::LineTooLong)
            } else if content == b"*" {
                Ok(SaslResponse::Cancel)
            } else {
                STANDARD
                    .decode(content)
                    .map(|bytes| SaslResponse::Data(Secret::new(bytes)))
                    .map_err(|_| ProtocolError::BadBase64)
            })
        } else {
            // AUTH lines may carry a long initial response; others get the command limit.
            let is_auth = line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"AUTH ");
            let limit = if is_auth { limits.sasl } else { limits.line };
            Event::Command(if line.len() > limit {
                Err(ProtocolError::LineTooLong)
            } else {
                parse_line(content)
            })
        };
        sasl = event.starts_exchange();
        events.push(event);
    }
    events
}

/// The command as a client would write it, without line end.
fn canonical_line(command: &Command) -> Vec<u8> {
    let text = match command {
        Command::User(name) => format!("USER {name}"),
        Command::Pass(password) => return [b"PASS ", password.expose()].concat(),
        Command::Apop { name, digest } => {
            return [b"APOP ", name.as_bytes(), b" ", digest.expose()].concat();
        }
        Command::Stat => "STAT".into(),
        Command::List(None) => "LIST".into(),
        Command::List(Some(n)) => format!("LIST {n}"),
        Command::Retr(n) => format!("RETR {n}"),
        Command::Dele(n) => format!("DELE {n}"),
        Command::Noop => "NOOP".into(),
        Command::Rset => "RSET".into(),
        Command::Top { message, lines } => format!("TOP {message} {lines}"),
        Command::Uidl(None) => "UIDL".into(),
        Command::Uidl(Some(n)) => format!("UIDL {n}"),
        Command::Quit => "QUIT".into(),
        Command::Capa => "CAPA".into(),
        Command::Stls => "STLS".into(),
        Command::Auth {
            mechanism: None,
            initial,
        } => {
            assert!(initial.is_none(), "an initial response without a mechanism");
            "AUTH".into()
        }
        Command::Auth {
            mechanism: Some(mechanism),
            initial: None,
        } => format!("AUTH {mechanism}"),
        Command::Auth {
            mechanism: Some(mechanism),
            initial: Some(initial),
        } if initial.expose().is_empty() => format!("AUTH {mechanism} ="),
        Command::Auth {
            mechanism: Some(mechanism),
            initial: Some(initial),
        } => format!("AUTH {mechanism} {}", STANDARD.encode(initial.expose())),
    };
    text.into_bytes()
}

fn one_line(error: &ProtocolError) {
    let mut out = BytesMut::new();
    Response::err(error.to_string()).encode(&mut out);
    assert!(out.ends_with(b"\r\n"));
    let body = &out[..out.len() - 2];
    assert!(!body.contains(&b'\r') && !body.contains(&b'\n'), "{out:?}");
}
