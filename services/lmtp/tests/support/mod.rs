//! Test harness: a real server on 127.0.0.1:0 with a real `FsStore` in a temporary
//! directory, a fixed recipient directory, and a line-oriented LMTP client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cloudpop_auth::{AuthFailure, AuthRequest, Authenticator, LookupError, Policy, Principal};
use cloudpop_lmtp::{LmtpConfig, LmtpDeps};
use cloudpop_maildrop::{FsStore, MailboxId, MaildropKey, MessageStore, TenantId};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for any one reply before failing.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) const TENANT: &str = "acme";

pub(crate) fn maildrop(mailbox: &str) -> MaildropKey {
    MaildropKey::new(
        TenantId::new(TENANT).unwrap(),
        MailboxId::new(mailbox).unwrap(),
    )
}

/// A fixed map of addresses, as a recipient directory would answer. `al@example.com` is an
/// alias of alice's maildrop; `down@example.com` always fails temporarily.
#[derive(Debug)]
pub(crate) struct FixedDirectory {
    users: HashMap<&'static str, &'static str>,
}

impl FixedDirectory {
    pub(crate) fn new() -> Self {
        let users = HashMap::from([
            ("alice@example.com", "alice"),
            ("al@example.com", "alice"),
            ("bob@example.com", "bob"),
            ("carol@example.com", "carol"),
        ]);
        Self { users }
    }
}

#[async_trait]
impl Authenticator for FixedDirectory {
    async fn authenticate(&self, _request: AuthRequest) -> Result<Principal, AuthFailure> {
        Err(AuthFailure::BadCredentials)
    }

    async fn lookup_recipient(&self, address: &str) -> Result<Option<Principal>, LookupError> {
        let address = address.to_ascii_lowercase();
        if address == "down@example.com" {
            return Err(LookupError::Temporary("directory unreachable".into()));
        }
        Ok(self.users.get(address.as_str()).map(|mailbox| Principal {
            tenant: TenantId::new(TENANT).unwrap(),
            user: (*mailbox).to_owned(),
            login: address.clone(),
            maildrop: maildrop(mailbox),
            policy: Policy::default(),
        }))
    }

    fn apop_offered(&self) -> bool {
        false
    }
}

pub(crate) fn test_config() -> LmtpConfig {
    LmtpConfig {
        hostname: "lmtp.test".into(),
        ..LmtpConfig::default()
    }
}

/// A running server and the store it delivers to.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) store: FsStore,
    pub(crate) shutdown: CancellationToken,
    pub(crate) handle: JoinHandle<io::Result<()>>,
    /// Where the server's metrics are registered.
    pub(crate) registry: prometheus::Registry,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        Self::with_config(test_config()).await
    }

    pub(crate) async fn with_config(config: LmtpConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("mail");
        Self::with_store_root(config, dir, &root).await
    }

    /// A server whose store is rooted at `root` (which may be made unusable on purpose).
    pub(crate) async fn with_store_root(
        config: LmtpConfig,
        dir: tempfile::TempDir,
        root: &Path,
    ) -> Self {
        let store = FsStore::new(root);
        let registry = prometheus::Registry::new();
        let deps = LmtpDeps {
            authenticator: Arc::new(FixedDirectory::new()),
            store: Arc::new(store.clone()),
            config,
            metrics: cloudpop_lmtp::LmtpMetrics::new(&registry).unwrap(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(cloudpop_lmtp::run(listener, deps, shutdown.clone()));
        Self {
            addr,
            store,
            shutdown,
            handle,
            registry,
            _dir: dir,
        }
    }

    /// The value of metric `name` (with `label`'s value if given), 0 if absent.
    pub(crate) fn metric(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        let family = self
            .registry
            .gather()
            .into_iter()
            .find(|f| f.name() == name);
        let Some(family) = family else { return 0.0 };
        family
            .get_metric()
            .iter()
            .find(|m| {
                label.is_none_or(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == k && l.value() == v)
                })
            })
            .map_or(0.0, |m| match family.get_field_type() {
                prometheus::proto::MetricType::GAUGE => m.get_gauge().get_value(),
                _ => m.get_counter().get_value(),
            })
    }

    /// Waits until metric `name` satisfies `ok`, failing after [`WAIT`].
    pub(crate) async fn wait_for_metric(&self, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = self.metric(name, None);
            if ok(value) {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} stayed at {value}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Every message of `mailbox`, oldest first, byte for byte.
    pub(crate) async fn messages(&self, mailbox: &str) -> Vec<(String, Vec<u8>)> {
        let key = maildrop(mailbox);
        let mut messages = Vec::new();
        for entry in self.store.list(&key).await.unwrap() {
            let mut reader = self.store.open(&key, &entry.uid).await.unwrap();
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes).await.unwrap();
            assert_eq!(bytes.len() as u64, entry.size);
            messages.push((entry.uid.to_string(), bytes));
        }
        messages
    }
}

/// A plain LMTP client that reads whole (possibly multi-line) replies.
pub(crate) struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    pub(crate) greeting: String,
}

impl Client {
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (read, writer) = stream.into_split();
        let mut client = Self {
            reader: BufReader::new(read),
            writer,
            greeting: String::new(),
        };
        client.greeting = client.reply().await;
        client
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }

    /// One reply; lines joined with `\n`, CRLFs removed.
    pub(crate) async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let line = self
                .line()
                .await
                .unwrap_or_else(|| panic!("EOF after {lines:?}"));
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    /// One line without its CRLF, or `None` at EOF.
    pub(crate) async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
            .await
            .expect("timed out waiting for the server")
            .unwrap();
        if n == 0 {
            return None;
        }
        assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
        line.truncate(line.len() - 2);
        Some(line)
    }

    /// Sends one command line and returns its reply.
    pub(crate) async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends `byte` once every `interval` until the server says something; returns that
    /// reply, or `None` if the server said nothing for `give_up` or closed silently.
    pub(crate) async fn trickle_until_reply(
        &mut self,
        byte: u8,
        interval: Duration,
        give_up: Duration,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + give_up;
        while tokio::time::Instant::now() < deadline {
            if self.writer.write_all(&[byte]).await.is_err() {
                break;
            }
            match tokio::time::timeout(interval, self.reader.fill_buf()).await {
                Err(_elapsed) => continue,
                Ok(Ok([])) => return None,
                Ok(Ok(_)) => return Some(self.reply().await),
                Ok(Err(error)) => panic!("read failed: {error}"),
            }
        }
        None
    }

    /// Asserts the server closes the connection next.
    pub(crate) async fn expect_eof(&mut self) {
        assert_eq!(self.line().await, None);
    }

    /// LHLO, MAIL and the given RCPTs, each expected to succeed.
    pub(crate) async fn envelope(&mut self, from: &str, to: &[&str]) {
        assert!(
            self.cmd("LHLO client.example")
                .await
                .starts_with("250-lmtp.test")
        );
        assert!(
            self.cmd(&format!("MAIL FROM:<{from}>"))
                .await
                .starts_with("250 2.1.0")
        );
        for rcpt in to {
            let reply = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            assert!(reply.starts_with("250 2.1.5"), "{rcpt}: {reply}");
        }
    }
}

/// The uid from `250 2.0.0 <addr> delivered as <uid>`.
pub(crate) fn delivered_uid(reply: &str, address: &str) -> String {
    let prefix = format!("250 2.0.0 <{address}> delivered as ");
    reply
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("not a delivery to {address}: {reply:?}"))
        .to_owned()
}

/// Splits a stored message into its two trace fields and the rest, checking their shape.
/// Returns (session id, `for` recipient if any, rest of message).
pub(crate) fn split_trace(message: &[u8], sender: &str) -> (String, Option<String>, Vec<u8>) {
    let text = String::from_utf8_lossy(message).into_owned();
    let head = format!(
        "Return-Path: <{sender}>\r\nReceived: from client.example ([127.0.0.1])\r\n\tby lmtp.test (cloudpop) with LMTP id "
    );
    let rest = text
        .strip_prefix(&head)
        .unwrap_or_else(|| panic!("trace fields: {text:?}"));
    let (id, rest) = rest.split_once(['\r', ';']).unwrap();
    assert_eq!(id.len(), 16, "session id {id:?}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let (recipient, rest) = if let Some(rest) = rest.strip_prefix("\n\tfor <") {
        let (rcpt, rest) = rest.split_once(">; ").unwrap();
        (Some(rcpt.to_owned()), rest)
    } else {
        (None, rest.strip_prefix("\r\n\t").unwrap())
    };
    let (date, body) = rest.split_once("\r\n").unwrap();
    assert!(date.ends_with(" +0000"), "date {date:?}");
    assert_eq!(date.split(' ').count(), 6, "date {date:?}");
    (id.to_owned(), recipient, body.as_bytes().to_vec())
}
