//! Command lines: framing with a bounded length, and parsing into [`Command`]s.
//!
//! Choices where the RFCs leave one:
//! - A line ends with CRLF; a bare LF is accepted too, as in the DATA phase.
//! - Verbs and keywords are case-insensitive (RFC 5321 §2.4).
//! - Spaces around the arguments are ignored, including one after `FROM:`/`TO:`.
//! - An empty line is an unknown command.
//! - Commands that take no argument (DATA, RSET, QUIT) refuse one; NOOP ignores its
//!   argument; VRFY needs one.
//! - Command lines are ASCII: SMTPUTF8 is not offered, so a non-ASCII argument is a syntax
//!   error.
//! - A line over the limit is answered once, its bytes are discarded up to the next line
//!   end, and the session goes on.

use std::fmt;

use bytes::BytesMut;

use super::CodecError;

const LHLO_SYNTAX: &str = "LHLO domain";
const MAIL_SYNTAX: &str = "MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME]";
const RCPT_SYNTAX: &str = "RCPT TO:<address>";
const VRFY_SYNTAX: &str = "VRFY string";
const NO_ARGUMENT: &str = "no argument";

/// Longest mailbox between the angle brackets (RFC 5321 §4.5.3.1.3: a path is at most
/// 256 octets, brackets included).
const MAX_ADDRESS_LEN: usize = 254;

/// Longest LHLO domain (RFC 1035 §2.3.4: 255 octets).
const MAX_DOMAIN_LEN: usize = 255;

/// Longest parameter keyword echoed back in a reply.
const MAX_ECHOED_PARAMETER: usize = 32;

/// A mailbox from a `MAIL FROM` or `RCPT TO` path, without angle brackets or source route.
///
/// Guaranteed: 1–254 printable ASCII characters, no space outside a quoted local part,
/// no `<`, and no leading `@` (a local part comes first). Safe to echo in a reply or write
/// into a header field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address(String);

impl Address {
    /// Validates the text between the angle brackets (source route already removed).
    pub fn parse(s: &str) -> Result<Self, CodecError> {
        if s.is_empty() || s.len() > MAX_ADDRESS_LEN {
            return Err(CodecError::Syntax("an address of 1 to 254 characters"));
        }
        // RFC 5321 §4.1.2: a mailbox starts with its local part; a leading `@` starts a
        // source route, which the path parser has already removed.
        if s.starts_with('@') {
            return Err(CodecError::Syntax("an address with a local part"));
        }
        let mut in_quote = false;
        let mut escaped = false;
        for b in s.bytes() {
            if !(0x20..0x7f).contains(&b) {
                return Err(CodecError::Syntax(
                    "an address of printable ASCII characters",
                ));
            }
            if escaped {
                escaped = false;
                continue;
            }
            match b {
                b'\\' if in_quote => escaped = true,
                b'"' => in_quote = !in_quote,
                b' ' | b'<' if !in_quote => {
                    return Err(CodecError::Syntax("an address without spaces"));
                }
                _ => {}
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// The mailbox as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `BODY=` parameter of MAIL (RFC 6152 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
}

/// The parameters of MAIL this server understands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n`: the size the client announces (RFC 1870 §6).
    pub size: Option<u64>,
    /// `BODY=7BIT|8BITMIME` (RFC 6152 §2). Informational: bytes are stored as received.
    pub body: Option<BodyType>,
}

/// One decoded client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `LHLO domain` (RFC 2033 §4.1); the domain or address literal is validated.
    Lhlo {
        client: String,
    },
    /// `HELO` or `EHLO`: SMTP greetings, which LMTP does not accept (RFC 2033 §4.1).
    SmtpGreeting,
    /// `MAIL FROM:<reverse-path>`; `None` is the null reverse-path `<>` (RFC 5321 §4.5.5).
    Mail {
        from: Option<Address>,
        params: MailParams,
    },
    /// `RCPT TO:<forward-path>`.
    Rcpt {
        to: Address,
    },
    Data,
    Rset,
    Noop,
    Quit,
    /// `VRFY string`; the argument is not used (see the session).
    Vrfy,
}

impl Command {
    /// The verb, upper-case, for logs (never the arguments).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Lhlo { .. } => "LHLO",
            Command::SmtpGreeting => "HELO",
            Command::Mail { .. } => "MAIL",
            Command::Rcpt { .. } => "RCPT",
            Command::Data => "DATA",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
            Command::Vrfy => "VRFY",
        }
    }

    /// Parses one command line, line ending already removed.
    pub fn parse(line: &[u8]) -> Result<Self, CodecError> {
        let (verb, args) = match line.iter().position(|&b| b == b' ') {
            Some(space) => (&line[..space], &line[space + 1..]),
            None => (line, &[][..]),
        };
        let is = |name: &str| verb.eq_ignore_ascii_case(name.as_bytes());
        if is("LHLO") {
            let client = parse_domain(ascii(args, LHLO_SYNTAX)?)?;
            Ok(Command::Lhlo { client })
        } else if is("HELO") || is("EHLO") {
            Ok(Command::SmtpGreeting)
        } else if is("MAIL") {
            parse_mail(ascii(args, MAIL_SYNTAX)?)
        } else if is("RCPT") {
            parse_rcpt(ascii(args, RCPT_SYNTAX)?)
        } else if is("DATA") {
            no_argument(args, Command::Data)
        } else if is("RSET") {
            no_argument(args, Command::Rset)
        } else if is("QUIT") {
            no_argument(args, Command::Quit)
        } else if is("NOOP") {
            // RFC 5321 §4.1.1.9: a NOOP argument has no effect.
            Ok(Command::Noop)
        } else if is("VRFY") {
            match ascii(args, VRFY_SYNTAX)? {
                "" => Err(CodecError::Syntax(VRFY_SYNTAX)),
                _ => Ok(Command::Vrfy),
            }
        } else {
            Err(CodecError::UnknownCommand)
        }
    }
}

/// The arguments as trimmed ASCII text.
fn ascii<'a>(args: &'a [u8], syntax: &'static str) -> Result<&'a str, CodecError> {
    match std::str::from_utf8(args) {
        Ok(s) if s.is_ascii() => Ok(s.trim_matches(' ')),
        _ => Err(CodecError::Syntax(syntax)),
    }
}

fn no_argument(args: &[u8], command: Command) -> Result<Command, CodecError> {
    if args.iter().all(|&b| b == b' ') {
        Ok(command)
    } else {
        Err(CodecError::Syntax(NO_ARGUMENT))
    }
}

/// A domain or an address literal (RFC 5321 §4.1.3), as named in LHLO. Underscores are
/// tolerated because real client host names contain them.
fn parse_domain(s: &str) -> Result<String, CodecError> {
    let valid = if let Some(literal) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        !literal.is_empty()
            && literal
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".:-".contains(&b))
    } else {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if valid && s.len() <= MAX_DOMAIN_LEN {
        Ok(s.to_owned())
    } else {
        Err(CodecError::Syntax(LHLO_SYNTAX))
    }
}

fn parse_mail(args: &str) -> Result<Command, CodecError> {
    let rest = strip_prefix_ignore_case(args, "FROM:").ok_or(CodecError::Syntax(MAIL_SYNTAX))?;
    let (path, params) = parse_path(rest, MAIL_SYNTAX)?;
    // RFC 5321 §4.5.5: the null reverse-path `<>` is used for bounces and must be accepted.
    let from = if path.is_empty() {
        None
    } else {
        Some(Address::parse(path)?)
    };
    let params = parse_mail_params(params)?;
    Ok(Command::Mail { from, params })
}

fn parse_rcpt(args: &str) -> Result<Command, CodecError> {
    let rest = strip_prefix_ignore_case(args, "TO:").ok_or(CodecError::Syntax(RCPT_SYNTAX))?;
    let (path, params) = parse_path(rest, RCPT_SYNTAX)?;
    // RFC 5321 §4.1.1.11: RCPT parameters belong to extensions; none is offered here.
    if let Some(keyword) = parameters(params)?.next() {
        return Err(unsupported(keyword.0));
    }
    if path.is_empty() {
        return Err(CodecError::Syntax(RCPT_SYNTAX));
    }
    Ok(Command::Rcpt {
        to: Address::parse(path)?,
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Splits `<path> params` into the text between the brackets, source route removed, and the
/// rest of the line.
fn parse_path<'a>(s: &'a str, syntax: &'static str) -> Result<(&'a str, &'a str), CodecError> {
    let body = s
        .trim_start_matches(' ')
        .strip_prefix('<')
        .ok_or(CodecError::Syntax(syntax))?;
    let mut in_quote = false;
    let mut escaped = false;
    let mut close = None;
    for (i, b) in body.bytes().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quote => escaped = true,
            b'"' => in_quote = !in_quote,
            b'>' if !in_quote => {
                close = Some(i);
                break;
            }
            _ => {}
        }
    }
    let close = close.ok_or(CodecError::Syntax(syntax))?;
    let (path, rest) = (&body[..close], &body[close + 1..]);
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(CodecError::Syntax(syntax));
    }
    // RFC 5321 §4.1.1.3 and appendix C: a source route (`@a,@b:user@c`) is accepted and
    // ignored. A mailbox must follow it: `<@a:>` is not the null path.
    let path = match path.strip_prefix('@') {
        Some(routed) => match routed.split_once(':') {
            Some((_, mailbox)) if !mailbox.is_empty() => mailbox,
            _ => return Err(CodecError::Syntax(syntax)),
        },
        None => path,
    };
    Ok((path, rest))
}

/// `KEYWORD[=value]` pairs separated by spaces (RFC 5321 §4.1.2, Mail-parameters).
fn parameters(s: &str) -> Result<impl Iterator<Item = (&str, Option<&str>)>, CodecError> {
    let pairs: Vec<(&str, Option<&str>)> = s
        .split(' ')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        })
        .collect();
    let keyword_ok =
        |k: &str| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if pairs.iter().all(|(k, _)| keyword_ok(k)) {
        Ok(pairs.into_iter())
    } else {
        Err(CodecError::Syntax("parameters of the form KEYWORD=value"))
    }
}

fn parse_mail_params(s: &str) -> Result<MailParams, CodecError> {
    let mut params = MailParams::default();
    for (keyword, value) in parameters(s)? {
        if keyword.eq_ignore_ascii_case("SIZE") {
            // RFC 1870 §3: size-value is 1 to 20 digits.
            let size = value
                .filter(|v| (1..=20).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(CodecError::Syntax("SIZE=<decimal octets>"))?;
            if params.size.replace(size).is_some() {
                return Err(CodecError::Syntax("SIZE at most once"));
            }
        } else if keyword.eq_ignore_ascii_case("BODY") {
            // RFC 6152 §2: BODY=7BIT or BODY=8BITMIME; BINARYMIME (RFC 3030) is not offered.
            let body = match value {
                Some(v) if v.eq_ignore_ascii_case("7BIT") => BodyType::SevenBit,
                Some(v) if v.eq_ignore_ascii_case("8BITMIME") => BodyType::EightBitMime,
                _ => return Err(unsupported(&format!("BODY={}", value.unwrap_or("")))),
            };
            if params.body.replace(body).is_some() {
                return Err(CodecError::Syntax("BODY at most once"));
            }
        } else {
            return Err(unsupported(keyword));
        }
    }
    Ok(params)
}

fn unsupported(keyword: &str) -> CodecError {
    let mut shown = keyword.to_ascii_uppercase();
    shown.truncate(MAX_ECHOED_PARAMETER);
    CodecError::UnsupportedParameter(shown)
}

/// Frames command lines out of a receive buffer.
///
/// Memory stays bounded: at most `max_line_length` bytes of one line are kept; a longer
/// line is dropped as it arrives and reported once, when its end is seen.
#[derive(Debug)]
pub struct CommandDecoder {
    max_line_length: usize,
    /// How far the buffer is known to hold no LF, so a partial line is scanned once.
    scanned: usize,
    /// Inside an overlong line: discard up to its end.
    discarding: bool,
}

impl CommandDecoder {
    /// A decoder for lines of at most `max_line_length` octets, line ending included.
    pub fn new(max_line_length: usize) -> Self {
        Self {
            max_line_length: max_line_length.max(2),
            scanned: 0,
            discarding: false,
        }
    }

    /// Takes the next command from `src`. `Ok(None)`: more bytes are needed. An error has
    /// consumed its line; the caller answers it and decodes on.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Command>, CodecError> {
        match self.next_line(src)? {
            Some(line) => Command::parse(&line).map(Some),
            None => Ok(None),
        }
    }

    fn next_line(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        let from = self.scanned.min(src.len());
        let Some(lf) = src[from..].iter().position(|&b| b == b'\n') else {
            if self.discarding || src.len() >= self.max_line_length {
                self.discarding = true;
                src.clear();
                self.scanned = 0;
            } else {
                self.scanned = src.len();
            }
            return Ok(None);
        };
        let len = from + lf + 1;
        self.scanned = 0;
        let mut line = src.split_to(len);
        if std::mem::take(&mut self.discarding) || len > self.max_line_length {
            return Err(CodecError::LineTooLong {
                limit: self.max_line_length,
            });
        }
        line.truncate(len - 1);
        if line.last() == Some(&b'\r') {
            line.truncate(len - 2);
        }
        Ok(Some(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, CodecError> {
        Command::parse(line.as_bytes())
    }

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(
            parse("lhlo mx.example"),
            Ok(Command::Lhlo {
                client: "mx.example".into()
            })
        );
        assert_eq!(parse("QuIt"), Ok(Command::Quit));
        assert_eq!(parse("data"), Ok(Command::Data));
        assert_eq!(parse("noop anything at all"), Ok(Command::Noop));
        assert_eq!(parse("RSET"), Ok(Command::Rset));
        assert_eq!(parse("vrfy bob"), Ok(Command::Vrfy));
        assert_eq!(parse("HELO x"), Ok(Command::SmtpGreeting));
        assert_eq!(parse("ehlo x"), Ok(Command::SmtpGreeting));
    }

    #[test]
    fn unknown_and_malformed_commands() {
        assert_eq!(parse(""), Err(CodecError::UnknownCommand));
        assert_eq!(parse("BDAT 10"), Err(CodecError::UnknownCommand));
        assert_eq!(parse("STARTTLS"), Err(CodecError::UnknownCommand));
        assert!(matches!(parse("DATA now"), Err(CodecError::Syntax(_))));
        assert!(matches!(parse("QUIT x"), Err(CodecError::Syntax(_))));
        assert!(matches!(parse("LHLO"), Err(CodecError::Syntax(_))));
        assert!(matches!(parse("LHLO a b"), Err(CodecError::Syntax(_))));
        assert!(matches!(parse("LHLO h\u{e9}"), Err(CodecError::Syntax(_))));
        assert!(matches!(parse("VRFY"), Err(CodecError::Syntax(_))));
        assert_eq!(
            parse("LHLO [IPv6:::1]"),
            Ok(Command::Lhlo {
                client: "[IPv6:::1]".into()
            })
        );
    }

    #[test]
    fn mail_paths_and_parameters() {
        let mail = |from: Option<Address>, size, body| {
            Ok(Command::Mail {
                from,
                params: MailParams { size, body },
            })
        };
        assert_eq!(
            parse("MAIL FROM:<a@b.example>"),
            mail(Some(addr("a@b.example")), None, None)
        );
        assert_eq!(
            parse("mail from: <a@b>"),
            mail(Some(addr("a@b")), None, None)
        );
        assert_eq!(parse("MAIL FROM:<>"), mail(None, None, None));
        assert_eq!(
            parse("MAIL FROM:<a@b> size=1000 BODY=8bitmime"),
            mail(Some(addr("a@b")), Some(1000), Some(BodyType::EightBitMime))
        );
        assert_eq!(
            parse("MAIL FROM:<a@b> BODY=7BIT"),
            mail(Some(addr("a@b")), None, Some(BodyType::SevenBit))
        );
        assert_eq!(
            parse("MAIL FROM:<@r1,@r2:a@b>"),
            mail(Some(addr("a@b")), None, None)
        );
        assert_eq!(
            parse(r#"MAIL FROM:<"odd >name"@b>"#),
            mail(Some(addr(r#""odd >name"@b"#)), None, None)
        );
        assert_eq!(
            parse("MAIL FROM:<a@b> SMTPUTF8"),
            Err(CodecError::UnsupportedParameter("SMTPUTF8".into()))
        );
        assert_eq!(
            parse("MAIL FROM:<a@b> BODY=BINARYMIME"),
            Err(CodecError::UnsupportedParameter("BODY=BINARYMIME".into()))
        );
        for bad in [
            "MAIL",
            "MAIL TO:<a@b>",
            "MAIL FROM:a@b",
            "MAIL FROM:<a@b",
            "MAIL FROM:<a@b>x",
            "MAIL FROM:<a b@c>",
            "MAIL FROM:<a@b> SIZE=",
            "MAIL FROM:<a@b> SIZE=-1",
            "MAIL FROM:<a@b> SIZE=99999999999999999999999",
            "MAIL FROM:<a@b> SIZE=1 SIZE=2",
            "MAIL FROM:<a@b> =x",
            "MAIL FROM:<a\u{1}b>",
        ] {
            assert!(matches!(parse(bad), Err(CodecError::Syntax(_))), "{bad:?}");
        }
    }

    #[test]
    fn rcpt_paths() {
        assert_eq!(
            parse("RCPT TO:<bob@x>"),
            Ok(Command::Rcpt { to: addr("bob@x") })
        );
        assert_eq!(
            parse("rcpt to:<Postmaster>"),
            Ok(Command::Rcpt {
                to: addr("Postmaster")
            })
        );
        assert!(matches!(parse("RCPT TO:<>"), Err(CodecError::Syntax(_))));
        assert_eq!(
            parse("RCPT TO:<bob@x> NOTIFY=NEVER"),
            Err(CodecError::UnsupportedParameter("NOTIFY".into()))
        );
        let long = format!("RCPT TO:<{}@x>", "a".repeat(300));
        assert!(matches!(parse(&long), Err(CodecError::Syntax(_))));
    }

    #[test]
    fn a_source_route_leaves_a_mailbox_with_a_local_part() {
        // What is left after the route must itself be a mailbox: written back as
        // `<@f.example>` it would read as a route, and `<@a:>` is not the null path.
        for bad in [
            "RCPT TO:<@r1,:@f.example>",
            "RCPT TO:<@r1:@r2:a@b>",
            "RCPT TO:<@f.example>",
            "MAIL FROM:<@r1:@f.example>",
            "MAIL FROM:<@r1:>",
        ] {
            assert!(matches!(parse(bad), Err(CodecError::Syntax(_))), "{bad:?}");
        }
        assert!(Address::parse("@f.example").is_err());
        assert_eq!(
            parse("RCPT TO:<@r1,@r2:a@b>"),
            Ok(Command::Rcpt { to: addr("a@b") })
        );
    }

    fn decode_all(
        decoder: &mut CommandDecoder,
        buf: &mut BytesMut,
    ) -> Vec<Result<Command, CodecError>> {
        let mut out = Vec::new();
        loop {
            match decoder.decode(buf) {
                Ok(Some(c)) => out.push(Ok(c)),
                Ok(None) => return out,
                Err(e) => out.push(Err(e)),
            }
        }
    }

    #[test]
    fn lines_end_with_crlf_or_lf() {
        let mut d = CommandDecoder::new(64);
        let mut buf = BytesMut::from(&b"NOOP\r\nRSET\nQUI"[..]);
        assert_eq!(
            decode_all(&mut d, &mut buf),
            vec![Ok(Command::Noop), Ok(Command::Rset)]
        );
        buf.extend_from_slice(b"T\r\n");
        assert_eq!(decode_all(&mut d, &mut buf), vec![Ok(Command::Quit)]);
        assert!(buf.is_empty());
    }

    #[test]
    fn overlong_lines_are_reported_once_and_resync() {
        let limit = 16;
        let mut d = CommandDecoder::new(limit);
        // RFC 5321 §4.5.3.1.4: the limit counts the CRLF.
        let ok = format!("NOOP {}\r\n", "x".repeat(limit - 7));
        let mut buf = BytesMut::from(ok.as_bytes());
        assert_eq!(decode_all(&mut d, &mut buf), vec![Ok(Command::Noop)]);

        let mut buf = BytesMut::from(format!("NOOP {}\r\n", "x".repeat(limit - 6)).as_bytes());
        assert_eq!(
            decode_all(&mut d, &mut buf),
            vec![Err(CodecError::LineTooLong { limit })]
        );

        let mut buf = BytesMut::new();
        for _ in 0..100 {
            buf.extend_from_slice(b"yyyyyyyyyy");
            assert_eq!(decode_all(&mut d, &mut buf), vec![]);
            assert!(
                buf.len() <= limit,
                "a long line in pieces is never held whole"
            );
        }
        buf.extend_from_slice(b"yy\r\nQUIT\r\n");
        assert_eq!(
            decode_all(&mut d, &mut buf),
            vec![Err(CodecError::LineTooLong { limit }), Ok(Command::Quit)]
        );
    }
}
