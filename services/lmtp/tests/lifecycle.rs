//! Connection limits, idle timeouts and draining on shutdown.

mod support;

use std::time::Duration;

use cloudpop_lmtp::LmtpConfig;
use support::{Client, TestServer, WAIT, delivered_uid, test_config};

#[tokio::test]
async fn idle_client_gets_421_and_is_closed() {
    let config = LmtpConfig {
        idle_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let server = TestServer::with_config(config).await;
    let mut c = server.client().await;
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    assert_eq!(
        c.reply().await,
        "421 4.4.2 lmtp.test idle timeout, closing connection"
    );
    c.expect_eof().await;

    // RFC 5321 §4.5.3.2.7: the server timeout applies while waiting for data too.
    let mut c = server.client().await;
    c.envelope("a@b", &["alice@example.com"]).await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: slow\r\n").await;
    assert!(c.reply().await.starts_with("421 4.4.2 "));
    c.expect_eof().await;
    assert!(server.messages("alice").await.is_empty());
}

#[tokio::test]
async fn connections_over_the_cap_get_421() {
    let server = TestServer::with_config(LmtpConfig {
        max_connections: 2,
        ..test_config()
    })
    .await;
    let mut first = server.client().await;
    let mut second = server.client().await;
    let mut third = Client::connect(server.addr).await;
    assert_eq!(
        third.greeting,
        "421 4.3.2 lmtp.test too many connections, try again later"
    );
    third.expect_eof().await;
    assert_eq!(first.cmd("NOOP").await, "250 2.0.0 OK");
    assert_eq!(
        second.cmd("QUIT").await,
        "221 2.0.0 lmtp.test closing connection"
    );
    second.expect_eof().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut c = Client::connect(server.addr).await;
        if c.greeting.starts_with("220 ") {
            assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn shutdown_finishes_deliveries_in_progress_then_returns() {
    let mut server = TestServer::start().await;
    let mut idle = server.client().await;
    let mut busy = server.client().await;
    busy.envelope("a@b", &["alice@example.com", "bob@example.com"])
        .await;
    assert!(busy.cmd("DATA").await.starts_with("354"));
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n").await;

    server.shutdown.cancel();
    // RFC 5321 §3.8: a server shutting down answers 421 and closes.
    assert_eq!(idle.reply().await, "421 4.3.2 lmtp.test shutting down");
    idle.expect_eof().await;
    let finished_early = tokio::time::timeout(Duration::from_millis(200), async {
        while !server.handle.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(
        finished_early.await.is_err(),
        "run returned before the delivery ended"
    );

    // RFC 2033 §4.2: every recipient gets its reply before the 421 (RFC 5321 §3.8).
    busy.send(b"second half\r\n.\r\n").await;
    delivered_uid(&busy.reply().await, "alice@example.com");
    delivered_uid(&busy.reply().await, "bob@example.com");
    assert_eq!(busy.reply().await, "421 4.3.2 lmtp.test shutting down");
    busy.expect_eof().await;

    let result = tokio::time::timeout(WAIT, &mut server.handle)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok());
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
    assert_eq!(server.messages("alice").await.len(), 1);
}

#[tokio::test]
async fn invalid_config_is_refused_at_start() {
    let config = LmtpConfig {
        hostname: String::new(),
        ..test_config()
    };
    let server = TestServer::with_config(config).await;
    let error = server.handle.await.unwrap().unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn a_trickled_message_is_cut_off_at_data_timeout() {
    // Each octet comes well within the idle timeout; only the whole DATA phase is too long.
    let config = LmtpConfig {
        idle_timeout: Duration::from_secs(60),
        data_timeout: Duration::from_secs(1),
        ..test_config()
    };
    let server = TestServer::with_config(config).await;
    let mut c = server.client().await;
    c.envelope("a@b", &["alice@example.com"]).await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: slow\r\n\r\n").await;
    let started = tokio::time::Instant::now();
    let reply = c
        .trickle_until_reply(b'x', Duration::from_millis(150), WAIT)
        .await;
    assert_eq!(
        reply.as_deref(),
        Some("421 4.4.2 lmtp.test data timeout, closing connection"),
        "still trickling after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    c.expect_eof().await;
    assert!(server.messages("alice").await.is_empty());
    assert_eq!(
        server.metric(
            "cloudpop_lmtp_sessions_total",
            Some(("outcome", "data_timeout"))
        ),
        1.0
    );
    assert_eq!(server.metric("cloudpop_lmtp_in_flight_bytes", None), 0.0);

    // A message sent at a normal pace on a new connection is not affected.
    let mut c = server.client().await;
    c.envelope("a@b", &["alice@example.com"]).await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: quick\r\n\r\nbody\r\n.\r\n").await;
    delivered_uid(&c.reply().await, "alice@example.com");
}
