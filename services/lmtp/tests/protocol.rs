//! Command sequencing, syntax and limits, over real TCP.

mod support;

use cloudpop_lmtp::LmtpConfig;
use support::{TestServer, delivered_uid, test_config};

#[tokio::test]
async fn lmtp_requires_lhlo() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert!(c.cmd("HELO client.example").await.starts_with("500 5.5.1 "));
    assert!(c.cmd("EHLO client.example").await.starts_with("500 5.5.1 "));
    assert!(c.cmd("MAIL FROM:<a@b>").await.starts_with("503 5.5.1 "));
    assert!(c.cmd("DATA").await.starts_with("503 5.5.1 "));
    assert!(
        c.cmd("lhlo client.example")
            .await
            .starts_with("250-lmtp.test")
    );
    assert!(c.cmd("mail from:<a@b>").await.starts_with("250 2.1.0"));
}

#[tokio::test]
async fn bad_sequences_are_503() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.cmd("LHLO client.example").await;
    assert!(
        c.cmd("RCPT TO:<bob@example.com>")
            .await
            .starts_with("503 5.5.1 ")
    );
    assert!(c.cmd("DATA").await.starts_with("503 5.5.1 "));
    assert!(c.cmd("MAIL FROM:<a@b>").await.starts_with("250 2.1.0"));
    assert!(
        c.cmd("MAIL FROM:<a@b>").await.starts_with("503 5.5.1 "),
        "nested MAIL"
    );
    // DATA with no accepted recipient (RFC 2033 §4.2).
    assert!(
        c.cmd("RCPT TO:<nobody@example.com>")
            .await
            .starts_with("550 5.1.1 ")
    );
    assert_eq!(
        c.cmd("DATA").await,
        "503 5.5.1 bad sequence of commands: no valid recipients"
    );
    // RFC 5321 §4.1.1.5: RSET ends the transaction; LHLO is kept.
    assert_eq!(c.cmd("RSET").await, "250 2.0.0 OK");
    assert!(
        c.cmd("RCPT TO:<bob@example.com>")
            .await
            .starts_with("503 5.5.1 ")
    );
    assert!(c.cmd("MAIL FROM:<a@b>").await.starts_with("250 2.1.0"));
    // RFC 5321 §4.1.4: LHLO, like EHLO, also ends the transaction.
    c.cmd("LHLO client.example").await;
    assert!(
        c.cmd("RCPT TO:<bob@example.com>")
            .await
            .starts_with("503 5.5.1 ")
    );
}

#[tokio::test]
async fn simple_commands() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    assert_eq!(c.cmd("noop with an argument").await, "250 2.0.0 OK");
    assert!(
        c.cmd("VRFY alice@example.com")
            .await
            .starts_with("252 2.5.0 ")
    );
    assert!(
        c.cmd("VRFY nobody@example.com")
            .await
            .starts_with("252 2.5.0 ")
    );
    assert_eq!(
        c.cmd("BDAT 10 LAST").await,
        "500 5.5.2 command not recognized"
    );
    assert_eq!(c.cmd("STARTTLS").await, "500 5.5.2 command not recognized");
    assert_eq!(c.cmd("").await, "500 5.5.2 command not recognized");
    assert!(c.cmd("QUIT now").await.starts_with("501 5.5.4 "));
    assert_eq!(
        c.cmd("QuIt").await,
        "221 2.0.0 lmtp.test closing connection"
    );
    c.expect_eof().await;
}

#[tokio::test]
async fn parameters_and_paths() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.cmd("LHLO client.example").await;
    assert_eq!(
        c.cmd("MAIL FROM:<a@b> SMTPUTF8").await,
        "555 5.5.4 parameter SMTPUTF8 not supported"
    );
    assert!(
        c.cmd("MAIL FROM:<a@b> BODY=BINARYMIME")
            .await
            .starts_with("555 5.5.4 ")
    );
    assert!(c.cmd("MAIL FROM:a@b").await.starts_with("501 5.5.4 "));
    assert!(
        c.cmd("MAIL FROM:<a@b> SIZE=lots")
            .await
            .starts_with("501 5.5.4 ")
    );
    // RFC 5321 §4.5.5: the null reverse-path (bounces) is accepted.
    assert_eq!(c.cmd("MAIL FROM:<>").await, "250 2.1.0 <> sender OK");
    assert_eq!(
        c.cmd("RCPT TO:<bob@example.com> NOTIFY=NEVER").await,
        "555 5.5.4 parameter NOTIFY not supported"
    );
    assert!(c.cmd("RCPT TO:<>").await.starts_with("501 5.5.4 "));
    assert!(
        c.cmd("RCPT TO:<@relay.example:bob@example.com>")
            .await
            .starts_with("250 2.1.5 ")
    );
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"x\r\n.\r\n").await;
    delivered_uid(&c.reply().await, "bob@example.com");
}

#[tokio::test]
async fn overlong_line_is_answered_and_the_session_resyncs() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let long = format!("NOOP {}", "x".repeat(5000));
    c.send(format!("{long}\r\nNOOP\r\n").as_bytes()).await;
    assert_eq!(c.reply().await, "500 5.5.2 line too long");
    assert_eq!(c.reply().await, "250 2.0.0 OK");
    // RFC 5321 §4.5.3.1.4: the limit (2048 here) counts the CRLF.
    let fits = format!("NOOP {}", "x".repeat(2048 - 7));
    assert_eq!(c.cmd(&fits).await, "250 2.0.0 OK");
    assert_eq!(c.cmd(&format!("{fits}x")).await, "500 5.5.2 line too long");
}

#[tokio::test]
async fn recipients_over_the_limit_are_452() {
    let server = TestServer::with_config(LmtpConfig {
        max_recipients: 2,
        ..test_config()
    })
    .await;
    let mut c = server.client().await;
    c.envelope("a@b", &["alice@example.com", "bob@example.com"])
        .await;
    assert_eq!(
        c.cmd("RCPT TO:<carol@example.com>").await,
        "452 4.5.3 too many recipients"
    );
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"x\r\n.\r\n").await;
    delivered_uid(&c.reply().await, "alice@example.com");
    delivered_uid(&c.reply().await, "bob@example.com");
    assert!(server.messages("carol").await.is_empty());
}

#[tokio::test]
async fn client_closing_mid_data_delivers_nothing() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.envelope("a@b", &["alice@example.com"]).await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: cut\r\n\r\npartial").await;
    drop(c);
    let mut c = server.client().await;
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    assert!(server.messages("alice").await.is_empty());
}
