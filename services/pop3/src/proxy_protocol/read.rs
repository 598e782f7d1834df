//! Reading one PROXY header from a stream, under a deadline and a length cap.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::parse::{Parsed, V1_MAX_LEN, parse_with_limit, safe_read_len};
use super::{ProxyError, ProxyHeader};

/// Reads the PROXY header a trusted peer must send first ([`super::Expectation::Header`]).
///
/// - `timeout` bounds the whole header, not each read, so a peer trickling one byte at a
///   time cannot hold the connection longer (§2 suggests "at least 3 seconds to cover a TCP
///   retransmit").
/// - `max_len` caps the header's length as in [`super::parse_with_limit`]; no more than
///   that is ever buffered.
///
/// Every read asks for no more bytes than the shortest header that could still follow
/// (v2's length is known after 16 bytes; v1 is read up to its CRLF), so reading never goes
/// past the header: the stream is left positioned on the connection's first byte of data,
/// which is what a TLS acceptor on POP3S needs. The returned buffer holds any bytes read past
/// the header; with this strategy it is always empty, and callers that prepend it to their
/// input stay correct should that ever change.
///
/// A fragmented header is waited for (§2 recommends tolerance). Errors: [`ProxyError::Missing`]
/// as soon as the first bytes cannot start a header, [`ProxyError::Malformed`] and
/// [`ProxyError::TooLong`] as soon as they are certain, [`ProxyError::Timeout`], and
/// [`ProxyError::Io`] (`UnexpectedEof` if the peer closes first). Each means the connection
/// is refused.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
    max_len: usize,
) -> Result<(ProxyHeader, BytesMut), ProxyError> {
    match tokio::time::timeout(timeout, read_until_complete(stream, max_len)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ProxyError::Timeout),
    }
}

async fn read_until_complete<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_len: usize,
) -> Result<(ProxyHeader, BytesMut), ProxyError> {
    let mut buf = BytesMut::with_capacity(V1_MAX_LEN);
    loop {
        // parse_with_limit has rejected anything over the cap, so this stays bounded.
        let start = buf.len();
        buf.resize(start + safe_read_len(&buf), 0);
        let read = stream.read(&mut buf[start..]).await?;
        buf.truncate(start + read);
        if read == 0 {
            return Err(ProxyError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the PROXY protocol header was complete",
            )));
        }
        if let Parsed::Complete { header, consumed } = parse_with_limit(&buf, max_len)? {
            let leftover = buf.split_off(consumed);
            return Ok((header, leftover));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_over_long_v1_line_is_refused_without_reading_past_its_limit() {
        let mut input = b"PROXY ".to_vec();
        input.resize(300, b'-');
        // Split so that the reads land on 106 bytes, one short of the limit.
        let (first, second) = input.split_at(100);
        let mut stream = first.chain(second);
        let result = read_header(&mut stream, Duration::from_secs(30), V1_MAX_LEN).await;
        assert!(
            matches!(result, Err(ProxyError::TooLong { limit: V1_MAX_LEN })),
            "{result:?}"
        );
        let (first, second) = stream.into_inner();
        let read = input.len() - first.len() - second.len();
        assert!(read <= V1_MAX_LEN, "read {read} bytes");
    }
}
