//! The trace header fields a final delivery adds in front of the message (RFC 5321 §4.4):
//! `Return-Path:` and `Received:`.

use std::net::IpAddr;

use crate::codec::Address;

/// What the `Return-Path:` and `Received:` fields say about one transaction.
#[derive(Debug)]
pub(crate) struct Trace<'a> {
    /// The reverse-path; `None` is `<>`.
    pub(crate) sender: Option<&'a Address>,
    /// The name the client gave in LHLO.
    pub(crate) client: &'a str,
    pub(crate) peer: IpAddr,
    pub(crate) hostname: &'a str,
    pub(crate) session_id: &'a str,
    /// Named in a `for` clause only when the transaction has exactly one recipient, so
    /// that no copy reveals the other recipients.
    pub(crate) single_recipient: Option<&'a Address>,
    /// RFC 5322 §3.3 date-time of receipt.
    pub(crate) date: &'a str,
}

impl Trace<'_> {
    /// The header fields, folded (RFC 5322 §2.2.3), each line ending in CRLF.
    pub(crate) fn render(&self) -> String {
        let sender = self.sender.map(Address::as_str).unwrap_or("");
        let mut out = format!("Return-Path: <{sender}>\r\n");
        // RFC 5321 §4.4: from (TCP-info with an address literal), by, with, id, for; date.
        // RFC 3848 §1: "LMTP" is the registered `with` protocol type.
        out.push_str(&format!(
            "Received: from {} ({})\r\n\tby {} (cloudpop) with LMTP id {}",
            self.client,
            address_literal(self.peer),
            self.hostname,
            self.session_id,
        ));
        match self.single_recipient {
            Some(rcpt) => out.push_str(&format!("\r\n\tfor <{rcpt}>; {}\r\n", self.date)),
            None => out.push_str(&format!(";\r\n\t{}\r\n", self.date)),
        }
        out
    }
}

/// RFC 5321 §4.1.3: `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
fn address_literal(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    #[test]
    fn one_recipient_gets_a_for_clause() {
        let sender = Address::parse("a@x.example").unwrap();
        let rcpt = Address::parse("b@y.example").unwrap();
        let trace = Trace {
            sender: Some(&sender),
            client: "mx.x.example",
            peer: "192.0.2.1".parse().unwrap(),
            hostname: "lmtp.y.example",
            session_id: "0123abcd",
            single_recipient: Some(&rcpt),
            date: "Thu, 1 Jan 1970 00:00:00 +0000",
        };
        assert_eq!(
            trace.render(),
            "Return-Path: <a@x.example>\r\n\
             Received: from mx.x.example ([192.0.2.1])\r\n\
             \tby lmtp.y.example (cloudpop) with LMTP id 0123abcd\r\n\
             \tfor <b@y.example>; Thu, 1 Jan 1970 00:00:00 +0000\r\n"
        );
    }

    #[test]
    fn null_sender_many_recipients_ipv6() {
        let trace = Trace {
            sender: None,
            client: "[IPv6:::1]",
            peer: IpAddr::V6(Ipv6Addr::LOCALHOST),
            hostname: "h",
            session_id: "id",
            single_recipient: None,
            date: "D",
        };
        assert_eq!(
            trace.render(),
            "Return-Path: <>\r\n\
             Received: from [IPv6:::1] ([IPv6:::1])\r\n\
             \tby h (cloudpop) with LMTP id id;\r\n\
             \tD\r\n"
        );
    }

    #[test]
    fn mapped_ipv4_is_shown_as_ipv4() {
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(address_literal(mapped), "[127.0.0.1]");
    }
}
