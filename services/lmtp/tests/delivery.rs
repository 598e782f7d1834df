//! Deliveries over real TCP into a real filesystem store.

mod support;

use cloudpop_lmtp::LmtpConfig;
use support::{TestServer, delivered_uid, split_trace, test_config};

#[tokio::test]
async fn full_delivery_stores_exact_bytes_with_trace_fields() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert_eq!(c.greeting, "220 lmtp.test LMTP cloudpop ready");
    assert_eq!(
        c.cmd("LHLO client.example").await,
        "250-lmtp.test\n250-PIPELINING\n250-ENHANCEDSTATUSCODES\n250-SIZE 67108864\n250 8BITMIME"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<sender@ext.example> BODY=8BITMIME SIZE=100")
            .await,
        "250 2.1.0 <sender@ext.example> sender OK"
    );
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.com>").await,
        "250 2.1.5 <alice@example.com> recipient OK"
    );
    assert_eq!(
        c.cmd("DATA").await,
        "354 start mail input; end with <CRLF>.<CRLF>"
    );
    c.send("Subject: hi\r\n\r\nH\u{e9}llo\r\n..leading dot\r\n.\r\n".as_bytes())
        .await;
    let uid = delivered_uid(&c.reply().await, "alice@example.com");
    assert_eq!(
        c.cmd("QUIT").await,
        "221 2.0.0 lmtp.test closing connection"
    );
    c.expect_eof().await;

    let stored = server.messages("alice").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, uid);
    let (id, rcpt, body) = split_trace(&stored[0].1, "sender@ext.example");
    assert_eq!(rcpt.as_deref(), Some("alice@example.com"));
    assert_eq!(
        body,
        "Subject: hi\r\n\r\nH\u{e9}llo\r\n.leading dot\r\n".as_bytes()
    );
    // RFC 5321 §4.4: trace fields go in front; the message is otherwise unchanged.
    let text = String::from_utf8(stored[0].1.clone()).unwrap();
    let received_at = text
        .lines()
        .nth(3)
        .unwrap()
        .split("; ")
        .nth(1)
        .unwrap()
        .to_owned();
    let expected = format!(
        "Return-Path: <sender@ext.example>\r\n\
         Received: from client.example ([127.0.0.1])\r\n\
         \tby lmtp.test (cloudpop) with LMTP id {id}\r\n\
         \tfor <alice@example.com>; {received_at}\r\n\
         Subject: hi\r\n\r\nH\u{e9}llo\r\n.leading dot\r\n"
    );
    assert_eq!(text, expected);
}

#[tokio::test]
async fn dot_unstuffing_and_line_ending_normalisation() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.envelope("", &["bob@example.com"]).await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    // RFC 5321 §4.5.2 (stuffing) and §4.1.1.4 (only CRLF.CRLF ends the data): bare LF and
    // bare CR endings, stuffed dots, and a lone dot after a bare LF, which is content.
    c.send(b"A: 1\nB: 2\r\n\r\n...two\r\n..\nmid\rline\n.\r\nlast\r\n.\r\n")
        .await;
    delivered_uid(&c.reply().await, "bob@example.com");

    let stored = server.messages("bob").await;
    let (_, _, body) = split_trace(&stored[0].1, "");
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "A: 1\r\nB: 2\r\n\r\n..two\r\n.\r\nmid\r\nline\r\n.\r\nlast\r\n"
    );
}

#[tokio::test]
async fn empty_message_is_stored_with_trace_fields_only() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.envelope("a@b", &["bob@example.com"]).await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b".\r\n").await;
    delivered_uid(&c.reply().await, "bob@example.com");
    let stored = server.messages("bob").await;
    let (_, _, body) = split_trace(&stored[0].1, "a@b");
    assert!(body.is_empty());
}

#[tokio::test]
async fn several_recipients_get_one_reply_each_in_rcpt_order() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.envelope("s@ext", &["bob@example.com", "alice@example.com"])
        .await;
    assert_eq!(
        c.cmd("RCPT TO:<nobody@example.com>").await,
        "550 5.1.1 <nobody@example.com>: no such user"
    );
    assert_eq!(
        c.cmd("RCPT TO:<down@example.com>").await,
        "451 4.4.3 <down@example.com>: recipient lookup temporarily unavailable"
    );
    // RFC 2033 §4.2: a reply per RCPT, also for two RCPTs of one maildrop (stored once).
    assert!(
        c.cmd("RCPT TO:<al@example.com>")
            .await
            .starts_with("250 2.1.5")
    );
    assert!(
        c.cmd("RCPT TO:<ALICE@example.com>")
            .await
            .starts_with("250 2.1.5")
    );
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: to many\r\n\r\nbody\r\n.\r\n").await;
    let bob = delivered_uid(&c.reply().await, "bob@example.com");
    let alice = delivered_uid(&c.reply().await, "alice@example.com");
    assert_eq!(delivered_uid(&c.reply().await, "al@example.com"), alice);
    assert_eq!(delivered_uid(&c.reply().await, "ALICE@example.com"), alice);
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");

    let bobs = server.messages("bob").await;
    let alices = server.messages("alice").await;
    assert_eq!((bobs.len(), alices.len()), (1, 1));
    assert_eq!(
        (bobs[0].0.as_str(), alices[0].0.as_str()),
        (bob.as_str(), alice.as_str())
    );
    assert_eq!(bobs[0].1, alices[0].1);
    // RFC 5321 §7.2: no `for` clause, so a copy does not name the other recipients.
    let (_, rcpt, body) = split_trace(&bobs[0].1, "s@ext");
    assert_eq!(rcpt, None);
    assert_eq!(body, b"Subject: to many\r\n\r\nbody\r\n");
}

#[tokio::test]
async fn declared_size_over_the_limit_is_552_at_mail() {
    let server = TestServer::with_config(LmtpConfig {
        max_message_size: 1000,
        ..test_config()
    })
    .await;
    let mut c = server.client().await;
    assert!(
        c.cmd("LHLO client.example")
            .await
            .contains("250-SIZE 1000\n")
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@b> SIZE=1001").await,
        "552 5.3.4 message too large"
    );
    // RFC 1870 §6.1: the refused MAIL started no transaction.
    assert!(
        c.cmd("RCPT TO:<bob@example.com>")
            .await
            .starts_with("503 5.5.1")
    );
    assert!(
        c.cmd("MAIL FROM:<a@b> SIZE=1000")
            .await
            .starts_with("250 2.1.0")
    );
}

#[tokio::test]
async fn body_over_the_limit_is_552_for_every_recipient_and_the_session_goes_on() {
    let server = TestServer::with_config(LmtpConfig {
        max_message_size: 100,
        ..test_config()
    })
    .await;
    let mut c = server.client().await;
    c.envelope("a@b", &["alice@example.com", "bob@example.com"])
        .await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    let line = format!("{}\r\n", "x".repeat(60));
    c.send(format!("{line}{line}.\r\n").as_bytes()).await;
    assert_eq!(c.reply().await, "552 5.3.4 message too large");
    assert_eq!(c.reply().await, "552 5.3.4 message too large");
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    assert!(server.messages("alice").await.is_empty());
    assert!(server.messages("bob").await.is_empty());

    // RFC 1870 §4: the size is the message as sent; the trace fields added do not count.
    c.envelope("a@b", &["bob@example.com"]).await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(format!("{line}{}\r\n.\r\n", "y".repeat(36)).as_bytes())
        .await;
    delivered_uid(&c.reply().await, "bob@example.com");
}

#[tokio::test]
async fn bare_lf_growth_past_the_size_limit_is_552_and_nothing_is_stored() {
    let server = TestServer::with_config(LmtpConfig {
        max_message_size: 1000,
        ..test_config()
    })
    .await;
    let mut c = server.client().await;
    // 901 octets on the wire, 1200 once each bare LF is a CRLF.
    let lines = |n: usize| [b"ab\n".repeat(n - 1), b"ab\r\n".to_vec()].concat();
    c.envelope("a@b", &["alice@example.com", "bob@example.com"])
        .await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(&lines(300)).await;
    c.send(b".\r\n").await;
    assert_eq!(c.reply().await, "552 5.3.4 message too large");
    assert_eq!(c.reply().await, "552 5.3.4 message too large");
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    assert!(server.messages("alice").await.is_empty());
    assert!(server.messages("bob").await.is_empty());
    assert_eq!(server.metric("cloudpop_lmtp_in_flight_bytes", None), 0.0);

    // The same lines within the limit once stored are delivered, with CRLF endings.
    c.envelope("a@b", &["bob@example.com"]).await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(&lines(249)).await;
    c.send(b".\r\n").await;
    delivered_uid(&c.reply().await, "bob@example.com");
    let (_, _, stored) = split_trace(&server.messages("bob").await[0].1, "a@b");
    assert_eq!(stored, b"ab\r\n".repeat(249));
}

#[tokio::test]
async fn storage_failure_is_451_and_never_250() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("not-a-directory");
    std::fs::write(&root, b"a regular file where the store root should be").unwrap();
    let server = TestServer::with_store_root(test_config(), dir, &root).await;
    let mut c = server.client().await;
    c.envelope(
        "a@b",
        &["alice@example.com", "al@example.com", "bob@example.com"],
    )
    .await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: x\r\n\r\ny\r\n.\r\n").await;
    for rcpt in ["alice@example.com", "al@example.com", "bob@example.com"] {
        assert_eq!(
            c.reply().await,
            format!("451 4.3.0 <{rcpt}> temporary storage failure")
        );
    }
    assert_eq!(
        c.cmd("QUIT").await,
        "221 2.0.0 lmtp.test closing connection"
    );
}

#[tokio::test]
async fn pipelined_commands_and_data_in_one_write_are_answered_in_order() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(
        b"LHLO client.example\r\n\
          MAIL FROM:<p@ext>\r\n\
          RCPT TO:<alice@example.com>\r\n\
          RCPT TO:<nobody@example.com>\r\n\
          RCPT TO:<bob@example.com>\r\n\
          DATA\r\n\
          Subject: piped\r\n\r\nbody\r\n.\r\n\
          MAIL FROM:<p@ext>\r\n\
          RCPT TO:<carol@example.com>\r\n\
          DATA\r\n\
          second\r\n.\r\n\
          QUIT\r\n",
    )
    .await;
    assert!(c.reply().await.starts_with("250-lmtp.test"));
    assert!(c.reply().await.starts_with("250 2.1.0"));
    assert!(c.reply().await.starts_with("250 2.1.5 <alice@example.com>"));
    assert!(
        c.reply()
            .await
            .starts_with("550 5.1.1 <nobody@example.com>")
    );
    assert!(c.reply().await.starts_with("250 2.1.5 <bob@example.com>"));
    assert!(c.reply().await.starts_with("354"));
    delivered_uid(&c.reply().await, "alice@example.com");
    delivered_uid(&c.reply().await, "bob@example.com");
    assert!(c.reply().await.starts_with("250 2.1.0"));
    assert!(c.reply().await.starts_with("250 2.1.5 <carol@example.com>"));
    assert!(c.reply().await.starts_with("354"));
    delivered_uid(&c.reply().await, "carol@example.com");
    assert!(c.reply().await.starts_with("221 2.0.0"));
    c.expect_eof().await;
    let (_, _, body) = split_trace(&server.messages("carol").await[0].1, "p@ext");
    assert_eq!(body, b"second\r\n");
}

#[tokio::test]
async fn a_large_message_in_many_writes_is_stored_intact() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.envelope("a@b", &["alice@example.com"]).await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    let mut expected = Vec::new();
    for i in 0..20_000 {
        let line = format!("line {i:05} {}\r\n", "z".repeat(i % 97));
        expected.extend_from_slice(line.as_bytes());
        c.send(line.as_bytes()).await;
    }
    c.send(b".\r\n").await;
    delivered_uid(&c.reply().await, "alice@example.com");
    let (_, _, body) = split_trace(&server.messages("alice").await[0].1, "a@b");
    assert_eq!(body, expected);
}
