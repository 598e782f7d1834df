//! A small LMTP client (RFC 2033): LHLO, then MAIL, RCPT and DATA pipelined (RFC 2920), one
//! recipient per message.

use std::net::SocketAddr;
use std::time::Duration;

use crate::wire::{Conn, SessionError};

/// The envelope sender of every bench message.
const SENDER: &str = "bench@example.net";

/// One LMTP connection, past LHLO.
#[derive(Debug)]
pub(crate) struct Lmtp {
    conn: Conn,
}

impl Lmtp {
    /// Connects, reads the 220 greeting and says LHLO.
    pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, SessionError> {
        let mut conn = Conn::connect(addr, timeout).await?;
        expect(&mut conn, "(greeting)", 220).await?;
        conn.send(b"LHLO bench.invalid\r\n").await?;
        expect(&mut conn, "LHLO", 250).await?;
        Ok(Self { conn })
    }

    /// Delivers one message to `recipient`. `stuffed` is the DATA payload, dot-stuffed and
    /// ending with the `.` line ([`crate::content::stuff`]). Succeeds only on 250.
    pub(crate) async fn deliver(
        &mut self,
        recipient: &str,
        stuffed: &[u8],
    ) -> Result<(), SessionError> {
        let envelope = format!("MAIL FROM:<{SENDER}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n");
        self.conn.send(envelope.as_bytes()).await?;
        let mail = reply(&mut self.conn).await?;
        let rcpt = reply(&mut self.conn).await?;
        let data = reply(&mut self.conn).await?;
        for (command, (code, text), want) in [
            ("MAIL", &mail, 250),
            ("RCPT", &rcpt, 250),
            ("DATA", &data, 354),
        ] {
            if *code != want {
                return Err(SessionError::reply(command, text));
            }
        }
        self.conn.send(stuffed).await?;
        // RFC 2033 §4.2: one reply per accepted recipient after the data.
        expect(&mut self.conn, "(end of data)", 250).await
    }

    /// QUIT and close.
    pub(crate) async fn quit(mut self) -> Result<(), SessionError> {
        self.conn.send(b"QUIT\r\n").await?;
        expect(&mut self.conn, "QUIT", 221).await
    }
}

/// Reads a reply, multi-line or not (RFC 5321 §4.2.1): its code and last line.
async fn reply(conn: &mut Conn) -> Result<(u16, Vec<u8>), SessionError> {
    loop {
        let line = conn.read_line().await?;
        let code = line
            .get(..3)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u16>().ok());
        let Some(code) = code else {
            return Err(SessionError::reply("(reply)", &line));
        };
        if line.get(3) != Some(&b'-') {
            return Ok((code, line));
        }
    }
}

async fn expect(conn: &mut Conn, command: &str, want: u16) -> Result<(), SessionError> {
    let (code, line) = reply(conn).await?;
    if code == want {
        Ok(())
    } else {
        Err(SessionError::reply(command, &line))
    }
}
