//! The LMTP wire format, with no I/O: bytes in, [`Command`]s and message bodies out;
//! [`Reply`] values in, bytes out.
//!
//! - [`CommandDecoder`] takes command lines from a buffer, with a bounded line length.
//! - [`DataDecoder`] takes the DATA phase incrementally: it removes dot-stuffing,
//!   normalises line endings to CRLF, finds the end marker, and counts the size.
//! - [`Reply`] encodes `250-…`/`250 …` replies with enhanced status codes.
//!
//! Every CRLF, reply code and stuffing rule of the protocol is written here and only here.

mod command;
mod data;
mod reply;

pub use command::{Address, BodyType, Command, CommandDecoder, MailParams};
pub use data::{DataDecoder, DataEnd};
pub use reply::{EnhancedStatus, Reply};

/// Why a command line could not be decoded. The line has been consumed either way, so the
/// session stays in step with the client and can answer the next command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The line was longer than the limit (line ending included); its bytes were discarded
    /// up to the next line end.
    #[error("line longer than {limit} octets")]
    LineTooLong { limit: usize },
    /// The verb is not one this server knows (an empty line included).
    #[error("unknown command")]
    UnknownCommand,
    /// A known verb with arguments that do not parse. The text is the expected syntax.
    #[error("syntax error, expected {0}")]
    Syntax(&'static str),
    /// A `MAIL`/`RCPT` parameter (or parameter value) that is not supported; the keyword
    /// as sent, upper-cased and truncated.
    #[error("unsupported parameter {0}")]
    UnsupportedParameter(String),
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    #[derive(Debug, PartialEq)]
    enum Event {
        Command(Result<Command, CodecError>),
        Data(Vec<u8>, DataEnd),
    }

    /// Decodes a whole conversation fed in chunks of `chunk` bytes, switching to the DATA
    /// decoder after every DATA command, as the server does after a `354`.
    fn decode_script(script: &[u8], chunk: usize, max_line: usize, max_size: u64) -> Vec<Event> {
        let mut commands = CommandDecoder::new(max_line);
        let mut data: Option<(DataDecoder, BytesMut)> = None;
        let mut src = BytesMut::new();
        let mut events = Vec::new();
        for piece in script.chunks(chunk) {
            src.extend_from_slice(piece);
            loop {
                if let Some((decoder, out)) = &mut data {
                    match decoder.decode(&mut src, out) {
                        Some(end) => {
                            events.push(Event::Data(out.to_vec(), end));
                            data = None;
                        }
                        None => break,
                    }
                } else {
                    match commands.decode(&mut src) {
                        Ok(None) => break,
                        Ok(Some(Command::Data)) => {
                            events.push(Event::Command(Ok(Command::Data)));
                            data = Some((DataDecoder::new(max_size), BytesMut::new()));
                        }
                        Ok(Some(command)) => events.push(Event::Command(Ok(command))),
                        Err(error) => events.push(Event::Command(Err(error))),
                    }
                }
                assert!(src.len() <= max_line.max(chunk) + chunk);
            }
        }
        events
    }

    const SCRIPT: &[u8] = b"LHLO mx.example\r\n\
        MAIL FROM:<a@b.example> SIZE=20 BODY=8BITMIME\r\n\
        rcpt to:<c@d.example>\r\n\
        RCPT TO:<e@f.example> NOTIFY=NEVER\r\n\
        NOOP this line is much too long for the limit used here\r\n\
        DATA\r\n\
        Subject: x\r\n\r\n..stuffed\nbare lf\r\n.\r\n\
        HELO old\nDATA\r\n.\r\n\
        DATA\r\n0123456789012345678901234567890123456789\r\n.\r\n\
        QUIT\r\n";

    #[test]
    fn every_chunk_size_decodes_the_same_conversation() {
        let whole = decode_script(SCRIPT, SCRIPT.len(), 48, 40);
        assert_eq!(
            whole,
            vec![
                Event::Command(Ok(Command::Lhlo {
                    client: "mx.example".into()
                })),
                Event::Command(Ok(Command::Mail {
                    from: Some(Address::parse("a@b.example").unwrap()),
                    params: MailParams {
                        size: Some(20),
                        body: Some(BodyType::EightBitMime)
                    },
                })),
                Event::Command(Ok(Command::Rcpt {
                    to: Address::parse("c@d.example").unwrap()
                })),
                Event::Command(Err(CodecError::UnsupportedParameter("NOTIFY".into()))),
                Event::Command(Err(CodecError::LineTooLong { limit: 48 })),
                Event::Command(Ok(Command::Data)),
                Event::Data(
                    b"Subject: x\r\n\r\n.stuffed\r\nbare lf\r\n".to_vec(),
                    DataEnd {
                        size: 33,
                        too_large: false
                    }
                ),
                Event::Command(Ok(Command::SmtpGreeting)),
                Event::Command(Ok(Command::Data)),
                Event::Data(
                    Vec::new(),
                    DataEnd {
                        size: 0,
                        too_large: false
                    }
                ),
                Event::Command(Ok(Command::Data)),
                Event::Data(
                    Vec::new(),
                    DataEnd {
                        size: 42,
                        too_large: true
                    }
                ),
                Event::Command(Ok(Command::Quit)),
            ]
        );
        for chunk in 1..=SCRIPT.len() {
            assert_eq!(
                decode_script(SCRIPT, chunk, 48, 40),
                whole,
                "chunk size {chunk}"
            );
        }
    }

    mod prop {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn random_conversations_never_panic_and_stay_bounded(
                input in proptest::collection::vec(
                    prop_oneof![
                        2 => Just(b'\n'),
                        2 => Just(b'\r'),
                        2 => Just(b'.'),
                        1 => Just(b' '),
                        6 => any::<u8>(),
                        1 => Just(b'D'), 1 => Just(b'A'), 1 => Just(b'T'),
                    ],
                    0..1000,
                ),
                chunk in 1usize..300,
                max_line in 2usize..64,
            ) {
                let mut with_data = b"DATA\r\n".to_vec();
                with_data.extend_from_slice(&input);
                let whole = decode_script(&with_data, with_data.len(), max_line, 100);
                prop_assert_eq!(decode_script(&with_data, chunk, max_line, 100), whole);
            }
        }
    }
}
