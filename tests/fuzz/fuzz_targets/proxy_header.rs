//! The PROXY protocol parser (`cloudpop_pop3::proxy_protocol`), v1 and v2, and the reader
//! that takes one header off a stream.
//!
//! Input: 6 parameter bytes (length cap, chunking seed, largest read), then the first bytes
//! a peer sends.
//!
//! Checked:
//! - Prefix consistency: once a prefix of the input is decided (a complete header or an
//!   error), every longer prefix gives the same decision, and a complete header is decided
//!   by exactly its own bytes. So the result cannot depend on how the bytes arrive.
//! - The limit: no header longer than the cap (107 bytes for v1) is ever accepted, and no
//!   prefix as long as the cap is left undecided, so a reader never buffers more.
//! - `sniff` says "not a header" exactly when the parser says the header is missing.
//! - `read_header`, fed in reads of random sizes, gives the parser's result, reads nothing
//!   past the header (the TLS handshake or first command stays in the stream), and never
//!   reads more than the cap.

#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use cloudpop_fuzz::{Input, Sizes, chunks};
use cloudpop_pop3::proxy_protocol::{
    Parsed, ProxyError, ProxyHeader, Sniff, V1_MAX_LEN, V2_MAX_LEN, parse_with_limit, read_header,
    sniff,
};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::runtime::Runtime;

/// A parse result that can be compared (`ProxyError` holds an `io::Error`).
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Incomplete,
    Complete {
        header: ProxyHeader,
        consumed: usize,
    },
    Missing,
    Malformed,
    TooLong {
        limit: usize,
    },
    Other(String),
}

impl Outcome {
    fn of(result: Result<Parsed, ProxyError>) -> Self {
        match result {
            Ok(Parsed::Incomplete) => Outcome::Incomplete,
            Ok(Parsed::Complete { header, consumed }) => Outcome::Complete { header, consumed },
            Err(error) => Outcome::of_error(error),
        }
    }

    fn of_error(error: ProxyError) -> Self {
        match error {
            ProxyError::Missing => Outcome::Missing,
            ProxyError::Malformed(_) => Outcome::Malformed,
            ProxyError::TooLong { limit } => Outcome::TooLong { limit },
            other => Outcome::Other(other.to_string()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data, 6);
    // Mostly small caps, so that long v2 headers meet them.
    let max_len = match input.byte(5) & 1 {
        0 => usize::from(input.u16(0)) % 1024,
        _ => usize::from(input.u16(0)),
    };
    let cap = max_len.clamp(V1_MAX_LEN, V2_MAX_LEN);
    let bytes = input.payload();
    let seed = input.u16(2);
    let max_read = 1 + usize::from(input.byte(4));

    let at = |n: usize| Outcome::of(parse_with_limit(&bytes[..n], max_len));
    let whole = at(bytes.len());

    // Prefixes to compare: every short one, every cut of a chunking, and the whole input.
    let mut cuts: Vec<usize> = (0..=bytes.len().min(32)).collect();
    let mut offset = 0;
    for chunk in chunks(bytes, seed, max_read) {
        offset += chunk.len();
        cuts.push(offset);
    }
    if let Outcome::Complete { consumed, .. } = whole {
        cuts.extend([consumed.saturating_sub(1), consumed]);
    }
    cuts.sort_unstable();
    cuts.dedup();

    let mut decided: Option<Outcome> = None;
    for &n in &cuts {
        let outcome = at(n);
        if let Some(earlier) = &decided {
            assert_eq!(&outcome, earlier, "decided earlier, changed at {n} bytes");
        }
        match &outcome {
            Outcome::Incomplete => {
                assert!(n < cap, "{n} bytes still undecided with a cap of {cap}");
                if bytes.starts_with(b"PROXY ") {
                    assert!(n < V1_MAX_LEN, "a v1 line undecided after {n} bytes");
                }
            }
            Outcome::Complete { consumed, .. } => {
                assert!(*consumed <= n && *consumed <= cap, "{consumed} > {cap}");
                if bytes.starts_with(b"PROXY ") {
                    assert!(*consumed <= V1_MAX_LEN);
                }
                decided = Some(outcome.clone());
            }
            Outcome::Other(error) => panic!("parsing gave {error}"),
            _ => decided = Some(outcome.clone()),
        }
        match sniff(&bytes[..n]) {
            Sniff::NotHeader => assert_eq!(outcome, Outcome::Missing),
            Sniff::NeedMore => assert_eq!(outcome, Outcome::Incomplete),
            Sniff::Header => assert_ne!(outcome, Outcome::Missing),
        }
    }
    if let Outcome::Complete { consumed, .. } = whole {
        assert_eq!(at(consumed), whole, "decided by its own bytes");
        assert_eq!(
            at(consumed - 1),
            Outcome::Incomplete,
            "not decided before its end"
        );
    }

    read_from_stream(bytes, max_len, cap, &whole, Sizes::new(seed, max_read));
});

/// Checks `read_header` against the parser's result on the whole input.
fn read_from_stream(bytes: &[u8], max_len: usize, cap: usize, whole: &Outcome, sizes: Sizes) {
    let mut stream = Fragmented {
        data: bytes,
        position: 0,
        sizes,
    };
    let result = runtime().block_on(read_header(&mut stream, Duration::from_secs(600), max_len));
    assert!(
        stream.position <= cap,
        "read {} bytes, cap {cap}",
        stream.position
    );
    match (whole, result) {
        (Outcome::Complete { header, consumed }, Ok((got, leftover))) => {
            assert_eq!(&got, header);
            assert!(leftover.is_empty());
            assert_eq!(stream.position, *consumed, "read past the header");
        }
        (Outcome::Incomplete, Err(ProxyError::Io(error))) => {
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
            assert_eq!(stream.position, bytes.len());
        }
        (want, Err(error)) => assert_eq!(&Outcome::of_error(error), want),
        (want, Ok((got, _))) => panic!("read {got:?}, parser said {want:?}"),
    }
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime")
    })
}

/// A stream that hands out its bytes in reads of random sizes, as TCP may.
struct Fragmented<'a> {
    data: &'a [u8],
    position: usize,
    sizes: Sizes,
}

impl AsyncRead for Fragmented<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let rest = &this.data[this.position..];
        let n = this.sizes.next_size().min(buf.remaining()).min(rest.len());
        buf.put_slice(&rest[..n]);
        this.position += n;
        Poll::Ready(Ok(()))
    }
}
