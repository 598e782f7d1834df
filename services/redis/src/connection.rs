//! A Redis connection dialed on first use and replaced after it breaks.
//!
//! Rather than the client's own reconnect loops (which retry in the background on their own
//! schedule and may hand the next call a stale failure), each call that finds no connection
//! dials one itself, within its own deadline. So a client built while Redis is down works
//! as soon as Redis answers, and after an outage the first call that reaches Redis succeeds.
//!
//! One case costs a call: a connection that broke while idle (say, Redis restarted between
//! two calls) is only found dead by the next command, which fails as unavailable. It is not
//! retried, because whether it reached Redis cannot be told (a retried `SET NX` would see
//! our own new lease as someone else's; a retried counter would count twice). The call after
//! it dials afresh.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::config::RedisConfig;

/// Cluster retries per command (redirects, reconnects to a node). Few, because the caller's
/// command timeout bounds the whole call anyway.
const CLUSTER_RETRIES: u32 = 3;
/// Shortest wait between Cluster retries, in milliseconds (the client's default is 1.28 s,
/// most of a command timeout).
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 10;

/// How to reach Redis.
enum Dialer {
    Single(redis::Client, AsyncConnectionConfig),
    Cluster(ClusterClient),
}

impl Dialer {
    async fn dial(&self) -> RedisResult<Connection> {
        match self {
            Self::Single(client, config) => Ok(Connection::Single(
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await?,
            )),
            Self::Cluster(client) => Ok(Connection::Cluster(client.get_async_connection().await?)),
        }
    }
}

/// One established connection to a single node or a Cluster; cheap to clone, and clones
/// share the connection.
#[derive(Clone)]
pub enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Connection::Single(_) => "Connection::Single",
            Connection::Cluster(_) => "Connection::Cluster",
        })
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The current connection, if any, with a generation number that tells connections apart.
pub struct Reconnecting {
    dialer: Dialer,
    current: Mutex<Current>,
    /// Held while dialing, so that concurrent callers wait for one dial instead of each
    /// opening a connection (every caller still gives up at its own deadline).
    dialing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Current {
    connection: Option<(u64, Connection)>,
    last_generation: u64,
}

impl fmt::Debug for Reconnecting {
    // The clients are left out: what they show may include credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.dialer {
            Dialer::Single(..) => "single node",
            Dialer::Cluster(_) => "cluster",
        };
        f.debug_struct("Reconnecting")
            .field("kind", &kind)
            .field("connected", &self.current().connection.is_some())
            .finish()
    }
}

impl Reconnecting {
    /// Parses the URLs of `config` and dials nothing yet. The per-connection timeouts match
    /// the command timeout so that nothing the client does in the background outlives it.
    pub fn new(config: &RedisConfig) -> RedisResult<Self> {
        let timeout = config.command_timeout;
        let dialer = if config.cluster {
            let max_retry_wait_ms = u64::try_from((timeout / 4).as_millis())
                .unwrap_or(u64::MAX)
                .max(CLUSTER_MIN_RETRY_WAIT_MS + 1);
            Dialer::Cluster(
                ClusterClient::builder(config.urls.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
                    .max_retry_wait(max_retry_wait_ms)
                    .build()?,
            )
        } else {
            // `validate` ensured exactly one URL.
            let url = config.urls.first().map(String::as_str).unwrap_or_default();
            // The client's defaults (500 ms per response) would cut a longer command timeout.
            let connection_config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            Dialer::Single(redis::Client::open(url)?, connection_config)
        };
        Ok(Self {
            dialer,
            current: Mutex::new(Current::default()),
            dialing: tokio::sync::Mutex::new(()),
        })
    }

    /// The current connection and its generation, dialing one if there is none.
    pub async fn get(&self) -> RedisResult<(u64, Connection)> {
        if let Some(current) = self.current().connection.clone() {
            return Ok(current);
        }
        let _dialing = self.dialing.lock().await;
        // Someone else may have dialed while we waited for our turn.
        if let Some(current) = self.current().connection.clone() {
            return Ok(current);
        }
        let connection = self.dialer.dial().await?;
        let mut current = self.current();
        current.last_generation += 1;
        let dialed = (current.last_generation, connection);
        current.connection = Some(dialed.clone());
        Ok(dialed)
    }

    /// Runs `command` on a connection, dialing one if needed, all within `timeout`. A
    /// failure that may have broken the connection, or a timeout, discards the connection
    /// the attempt used (never a newer one), so the next call dials afresh. The error is a
    /// short description naming `op`, without secrets; the command is not retried.
    pub async fn run<T, F, Fut>(&self, op: &str, timeout: Duration, command: F) -> Result<T, String>
    where
        F: FnOnce(Connection) -> Fut + Send,
        Fut: Future<Output = RedisResult<T>> + Send,
    {
        // Which connection the attempt used, so that a timeout (which drops the attempt
        // future) can still discard exactly that one.
        let used = AtomicU64::new(0);
        let attempt = async {
            let (generation, conn) = self.get().await?;
            used.store(generation, Ordering::Relaxed);
            command(conn).await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if breaks_connection(&e) {
                    self.discard(used.load(Ordering::Relaxed));
                }
                Err(format!("redis {op} failed: {e}"))
            }
            Err(_elapsed) => {
                self.discard(used.load(Ordering::Relaxed));
                Err(format!("redis {op} got no answer within {timeout:?}"))
            }
        }
    }

    /// Forgets the connection of `generation` if it is still the current one, so that the
    /// next call dials a new one; a newer connection someone else dialed is kept.
    pub fn discard(&self, generation: u64) {
        let mut current = self.current();
        if current
            .connection
            .as_ref()
            .is_some_and(|(current_generation, _)| *current_generation == generation)
        {
            current.connection = None;
        }
    }

    fn current(&self) -> MutexGuard<'_, Current> {
        // Every critical section is a plain read or assignment that cannot panic halfway.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether the connection may be unusable after `e` (a reply error such as `NOSCRIPT` or a
/// script's own error leaves it fine).
fn breaks_connection(e: &RedisError) -> bool {
    e.is_unrecoverable_error() || e.is_io_error() || e.is_timeout()
}
