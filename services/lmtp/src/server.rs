//! The accept loop, and one loop per connection: read → decode → handle → encode → write.
//!
//! - One Tokio task per connection, tracked. On shutdown the listener stops accepting; a
//!   session waiting for a command is answered `421 4.3.2` and closed; a session receiving
//!   or storing a message finishes it first (every recipient gets its reply). [`run`]
//!   returns when the last connection has ended; a deadline for that is the caller's.
//! - At most `max_connections` at once; one more is answered `421 4.3.2` and closed
//!   without a task.
//! - Replies are buffered and written whenever the server needs more input, so pipelined
//!   commands (RFC 2920) are answered in order, in as few writes as possible.
//! - Every wait for the client, reading or writing, is bounded by `idle_timeout`; a silent
//!   client is answered `421 4.4.2` and closed. The whole DATA phase is also bounded, by
//!   `data_timeout`: a client that trickles its message is answered `421 4.4.2` and closed
//!   too, and nothing is stored.
//! - Receive buffers are bounded by one read chunk plus the command line limit; the
//!   message itself by `max_message_size`, and all messages being received by
//!   `max_in_flight_bytes` (one [`MemoryBudget`] per listener).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::LmtpDeps;
use crate::codec::CommandDecoder;
use crate::incoming::Incoming;
use crate::memory_budget::MemoryBudget;
use crate::session::{Closing, Next, Session};

/// Bytes asked for by one read.
const READ_CHUNK: usize = 16 * 1024;

/// Pause after a failed accept (for example out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why a connection ended other than by QUIT, EOF between commands, or shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("connection i/o failed: {0}")]
    Io(#[from] io::Error),
    #[error("client idle for too long")]
    IdleTimeout,
    #[error("DATA took longer than data_timeout")]
    DataTimeout,
    #[error("client closed the connection during DATA")]
    ClosedDuringData,
}

/// Serves LMTP on `listener` until `shutdown` is cancelled, then waits for the connections
/// in progress to end (see the module documentation). Fails only if `deps.config` does
/// not validate.
pub async fn run(
    listener: TcpListener,
    deps: LmtpDeps,
    shutdown: CancellationToken,
) -> io::Result<()> {
    deps.config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let budget = MemoryBudget::new(
        deps.config.max_in_flight_bytes,
        deps.metrics.in_flight_bytes.clone(),
    );
    let deps = Arc::new(deps);
    let slots = Arc::new(Semaphore::new(deps.config.max_connections));
    let tracker = TaskTracker::new();
    info!(addr = ?listener.local_addr().ok(), "LMTP listening");
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "LMTP accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            deps.metrics.connections_refused.inc();
            refuse(&stream, peer, &deps.config.hostname);
            continue;
        };
        let open = OpenConnection::new(&deps);
        let connection = Connection::new(
            stream,
            peer,
            Arc::clone(&deps),
            budget.clone(),
            shutdown.clone(),
        );
        let span = info_span!(
            "lmtp_session",
            otel.kind = "server",
            id = %connection.session.id(),
            %peer,
        );
        tracker.spawn(
            async move {
                connection.serve().await;
                drop(open);
                drop(permit);
            }
            .instrument(span),
        );
    }
    drop(listener);
    tracker.close();
    info!(
        connections = tracker.len(),
        "LMTP stopped accepting; draining"
    );
    tracker.wait().await;
    info!("LMTP drained");
    Ok(())
}

/// Answers `421 4.3.2` and drops the connection. The write does not wait: a new socket's
/// send buffer is empty, and the accept loop must not block on a client.
fn refuse(stream: &TcpStream, peer: SocketAddr, hostname: &str) {
    let mut reply = BytesMut::new();
    Closing::TooManyConnections
        .reply(hostname)
        .encode(&mut reply);
    if let Err(error) = stream.try_write(&reply) {
        debug!(%peer, %error, "could not send the too-many-connections reply");
    }
    warn!(%peer, "LMTP connection refused: too many connections");
}

/// Keeps `cloudpop_lmtp_connections_active` raised while a connection is served (also
/// when its task is cancelled).
struct OpenConnection(prometheus::IntGauge);

impl OpenConnection {
    fn new(deps: &LmtpDeps) -> Self {
        deps.metrics.connections_active.inc();
        Self(deps.metrics.connections_active.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

enum Read {
    Bytes,
    Eof,
    TimedOut,
    /// The deadline given to [`Connection::read`] passed.
    DeadlinePassed,
    Shutdown,
}

struct Connection {
    stream: TcpStream,
    deps: Arc<LmtpDeps>,
    budget: MemoryBudget,
    shutdown: CancellationToken,
    session: Session,
    decoder: CommandDecoder,
    input: BytesMut,
    output: BytesMut,
}

impl Connection {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        deps: Arc<LmtpDeps>,
        budget: MemoryBudget,
        shutdown: CancellationToken,
    ) -> Self {
        let session = Session::new(Arc::clone(&deps), peer);
        let decoder = CommandDecoder::new(deps.config.max_line_length);
        Self {
            stream,
            deps,
            budget,
            shutdown,
            session,
            decoder,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: BytesMut::new(),
        }
    }

    /// Runs the conversation and logs its one end-of-session line.
    async fn serve(mut self) {
        let started = Instant::now();
        if let Err(error) = self.stream.set_nodelay(true) {
            debug!(%error, "could not set TCP_NODELAY");
        }
        let result = self.converse().await;
        let outcome = match &result {
            Ok(outcome) => outcome,
            Err(ConnectionError::IdleTimeout) => "idle_timeout",
            Err(ConnectionError::DataTimeout) => "data_timeout",
            Err(ConnectionError::ClosedDuringData) => "closed_during_data",
            Err(ConnectionError::Io(_)) => "io_error",
        };
        self.deps
            .metrics
            .sessions
            .with_label_values(&[outcome])
            .inc();
        let error = result.err().map(|e| e.to_string());
        let stats = self.session.stats();
        info!(
            outcome,
            error = error.as_deref(),
            duration_ms = started.elapsed().as_millis() as u64,
            commands = stats.commands,
            messages = stats.messages,
            delivered = stats.delivered,
            failed = stats.failed,
            bytes_received = stats.bytes_received,
            "LMTP session ended"
        );
    }

    async fn converse(&mut self) -> Result<&'static str, ConnectionError> {
        self.session.greeting().encode(&mut self.output);
        loop {
            let command = match self.decoder.decode(&mut self.input) {
                Ok(Some(command)) => Ok(command),
                Err(error) => Err(error),
                Ok(None) => {
                    self.flush().await?;
                    match self.read(true, None).await? {
                        Read::Bytes => continue,
                        Read::Eof => return Ok("client_closed"),
                        Read::Shutdown => {
                            self.close_with(Closing::ShuttingDown).await;
                            return Ok("shutdown");
                        }
                        // No deadline was given: only the idle timeout applies.
                        Read::TimedOut | Read::DeadlinePassed => {
                            self.close_with(Closing::IdleTimeout).await;
                            return Err(ConnectionError::IdleTimeout);
                        }
                    }
                }
            };
            let name = command.as_ref().map_or("invalid", |c| c.name());
            debug!(command = name, "command");
            let span = info_span!("lmtp_command", otel.name = name, command = name);
            let step = self.session.handle(command).instrument(span).await;
            step.reply.encode(&mut self.output);
            match step.next {
                Next::Continue => {}
                Next::Close => {
                    self.flush().await?;
                    return Ok("quit");
                }
                Next::ReceiveData { message } => self.receive_data(message).await?,
            }
        }
    }

    /// Decodes the message after `354`, then stores it and queues one reply per recipient.
    /// Shutdown does not interrupt this: the delivery in progress is finished. The memory the
    /// message holds is given back on every way out of here.
    async fn receive_data(&mut self, trace_fields: BytesMut) -> Result<(), ConnectionError> {
        let config = &self.deps.config;
        // RFC 5321 §4.5.3.2 bounds each wait for data, not the whole; a total deadline keeps
        // a client that trickles octets from holding its connection and buffer forever.
        let deadline = Instant::now() + config.data_timeout;
        let mut incoming = Incoming::new(trace_fields, config.max_message_size, &self.budget);
        let (received, end) = loop {
            if let Some(done) = incoming.decode(&mut self.input) {
                break done;
            }
            self.flush().await?;
            match self.read(false, Some(deadline)).await? {
                Read::Bytes | Read::Shutdown => {}
                Read::Eof => return Err(ConnectionError::ClosedDuringData),
                Read::TimedOut => {
                    self.close_with(Closing::IdleTimeout).await;
                    return Err(ConnectionError::IdleTimeout);
                }
                Read::DeadlinePassed => {
                    self.close_with(Closing::DataTimeout).await;
                    return Err(ConnectionError::DataTimeout);
                }
            }
        };
        let span = info_span!("lmtp_delivery", otel.name = "deliver", size = end.size);
        for reply in self
            .session
            .finish_data(received, end)
            .instrument(span)
            .await
        {
            reply.encode(&mut self.output);
        }
        Ok(())
    }

    /// Reads more input, waiting at most `idle_timeout`, and no later than `deadline` if
    /// given (and, if `stop_on_shutdown`, until shutdown).
    async fn read(
        &mut self,
        stop_on_shutdown: bool,
        deadline: Option<Instant>,
    ) -> Result<Read, ConnectionError> {
        self.input.reserve(READ_CHUNK);
        let idle_end = Instant::now() + self.deps.config.idle_timeout;
        let (until, expired) = match deadline {
            Some(deadline) if deadline < idle_end => (deadline, Read::DeadlinePassed),
            _ => (idle_end, Read::TimedOut),
        };
        let read = tokio::time::timeout_at(until, self.stream.read_buf(&mut self.input));
        let result = if stop_on_shutdown {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Ok(Read::Shutdown),
                result = read => result,
            }
        } else {
            read.await
        };
        match result {
            Err(_elapsed) => Ok(expired),
            Ok(Ok(0)) => Ok(Read::Eof),
            Ok(Ok(_)) => Ok(Read::Bytes),
            Ok(Err(error)) => Err(error.into()),
        }
    }

    /// Writes the queued replies, waiting at most `idle_timeout`.
    async fn flush(&mut self) -> Result<(), ConnectionError> {
        if self.output.is_empty() {
            return Ok(());
        }
        let idle = self.deps.config.idle_timeout;
        match tokio::time::timeout(idle, self.stream.write_all(&self.output)).await {
            Err(_elapsed) => return Err(ConnectionError::IdleTimeout),
            Ok(result) => result?,
        }
        self.output.clear();
        Ok(())
    }

    /// Sends the queued replies and a `421`; the connection is closed by the caller.
    async fn close_with(&mut self, closing: Closing) {
        closing
            .reply(&self.deps.config.hostname)
            .encode(&mut self.output);
        if let Err(error) = self.flush().await {
            debug!(%error, "could not send the closing reply");
        }
    }
}
