//! The LMTP session state machine (RFC 2033): greeting → LHLO → MAIL → RCPT+ → DATA.
//!
//! Handlers take a decoded command and return the reply; they never touch the connection.
//! The only awaits are the recipient lookup and the store. Errors become replies in exactly
//! one place, [`SessionError::reply`] (and [`Closing::reply`] for the `421`s).
//!
//! Choices where the RFCs leave one:
//! - HELO and EHLO are refused with `500 5.5.1` (RFC 2033 §4.1: LMTP clients use LHLO).
//! - LHLO may be repeated; like EHLO it ends any transaction (RFC 5321 §4.1.4).
//! - MAIL before LHLO, a nested MAIL, RCPT before MAIL, and DATA without an accepted
//!   recipient are `503 5.5.1` (RFC 2033 §4.2, RFC 5321 §4.1.4).
//! - `max_recipients` counts accepted recipients; the next RCPT is `452 4.5.3`.
//! - VRFY is always `252 2.5.0`: the endpoint never says whether a user exists
//!   (RFC 5321 §3.5.3 and §7.3).
//! - Several RCPTs that resolve to one maildrop (an address given twice, or two aliases of
//!   one user) get one stored copy: the first such RCPT stores it and every one of them gets
//!   its own reply with that copy's outcome and unique id (DESIGN: stored once per
//!   recipient maildrop; RFC 2033 §4.2: one reply per accepted RCPT, in order).
//! - `Received:` has a `for` clause only when the transaction has exactly one recipient.
//! - The message is held in memory: at most `max_message_size` octets plus the trace
//!   fields per connection, and all connections together within `max_in_flight_bytes`
//!   (see [`crate::memory_budget`]); freed once every recipient has its reply. A message
//!   the budget has no room for gets `452 4.3.1` for every recipient.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use cloudpop_auth::LookupError;
use cloudpop_maildrop::{MaildropKey, UniqueId};
use tracing::{debug, info, warn};

use crate::LmtpDeps;
use crate::codec::{Address, CodecError, Command, DataEnd, EnhancedStatus, MailParams, Reply};
use crate::config::LmtpConfig;
use crate::date;
use crate::memory_budget::{BudgetSpent, Reservation};
use crate::trace_fields::Trace;

/// A reason the session failed a command or a recipient; each maps to one reply.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Protocol(#[from] CodecError),
    #[error("LMTP requires LHLO, not HELO or EHLO")]
    LhloRequired,
    #[error("bad sequence of commands: {0}")]
    BadSequence(&'static str),
    /// Declared at MAIL (`SIZE=`) or found while receiving the data.
    #[error("message too large")]
    MessageTooLarge,
    #[error("too many recipients")]
    TooManyRecipients,
    #[error("<{0}>: no such user")]
    NoSuchUser(Address),
    #[error("<{address}>: recipient lookup failed")]
    LookupFailed {
        address: Address,
        #[source]
        source: LookupError,
    },
    /// The store did not acknowledge the message for this recipient.
    #[error("<{address}>: temporary storage failure")]
    StorageFailed { address: Address },
    /// The message could not be held: the memory budget was spent.
    #[error("<{address}>: insufficient system storage")]
    InsufficientStorage { address: Address },
}

const fn status(class: u8, subject: u16, detail: u16) -> EnhancedStatus {
    EnhancedStatus::new(class, subject, detail)
}

impl SessionError {
    /// The reply for this error. This is where every error gets its reply code.
    pub fn reply(&self) -> Reply {
        match self {
            // RFC 5321 §4.2.2: 500 covers "command line too long"; RFC 3463: X.5.2 syntax.
            SessionError::Protocol(CodecError::LineTooLong { .. }) => {
                Reply::new(500, status(5, 5, 2), "line too long")
            }
            SessionError::Protocol(CodecError::UnknownCommand) => {
                Reply::new(500, status(5, 5, 2), "command not recognized")
            }
            // RFC 3463: X.5.4 invalid command arguments.
            SessionError::Protocol(CodecError::Syntax(expected)) => Reply::new(
                501,
                status(5, 5, 4),
                format!("syntax error, expected {expected}"),
            ),
            // RFC 5321 §4.2.3: 555 for MAIL/RCPT parameters not recognized or implemented.
            SessionError::Protocol(CodecError::UnsupportedParameter(keyword)) => Reply::new(
                555,
                status(5, 5, 4),
                format!("parameter {keyword} not supported"),
            ),
            // RFC 2033 §4.1 requires LHLO; RFC 3463: X.5.1 invalid command.
            SessionError::LhloRequired => Reply::new(
                500,
                status(5, 5, 1),
                "this is LMTP: use LHLO, not HELO or EHLO",
            ),
            SessionError::BadSequence(why) => Reply::new(
                503,
                status(5, 5, 1),
                format!("bad sequence of commands: {why}"),
            ),
            // RFC 1870 §6.1 and §6.2: 552 for a message over the fixed maximum; X.3.4.
            SessionError::MessageTooLarge => Reply::new(552, status(5, 3, 4), "message too large"),
            // RFC 5321 §4.5.3.1.10: 452 for too many recipients; RFC 3463: X.5.3.
            SessionError::TooManyRecipients => {
                Reply::new(452, status(4, 5, 3), "too many recipients")
            }
            // RFC 3463: X.1.1 bad destination mailbox address.
            SessionError::NoSuchUser(address) => {
                Reply::new(550, status(5, 1, 1), format!("<{address}>: no such user"))
            }
            // RFC 3463: X.1.1 bad destination mailbox, but 4xx (RFC 5321 §4.2.1: transient),
            // since the directory in use may be about to change: the client retries instead of
            // bouncing the mail.
            SessionError::LookupFailed {
                address,
                source: LookupError::DirectoryInDoubt,
            } => Reply::new(
                450,
                status(4, 1, 1),
                format!("<{address}>: no such user for now, the user directory is changing"),
            ),
            // RFC 3463: X.4.3 directory server failure; 4xx so the client retries.
            SessionError::LookupFailed { address, .. } => Reply::new(
                451,
                status(4, 4, 3),
                format!("<{address}>: recipient lookup temporarily unavailable"),
            ),
            // RFC 5321 §4.2.1: 4yz is transient; the client keeps the message and retries.
            SessionError::StorageFailed { address } => Reply::new(
                451,
                status(4, 3, 0),
                format!("<{address}> temporary storage failure"),
            ),
            // RFC 5321 §4.2.2: 452 insufficient system storage; RFC 3463: X.3.1 mail system
            // full. Transient: the client retries when other messages have been stored.
            SessionError::InsufficientStorage { address } => Reply::new(
                452,
                status(4, 3, 1),
                format!("<{address}> insufficient system storage, try again later"),
            ),
        }
    }
}

/// Why the server closes a connection on its own initiative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// The client was silent for longer than `idle_timeout`.
    IdleTimeout,
    /// The DATA phase took longer than `data_timeout`.
    DataTimeout,
    /// The server is draining.
    ShuttingDown,
    /// `max_connections` are being served already.
    TooManyConnections,
}

impl Closing {
    /// The `421` sent before closing (RFC 5321 §3.8: the server may close with 421).
    pub fn reply(self, hostname: &str) -> Reply {
        match self {
            // RFC 3463: X.4.2 bad connection.
            Closing::IdleTimeout => Reply::new(
                421,
                status(4, 4, 2),
                format!("{hostname} idle timeout, closing connection"),
            ),
            Closing::DataTimeout => Reply::new(
                421,
                status(4, 4, 2),
                format!("{hostname} data timeout, closing connection"),
            ),
            // RFC 3463: X.3.2 system not accepting network messages.
            Closing::ShuttingDown => {
                Reply::new(421, status(4, 3, 2), format!("{hostname} shutting down"))
            }
            Closing::TooManyConnections => Reply::new(
                421,
                status(4, 3, 2),
                format!("{hostname} too many connections, try again later"),
            ),
        }
    }
}

/// How the DATA phase ended, and what of the message was kept.
#[derive(Debug)]
pub enum Received {
    /// The whole message, trace fields first, and the part of the memory budget that holds
    /// it: both are dropped once the message is stored.
    Message {
        message: BytesMut,
        reservation: Reservation,
    },
    /// Over `max_message_size` (counted as stored): nothing was kept.
    TooLarge,
    /// The memory budget was spent before the message was complete: nothing was kept.
    OverBudget(BudgetSpent),
}

/// What the connection does after sending a reply.
#[derive(Debug)]
pub enum Next {
    /// Read the next command.
    Continue,
    /// Decode message data after `message` (which holds the trace fields), then call
    /// [`Session::finish_data`] with what was received.
    ReceiveData { message: BytesMut },
    /// Close the connection (after QUIT).
    Close,
}

/// A reply and what to do after it.
#[derive(Debug)]
pub struct Step {
    pub reply: Reply,
    pub next: Next,
}

impl Step {
    fn reply(reply: Reply) -> Self {
        Self {
            reply,
            next: Next::Continue,
        }
    }
}

#[derive(Debug)]
struct Recipient {
    address: Address,
    maildrop: MaildropKey,
}

#[derive(Debug)]
struct Envelope {
    sender: Option<Address>,
    recipients: Vec<Recipient>,
}

#[derive(Debug)]
enum State {
    /// Greeting sent; no LHLO yet.
    Connected,
    /// LHLO received; no transaction.
    Ready { client: String },
    /// MAIL accepted; recipients being collected.
    Mail { client: String, envelope: Envelope },
    /// DATA accepted; the message is being received.
    Data { client: String, envelope: Envelope },
    /// QUIT received.
    Closed,
}

impl State {
    /// RFC 5321 §4.1.1.5: RSET drops the transaction but keeps the LHLO.
    fn reset(self) -> State {
        match self {
            State::Ready { client } | State::Mail { client, .. } | State::Data { client, .. } => {
                State::Ready { client }
            }
            other => other,
        }
    }
}

/// Counters for the session-end log line.
#[derive(Debug, Clone, Default)]
pub struct SessionStats {
    /// Command lines answered (DATA's message not included).
    pub commands: u64,
    /// Messages received (DATA completed).
    pub messages: u64,
    /// Recipients whose copy was stored (250 after DATA).
    pub delivered: u64,
    /// Recipients refused after DATA (storage failure, too large).
    pub failed: u64,
    /// Message bytes received in DATA.
    pub bytes_received: u64,
}

/// One LMTP conversation.
#[derive(Debug)]
pub struct Session {
    deps: Arc<LmtpDeps>,
    peer: SocketAddr,
    id: String,
    state: State,
    stats: SessionStats,
}

impl Session {
    /// A new session with a fresh random id.
    pub fn new(deps: Arc<LmtpDeps>, peer: SocketAddr) -> Self {
        Self {
            deps,
            peer,
            id: new_session_id(),
            state: State::Connected,
            stats: SessionStats::default(),
        }
    }

    /// What the session did so far.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// The session id, as written in `Received:` and in logs.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn config(&self) -> &LmtpConfig {
        &self.deps.config
    }

    /// `220 {hostname} LMTP cloudpop ready` (RFC 2034 §3: no status code in the greeting).
    pub fn greeting(&self) -> Reply {
        Reply::plain(
            220,
            format!("{} LMTP cloudpop ready", self.config().hostname),
        )
    }

    /// Answers one decoded command (or the codec's error for its line).
    pub async fn handle(&mut self, command: Result<Command, CodecError>) -> Step {
        self.stats.commands += 1;
        let result = match command {
            Ok(command) => {
                let state = std::mem::replace(&mut self.state, State::Closed);
                let (state, result) = self.apply(state, command).await;
                self.state = state;
                result
            }
            Err(error) => Err(error.into()),
        };
        result.unwrap_or_else(|error| {
            debug!(%error, "command refused");
            Step::reply(error.reply())
        })
    }

    async fn apply(&self, state: State, command: Command) -> (State, Result<Step, SessionError>) {
        let ok = |text: &str| Ok(Step::reply(Reply::new(250, status(2, 0, 0), text)));
        match command {
            // RFC 5321 §4.1.4: a greeting mid-transaction ends the transaction.
            Command::Lhlo { client } => (State::Ready { client }, Ok(Step::reply(self.lhlo()))),
            Command::SmtpGreeting => (state, Err(SessionError::LhloRequired)),
            Command::Mail { from, params } => self.mail(state, from, params),
            Command::Rcpt { to } => self.rcpt(state, to).await,
            Command::Data => self.data(state),
            Command::Rset => (state.reset(), ok("OK")),
            Command::Noop => (state, ok("OK")),
            Command::Quit => {
                let text = format!("{} closing connection", self.config().hostname);
                let reply = Reply::new(221, status(2, 0, 0), text);
                (
                    State::Closed,
                    Ok(Step {
                        reply,
                        next: Next::Close,
                    }),
                )
            }
            // RFC 5321 §3.5.3: 252 when the server will not verify but will accept mail.
            Command::Vrfy => {
                let text = "cannot VRFY user, but will attempt delivery via RCPT";
                (
                    state,
                    Ok(Step::reply(Reply::new(252, status(2, 5, 0), text))),
                )
            }
        }
    }

    /// RFC 2033 §4.1: LHLO is answered like EHLO (RFC 5321 §4.1.1.1), one keyword per line:
    /// PIPELINING (RFC 2920), ENHANCEDSTATUSCODES (RFC 2034), SIZE (RFC 1870),
    /// 8BITMIME (RFC 6152).
    fn lhlo(&self) -> Reply {
        let config = self.config();
        Reply::multiline(
            250,
            vec![
                config.hostname.clone(),
                "PIPELINING".to_owned(),
                "ENHANCEDSTATUSCODES".to_owned(),
                format!("SIZE {}", config.max_message_size),
                "8BITMIME".to_owned(),
            ],
        )
    }

    fn mail(
        &self,
        state: State,
        from: Option<Address>,
        params: MailParams,
    ) -> (State, Result<Step, SessionError>) {
        let client = match state {
            State::Ready { client } => client,
            State::Connected => return (state, Err(SessionError::BadSequence("send LHLO first"))),
            other => return (other, Err(SessionError::BadSequence("nested MAIL command"))),
        };
        // RFC 1870 §6.1: a declared size over the fixed maximum is refused at MAIL.
        if params
            .size
            .is_some_and(|size| size > self.config().max_message_size)
        {
            return (State::Ready { client }, Err(SessionError::MessageTooLarge));
        }
        let text = format!(
            "<{}> sender OK",
            from.as_ref().map(Address::as_str).unwrap_or("")
        );
        let reply = Reply::new(250, status(2, 1, 0), text);
        let envelope = Envelope {
            sender: from,
            recipients: Vec::new(),
        };
        (State::Mail { client, envelope }, Ok(Step::reply(reply)))
    }

    async fn rcpt(&self, state: State, to: Address) -> (State, Result<Step, SessionError>) {
        let (client, mut envelope) = match state {
            State::Mail { client, envelope } => (client, envelope),
            other => return (other, Err(SessionError::BadSequence("send MAIL first"))),
        };
        // RFC 5321 §4.5.3.1.10: over the recipient limit, 452 and the client retries later.
        let recipients = &self.deps.metrics.recipients;
        if envelope.recipients.len() >= self.config().max_recipients {
            recipients.with_label_values(&["too_many"]).inc();
            return (
                State::Mail { client, envelope },
                Err(SessionError::TooManyRecipients),
            );
        }
        let started = Instant::now();
        let found = self.deps.authenticator.lookup_recipient(to.as_str()).await;
        debug!(rcpt = %to, elapsed_ms = started.elapsed().as_millis() as u64, "recipient lookup");
        let outcome = match &found {
            Ok(Some(_)) => "accepted",
            Ok(None) => "unknown",
            Err(LookupError::DirectoryInDoubt) => "deferred",
            Err(_) => "lookup_failed",
        };
        recipients.with_label_values(&[outcome]).inc();
        let result = match found {
            Ok(Some(principal)) => {
                let reply = Reply::new(250, status(2, 1, 5), format!("<{to}> recipient OK"));
                envelope.recipients.push(Recipient {
                    address: to,
                    maildrop: principal.maildrop,
                });
                Ok(Step::reply(reply))
            }
            Ok(None) => Err(SessionError::NoSuchUser(to)),
            Err(LookupError::DirectoryInDoubt) => {
                info!(rcpt = %to, "unknown recipient deferred: the user directory is changing");
                Err(SessionError::LookupFailed {
                    address: to,
                    source: LookupError::DirectoryInDoubt,
                })
            }
            Err(source) => {
                warn!(rcpt = %to, error = %source, "recipient lookup failed");
                Err(SessionError::LookupFailed {
                    address: to,
                    source,
                })
            }
        };
        (State::Mail { client, envelope }, result)
    }

    fn data(&self, state: State) -> (State, Result<Step, SessionError>) {
        match state {
            State::Mail { client, envelope } if !envelope.recipients.is_empty() => {
                let message = BytesMut::from(self.trace_fields(&client, &envelope).as_bytes());
                // RFC 5321 §4.2.2 and RFC 2034 §4: 354 carries no enhanced status code.
                let reply = Reply::plain(354, "start mail input; end with <CRLF>.<CRLF>");
                let step = Step {
                    reply,
                    next: Next::ReceiveData { message },
                };
                (State::Data { client, envelope }, Ok(step))
            }
            // RFC 2033 §4.2: DATA without a successful RCPT is 503.
            state @ State::Mail { .. } => {
                (state, Err(SessionError::BadSequence("no valid recipients")))
            }
            State::Connected => (
                State::Connected,
                Err(SessionError::BadSequence("send LHLO first")),
            ),
            other => (other, Err(SessionError::BadSequence("send MAIL first"))),
        }
    }

    fn trace_fields(&self, client: &str, envelope: &Envelope) -> String {
        let date = date::rfc5322(SystemTime::now());
        let single_recipient = match envelope.recipients.as_slice() {
            [only] => Some(&only.address),
            _ => None,
        };
        Trace {
            sender: envelope.sender.as_ref(),
            client,
            peer: self.peer.ip(),
            hostname: &self.config().hostname,
            session_id: &self.id,
            single_recipient,
            date: &date,
        }
        .render()
    }

    /// Ends the DATA phase: stores the message (trace fields and body) for every accepted
    /// recipient and returns one reply per recipient, in RCPT order (RFC 2033 §4.2). A `250`
    /// is returned only after the store acknowledged the message. The message's memory is
    /// given back when this returns.
    pub async fn finish_data(&mut self, received: Received, end: DataEnd) -> Vec<Reply> {
        let (client, envelope) = match std::mem::replace(&mut self.state, State::Closed) {
            State::Data { client, envelope } => (client, envelope),
            other => {
                self.state = other;
                return vec![SessionError::BadSequence("no DATA in progress").reply()];
            }
        };
        // RFC 5321 §4.1.1.4: the end of data ends the transaction, whatever its outcome.
        self.state = State::Ready { client };
        self.stats.messages += 1;
        self.stats.bytes_received += end.size;
        self.deps.metrics.received_bytes.inc_by(end.size);
        let (message, reservation) = match received {
            Received::Message {
                message,
                reservation,
            } => (message, reservation),
            Received::TooLarge => {
                return self.refuse_all(&envelope, end, "too_large", |_| {
                    SessionError::MessageTooLarge
                });
            }
            Received::OverBudget(spent) => {
                warn!(
                    size_so_far = end.size,
                    in_use = spent.in_use,
                    limit = spent.limit,
                    "message refused: the LMTP memory budget (max_in_flight_bytes) is spent"
                );
                self.deps.metrics.messages_over_budget.inc();
                return self.refuse_all(&envelope, end, "insufficient_storage", |rcpt| {
                    SessionError::InsufficientStorage {
                        address: rcpt.address.clone(),
                    }
                });
            }
        };
        let message = message.freeze();
        let mut copies: Vec<(&MaildropKey, Result<UniqueId, String>)> = Vec::new();
        let mut replies = Vec::with_capacity(envelope.recipients.len());
        for rcpt in &envelope.recipients {
            let (outcome, duplicate) = match copies.iter().find(|(key, _)| *key == &rcpt.maildrop) {
                Some((_, outcome)) => (outcome.clone(), true),
                None => {
                    let outcome = self.store(&rcpt.maildrop, &message).await;
                    copies.push((&rcpt.maildrop, outcome.clone()));
                    (outcome, false)
                }
            };
            let delivered = outcome.is_ok();
            replies.push(self.delivery_reply(rcpt, &message, outcome, duplicate));
            let label = if delivered {
                self.stats.delivered += 1;
                "delivered"
            } else {
                self.stats.failed += 1;
                "storage_failed"
            };
            self.deps
                .metrics
                .deliveries
                .with_label_values(&[label])
                .inc();
        }
        // The bytes first, then their share of the budget.
        drop(message);
        drop(reservation);
        replies
    }

    /// Refuses the message for every recipient with the error `why` gives, counting and
    /// logging each under `outcome`.
    fn refuse_all(
        &mut self,
        envelope: &Envelope,
        end: DataEnd,
        outcome: &'static str,
        why: impl Fn(&Recipient) -> SessionError,
    ) -> Vec<Reply> {
        let refused = envelope.recipients.len() as u64;
        self.stats.failed += refused;
        self.deps
            .metrics
            .deliveries
            .with_label_values(&[outcome])
            .inc_by(refused);
        envelope
            .recipients
            .iter()
            .map(|rcpt| {
                info!(
                    rcpt = %rcpt.address, maildrop = %rcpt.maildrop, size = end.size,
                    outcome, "delivery refused"
                );
                why(rcpt).reply()
            })
            .collect()
    }

    async fn store(&self, maildrop: &MaildropKey, message: &Bytes) -> Result<UniqueId, String> {
        self.deps
            .store
            .put(maildrop, message.clone())
            .await
            .map_err(|e| e.to_string())
    }

    /// Logs the one line per delivery and builds its reply.
    fn delivery_reply(
        &self,
        rcpt: &Recipient,
        message: &Bytes,
        outcome: Result<UniqueId, String>,
        duplicate: bool,
    ) -> Reply {
        let (address, maildrop, size) = (&rcpt.address, &rcpt.maildrop, message.len());
        match outcome {
            Ok(uid) => {
                info!(
                    rcpt = %address, %maildrop, %uid, size, duplicate,
                    outcome = "delivered", "delivered"
                );
                let text = format!("<{address}> delivered as {uid}");
                Reply::new(250, status(2, 0, 0), text)
            }
            Err(error) => {
                warn!(
                    rcpt = %address, %maildrop, size, duplicate, %error,
                    outcome = "storage_failed", "delivery failed"
                );
                SessionError::StorageFailed {
                    address: address.clone(),
                }
                .reply()
            }
        }
    }
}

/// 16 hex digits from the OS random source; a time-and-counter value if that fails.
fn new_session_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        bytes = (nanos ^ count.rotate_left(48)).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
