//! One connection: read → decode → handle → encode → write, with timeouts, lock renewal and
//! streamed message bodies.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::admission::Ticket;
use crate::codec::{Command, Decoder, ProtocolError, SaslResponse};
use crate::metrics::Raised;
use crate::proxy_protocol::{self, Sniff};
use crate::reply::{BodyLimit, Reply, RespCode, Response};
use crate::server::{Pop3Deps, SLOT_TTL};
use crate::session::{ConnectionInfo, Session, SessionStats};
use crate::stuffing::DotStuffer;
use cloudpop_limits::ConnectionSlot;

/// How a session ended, for the session-end log line and `cloudpop_pop3_sessions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// QUIT was answered (in TRANSACTION: after UPDATE), and the connection closed.
    Closed,
    /// The server closed after too many failed logins or invalid commands.
    TooManyErrors,
    /// The client went away without QUIT.
    Dropped,
    IdleTimeout,
    /// `login_timeout` passed before a successful login (slowloris guard).
    LoginTimeout,
    WriteTimeout,
    Shutdown,
    LockLost,
    /// The store failed while a message was being sent.
    StoreFailed,
    /// STLS was answered: the caller runs the TLS handshake and continues on TLS.
    StartTls,
    /// The TLS handshake failed or timed out.
    TlsFailed,
    /// A PROXY header from a peer that is not a trusted proxy.
    ProxyRefused,
    /// Closed before login to make room for a new connection at the connection cap.
    Shed,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Closed => "closed",
            Outcome::TooManyErrors => "too_many_errors",
            Outcome::Dropped => "dropped",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::LoginTimeout => "login_timeout",
            Outcome::WriteTimeout => "write_timeout",
            Outcome::Shutdown => "shutdown",
            Outcome::LockLost => "lock_lost",
            Outcome::StoreFailed => "store_failed",
            Outcome::StartTls => "start_tls",
            Outcome::TlsFailed => "tls_failed",
            Outcome::ProxyRefused => "proxy_refused",
            Outcome::Shed => "shed",
        }
    }

    /// Whether the server ended the session on purpose, at a line boundary, so the client
    /// may be told the stream is complete: on TLS a close_notify (RFC 8314 §5.1), on TCP a
    /// FIN. Not after a failure mid-message, where the client must see a truncation.
    fn closes_cleanly(self) -> bool {
        matches!(
            self,
            Outcome::Closed
                | Outcome::TooManyErrors
                | Outcome::IdleTimeout
                | Outcome::LoginTimeout
                | Outcome::Shutdown
                | Outcome::LockLost
                | Outcome::ProxyRefused
                | Outcome::Shed
        )
    }
}

/// Why writing stopped.
enum WriteError {
    Timeout,
    Io,
    Store,
}

impl From<WriteError> for Outcome {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Timeout => Outcome::WriteTimeout,
            WriteError::Io => Outcome::Dropped,
            WriteError::Store => Outcome::StoreFailed,
        }
    }
}

/// One line the client sent, decoded.
enum Input {
    Command(Command),
    Sasl(Result<SaslResponse, ProtocolError>),
    Invalid(ProtocolError),
}

impl Input {
    /// The `command` label and span name: bounded, never client text.
    fn name(&self) -> &'static str {
        match self {
            Input::Command(command) => command.name(),
            Input::Sasl(_) => "SASL",
            Input::Invalid(_) => "invalid",
        }
    }
}

/// What handling one input did.
struct Step {
    ok: bool,
    close: bool,
    start_tls: bool,
    written: Result<(), WriteError>,
}

struct Connection<S> {
    stream: S,
    deps: Arc<Pop3Deps>,
    out: BytesMut,
    bytes_sent: u64,
    /// `cloudpop_pop3_sent_bytes_total` of this connection's listener.
    sent_counter: IntCounter,
    /// Raises `cloudpop_pop3_sessions_active` while the session is logged in.
    logged_in: Option<Raised>,
    listener: &'static str,
    next_renewal: Option<Instant>,
    /// This connection's slot in the per-address cap, refreshed with the lock.
    slot: Option<ConnectionSlot>,
    next_slot_refresh: Instant,
    /// The end of the time allowed before login (`login_timeout`).
    login_deadline: Instant,
    /// This connection's place under the connection cap; signals when it is shed.
    ticket: Ticket,
}

/// Buffer capacity a waiting connection keeps. More, left over from a large response or a
/// long SASL line, is given back, so that idle connections stay small.
const RETAINED_CAPACITY: usize = 4096;

fn release_spare_capacity(buffer: &mut BytesMut) {
    if buffer.is_empty() && buffer.capacity() > RETAINED_CAPACITY {
        *buffer = BytesMut::new();
    }
}

/// Serves one POP3 connection to its end: greeting, commands, STLS, and the session-end
/// log line and metrics.
pub(crate) async fn serve<S>(
    stream: S,
    deps: Arc<Pop3Deps>,
    info: ConnectionInfo,
    shutdown: CancellationToken,
    ticket: Ticket,
    slot: Option<&ConnectionSlot>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let listener = listener_of(&info);
    let mut session = Session::new(deps.clone(), info);
    let login_deadline = started + deps.config.login_timeout;
    let mut conn = Connection::new(
        stream,
        deps.clone(),
        slot.cloned(),
        ticket,
        login_deadline,
        listener,
    );
    session.greeting().encode(&mut conn.out);
    let mut outcome = conn.run(&mut session, &shutdown).await;
    conn.close(outcome).await;
    let mut bytes_sent = conn.bytes_sent;
    if outcome == Outcome::StartTls {
        // Boxed: a connection that never says STLS should not carry the TLS state's space.
        let upgrade = continue_on_tls(conn, &mut session, &shutdown);
        let (tls_outcome, tls_bytes) = Box::pin(upgrade).await;
        outcome = tls_outcome;
        bytes_sent += tls_bytes;
    }
    // Anything but QUIT ends without UPDATE: nothing is deleted (RFC 1939 §6).
    session.abandon().await;
    let stats = session.stats();
    if outcome == Outcome::Closed && !stats.quit {
        outcome = Outcome::TooManyErrors;
    }
    session_ended(
        &deps,
        &SessionEnd {
            outcome,
            started,
            stats,
            bytes_sent,
            tls: session.is_tls(),
            listener,
        },
    );
}

/// After STLS: the handshake on the plain connection's stream, then the same session on
/// TLS, with the plain connection's deadlines and slot. Returns how the session ended and
/// the bytes sent on TLS.
async fn continue_on_tls<S>(
    plain: Connection<S>,
    session: &mut Session,
    shutdown: &CancellationToken,
) -> (Outcome, u64)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deps = plain.deps;
    let Some(tls) = &deps.tls else {
        return (Outcome::TlsFailed, 0);
    };
    let handshake = tls.acceptor().accept(plain.stream);
    let handshake = timeout(deps.config.idle_timeout_authorization, handshake);
    // Shed during the handshake: the TCP connection just closes.
    let shed = plain.ticket.shed_signal().clone();
    let Some(handshake) = shed.run_until_cancelled(handshake).await else {
        return (Outcome::Shed, 0);
    };
    let tls_outcome = match &handshake {
        Ok(Ok(_)) => "ok",
        Ok(Err(_)) => "failed",
        Err(_) => "timeout",
    };
    deps.metrics
        .tls_handshakes
        .with_label_values(&["stls", tls_outcome])
        .inc();
    match handshake {
        Ok(Ok(stream)) => {
            session.tls_started();
            let mut conn = Connection::new(
                stream,
                deps.clone(),
                plain.slot,
                plain.ticket,
                plain.login_deadline,
                plain.listener,
            );
            let outcome = conn.run(session, shutdown).await;
            conn.close(outcome).await;
            (outcome, conn.bytes_sent)
        }
        Ok(Err(e)) => {
            debug!(error = %e, "TLS handshake after STLS failed");
            (Outcome::TlsFailed, 0)
        }
        Err(_) => {
            debug!("TLS handshake after STLS timed out");
            (Outcome::TlsFailed, 0)
        }
    }
}

/// `plain` or `tls`: the listener a connection came in on (STLS does not change it).
pub(crate) fn listener_of(info: &ConnectionInfo) -> &'static str {
    if info.tls { "tls" } else { "plain" }
}

/// What the session-end line reports.
pub(crate) struct SessionEnd<'a> {
    pub(crate) outcome: Outcome,
    pub(crate) started: Instant,
    pub(crate) stats: &'a SessionStats,
    pub(crate) bytes_sent: u64,
    pub(crate) tls: bool,
    pub(crate) listener: &'static str,
}

/// The one log line and the metrics of a session's end.
pub(crate) fn session_ended(deps: &Pop3Deps, end: &SessionEnd<'_>) {
    let duration = end.started.elapsed();
    let metrics = &deps.metrics;
    metrics
        .sessions
        .with_label_values(&[end.outcome.as_str()])
        .inc();
    metrics.session_duration.observe(duration.as_secs_f64());
    let stats = end.stats;
    info!(
        outcome = end.outcome.as_str(),
        login = stats.login.as_deref().unwrap_or("-"),
        duration_ms = duration.as_millis() as u64,
        commands = stats.commands,
        retrieved = stats.retrieved,
        deleted = stats.deleted,
        auth_failures = stats.auth_failures,
        bytes_sent = end.bytes_sent,
        tls = end.tls,
        listener = end.listener,
        "pop3 session ended"
    );
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    fn new(
        stream: S,
        deps: Arc<Pop3Deps>,
        slot: Option<ConnectionSlot>,
        ticket: Ticket,
        login_deadline: Instant,
        listener: &'static str,
    ) -> Self {
        let sent_counter = deps.metrics.sent_bytes.with_label_values(&[listener]);
        Self {
            stream,
            deps,
            out: BytesMut::new(),
            bytes_sent: 0,
            sent_counter,
            logged_in: None,
            listener,
            next_renewal: None,
            slot,
            next_slot_refresh: Instant::now() + SLOT_TTL / 3,
            login_deadline,
            ticket,
        }
    }

    /// Ends the stream after a session the server closed on purpose: a close_notify on TLS
    /// (RFC 8314 §5.1), a FIN on TCP.
    async fn close(&mut self, outcome: Outcome) {
        if outcome.closes_cleanly() {
            let _ = timeout(self.deps.config.write_timeout, self.stream.shutdown()).await;
        }
    }

    /// Keeps this connection's and its session's slots alive (they expire if a pod dies).
    async fn refresh_slots(&mut self, session: &Session) {
        self.next_slot_refresh = Instant::now() + SLOT_TTL / 3;
        let limits = &self.deps.limits;
        if let Some(slot) = &self.slot
            && let Err(e) = limits.refresh_connection(slot, SLOT_TTL).await
        {
            debug!(error = %e, "could not refresh the connection slot");
        }
        if let Some(slot) = session.session_slot()
            && let Err(e) = limits.refresh_session(slot, SLOT_TTL).await
        {
            debug!(error = %e, "could not refresh the session slot");
        }
    }

    async fn run(&mut self, session: &mut Session, shutdown: &CancellationToken) -> Outcome {
        let config = &self.deps.config;
        let mut decoder =
            Decoder::new(config.max_line_length).with_sasl_limit(config.max_sasl_line_length);
        let mut input = BytesMut::new();
        let mut sniffing = session.refuses_proxy_header();
        // RFC 1939 §3: the idle clock restarts with every command, and only then; lock
        // renewals and slot refreshes do not count as activity.
        let mut idle_since = Instant::now();
        loop {
            if sniffing {
                match proxy_protocol::sniff(&input) {
                    Sniff::Header => {
                        warn!(
                            "PROXY protocol header from an untrusted address; connection refused"
                        );
                        return self
                            .say_goodbye(
                                Response::err("PROXY protocol is not accepted from this address"),
                                Outcome::ProxyRefused,
                            )
                            .await;
                    }
                    Sniff::NotHeader => sniffing = false,
                    Sniff::NeedMore => {}
                }
            }
            // Answer every complete command already received, in order (RFC 2449 §6.6).
            if !sniffing {
                loop {
                    if shutdown.is_cancelled() {
                        return self
                            .say_goodbye(
                                Response::err_code(RespCode::SysTemp, "server shutting down"),
                                Outcome::Shutdown,
                            )
                            .await;
                    }
                    let next = if session.awaiting_sasl() {
                        decoder.decode_sasl(&mut input).transpose().map(Input::Sasl)
                    } else {
                        match decoder.decode(&mut input) {
                            Ok(command) => command.map(Input::Command),
                            Err(error) => Some(Input::Invalid(error)),
                        }
                    };
                    let Some(next) = next else { break };
                    // Boxed: the futures of command handling are large, and an idle
                    // connection should not carry their space while it waits.
                    let step = Box::pin(self.answer(next, session)).await;
                    idle_since = Instant::now();
                    if let Err(e) = step.written {
                        return e.into();
                    }
                    if step.start_tls {
                        // RFC 2595 §4 / RFC 3207 §6: bytes the client sent after STLS, before
                        // the handshake, are discarded, never executed (command injection).
                        input.clear();
                        return match self.flush().await {
                            Ok(()) => Outcome::StartTls,
                            Err(e) => e.into(),
                        };
                    }
                    if step.close {
                        return match self.flush().await {
                            Ok(()) => Outcome::Closed,
                            Err(e) => e.into(),
                        };
                    }
                }
            }
            if let Err(e) = self.flush().await {
                return e.into();
            }
            release_spare_capacity(&mut input);
            release_spare_capacity(&mut self.out);
            // One timer for every deadline: a waiting connection holds a single sleep.
            let idle_deadline = idle_since
                + if session.is_logged_in() {
                    self.deps.config.idle_timeout_transaction
                } else {
                    self.deps.config.idle_timeout_authorization
                };
            let login_deadline = (!session.is_logged_in()).then_some(self.login_deadline);
            let wake = [Some(idle_deadline), login_deadline, self.next_renewal]
                .into_iter()
                .flatten()
                .fold(self.next_slot_refresh, Instant::min);
            let shed = self.ticket.shed_signal().clone();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    return self.say_goodbye(Response::err_code(RespCode::SysTemp, "server shutting down"), Outcome::Shutdown).await;
                }
                // A logged-in session is never shed; a login that crossed the shedding wins.
                () = shed.cancelled(), if !session.is_logged_in() => {
                    return self.say_goodbye(Response::err_code(RespCode::SysTemp, "server busy; idle connections that have not logged in are closed"), Outcome::Shed).await;
                }
                () = sleep_until(wake) => {
                    let now = Instant::now();
                    // Slowloris: however active, a client gets `login_timeout` to log in.
                    if login_deadline.is_some_and(|deadline| now >= deadline) {
                        return self.say_goodbye(Response::err("login took too long"), Outcome::LoginTimeout).await;
                    }
                    if now >= idle_deadline {
                        return self.say_goodbye(Response::err("idle timeout; no messages were deleted"), Outcome::IdleTimeout).await;
                    }
                    if self.next_renewal.is_some_and(|due| now >= due) && !self.renew(session).await {
                        return self.say_goodbye(Response::err_code(RespCode::SysTemp, "maildrop lock lost; no messages were deleted"), Outcome::LockLost).await;
                    }
                    if now >= self.next_slot_refresh {
                        self.refresh_slots(session).await;
                    }
                }
                read = self.stream.read_buf(&mut input) => match read {
                    Ok(0) | Err(_) => return Outcome::Dropped,
                    Ok(_) => idle_since = Instant::now(),
                },
            }
        }
    }

    /// Handles one input and writes its answer, in a span of its own (a child of the
    /// session's), timed and counted by command.
    async fn answer(&mut self, input: Input, session: &mut Session) -> Step {
        let name = input.name();
        let span = info_span!(
            "pop3_command",
            otel.name = name,
            command = name,
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        if !session.is_logged_in() {
            self.ticket.touch();
        }
        let step = async {
            let reply = match input {
                Input::Command(command) => session.handle(command).await,
                Input::Sasl(response) => session.handle_sasl(response).await,
                Input::Invalid(error) => session.on_protocol_error(&error),
            };
            if session.is_logged_in() && self.next_renewal.is_none() {
                self.next_renewal = Some(Instant::now() + self.renew_every());
            }
            if session.is_logged_in() && self.logged_in.is_none() {
                self.ticket.logged_in();
                let gauge = self
                    .deps
                    .metrics
                    .sessions_active
                    .with_label_values(&[self.listener]);
                self.logged_in = Some(Raised::new(gauge));
            }
            let ok = reply.is_ok();
            tracing::Span::current().record("outcome", if ok { "ok" } else { "err" });
            let close = matches!(reply, Reply::Close(_));
            let start_tls = matches!(reply, Reply::StartTls(_));
            let written = self.write_reply(reply, session).await;
            Step {
                ok,
                close,
                start_tls,
                written,
            }
        }
        .instrument(span)
        .await;
        let metrics = &self.deps.metrics;
        let outcome = if step.ok { "ok" } else { "err" };
        metrics.commands.with_label_values(&[name, outcome]).inc();
        metrics
            .command_duration
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        step
    }

    fn renew_every(&self) -> Duration {
        self.deps.config.lock_ttl / 3
    }

    /// Renews the maildrop lease; false if it is lost (the session must end without UPDATE).
    async fn renew(&mut self, session: &Session) -> bool {
        self.next_renewal = Some(Instant::now() + self.renew_every());
        let Some(lease) = session.lease() else {
            return true;
        };
        match self.deps.lock.renew(lease).await {
            Ok(true) => true,
            Ok(false) => false,
            Err(e) => {
                warn!(error = %e, "maildrop lock renewal failed");
                false
            }
        }
    }

    async fn renew_if_due(&mut self, session: &Session) -> Result<(), WriteError> {
        match self.next_renewal {
            Some(due) if Instant::now() >= due => {
                if self.renew(session).await {
                    Ok(())
                } else {
                    Err(WriteError::Store)
                }
            }
            _ => Ok(()),
        }
    }

    async fn say_goodbye(&mut self, response: Response, outcome: Outcome) -> Outcome {
        response.encode(&mut self.out);
        let _ = self.flush().await;
        outcome
    }

    async fn write_reply(&mut self, reply: Reply, session: &Session) -> Result<(), WriteError> {
        reply.encode_head(&mut self.out);
        if let Reply::Message { body, limit, .. } = reply {
            self.stream_body(body, limit, session).await?;
        }
        if self.out.len() >= self.deps.config.stream_buffer {
            self.flush().await?;
        }
        Ok(())
    }

    /// Streams a message through one bounded buffer, stuffing on the fly.
    async fn stream_body(
        &mut self,
        mut body: cloudpop_maildrop::MessageReader,
        limit: BodyLimit,
        session: &Session,
    ) -> Result<(), WriteError> {
        let chunk_size = self.deps.config.stream_buffer;
        let mut chunk = vec![0u8; chunk_size];
        let mut stuffer = DotStuffer::new(limit);
        while !stuffer.is_done() {
            let n = match timeout(self.deps.config.write_timeout, body.read(&mut chunk)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    warn!(error = %e, "message store failed mid-message; closing");
                    return Err(WriteError::Store);
                }
                Err(_) => {
                    warn!("message store read timed out mid-message; closing");
                    return Err(WriteError::Store);
                }
            };
            if n == 0 {
                break;
            }
            stuffer.push(&chunk[..n], &mut self.out);
            if self.out.len() >= chunk_size {
                self.flush().await?;
                self.renew_if_due(session).await?;
            }
        }
        stuffer.finish(&mut self.out);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), WriteError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        match timeout(self.deps.config.write_timeout, write).await {
            Ok(Ok(())) => {
                self.bytes_sent += self.out.len() as u64;
                self.sent_counter.inc_by(self.out.len() as u64);
                self.out.clear();
                Ok(())
            }
            Ok(Err(_)) => Err(WriteError::Io),
            Err(_) => Err(WriteError::Timeout),
        }
    }
}
