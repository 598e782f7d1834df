//! The POP3 listener in-process, with real parts (users file, filesystem store, in-process
//! lock and limits): timing and UPDATE behaviours that the end-to-end tests cannot reach
//! within the configuration's lower bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use cloudpop_auth::{Authenticator, Directory, DirectoryAuthenticator, Login, Policy, Secret};
use cloudpop_limits::InProcessLimits;
use cloudpop_maildrop::{
    FsStore, InProcessLock, InstrumentedLock, InstrumentedStore, MessageStore, StorageMetrics,
    TenantId,
};
use cloudpop_pop3::{Pop3Config, Pop3Deps, Pop3Listeners, Pop3Metrics};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const IDLE: Duration = Duration::from_millis(600);

struct Server {
    addr: std::net::SocketAddr,
    registry: prometheus::Registry,
    shutdown: CancellationToken,
}

impl Server {
    /// Store or lock requests of `operation` so far.
    fn requests(&self, family: &str, operation: &str) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == family)
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "operation" && l.value() == operation)
            })
            .map(|m| m.get_histogram().get_sample_count())
            .sum()
    }
}

/// A POP3 listener on port 0 with a users file holding `alice@example.com` and one message
/// for her, whose lease is renewed every 50 ms and whose session may idle for [`IDLE`].
/// Store and lock calls are counted in the server's registry.
async fn start(dir: &std::path::Path) -> Server {
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
    let authenticator = DirectoryAuthenticator::open(&users).unwrap();
    let store = FsStore::new(dir.join("mail"));
    let alice = authenticator
        .lookup_recipient("alice@example.com")
        .await
        .unwrap()
        .unwrap();
    store
        .put(&alice.maildrop, "Subject: hi\r\n\r\nhello\r\n".into())
        .await
        .unwrap();
    let registry = prometheus::Registry::new();
    let storage = StorageMetrics::new(&registry).unwrap();
    let deps = Arc::new(Pop3Deps {
        authenticator: Arc::new(authenticator),
        store: Arc::new(InstrumentedStore::new(store, "fs", storage.clone())),
        lock: Arc::new(InstrumentedLock::new(
            InProcessLock::new(),
            "in-process",
            storage,
        )),
        config,
        tls: None,
        limits: Arc::new(InProcessLimits::new()),
        local_limits: Arc::new(InProcessLimits::new()),
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
    Server {
        addr,
        registry,
        shutdown,
    }
}

type Lines = tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>;

/// Connects and logs in as alice.
async fn log_in(server: &Server) -> (Lines, tokio::net::tcp::OwnedWriteHalf) {
    let (read, mut write) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let mut lines = BufReader::new(read).lines();
    assert!(lines.next_line().await.unwrap().unwrap().starts_with("+OK"));
    assert!(
        command(&mut lines, &mut write, "USER alice@example.com")
            .await
            .starts_with("+OK")
    );
    let pass = command(&mut lines, &mut write, "PASS secret").await;
    assert!(pass.starts_with("+OK"), "{pass}");
    (lines, write)
}

async fn command(
    lines: &mut Lines,
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
    let server = start(dir.path()).await;
    let (mut lines, mut write) = log_in(&server).await;
    // From here on the clock moves only while every task waits for a timer, so the time
    // between commands is what the test says, however loaded the machine is.
    tokio::time::pause();

    // Activity restarts the clock: three commands spaced by most of the idle time.
    for _ in 0..3 {
        tokio::time::sleep(IDLE * 2 / 3).await;
        assert!(
            command(&mut lines, &mut write, "NOOP")
                .await
                .starts_with("+OK")
        );
    }

    let waited = tokio::time::Instant::now();
    let line = tokio::time::timeout(IDLE * 10, lines.next_line())
        .await
        .expect("the idle session was never closed")
        .unwrap()
        .unwrap();
    assert_eq!(line, "-ERR idle timeout; no messages were deleted");
    let elapsed = waited.elapsed();
    assert!(
        elapsed >= IDLE && elapsed < IDLE * 2,
        "closed after {elapsed:?}"
    );
    assert!(lines.next_line().await.unwrap().is_none(), "not closed");
    server.shutdown.cancel();
}

#[tokio::test]
async fn quit_without_dele_neither_fences_nor_touches_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let store = "cloudpop_store_request_duration_seconds";
    let lock = "cloudpop_lock_request_duration_seconds";

    let (mut lines, mut write) = log_in(&server).await;
    let quit = command(&mut lines, &mut write, "QUIT").await;
    assert_eq!(quit, "+OK cloudpop signing off (1 messages left)");
    assert!(lines.next_line().await.unwrap().is_none());
    assert_eq!(server.requests(lock, "release"), 1);
    assert_eq!(server.requests(lock, "check"), 0);
    assert_eq!(server.requests(store, "delete"), 0);

    // With a mark, UPDATE checks the lease, then deletes.
    let (mut lines, mut write) = log_in(&server).await;
    assert!(
        command(&mut lines, &mut write, "DELE 1")
            .await
            .starts_with("+OK")
    );
    let quit = command(&mut lines, &mut write, "QUIT").await;
    assert_eq!(quit, "+OK cloudpop signing off (0 messages left)");
    assert_eq!(server.requests(lock, "check"), 1);
    assert_eq!(server.requests(store, "delete"), 1);
    server.shutdown.cancel();
}
