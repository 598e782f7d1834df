//! PROXY protocol v1 and v2: the codec fed in every chunking and random bytes, the reader over
//! real sockets, the trusted-network policy, and haproxy in front of a test server when it is
//! installed.

// Helpers outside #[test] functions panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command as Process, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cloudpop_pop3::proxy_protocol::{
    DEFAULT_MAX_LEN, Expectation, Parsed, ProxyError, ProxyHeader, Sniff, TrustedNetworks,
    V1_MAX_LEN, V2_MAX_LEN, V2_SIGNATURE, decide, parse, parse_with_limit, read_header, sniff,
};
use ppp::v2::{AddressFamily, Builder, Command, Protocol, Type, Version};
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// Helpers

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn proxied(source: &str, destination: &str) -> ProxyHeader {
    ProxyHeader {
        source: Some(addr(source)),
        destination: Some(addr(destination)),
    }
}

/// A comparable summary of a parse result.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Incomplete,
    Complete(ProxyHeader, usize),
    Missing,
    Malformed(String),
    TooLong(usize),
}

fn outcome(result: Result<Parsed, ProxyError>) -> Outcome {
    match result {
        Ok(Parsed::Incomplete) => Outcome::Incomplete,
        Ok(Parsed::Complete { header, consumed }) => Outcome::Complete(header, consumed),
        Err(ProxyError::Missing) => Outcome::Missing,
        Err(ProxyError::Malformed(reason)) => Outcome::Malformed(reason),
        Err(ProxyError::TooLong { limit }) => Outcome::TooLong(limit),
        Err(other) => panic!("the codec does no I/O, yet returned {other:?}"),
    }
}

/// Parses `input` as it would arrive in pieces of `chunk` bytes: the first decision wins.
fn parse_chunked(input: &[u8], chunk: usize, max_len: usize) -> Outcome {
    let mut buf = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        let result = outcome(parse_with_limit(&buf, max_len));
        if result != Outcome::Incomplete {
            return result;
        }
    }
    Outcome::Incomplete
}

/// Parses `input` whole and in chunks of every size 1..=len; all must agree.
fn parse_every_chunking(input: &[u8], max_len: usize) -> Outcome {
    let whole = outcome(parse_with_limit(input, max_len));
    for chunk in 1..=input.len().max(1) {
        assert_eq!(
            parse_chunked(input, chunk, max_len),
            whole,
            "chunks of {chunk} bytes of {:?}",
            String::from_utf8_lossy(input)
        );
    }
    whole
}

fn v2_proxy(source: &str, destination: &str) -> Builder {
    Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        (addr(source), addr(destination)),
    )
}

/// The TLVs a load balancer might add (§2.2.1–§2.2.7, and a vendor-specific one as AWS sends).
fn with_tlvs(builder: Builder) -> Vec<u8> {
    builder
        .write_tlv(Type::Authority, b"pop.example.com")
        .unwrap()
        .write_tlv(Type::UniqueId, b"conn-42")
        .unwrap()
        .write_tlv(Type::NoOp, &[0; 7])
        .unwrap()
        .write_tlv(0xEA_u8, b"\x01vpce-0123456789abcdef")
        .unwrap()
        .build()
        .unwrap()
}

fn v2_by_hand(version_command: u8, family_protocol: u8, body: &[u8]) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.push(version_command);
    header.push(family_protocol);
    header.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    header.extend_from_slice(body);
    header
}

/// Every valid header used below, with what it must parse to.
fn valid_headers() -> Vec<(Vec<u8>, ProxyHeader)> {
    let unknown = ProxyHeader::default();
    let ffff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    vec![
        (
            b"PROXY TCP4 192.0.2.10 198.51.100.7 56324 110\r\n".to_vec(),
            proxied("192.0.2.10:56324", "198.51.100.7:110"),
        ),
        (
            b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n".to_vec(),
            proxied("255.255.255.255:65535", "255.255.255.255:65535"),
        ),
        (
            b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n".to_vec(),
            proxied("0.0.0.0:0", "0.0.0.0:0"),
        ),
        (
            b"PROXY TCP6 2001:db8::1 2001:db8::2 40000 995\r\n".to_vec(),
            proxied("[2001:db8::1]:40000", "[2001:db8::2]:995"),
        ),
        (
            format!("PROXY TCP6 {ffff} {ffff} 65535 65535\r\n").into_bytes(),
            proxied(&format!("[{ffff}]:65535"), &format!("[{ffff}]:65535")),
        ),
        (
            b"PROXY TCP6 ::ffff:192.0.2.1 :: 1 2\r\n".to_vec(),
            proxied("[::ffff:192.0.2.1]:1", "[::]:2"),
        ),
        (b"PROXY UNKNOWN\r\n".to_vec(), unknown),
        // §2.1's worst case: exactly 107 bytes.
        (
            format!("PROXY UNKNOWN {ffff} {ffff} 65535 65535\r\n").into_bytes(),
            unknown,
        ),
        // §2.1: for UNKNOWN "the receiver must ignore anything presented before the CRLF".
        (
            b"PROXY UNKNOWN whatever the proxy says\r\n".to_vec(),
            unknown,
        ),
        (
            with_tlvs(v2_proxy("192.0.2.10:56324", "198.51.100.7:110")),
            proxied("192.0.2.10:56324", "198.51.100.7:110"),
        ),
        (
            v2_proxy("192.0.2.10:56324", "198.51.100.7:110")
                .build()
                .unwrap(),
            proxied("192.0.2.10:56324", "198.51.100.7:110"),
        ),
        (
            with_tlvs(v2_proxy("[2001:db8::1]:40000", "[2001:db8::2]:995")),
            proxied("[2001:db8::1]:40000", "[2001:db8::2]:995"),
        ),
        // LOCAL (health checks): addresses present but ignored (§2.2).
        (
            with_tlvs(Builder::with_addresses(
                Version::Two | Command::Local,
                Protocol::Stream,
                (addr("192.0.2.10:1"), addr("198.51.100.7:2")),
            )),
            unknown,
        ),
        (
            with_tlvs(Builder::with_addresses(
                Version::Two | Command::Local,
                Protocol::Stream,
                (addr("[2001:db8::1]:1"), addr("[2001:db8::2]:2")),
            )),
            unknown,
        ),
        (
            Builder::new(
                Version::Two | Command::Local,
                AddressFamily::Unspecified | Protocol::Unspecified,
            )
            .build()
            .unwrap(),
            unknown,
        ),
        // PROXY with what a TCP listener does not use: UNSPEC, UDP, AF_UNIX fall back to the
        // real endpoints (§2.2).
        (v2_by_hand(0x21, 0x00, &[]), unknown),
        (
            with_tlvs(Builder::with_addresses(
                Version::Two | Command::Proxy,
                Protocol::Datagram,
                (addr("192.0.2.10:1"), addr("198.51.100.7:2")),
            )),
            unknown,
        ),
        (v2_by_hand(0x21, 0x31, &[b'/'; 216]), unknown),
    ]
}

// ---------------------------------------------------------------------------------------------
// The codec

#[test]
fn valid_headers_parse_the_same_in_every_chunking() {
    for (header, expected) in valid_headers() {
        let got = parse_every_chunking(&header, DEFAULT_MAX_LEN);
        assert_eq!(got, Outcome::Complete(expected, header.len()), "{header:?}");
    }
}

#[test]
fn bytes_after_the_header_are_not_consumed() {
    for (header, expected) in valid_headers() {
        let mut input = header.clone();
        input.extend_from_slice(b"CAPA\r\nUSER alice\r\n");
        let got = parse_every_chunking(&input, DEFAULT_MAX_LEN);
        assert_eq!(got, Outcome::Complete(expected, header.len()));
    }
}

#[test]
fn the_start_of_a_header_is_incomplete() {
    for (header, _) in valid_headers() {
        for end in 0..header.len() {
            assert_eq!(
                outcome(parse(&header[..end])),
                Outcome::Incomplete,
                "{end} bytes of {header:?}"
            );
        }
    }
}

#[test]
fn anything_but_a_header_is_missing() {
    let not_headers: [&[u8]; 9] = [
        b"CAPA\r\n",
        b"USER alice\r\n",
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"proxy TCP4 192.0.2.10 198.51.100.7 1 2\r\n",
        b"PROXYTCP4 192.0.2.10 198.51.100.7 1 2\r\n",
        b"PROXY",
        b"\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c",
        b"\r\nUSER alice\r\n",
    ];
    for input in not_headers {
        let got = parse_every_chunking(input, DEFAULT_MAX_LEN);
        let expected = if input == b"PROXY" {
            Outcome::Incomplete
        } else {
            Outcome::Missing
        };
        assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn malformed_v1_headers_are_refused_in_every_chunking() {
    let malformed: [&[u8]; 20] = [
        b"PROXY TCP4 192.0.2.10 198.51.100.7 56324 110\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.7 56324 110\rX",
        b"PROXY TCP4 192.0.2.10 198.51.100.7 56324 110\r\r\n",
        b"PROXY TCP5 192.0.2.10 198.51.100.7 56324 110\r\n",
        b"PROXY tcp4 192.0.2.10 198.51.100.7 56324 110\r\n",
        b"PROXY TCP4 192.0.2.010 198.51.100.7 56324 110\r\n",
        b"PROXY TCP4 256.0.2.10 198.51.100.7 56324 110\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.7 65536 110\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.7 056324 110\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.7 56324 -1\r\n",
        b"PROXY TCP4 2001:db8::1 198.51.100.7 56324 110\r\n",
        b"PROXY TCP6 192.0.2.10 198.51.100.7 56324 110\r\n",
        b"PROXY TCP4  192.0.2.10 198.51.100.7 56324 110\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.7 56324 110 \r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.7 56324\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.7 56324 110 995\r\n",
        b"PROXY \r\n",
        b"PROXY UNKNOWNX\r\n",
        b"PROXY TCP4 192.0.2.10\x00198.51.100.7 56324 110\r\n",
        "PROXY TCP4 192.0.2.10 198.51.100.7 56324 110é\r\n".as_bytes(),
    ];
    for input in malformed {
        let got = parse_every_chunking(input, DEFAULT_MAX_LEN);
        assert!(
            matches!(got, Outcome::Malformed(_)),
            "{:?} gave {got:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn a_bad_byte_refuses_a_v1_header_before_its_line_ends() {
    // §2.1: "abort the connection as soon as possible".
    let got = outcome(parse(b"PROXY TCP4 192.0.2.10\n"));
    assert!(matches!(got, Outcome::Malformed(_)), "{got:?}");
}

#[test]
fn malformed_v2_headers_are_refused_in_every_chunking() {
    let ipv4 = [192, 0, 2, 10, 198, 51, 100, 7, 0xdc, 0x04, 0, 110];
    let malformed = [
        // Version 1 in the high nibble; only 2 is valid (§2.2).
        v2_by_hand(0x11, 0x11, &ipv4),
        // Version 3.
        v2_by_hand(0x31, 0x11, &ipv4),
        // Command 2 is unassigned.
        v2_by_hand(0x22, 0x11, &ipv4),
        // Command 0xF.
        v2_by_hand(0x2F, 0x11, &ipv4),
        // Family 4 does not exist.
        v2_by_hand(0x21, 0x41, &ipv4),
        // Transport 3 does not exist.
        v2_by_hand(0x21, 0x13, &ipv4),
        // Too short for the addresses of its family.
        v2_by_hand(0x21, 0x11, &ipv4[..11]),
        v2_by_hand(0x21, 0x21, &ipv4),
        v2_by_hand(0x21, 0x31, &[0; 215]),
    ];
    for input in malformed {
        let got = parse_every_chunking(&input, DEFAULT_MAX_LEN);
        assert!(
            matches!(got, Outcome::Malformed(_)),
            "{input:?} gave {got:?}"
        );
    }
}

#[test]
fn v1_is_limited_to_107_bytes() {
    let padded = |n: usize| {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(n - 2, b'f');
        line.extend_from_slice(b"\r\n");
        line
    };
    let longest = padded(V1_MAX_LEN);
    assert_eq!(
        parse_every_chunking(&longest, DEFAULT_MAX_LEN),
        Outcome::Complete(ProxyHeader::default(), V1_MAX_LEN)
    );
    assert_eq!(
        parse_every_chunking(&padded(V1_MAX_LEN + 1), DEFAULT_MAX_LEN),
        Outcome::TooLong(V1_MAX_LEN)
    );
    // No CRLF at all: refused once 107 bytes cannot hold it, however much is buffered.
    let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 4000]].concat();
    assert_eq!(
        parse_every_chunking(&endless, DEFAULT_MAX_LEN),
        Outcome::TooLong(V1_MAX_LEN)
    );
    assert_eq!(outcome(parse(&endless[..106])), Outcome::Incomplete);
    // A small max_len does not cut v1 below the specification's length.
    assert_eq!(
        outcome(parse_with_limit(&longest, 20)),
        Outcome::Complete(ProxyHeader::default(), V1_MAX_LEN)
    );
}

#[test]
fn v2_longer_than_the_cap_is_refused_from_its_fixed_part() {
    let big = v2_proxy("192.0.2.10:56324", "198.51.100.7:110")
        .write_tlv(Type::NoOp, &[0; 5000])
        .unwrap()
        .build()
        .unwrap();
    // Decided from the 16-byte fixed part: nothing more is awaited.
    assert_eq!(
        outcome(parse(&big[..16])),
        Outcome::TooLong(DEFAULT_MAX_LEN)
    );
    assert_eq!(
        parse_every_chunking(&big[..64], DEFAULT_MAX_LEN),
        Outcome::TooLong(DEFAULT_MAX_LEN)
    );
    assert_eq!(
        outcome(parse_with_limit(&big, 1024)),
        Outcome::TooLong(1024)
    );
    assert_eq!(
        outcome(parse_with_limit(&big, big.len())),
        Outcome::Complete(proxied("192.0.2.10:56324", "198.51.100.7:110"), big.len())
    );
}

#[test]
fn v2_can_be_as_long_as_the_format_allows_when_the_cap_is_raised() {
    let mut body = vec![192, 0, 2, 10, 198, 51, 100, 7, 0, 1, 0, 2];
    body.resize(usize::from(u16::MAX), 0);
    let longest = v2_by_hand(0x21, 0x11, &body);
    assert_eq!(longest.len(), V2_MAX_LEN);
    assert_eq!(
        outcome(parse_with_limit(&longest, usize::MAX)),
        Outcome::Complete(proxied("192.0.2.10:1", "198.51.100.7:2"), V2_MAX_LEN)
    );
    assert_eq!(
        outcome(parse_with_limit(&longest[..V2_MAX_LEN - 1], usize::MAX)),
        Outcome::Incomplete
    );
}

#[test]
fn sniff_tells_a_header_from_a_pop3_command() {
    assert_eq!(sniff(b""), Sniff::NeedMore);
    assert_eq!(sniff(b"P"), Sniff::NeedMore);
    assert_eq!(sniff(b"PROXY"), Sniff::NeedMore);
    assert_eq!(sniff(b"\r\n"), Sniff::NeedMore);
    assert_eq!(sniff(b"PROXY "), Sniff::Header);
    assert_eq!(sniff(b"PROXY garbage"), Sniff::Header);
    assert_eq!(sniff(&V2_SIGNATURE), Sniff::Header);
    assert_eq!(sniff(b"PASS secret\r\n"), Sniff::NotHeader);
    assert_eq!(sniff(b"CAPA\r\n"), Sniff::NotHeader);
    assert_eq!(sniff(b"\r\nCAPA\r\n"), Sniff::NotHeader);
    assert_eq!(sniff(b"QUIT\r\n"), Sniff::NotHeader);
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

/// The start of a v2 header with plausible and implausible fixed parts.
fn v2_input() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(0x20_u8), Just(0x21), any::<u8>()],
        prop_oneof![
            Just(0x00_u8),
            Just(0x11),
            Just(0x12),
            Just(0x21),
            Just(0x22),
            Just(0x31),
            any::<u8>()
        ],
        prop_oneof![0..300_u16, any::<u16>()],
        prop::collection::vec(any::<u8>(), 0..400),
    )
        .prop_map(|(version_command, family, length, body)| {
            let mut input = V2_SIGNATURE.to_vec();
            input.extend_from_slice(&[version_command, family]);
            input.extend_from_slice(&length.to_be_bytes());
            input.extend_from_slice(&body);
            input
        })
}

/// The start of a v1 line from the characters that appear in one, and a few that don't.
fn v1_input() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(b"0123456789abcdef.: TCP46UNKOWX".to_vec()),
            Just(b'\r'),
            Just(b'\n'),
            any::<u8>(),
        ],
        0..140,
    )
    .prop_map(|tail| [b"PROXY ".as_slice(), &tail].concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_and_chunking_never_matters(
        input in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            v2_input(),
            v1_input(),
        ],
        chunk in 1..64_usize,
        max_len in prop_oneof![Just(DEFAULT_MAX_LEN), 0..2000_usize, Just(usize::MAX)],
    ) {
        let whole = outcome(parse_with_limit(&input, max_len));
        prop_assert_eq!(parse_chunked(&input, chunk, max_len), whole.clone());
        match whole {
            Outcome::Complete(_, consumed) => {
                prop_assert!(consumed <= input.len());
                prop_assert!(consumed <= max_len.clamp(V1_MAX_LEN, V2_MAX_LEN));
            }
            Outcome::Incomplete => prop_assert!(input.len() < max_len.clamp(V1_MAX_LEN, V2_MAX_LEN)),
            _ => {}
        }
        let _ = sniff(&input);
    }

    #[test]
    fn any_address_pair_round_trips(source in socket_addr(), destination in socket_addr()) {
        let expected = if source.is_ipv4() == destination.is_ipv4() {
            ProxyHeader { source: Some(source), destination: Some(destination) }
        } else {
            // ppp's builder writes UNSPEC for a mixed pair.
            ProxyHeader::default()
        };
        let v2 = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (source, destination),
        )
        .build()
        .unwrap();
        prop_assert_eq!(outcome(parse(&v2)), Outcome::Complete(expected, v2.len()));

        if source.is_ipv4() == destination.is_ipv4() {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            let v1 = format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            );
            prop_assert_eq!(
                outcome(parse(v1.as_bytes())),
                Outcome::Complete(expected, v1.len())
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// read_header

const PATIENT: Duration = Duration::from_secs(10);

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// Reads until the peer closes.
async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENT, stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    rest
}

#[tokio::test]
async fn read_header_leaves_the_bytes_after_the_header_exactly() {
    let data = b"CAPA\r\nUSER alice\r\n";
    for (header, expected) in valid_headers() {
        let (mut client, mut server) = tcp_pair().await;
        client
            .write_all(&[header.as_slice(), data].concat())
            .await
            .unwrap();
        client.shutdown().await.unwrap();

        let (got, leftover) = read_header(&mut server, PATIENT, DEFAULT_MAX_LEN)
            .await
            .unwrap();
        assert_eq!(got, expected);
        let mut after = leftover.to_vec();
        after.extend(read_to_end(&mut server).await);
        assert_eq!(after, data, "after {header:?}");
    }
}

/// An in-memory stream that hands out at most `step` bytes per read and counts what it gave.
#[derive(Debug)]
struct Trickle {
    data: Vec<u8>,
    position: usize,
    step: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let end = self
            .data
            .len()
            .min(self.position + self.step)
            .min(self.position + buf.remaining());
        let start = self.position;
        buf.put_slice(&self.data[start..end]);
        self.position = end;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn read_header_never_reads_past_the_header() {
    for (header, expected) in valid_headers() {
        for step in [1, 2, 3, 7, 16, 64, 4096] {
            let mut stream = Trickle {
                data: [header.as_slice(), b"\x16\x03\x01 TLS hello"].concat(),
                position: 0,
                step,
            };
            let (got, leftover) = read_header(&mut stream, PATIENT, DEFAULT_MAX_LEN)
                .await
                .unwrap();
            assert_eq!(got, expected);
            assert!(leftover.is_empty());
            assert_eq!(stream.position, header.len(), "step {step}, {header:?}");
        }
    }
}

#[tokio::test]
async fn read_header_waits_for_a_fragmented_header() {
    let header = with_tlvs(v2_proxy("[2001:db8::1]:40000", "[2001:db8::2]:995"));
    let (mut client, mut server) = tcp_pair().await;
    client.set_nodelay(true).unwrap();
    let writer = tokio::spawn(async move {
        for piece in header.chunks(7) {
            client.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client
    });
    let (got, _) = read_header(&mut server, PATIENT, DEFAULT_MAX_LEN)
        .await
        .unwrap();
    assert_eq!(got, proxied("[2001:db8::1]:40000", "[2001:db8::2]:995"));
    writer.await.unwrap();
}

#[tokio::test]
async fn read_header_times_out_on_a_stalled_peer() {
    let (mut client, mut server) = tcp_pair().await;
    client.write_all(b"PROXY TCP4 192.0.2.10 19").await.unwrap();
    let started = Instant::now();
    let result = read_header(&mut server, Duration::from_millis(200), DEFAULT_MAX_LEN).await;
    assert!(matches!(result, Err(ProxyError::Timeout)), "{result:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(started.elapsed() < PATIENT);
    drop(client);
}

#[tokio::test]
async fn read_header_times_out_on_a_silent_peer() {
    let (client, mut server) = tcp_pair().await;
    let result = read_header(&mut server, Duration::from_millis(100), DEFAULT_MAX_LEN).await;
    assert!(matches!(result, Err(ProxyError::Timeout)), "{result:?}");
    drop(client);
}

#[tokio::test]
async fn a_slowloris_cannot_stretch_the_deadline() {
    let (mut client, mut server) = tcp_pair().await;
    client.set_nodelay(true).unwrap();
    let trickler = tokio::spawn(async move {
        // One byte every 20 ms of a 45-byte header would take 900 ms.
        for byte in b"PROXY TCP4 192.0.2.10 198.51.100.7 56324 110\r\n" {
            if client.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let started = Instant::now();
    let result = read_header(&mut server, Duration::from_millis(200), DEFAULT_MAX_LEN).await;
    assert!(matches!(result, Err(ProxyError::Timeout)), "{result:?}");
    assert!(started.elapsed() < Duration::from_millis(800));
    drop(server);
    trickler.await.unwrap();
}

#[tokio::test]
async fn read_header_reports_a_peer_that_closes_early() {
    let (mut client, mut server) = tcp_pair().await;
    client.write_all(&V2_SIGNATURE[..5]).await.unwrap();
    client.shutdown().await.unwrap();
    let result = read_header(&mut server, PATIENT, DEFAULT_MAX_LEN).await;
    assert!(
        matches!(&result, Err(ProxyError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof),
        "{result:?}"
    );
}

/// What `read_header` says to `input` from a peer that then keeps the connection open.
async fn refusal(input: &[u8], max_len: usize) -> ProxyError {
    let (mut client, mut server) = tcp_pair().await;
    client.write_all(input).await.unwrap();
    let result = read_header(&mut server, PATIENT, max_len).await;
    drop(client);
    result.unwrap_err()
}

#[tokio::test]
async fn read_header_refuses_at_once_what_cannot_be_a_header() {
    // PATIENT is far longer than the test: each answer comes without waiting for more bytes.
    let missing = refusal(b"CAPA\r\n", DEFAULT_MAX_LEN).await;
    assert!(matches!(missing, ProxyError::Missing), "{missing:?}");
    let missing = refusal(&[b'P'; 6], DEFAULT_MAX_LEN).await;
    assert!(matches!(missing, ProxyError::Missing), "{missing:?}");
    let malformed = refusal(b"PROXY TCP4 192.0.2.10 \x00", DEFAULT_MAX_LEN).await;
    assert!(
        matches!(malformed, ProxyError::Malformed(_)),
        "{malformed:?}"
    );

    let big = v2_proxy("192.0.2.10:1", "198.51.100.7:2")
        .write_tlv(Type::NoOp, &[0; 600])
        .unwrap()
        .build()
        .unwrap();
    let too_long = refusal(&big[..16], 512).await;
    assert!(
        matches!(too_long, ProxyError::TooLong { limit: 512 }),
        "{too_long:?}"
    );
}

#[tokio::test]
async fn read_header_accepts_a_long_v2_header_under_a_raised_cap() {
    let big = v2_proxy("192.0.2.10:1", "198.51.100.7:2")
        .write_tlv(Type::NoOp, &[0; 6000])
        .unwrap()
        .build()
        .unwrap();
    let (mut client, mut server) = tcp_pair().await;
    client
        .write_all(&[big.as_slice(), b"CAPA\r\n"].concat())
        .await
        .unwrap();
    let (got, leftover) = read_header(&mut server, PATIENT, 8192).await.unwrap();
    assert_eq!(got, proxied("192.0.2.10:1", "198.51.100.7:2"));
    assert!(leftover.is_empty());
    let mut capa = [0; 6];
    server.read_exact(&mut capa).await.unwrap();
    assert_eq!(&capa, b"CAPA\r\n");
}

// ---------------------------------------------------------------------------------------------
// Trusted networks and the policy

#[test]
fn trusted_networks_parse_networks_and_bare_addresses() {
    let trusted: TrustedNetworks = "10.0.0.0/8, 127.0.0.1/32 ::1/128,192.0.2.7\n2001:db8::7"
        .parse()
        .unwrap();
    assert_eq!(trusted.networks().len(), 5);
    for inside in [
        "10.0.0.0",
        "10.255.255.255",
        "127.0.0.1",
        "::1",
        "192.0.2.7",
        "2001:db8::7",
    ] {
        assert!(trusted.contains(ip(inside)), "{inside}");
    }
    for outside in [
        "11.0.0.1",
        "127.0.0.2",
        "::2",
        "192.0.2.8",
        "2001:db8::8",
        "0.0.0.1",
    ] {
        assert!(!trusted.contains(ip(outside)), "{outside}");
    }
    assert_eq!(
        trusted.to_string(),
        "10.0.0.0/8, 127.0.0.1/32, ::1/128, 192.0.2.7/32, 2001:db8::7/128"
    );
    assert_eq!(trusted.to_string().parse::<TrustedNetworks>(), Ok(trusted));
}

#[test]
fn ipv4_mapped_peers_match_ipv4_networks() {
    let trusted: TrustedNetworks = "10.0.0.0/8, 127.0.0.1".parse().unwrap();
    assert!(trusted.contains(ip("::ffff:10.1.2.3")));
    assert!(trusted.contains(ip("::ffff:127.0.0.1")));
    assert!(!trusted.contains(ip("::ffff:11.1.2.3")));
    // Only the mapped form: `::a.b.c.d` (IPv4-compatible, deprecated) and `::1` are IPv6.
    assert!(!trusted.contains(ip("::10.1.2.3")));
    assert!(
        !"0.0.0.1"
            .parse::<TrustedNetworks>()
            .unwrap()
            .contains(ip("::1"))
    );

    let written_mapped: TrustedNetworks = "::ffff:192.0.2.0/120".parse().unwrap();
    assert!(written_mapped.contains(ip("192.0.2.5")));
    assert!(written_mapped.contains(ip("::ffff:192.0.2.5")));
    assert!(!written_mapped.contains(ip("192.0.3.5")));
}

#[test]
fn trusted_networks_name_the_bad_entry() {
    for (list, bad) in [
        ("10.0.0.0/8, 10.0.0.0/33", "10.0.0.0/33"),
        ("10.0.0.300", "10.0.0.300"),
        ("127.0.0.1 pop.example.com", "pop.example.com"),
        ("10.1.2.3/8", "10.1.2.3/8"),
        ("::1/129", "::1/129"),
        ("10.0.0.0/", "10.0.0.0/"),
        ("fe80::1%eth0", "fe80::1%eth0"),
    ] {
        let error = list.parse::<TrustedNetworks>().unwrap_err();
        assert_eq!(error.entry(), bad);
        assert!(error.to_string().contains(bad), "{error}");
    }
    let host_bits = "10.1.2.3/8".parse::<TrustedNetworks>().unwrap_err();
    assert!(host_bits.to_string().contains("10.0.0.0/8"), "{host_bits}");
}

#[test]
fn trusted_networks_from_a_list_of_strings() {
    let entries = vec![" 10.0.0.0/8 ".to_owned(), "::1".to_owned()];
    let trusted = TrustedNetworks::try_from(entries.as_slice()).unwrap();
    assert!(trusted.contains(ip("10.9.9.9")));
    assert!(trusted.contains(ip("::1")));

    let with_empty = vec!["10.0.0.0/8".to_owned(), "  ".to_owned()];
    let error = TrustedNetworks::try_from(with_empty.as_slice()).unwrap_err();
    assert_eq!(error.entry(), "  ");

    let nothing: &[String] = &[];
    assert!(TrustedNetworks::try_from(nothing).unwrap().is_empty());
    assert!("".parse::<TrustedNetworks>().unwrap().is_empty());
    assert!(!TrustedNetworks::none().contains(ip("127.0.0.1")));
}

#[test]
fn only_trusted_peers_send_a_header() {
    let trusted: TrustedNetworks = "10.0.0.0/8, ::1".parse().unwrap();
    assert_eq!(decide(ip("10.1.2.3"), &trusted, true), Expectation::Header);
    assert_eq!(
        decide(ip("::ffff:10.1.2.3"), &trusted, true),
        Expectation::Header
    );
    assert_eq!(decide(ip("::1"), &trusted, true), Expectation::Header);
    assert_eq!(decide(ip("192.0.2.1"), &trusted, true), Expectation::Direct);
    // PROXY protocol off: nobody may send a header, trusted or not.
    assert_eq!(decide(ip("10.1.2.3"), &trusted, false), Expectation::Direct);
    assert_eq!(
        decide(ip("10.1.2.3"), &TrustedNetworks::none(), true),
        Expectation::Direct
    );
}

#[test]
fn source_or_falls_back_to_the_tcp_peer() {
    let peer = addr("10.0.0.5:40000");
    assert_eq!(ProxyHeader::default().source_or(peer), peer);
    assert_eq!(
        proxied("192.0.2.10:1", "198.51.100.7:2").source_or(peer),
        addr("192.0.2.10:1")
    );
}

// ---------------------------------------------------------------------------------------------
// haproxy in front of a test server

/// The haproxy binary; missing, the test fails and says how to get it.
fn haproxy() -> PathBuf {
    ["haproxy", "/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| {
            Process::new(path)
                .arg("-v")
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .expect(
            "haproxy is not installed; `bash tests/run.sh` (the README's test command) installs it",
        )
}

/// Kills the haproxy this test started when the test ends, passed or not.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects once haproxy listens; fails the test if haproxy exits or never listens.
async fn connect_through(haproxy: &mut Haproxy, front: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + PATIENT;
    loop {
        if let Ok(stream) = TcpStream::connect(front).await {
            return stream;
        }
        if let Some(status) = haproxy.0.try_wait().unwrap() {
            panic!("haproxy exited with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "haproxy never listened on {front}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn haproxy_send_proxy_v1_and_v2_reach_read_header() {
    let binary = haproxy();
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    let (front_v1, front_v2) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n    maxconn 64\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
             frontend pop3_v1\n    bind 127.0.0.1:{front_v1}\n    default_backend pods_v1\n\
             frontend pop3_v2\n    bind 127.0.0.1:{front_v2}\n    default_backend pods_v2\n\
             backend pods_v1\n    server pod 127.0.0.1:{backend_port} send-proxy\n\
             backend pods_v2\n    server pod 127.0.0.1:{backend_port} send-proxy-v2\n"
        ),
    )
    .unwrap();
    let mut haproxy = Haproxy(
        Process::new(&binary)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    for port in [front_v1, front_v2] {
        let front = SocketAddr::from(([127, 0, 0, 1], port));
        let mut client = connect_through(&mut haproxy, front).await;
        let (mut pod, _) = tokio::time::timeout(PATIENT, backend.accept())
            .await
            .unwrap()
            .unwrap();
        let (header, leftover) = read_header(&mut pod, PATIENT, DEFAULT_MAX_LEN)
            .await
            .unwrap();
        assert_eq!(
            header.source,
            Some(client.local_addr().unwrap()),
            "via {front}"
        );
        assert_eq!(header.destination, Some(front));
        assert!(leftover.is_empty());

        // The connection goes on as POP3 through haproxy, in both directions.
        pod.write_all(b"+OK cloudpop ready\r\n").await.unwrap();
        let mut greeting = [0; 20];
        client.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"+OK cloudpop ready\r\n");
        client.write_all(b"QUIT\r\n").await.unwrap();
        let mut quit = [0; 6];
        pod.read_exact(&mut quit).await.unwrap();
        assert_eq!(&quit, b"QUIT\r\n");
    }
}
