//! The POP3 listeners: accept connections (plain with STLS, and implicit TLS), apply the
//! PROXY protocol policy, cap connections (shedding idle ones that have not logged in, see
//! [`admission`](crate::admission)), and drain on shutdown.
//!
//! A refusal on the plain listener is a `-ERR [SYS/TEMP]` line. On the POP3S listener it is
//! a TCP close without a byte: the client expects a TLS handshake, and text there would be
//! read as a broken one (RFC 8314 §3.3: TLS from the first byte).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cloudpop_auth::Authenticator;
use cloudpop_limits::{InProcessLimits, Limits};
use cloudpop_maildrop::{MaildropLock, MessageStore};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use crate::admission::{Admission, Ticket};
use crate::config::Pop3Config;
use crate::connection::{self, Outcome, SessionEnd};
use crate::metrics::{Pop3Metrics, Raised};
use crate::proxy_protocol::{self, Expectation};
use crate::session::{ConnectionInfo, SessionStats};
use crate::tls::TlsTerminator;

/// What a POP3 front-end needs; injected so tests and roles choose the implementations.
#[derive(Debug)]
pub struct Pop3Deps {
    pub authenticator: Arc<dyn Authenticator>,
    pub store: Arc<dyn MessageStore>,
    pub lock: Arc<dyn MaildropLock>,
    pub config: Pop3Config,
    /// Certificates for STLS and implicit TLS; `None` disables both.
    pub tls: Option<TlsTerminator>,
    /// Connection and session caps, the login throttle and LOGIN-DELAY, shared across pods.
    pub limits: Arc<dyn Limits>,
    /// This process's own count of login attempts, which throttles logins while `limits`
    /// does not answer, so that an outage never lifts the throttle.
    pub local_limits: Arc<InProcessLimits>,
    /// Where sessions, commands, logins, bytes and TLS handshakes are counted.
    pub metrics: Pop3Metrics,
}

/// How long a connection or session slot lives without being refreshed; the connection
/// refreshes its slots every third of it, so a crashed pod's slots free themselves.
pub(crate) const SLOT_TTL: Duration = Duration::from_secs(180);

/// The sockets to serve. Either may be absent.
#[derive(Debug, Default)]
pub struct Pop3Listeners {
    /// Plain POP3 (port 110), with STLS when TLS is configured.
    pub plain: Option<TcpListener>,
    /// POP3S (port 995): TLS from the first byte (RFC 8314 §3.3).
    pub implicit_tls: Option<TcpListener>,
}

/// Serves POP3 until `shutdown` is cancelled, then waits for sessions to end.
///
/// On shutdown the listeners close at once (new connections are refused); each session
/// finishes the response it is sending, says `-ERR [SYS/TEMP]` and closes without UPDATE,
/// so a session that did not QUIT deletes nothing. A deadline for the drain is the
/// caller's.
pub async fn run(
    listeners: Pop3Listeners,
    deps: Arc<Pop3Deps>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let sessions = TaskTracker::new();
    let admission = Admission::new(deps.config.max_connections);
    let accept = Acceptor {
        deps,
        sessions: sessions.clone(),
        admission,
        shutdown,
    };
    let plain = async {
        if let Some(listener) = listeners.plain {
            accept.accept_loop(listener, false).await;
        }
    };
    let implicit = async {
        if let Some(listener) = listeners.implicit_tls {
            accept.accept_loop(listener, true).await;
        }
    };
    tokio::join!(plain, implicit);
    sessions.close();
    sessions.wait().await;
    Ok(())
}

struct Acceptor {
    deps: Arc<Pop3Deps>,
    sessions: TaskTracker,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
}

impl Acceptor {
    async fn accept_loop(&self, listener: TcpListener, implicit_tls: bool) {
        loop {
            let (stream, peer) = tokio::select! {
                () = self.shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %e, "pop3 accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let metrics = &self.deps.metrics;
            let listener = if implicit_tls { "tls" } else { "plain" };
            metrics.connections.with_label_values(&[listener]).inc();
            let Some(admitted) = self.admission.admit() else {
                // Every place belongs to a logged-in session: nothing may be shed.
                metrics
                    .connections_refused
                    .with_label_values(&["max_connections"])
                    .inc();
                self.sessions.spawn(refuse(
                    stream,
                    implicit_tls,
                    "too many connections, try again later",
                ));
                continue;
            };
            if admitted.shed_another {
                metrics.connections_shed.inc();
                debug!("connection cap reached; the longest idle connection not logged in is shed");
            }
            let ticket = admitted.ticket;
            let open = Raised::new(metrics.connection_gauge(listener));
            let deps = self.deps.clone();
            let shutdown = self.shutdown.clone();
            // The session's span: every command, store, lock and auth call is a child of it.
            let span = info_span!(
                "pop3_session",
                otel.kind = "server",
                peer = %peer,
                client = tracing::field::Empty,
                tls = implicit_tls,
                listener,
            );
            self.sessions.spawn(
                async move {
                    start(stream, peer, implicit_tls, deps, shutdown, ticket).await;
                    drop(open);
                }
                .instrument(span),
            );
        }
    }
}

/// Reads a PROXY header where one is due, runs the implicit TLS handshake, and serves.
async fn start(
    mut stream: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
    deps: Arc<Pop3Deps>,
    shutdown: CancellationToken,
    ticket: Ticket,
) {
    let config = &deps.config;
    let mut info = ConnectionInfo {
        client_addr: Some(peer),
        local_addr: stream.local_addr().ok(),
        tls: implicit_tls,
        refuse_proxy_header: false,
    };
    if let Some(trusted) = &config.proxy_protocol {
        match proxy_protocol::decide(peer.ip(), trusted, true) {
            Expectation::Header => {
                let read = proxy_protocol::read_header(
                    &mut stream,
                    config.proxy_header_timeout,
                    proxy_protocol::DEFAULT_MAX_LEN,
                );
                let read = tokio::select! {
                    read = read => read,
                    () = ticket.shed_signal().cancelled() => {
                        debug!("connection shed while waiting for its PROXY header");
                        return;
                    }
                };
                match read {
                    Ok((header, _)) => {
                        info.client_addr = Some(header.source_or(peer));
                        if let Some(destination) = header.destination {
                            info.local_addr = Some(destination);
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "connection from a trusted proxy refused");
                        deps.metrics
                            .connections_refused
                            .with_label_values(&["proxy_header"])
                            .inc();
                        return;
                    }
                }
            }
            Expectation::Direct => info.refuse_proxy_header = true,
        }
    }
    if let Some(client) = info.client_addr {
        tracing::Span::current().record("client", tracing::field::display(client));
    }
    let client_ip = info.client_addr.map_or(peer.ip(), |a| a.ip());
    // Fail open: a limits backend that is down must not take POP3 down with it.
    let slot = match deps
        .limits
        .open_connection(client_ip, config.max_connections_per_ip, SLOT_TTL)
        .await
    {
        Ok(Some(slot)) => Some(slot),
        Ok(None) => {
            debug!("connection refused: too many connections from this address");
            deps.metrics
                .connections_refused
                .with_label_values(&["max_connections_per_ip"])
                .inc();
            refuse(
                stream,
                implicit_tls,
                "too many connections from your address",
            )
            .await;
            return;
        }
        Err(e) => {
            warn!(error = %e, "connection limit unavailable; connection admitted");
            None
        }
    };
    serve_stream(
        stream,
        implicit_tls,
        &deps,
        info,
        shutdown,
        ticket,
        slot.as_ref(),
    )
    .await;
    if let Some(slot) = slot
        && let Err(e) = deps.limits.close_connection(&slot).await
    {
        debug!(error = %e, "could not release the connection slot; it expires by itself");
    }
}

async fn serve_stream(
    stream: TcpStream,
    implicit_tls: bool,
    deps: &Arc<Pop3Deps>,
    info: ConnectionInfo,
    shutdown: CancellationToken,
    ticket: Ticket,
    slot: Option<&cloudpop_limits::ConnectionSlot>,
) {
    let deps = deps.clone();
    if !implicit_tls {
        connection::serve(stream, deps, info, shutdown, ticket, slot).await;
        return;
    }
    // Boxed: a plain connection should not carry the TLS state's space.
    Box::pin(serve_implicit_tls(
        stream, deps, info, shutdown, ticket, slot,
    ))
    .await;
}

/// Implicit TLS (RFC 8314 §3.3): the handshake, then the session.
async fn serve_implicit_tls(
    stream: TcpStream,
    deps: Arc<Pop3Deps>,
    info: ConnectionInfo,
    shutdown: CancellationToken,
    ticket: Ticket,
    slot: Option<&cloudpop_limits::ConnectionSlot>,
) {
    let config = &deps.config;
    let Some(tls) = deps.tls.clone() else {
        return;
    };
    let started = tokio::time::Instant::now();
    let handshake = tokio::time::timeout(
        config.idle_timeout_authorization,
        tls.acceptor().accept(stream),
    );
    // Shed before the handshake ended: the TCP connection just closes.
    let shed = ticket.shed_signal().clone();
    let Some(handshake) = shed.run_until_cancelled(handshake).await else {
        connection::session_ended(
            &deps,
            &SessionEnd {
                outcome: Outcome::Shed,
                started,
                stats: &SessionStats::default(),
                bytes_sent: 0,
                tls: false,
                listener: "tls",
            },
        );
        return;
    };
    let outcome = match &handshake {
        Ok(Ok(_)) => "ok",
        Ok(Err(_)) => "failed",
        Err(_) => "timeout",
    };
    deps.metrics
        .tls_handshakes
        .with_label_values(&["implicit", outcome])
        .inc();
    match handshake {
        Ok(Ok(stream)) => {
            connection::serve(stream, deps, info, shutdown, ticket, slot).await;
            return;
        }
        Ok(Err(e)) => debug!(error = %e, "implicit TLS handshake failed"),
        Err(_) => debug!("implicit TLS handshake timed out"),
    }
    // A connection that never got to the greeting still ends with one session line.
    connection::session_ended(
        &deps,
        &SessionEnd {
            outcome: Outcome::TlsFailed,
            started,
            stats: &SessionStats::default(),
            bytes_sent: 0,
            tls: false,
            listener: "tls",
        },
    );
}

/// Refuses a connection before its greeting: `-ERR [SYS/TEMP] why` on plain POP3, and on
/// POP3S a close without a byte, since any text there would reach a TLS client as a broken
/// handshake.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, implicit_tls: bool, why: &str) {
    if implicit_tls {
        return;
    }
    let line = format!("-ERR [SYS/TEMP] {why}\r\n");
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(line.as_bytes())).await;
}
