//! RFC 1939 §3: the idle timer after login restarts with every command, and only then.
//! Lock renewals and connection-slot refreshes run while the client waits; they must not
//! count as activity, or an idle session would hold its maildrop forever.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudpop_auth::{Directory, DirectoryAuthenticator, Login, Policy, Secret};
use cloudpop_limits::InProcessLimits;
use cloudpop_maildrop::{FsStore, InProcessLock, TenantId};
use cloudpop_pop3::{Pop3Config, Pop3Deps, Pop3Listeners, Pop3Metrics};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const IDLE: Duration = Duration::from_millis(600);

/// A POP3 listener on port 0 with a users file holding `alice@example.com`, whose lease is
/// renewed every 50 ms and whose session may idle for [`IDLE`].
async fn start(dir: &std::path::Path) -> (std::net::SocketAddr, CancellationToken) {
    let users = dir.join("users.toml");
    let mut directory = Directory::new();
    let tenant = TenantId::new("example").unwrap();
    directory
        .add_tenant(tenant.clone(), ["example.com"])
        .unwrap();
    let policy = Policy {
        cleartext_allowed: true,
        ..Policy::default()
    };
    directory.set_policy(&tenant, policy).unwrap();
    let login = Login::parse("alice@example.com").unwrap();
    directory.add_user(&login, &Secret::new("secret")).unwrap();
    directory.save(&users).unwrap();

    let config = Pop3Config {
        idle_timeout_transaction: IDLE,
        lock_ttl: Duration::from_millis(150),
        ..Pop3Config::default()
    };
    let deps = Arc::new(Pop3Deps {
        authenticator: Arc::new(DirectoryAuthenticator::open(&users).unwrap()),
        store: Arc::new(FsStore::new(dir.join("mail"))),
        lock: Arc::new(InProcessLock::new()),
        config,
        tls: None,
        limits: Arc::new(InProcessLimits::new()),
        metrics: Pop3Metrics::new(&prometheus::Registry::new()).unwrap(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let listeners = Pop3Listeners {
        plain: Some(listener),
        implicit_tls: None,
    };
    tokio::spawn(cloudpop_pop3::run(listeners, deps, shutdown.clone()));
    (addr, shutdown)
}

async fn command(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    line: &str,
) -> String {
    writer
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .unwrap();
    lines.next_line().await.unwrap().unwrap()
}

#[tokio::test]
async fn an_idle_session_times_out_although_its_lock_is_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, shutdown) = start(dir.path()).await;
    let (read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
    let mut lines = BufReader::new(read).lines();
    assert!(lines.next_line().await.unwrap().unwrap().starts_with("+OK"));
    assert!(
        command(&mut lines, &mut write, "USER alice@example.com")
            .await
            .starts_with("+OK")
    );
    let pass = command(&mut lines, &mut write, "PASS secret").await;
    assert!(pass.starts_with("+OK"), "{pass}");

    // Activity restarts the clock: three commands spaced by most of the idle time.
    for _ in 0..3 {
        tokio::time::sleep(IDLE * 2 / 3).await;
        assert!(
            command(&mut lines, &mut write, "NOOP")
                .await
                .starts_with("+OK")
        );
    }

    let waited = Instant::now();
    let line = tokio::time::timeout(IDLE * 10, lines.next_line())
        .await
        .expect("the idle session was never closed")
        .unwrap()
        .unwrap();
    assert_eq!(line, "-ERR idle timeout; no messages were deleted");
    let elapsed = waited.elapsed();
    assert!(elapsed >= IDLE * 9 / 10, "closed after {elapsed:?}");
    assert!(lines.next_line().await.unwrap().is_none(), "not closed");
    shutdown.cancel();
}
