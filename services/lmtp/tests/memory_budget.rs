//! The memory budget shared by all connections, over real TCP into a real store.

mod support;

use cloudpop_lmtp::LmtpConfig;
use support::{Client, TestServer, delivered_uid, split_trace, test_config};

const MAX_MESSAGE: u64 = 100_000;

/// `size` octets of numbered CRLF lines, unique to `tag`.
fn body(tag: &str, size: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(size + 80);
    let mut i = 0;
    while body.len() < size {
        body.extend_from_slice(format!("{tag} line {i:06} {}\r\n", "z".repeat(i % 50)).as_bytes());
        i += 1;
    }
    body
}

/// The gauge of message bytes held by all connections.
const IN_FLIGHT: &str = "cloudpop_lmtp_in_flight_bytes";

/// A server whose budget has room for two messages of the largest size, not three.
async fn budgeted_server() -> TestServer {
    TestServer::with_config(LmtpConfig {
        max_message_size: MAX_MESSAGE,
        max_in_flight_bytes: 320_000,
        ..test_config()
    })
    .await
}

/// A client that has sent `body` after DATA, but not its end.
async fn hold(server: &TestServer, rcpt: &str, body: &[u8]) -> Client {
    let mut c = server.client().await;
    c.envelope("a@b", &[rcpt]).await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(body).await;
    c
}

#[tokio::test]
async fn a_message_over_the_budget_gets_452_for_each_recipient_and_is_not_stored() {
    let server = budgeted_server().await;
    let (a_body, b_body) = (body("a", 99_000), body("b", 99_000));
    let mut a = hold(&server, "alice@example.com", &a_body).await;
    server.wait_for_metric(IN_FLIGHT, |v| v >= 99_000.0).await;
    let mut b = hold(&server, "bob@example.com", &b_body).await;
    server.wait_for_metric(IN_FLIGHT, |v| v >= 198_000.0).await;

    // A third message must grow its buffer past 64 KiB while the other two hold theirs:
    // old and new buffer together do not fit in what is left.
    let mut c = server.client().await;
    c.envelope("a@b", &["carol@example.com", "al@example.com"])
        .await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    let c_body = body("c", 99_000);
    c.send(&c_body).await;
    c.send(b".\r\n").await;
    // RFC 2033 §4.2: one reply per recipient; RFC 3463 X.3.1: mail system full.
    assert_eq!(
        c.reply().await,
        "452 4.3.1 <carol@example.com> insufficient system storage, try again later"
    );
    assert_eq!(
        c.reply().await,
        "452 4.3.1 <al@example.com> insufficient system storage, try again later"
    );
    // The rest of the message was read and dropped: the session is in step.
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    assert!(server.messages("carol").await.is_empty());
    assert_eq!(
        server.metric("cloudpop_lmtp_messages_over_budget_total", None),
        1.0
    );
    assert_eq!(
        server.metric(
            "cloudpop_lmtp_deliveries_total",
            Some(("outcome", "insufficient_storage"))
        ),
        2.0
    );

    // The two held messages complete, and give their memory back.
    a.send(b".\r\n").await;
    b.send(b".\r\n").await;
    delivered_uid(&a.reply().await, "alice@example.com");
    delivered_uid(&b.reply().await, "bob@example.com");
    assert_eq!(server.metric(IN_FLIGHT, None), 0.0);

    // The client's retry now fits, and every message is stored intact.
    c.envelope("a@b", &["carol@example.com"]).await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(&c_body).await;
    c.send(b".\r\n").await;
    delivered_uid(&c.reply().await, "carol@example.com");
    assert_eq!(server.metric(IN_FLIGHT, None), 0.0);
    for (mailbox, sent) in [("alice", &a_body), ("bob", &b_body), ("carol", &c_body)] {
        let stored = server.messages(mailbox).await;
        assert_eq!(stored.len(), 1, "{mailbox}");
        let (_, _, body) = split_trace(&stored[0].1, "a@b");
        assert!(&body == sent, "{mailbox}'s message differs");
    }
}

#[tokio::test]
async fn a_connection_that_ends_mid_message_gives_its_memory_back() {
    let server = budgeted_server().await;
    let c = hold(&server, "alice@example.com", &body("a", 50_000)).await;
    server.wait_for_metric(IN_FLIGHT, |v| v >= 50_000.0).await;
    drop(c);
    server.wait_for_metric(IN_FLIGHT, |v| v == 0.0).await;
    assert!(server.messages("alice").await.is_empty());
}
