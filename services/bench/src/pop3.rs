//! A POP3 client (RFC 1939) that streams every multi-line reply through a checker instead
//! of keeping it.

use std::net::SocketAddr;
use std::time::Duration;

use memchr::memmem;
use xxhash_rust::xxh3::Xxh3;

use crate::wire::{Conn, SessionError};

/// Most server-added header octets in front of a seeded message that the bench accepts.
pub(crate) const MAX_PREFIX: u64 = 64 * 1024;

/// One POP3 connection.
#[derive(Debug)]
pub(crate) struct Pop3 {
    conn: Conn,
}

impl Pop3 {
    /// Connects and reads the `+OK` greeting.
    pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, SessionError> {
        let mut conn = Conn::connect(addr, timeout).await?;
        let greeting = conn.read_line().await?;
        if !greeting.starts_with(b"+OK") {
            return Err(SessionError::reply("(greeting)", &greeting));
        }
        Ok(Self { conn })
    }

    /// Sends `command` and returns the text after `+OK`.
    async fn command(&mut self, command: &str) -> Result<Vec<u8>, SessionError> {
        let mut line = Vec::with_capacity(command.len() + 2);
        line.extend_from_slice(command.as_bytes());
        line.extend_from_slice(b"\r\n");
        self.conn.send(&line).await?;
        let reply = self.conn.read_line().await?;
        if let Some(rest) = reply.strip_prefix(b"+OK") {
            return Ok(rest.trim_ascii_start().to_vec());
        }
        if reply.starts_with(b"-ERR [IN-USE]") {
            return Err(SessionError::InUse);
        }
        Err(SessionError::reply(command, &reply))
    }

    /// USER and PASS (RFC 1939 §7).
    pub(crate) async fn login(&mut self, user: &str, password: &str) -> Result<(), SessionError> {
        self.command(&format!("USER {user}")).await?;
        self.command(&format!("PASS {password}")).await?;
        Ok(())
    }

    /// STAT: message count and total size.
    pub(crate) async fn stat(&mut self) -> Result<(u64, u64), SessionError> {
        let rest = self.command("STAT").await?;
        let text = String::from_utf8_lossy(&rest);
        let mut words = text.split_ascii_whitespace().map(str::parse::<u64>);
        match (words.next(), words.next()) {
            (Some(Ok(count)), Some(Ok(size))) => Ok((count, size)),
            _ => Err(SessionError::reply("STAT", &rest)),
        }
    }

    /// A multi-line listing (`UIDL`, `LIST`): the second word of each line, in message order.
    /// Checks that the lines number the messages 1, 2, 3, …
    async fn listing(&mut self, command: &str) -> Result<Vec<String>, SessionError> {
        self.command(command).await?;
        let mut values = Vec::new();
        loop {
            let line = self.conn.read_line().await?;
            if line == b"." {
                return Ok(values);
            }
            let text = String::from_utf8_lossy(&line);
            let mut words = text.split_ascii_whitespace();
            let number = words.next().and_then(|n| n.parse::<usize>().ok());
            match (number, words.next(), words.next()) {
                (Some(n), Some(value), None) if n == values.len() + 1 => {
                    values.push(value.to_owned());
                }
                _ => return Err(SessionError::reply(command, &line)),
            }
        }
    }

    /// UIDL: the unique id of each message.
    pub(crate) async fn uidl(&mut self) -> Result<Vec<String>, SessionError> {
        self.listing("UIDL").await
    }

    /// LIST: the size of each message.
    pub(crate) async fn list(&mut self) -> Result<Vec<u64>, SessionError> {
        self.listing("LIST")
            .await?
            .iter()
            .map(|size| {
                size.parse()
                    .map_err(|_| SessionError::reply("LIST", size.as_bytes()))
            })
            .collect()
    }

    /// `RETR n` or `TOP n 0`: streams the un-stuffed message into `sink`.
    pub(crate) async fn fetch(
        &mut self,
        command: &str,
        sink: &mut Received,
    ) -> Result<(), SessionError> {
        self.command(command).await?;
        read_body(&mut self.conn, sink).await
    }

    /// QUIT, then waits until the server closes the connection: the session is over only
    /// then (RFC 1939 §6: UPDATE happens before the close).
    pub(crate) async fn quit(mut self) -> Result<(), SessionError> {
        self.command("QUIT").await?;
        self.conn.expect_close().await
    }
}

/// Reads a multi-line reply up to its terminating `.` line, removing the stuffing dot of
/// lines that start with one (RFC 1939 §3), and feeds the content to `sink` in runs as long
/// as the buffer allows.
async fn read_body(conn: &mut Conn, sink: &mut Received) -> Result<(), SessionError> {
    let mut line_start = true;
    loop {
        let data = conn.available();
        if data.is_empty() {
            conn.fill().await?;
            continue;
        }
        if line_start {
            if data[0] == b'.' {
                if data.len() < 3 {
                    conn.fill().await?;
                    continue;
                }
                if &data[..3] == b".\r\n" {
                    conn.consume(3);
                    return Ok(());
                }
                conn.consume(1);
            }
            line_start = false;
            continue;
        }
        // Everything up to the next line that starts with a dot is content as it stands.
        let run = match memmem::find(data, b"\n.") {
            Some(i) => {
                line_start = true;
                i + 1
            }
            None => {
                line_start = data[data.len() - 1] == b'\n';
                data.len()
            }
        };
        sink.feed(&data[..run]);
        conn.consume(run);
    }
}

/// Collects what the bench checks of one retrieved message: the server-added header lines
/// in front of the seeded message, the seeded message's first line (its id), the total
/// length, and a hash of everything after the server's lines.
pub(crate) struct Received {
    prefix_len: usize,
    prefix: Vec<u8>,
    first_line: Vec<u8>,
    first_line_done: bool,
    total: u64,
    hasher: Xxh3,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("prefix_len", &self.prefix_len)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

/// What [`Received`] saw once the reply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The server-added header lines.
    pub(crate) prefix: Vec<u8>,
    /// The first line after them, line end included (at most 256 octets).
    pub(crate) first_line: Vec<u8>,
    /// Octets received, after un-stuffing.
    pub(crate) total: u64,
    /// xxh3 of the octets after the prefix.
    pub(crate) hash: u64,
}

impl Received {
    /// Expects `prefix_len` octets of server-added header lines before the seeded message.
    pub(crate) fn new(prefix_len: usize) -> Self {
        Self {
            prefix_len,
            prefix: Vec::with_capacity(prefix_len),
            first_line: Vec::new(),
            first_line_done: false,
            total: 0,
            hasher: Xxh3::new(),
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.prefix.len() < self.prefix_len {
            let take = (self.prefix_len - self.prefix.len()).min(bytes.len());
            self.prefix.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if bytes.is_empty() {
            return;
        }
        if !self.first_line_done {
            let end = memchr::memchr(b'\n', bytes);
            let take = end.map_or(bytes.len(), |i| i + 1);
            if self.first_line.len() + take <= 256 {
                self.first_line.extend_from_slice(&bytes[..take]);
            }
            self.first_line_done = end.is_some() || self.first_line.len() >= 256;
        }
        self.hasher.update(bytes);
    }

    /// The result.
    pub(crate) fn finish(self) -> Outcome {
        Outcome {
            prefix: self.prefix,
            first_line: self.first_line,
            total: self.total,
            hash: self.hasher.digest(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Serves `reply` in chunks of `chunk` octets, then reads the body back with the client.
    async fn body_through(reply: &[u8], chunk: usize, prefix_len: usize) -> Outcome {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reply = reply.to_vec();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.set_nodelay(true).unwrap();
            for piece in reply.chunks(chunk) {
                socket.write_all(piece).await.unwrap();
                socket.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut conn = Conn::connect(addr, Duration::from_secs(5)).await.unwrap();
        let mut sink = Received::new(prefix_len);
        read_body(&mut conn, &mut sink).await.unwrap();
        server.await.unwrap();
        sink.finish()
    }

    #[tokio::test]
    async fn bodies_are_unstuffed_whatever_the_chunking() {
        let message = crate::content::message(3, "c@example.com", 1, 3000);
        let prefix = b"Return-Path: <x@y>\r\nReceived: by z\r\n\tfor <c>\r\n";
        let mut whole = prefix.to_vec();
        whole.extend_from_slice(&message);
        let wire = crate::content::stuff(&whole);
        for chunk in [1, 2, 3, 5, 7, 64, 1000, 100_000] {
            let got = body_through(&wire, chunk, prefix.len()).await;
            assert_eq!(got.prefix, prefix.to_vec(), "chunk {chunk}");
            assert_eq!(got.total, whole.len() as u64, "chunk {chunk}");
            assert_eq!(
                got.hash,
                xxhash_rust::xxh3::xxh3_64(&message),
                "chunk {chunk}"
            );
            assert_eq!(
                got.first_line,
                crate::content::id_line("c@example.com", 1).into_bytes()
            );
        }
    }

    #[tokio::test]
    async fn an_empty_body_and_a_lone_dot_line() {
        let got = body_through(b".\r\n", 1, 0).await;
        assert_eq!(got.total, 0);
        let got = body_through(b"..\r\n.\r\n", 1, 0).await;
        assert_eq!(got.total, 3);
        assert_eq!(got.first_line, b".\r\n".to_vec());
    }
}
