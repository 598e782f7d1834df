//! A buffered TCP connection for line protocols, and the errors a session can end with.
//!
//! Every read has a deadline, so a server that stops answering fails the session instead of
//! hanging the run.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Initial read buffer; it grows only for a line longer than this.
const BUFFER: usize = 64 * 1024;
/// Longest reply line accepted.
const MAX_LINE: usize = 64 * 1024;

/// Why a session failed. Every variant counts as an error of the run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for the server")]
    Timeout,
    #[error("the server closed the connection")]
    Closed,
    #[error("unexpected reply to {command}: {reply}")]
    Reply { command: String, reply: String },
    #[error("the maildrop is in use ([IN-USE])")]
    InUse,
    #[error("verification failed: {0}")]
    Verify(String),
}

impl SessionError {
    /// A reply that was not the one expected. Only the command's keyword is kept, so a
    /// password never ends up in a report.
    pub(crate) fn reply(command: &str, reply: &[u8]) -> Self {
        let keyword = command.split_whitespace().next().unwrap_or("").to_owned();
        Self::Reply {
            command: keyword,
            reply: String::from_utf8_lossy(reply).chars().take(200).collect(),
        }
    }
}

/// A TCP connection with a read buffer that the protocol clients parse in place.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Unread data is `buf[start..end]`.
    start: usize,
    end: usize,
    timeout: Duration,
}

impl Conn {
    /// Connects with `TCP_NODELAY`, as mail clients do.
    pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, SessionError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| SessionError::Timeout)??;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: vec![0; BUFFER],
            start: 0,
            end: 0,
            timeout,
        })
    }

    /// Writes all of `bytes`.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        tokio::time::timeout(self.timeout, self.stream.write_all(bytes))
            .await
            .map_err(|_| SessionError::Timeout)??;
        Ok(())
    }

    /// The data read but not consumed yet.
    pub(crate) fn available(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` bytes of [`Conn::available`] as consumed.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Reads more data after what is available (keeping it). Fails on end of stream.
    pub(crate) async fn fill(&mut self) -> Result<(), SessionError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
        }
        let n = tokio::time::timeout(self.timeout, self.stream.read(&mut self.buf[self.end..]))
            .await
            .map_err(|_| SessionError::Timeout)??;
        if n == 0 {
            return Err(SessionError::Closed);
        }
        self.end += n;
        Ok(())
    }

    /// Reads one line and returns it without its line end.
    pub(crate) async fn read_line(&mut self) -> Result<Vec<u8>, SessionError> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', self.available()) {
                let line = &self.available()[..i];
                let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
                self.consume(i + 1);
                return Ok(line);
            }
            if self.available().len() > MAX_LINE {
                return Err(SessionError::Verify(format!(
                    "a reply line is longer than {MAX_LINE} octets"
                )));
            }
            self.fill().await?;
        }
    }

    /// Waits for the server to close the connection; data it sends meanwhile is an error.
    pub(crate) async fn expect_close(&mut self) -> Result<(), SessionError> {
        if !self.available().is_empty() {
            return Err(SessionError::reply("(after QUIT)", self.available()));
        }
        match self.fill().await {
            Err(SessionError::Closed) => Ok(()),
            // A reset after QUIT's reply is the server closing too.
            Err(SessionError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(e),
            Ok(()) => Err(SessionError::reply("(after QUIT)", self.available())),
        }
    }
}
