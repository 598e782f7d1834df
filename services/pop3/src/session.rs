//! The POP3 session state machine (RFC 1939 §3–§6).
//!
//! The state owns its data, and each transition consumes the old state. Handlers return
//! [`Reply`] values; the connection writes them. UPDATE is the commit step of QUIT, not a
//! state to rest in: a session that ends any other way deletes nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cloudpop_auth::Secret;
use cloudpop_auth::{AuthFailure, AuthRequest, Credential, Principal};
use cloudpop_maildrop::{DeleteOutcome, Lease, MessageEntry, StoreError, UniqueId};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::capabilities;
use crate::capabilities::CapaContext;
use crate::codec::{Command, MessageNumber, ProtocolError, SaslResponse};
use crate::login_gate;
use crate::reply::{BodyLimit, Reply, RespCode, Response};
use crate::sasl::{self, Mechanism, Pending, Step};
use crate::server::{Pop3Deps, SLOT_TTL};
use cloudpop_limits::SessionSlot;

/// Facts about the connection that the session needs.
#[derive(Debug, Clone, Default)]
pub struct ConnectionInfo {
    pub client_addr: Option<SocketAddr>,
    pub local_addr: Option<SocketAddr>,
    pub tls: bool,
    /// A direct (untrusted) peer on a PROXY-protocol listener: a PROXY header from it is
    /// refused, since it would claim someone else's address.
    pub refuse_proxy_header: bool,
}

/// Counters for the end-of-session log line.
#[derive(Debug, Clone, Default)]
pub struct SessionStats {
    pub login: Option<String>,
    pub commands: u64,
    pub retrieved: u64,
    pub deleted: u64,
    pub auth_failures: u32,
    /// Whether the client sent QUIT (the only way a session deletes anything).
    pub quit: bool,
}

/// One POP3 session.
#[derive(Debug)]
pub struct Session {
    deps: Arc<Pop3Deps>,
    info: ConnectionInfo,
    apop_challenge: Option<String>,
    state: State,
    bad_commands: u32,
    stats: SessionStats,
    /// Why the last authentication attempt failed, for the SASL exchange's follow-up.
    last_failure: Option<AuthFailure>,
}

#[derive(Debug)]
enum State {
    Authorization(Authorization),
    Transaction(Box<Transaction>),
    /// QUIT was answered, or the session was ended; nothing more is processed.
    Closed,
}

#[derive(Debug, Default)]
struct Authorization {
    /// The name from the USER command just before (RFC 1939 §7: PASS must follow USER).
    pending_user: Option<String>,
    /// A SASL exchange waiting for the client's response (RFC 5034 §4).
    sasl: Option<Pending>,
    failures: u32,
}

/// The maildrop as it was at login, with this session's deletion marks.
#[derive(Debug)]
struct Transaction {
    principal: Principal,
    lease: Lease,
    /// This session's place in the per-user session cap (`None` if the backend was down).
    slot: Option<SessionSlot>,
    messages: Vec<MessageEntry>,
    deleted: Vec<bool>,
    deleted_count: usize,
    deleted_octets: u64,
    total_octets: u64,
}

impl Transaction {
    fn new(
        principal: Principal,
        lease: Lease,
        slot: Option<SessionSlot>,
        messages: Vec<MessageEntry>,
    ) -> Self {
        let total_octets = messages.iter().map(|m| m.size).sum();
        let deleted = vec![false; messages.len()];
        Self {
            principal,
            lease,
            slot,
            messages,
            deleted,
            deleted_count: 0,
            deleted_octets: 0,
            total_octets,
        }
    }

    fn live_count(&self) -> usize {
        self.messages.len() - self.deleted_count
    }

    fn live_octets(&self) -> u64 {
        self.total_octets - self.deleted_octets
    }

    /// RFC 1939 §5: a deleted message or one out of range does not exist for the client.
    fn get(&self, n: MessageNumber) -> Option<&MessageEntry> {
        let index = n.index();
        match self.deleted.get(index) {
            Some(false) => self.messages.get(index),
            _ => None,
        }
    }

    fn live(&self) -> impl Iterator<Item = (MessageNumber, &MessageEntry)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
            .filter_map(|(i, m)| MessageNumber::from_index(i).map(|n| (n, m)))
    }

    fn marked(&self) -> Vec<UniqueId> {
        self.messages
            .iter()
            .zip(&self.deleted)
            .filter(|(_, d)| **d)
            .map(|(m, _)| m.uid.clone())
            .collect()
    }
}

fn no_such_message() -> Reply {
    Response::err("no such message").into()
}

impl Session {
    /// A new session in the AUTHORIZATION state.
    pub fn new(deps: Arc<Pop3Deps>, info: ConnectionInfo) -> Self {
        let apop_challenge = deps
            .authenticator
            .apop_offered()
            .then(|| apop_challenge(&deps.config.hostname));
        Self {
            deps,
            info,
            apop_challenge,
            state: State::Authorization(Authorization::default()),
            bad_commands: 0,
            stats: SessionStats::default(),
            last_failure: None,
        }
    }

    /// The greeting (RFC 1939 §4), with the APOP timestamp when APOP is offered (§7).
    pub fn greeting(&self) -> Response {
        match &self.apop_challenge {
            Some(challenge) => Response::ok(format!("cloudpop ready {challenge}")),
            None => Response::ok("cloudpop ready"),
        }
    }

    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// Whether a PROXY header at the start of this connection must be refused.
    pub fn refuses_proxy_header(&self) -> bool {
        self.info.refuse_proxy_header
    }

    /// Whether the connection is on TLS (implicit, or after STLS).
    pub fn is_tls(&self) -> bool {
        self.info.tls
    }

    /// Whether the session is logged in (for the idle timeout that applies).
    pub fn is_logged_in(&self) -> bool {
        matches!(self.state, State::Transaction(_))
    }

    /// The maildrop lease to keep renewed, if logged in.
    pub fn lease(&self) -> Option<&Lease> {
        match &self.state {
            State::Transaction(t) => Some(&t.lease),
            _ => None,
        }
    }

    /// Answers a line that did not decode. Too many in a row close the connection.
    pub fn on_protocol_error(&mut self, error: &ProtocolError) -> Reply {
        self.bad_commands += 1;
        if self.bad_commands >= self.deps.config.max_bad_commands {
            return Reply::Close(Response::err("too many invalid commands"));
        }
        Response::err(error.to_string()).into()
    }

    /// Handles one command.
    pub async fn handle(&mut self, command: Command) -> Reply {
        self.bad_commands = 0;
        self.stats.commands += 1;
        self.stats.quit |= matches!(command, Command::Quit);
        let name = command.name();
        if let Command::Capa = command {
            return self.capa();
        }
        if let Command::Stls = command {
            return self.stls();
        }
        let state = std::mem::replace(&mut self.state, State::Closed);
        let (state, reply) = match state {
            State::Authorization(auth) => self.authorization(auth, command).await,
            State::Transaction(txn) => self.transaction(txn, command).await,
            State::Closed => (State::Closed, Reply::Close(Response::err("session closed"))),
        };
        self.state = state;
        debug!(command = name, ok = reply.is_ok(), "pop3 command");
        reply
    }

    /// What this connection may do right now, for CAPA.
    fn capa_context(&self) -> CapaContext {
        let cleartext_ok = self.info.tls || self.deps.config.offer_cleartext_without_tls;
        let mechanisms = Mechanism::ALL
            .into_iter()
            .filter(|m| self.mechanism_enabled(*m))
            .filter(|m| !m.sends_cleartext_secret() || cleartext_ok)
            .collect();
        CapaContext {
            user: cleartext_ok,
            stls: self.stls_available(),
            mechanisms,
        }
    }

    /// Whether AUTH accepts `mechanism` at all: configured, and for CRAM-MD5, usable by
    /// some user. Whether a password may be sent without TLS is the tenant's decision, made
    /// at login.
    fn mechanism_enabled(&self, mechanism: Mechanism) -> bool {
        self.deps.config.sasl_mechanisms.contains(&mechanism)
            && (mechanism != Mechanism::CramMd5 || self.deps.authenticator.cram_md5_offered())
    }

    fn stls_available(&self) -> bool {
        !self.info.tls && self.deps.tls.is_some() && !self.is_logged_in()
    }

    fn capa(&self) -> Reply {
        let context = self.capa_context();
        let body = match &self.state {
            State::Transaction(t) => capabilities::after_login(&t.principal.policy, &context),
            _ => capabilities::before_login(&self.deps.config, &context),
        };
        Reply::Multiline(Response::ok("Capability list follows"), body)
    }

    /// RFC 2595 §4: STLS, only in AUTHORIZATION and only once.
    fn stls(&mut self) -> Reply {
        if self.info.tls {
            return Response::err("TLS is already active").into();
        }
        if self.deps.tls.is_none() {
            return Response::err("STLS is not available").into();
        }
        if self.is_logged_in() {
            return Response::err("STLS is allowed only before login").into();
        }
        Reply::StartTls(Response::ok("begin TLS negotiation"))
    }

    /// Called once the TLS handshake after STLS succeeded. RFC 2595 §4: the server forgets
    /// what the client said before (a pending USER), and the session is now on TLS.
    pub fn tls_started(&mut self) {
        self.info.tls = true;
        if let State::Authorization(auth) = &mut self.state {
            auth.pending_user = None;
            auth.sasl = None;
        }
    }

    /// Whether the next line is a SASL response rather than a command.
    pub fn awaiting_sasl(&self) -> bool {
        matches!(
            &self.state,
            State::Authorization(Authorization { sasl: Some(_), .. })
        )
    }

    /// Handles the client's response in a SASL exchange.
    pub async fn handle_sasl(&mut self, response: Result<SaslResponse, ProtocolError>) -> Reply {
        let State::Authorization(mut auth) = std::mem::replace(&mut self.state, State::Closed)
        else {
            return Reply::Close(Response::err("session closed"));
        };
        let Some(pending) = auth.sasl.take() else {
            self.state = State::Authorization(auth);
            return Response::err("no authentication in progress").into();
        };
        let (state, reply) = match response {
            Ok(SaslResponse::Cancel) => (
                State::Authorization(auth),
                Response::err("authentication cancelled").into(),
            ),
            // RFC 5034 §4: a response that is not valid base64 fails the exchange; the
            // session goes on.
            Err(error) => (
                State::Authorization(auth),
                Response::err(error.to_string()).into(),
            ),
            Ok(SaslResponse::Data(data)) => self.sasl_step(auth, sasl::next(pending, data)).await,
        };
        self.state = state;
        reply
    }

    async fn sasl_step(&mut self, mut auth: Authorization, step: Step) -> (State, Reply) {
        match step {
            Step::Challenge(challenge, pending) => {
                auth.sasl = Some(pending);
                (State::Authorization(auth), Reply::Continue(challenge))
            }
            Step::Fail(reason) => (State::Authorization(auth), Response::err(reason).into()),
            // The failure was counted when the token was checked.
            Step::Refused => (
                State::Authorization(auth),
                Response::err_code(RespCode::Auth, "authentication failed").into(),
            ),
            Step::Check { login, credential } => {
                let bearer = matches!(credential, Credential::Bearer { .. });
                self.last_failure = None;
                let (state, reply) = self.login(auth, login, credential).await;
                match state {
                    // RFC 7628 §3.2.2: a refused bearer token gets an error challenge; the
                    // client answers it, and only then does the exchange fail. Other
                    // failures (cleartext refused, a dependency down) are answered at once.
                    State::Authorization(mut auth)
                        if bearer && self.last_failure == Some(AuthFailure::BadCredentials) =>
                    {
                        auth.sasl = Some(Pending::BearerFailed);
                        (
                            State::Authorization(auth),
                            Reply::Continue(sasl::BEARER_ERROR.to_vec()),
                        )
                    }
                    state => (state, reply),
                }
            }
        }
    }

    async fn auth_command(
        &mut self,
        auth: Authorization,
        mechanism: Option<String>,
        initial: Option<Secret>,
    ) -> (State, Reply) {
        let Some(name) = mechanism else {
            // Without a mechanism: list what may be used now (as Dovecot does).
            let mut body = crate::reply::MultilineBody::new();
            for mechanism in self.capa_context().mechanisms {
                body.push_line(mechanism.name());
            }
            return (
                State::Authorization(auth),
                Reply::Multiline(Response::ok("mechanisms follow"), body),
            );
        };
        // RFC 5034 §4: a mechanism that is not offered is refused with -ERR.
        let Some(mechanism) = Mechanism::from_name(&name).filter(|m| self.mechanism_enabled(*m))
        else {
            return (
                State::Authorization(auth),
                Response::err("unsupported SASL mechanism").into(),
            );
        };
        // Only CRAM-MD5 uses a challenge (RFC 2195 §2); others need no randomness.
        let challenge = match mechanism {
            Mechanism::CramMd5 => apop_challenge(&self.deps.config.hostname),
            _ => String::new(),
        };
        self.sasl_step(auth, sasl::start(mechanism, initial, challenge))
            .await
    }

    async fn authorization(&mut self, mut auth: Authorization, command: Command) -> (State, Reply) {
        let pending_user = auth.pending_user.take();
        match command {
            Command::User(name) => {
                // RFC 1939 §7 allows -ERR for an unknown name; we answer +OK for every name so
                // that USER does not reveal which mailboxes exist.
                auth.pending_user = Some(name);
                (State::Authorization(auth), Response::ok("send PASS").into())
            }
            Command::Pass(password) => match pending_user {
                Some(login) => {
                    self.login(auth, login, Credential::Password(password))
                        .await
                }
                None => (
                    State::Authorization(auth),
                    Response::err("USER first").into(),
                ),
            },
            Command::Apop { name, digest } => match self.apop_challenge.clone() {
                Some(challenge) => {
                    self.login(auth, name, Credential::Apop { challenge, digest })
                        .await
                }
                None => (
                    State::Authorization(auth),
                    Response::err("APOP is not available").into(),
                ),
            },
            Command::Auth { mechanism, initial } => {
                self.auth_command(auth, mechanism, initial).await
            }
            Command::Quit => (
                State::Closed,
                Reply::Close(Response::ok("cloudpop signing off")),
            ),
            _ => (
                State::Authorization(auth),
                Response::err("not allowed before login").into(),
            ),
        }
    }

    async fn login(
        &mut self,
        auth: Authorization,
        login: String,
        credential: Credential,
    ) -> (State, Reply) {
        // Attempts are counted by the login as typed, bounded, so that guessing at one
        // account is throttled whatever the spelling.
        let login_key: String = login.to_ascii_lowercase().chars().take(256).collect();
        let mechanism = credential.mechanism();
        let mut deadline = login_gate::deadline(self.deps.config.login_deadline);
        let counted =
            match login_gate::wait_for_turn(&self.deps, self.client_ip(), &login_key, deadline)
                .await
            {
                login_gate::Turn::Go { counted, waited } => {
                    // The wait for a turn is the throttle's, not a backend's: it does not eat
                    // into the deadline.
                    deadline += waited;
                    counted
                }
                login_gate::Turn::Refused => return self.login_throttled(auth, mechanism),
            };
        let request = AuthRequest {
            login,
            credential,
            client_addr: self.info.client_addr,
            local_addr: self.info.local_addr,
            tls: self.info.tls,
        };
        let checked = login_gate::within(deadline, self.deps.authenticator.authenticate(request))
            .await
            .unwrap_or_else(|| {
                Err(AuthFailure::Temporary(
                    "no answer before the login deadline".into(),
                ))
            });
        let outcome = match &checked {
            Ok(_) => "success",
            Err(failure) => failure.kind(),
        };
        self.deps
            .metrics
            .auth_attempts
            .with_label_values(&[mechanism, outcome])
            .inc();
        let principal = match checked {
            Ok(principal) => principal,
            Err(failure) => return self.login_failed(auth, failure),
        };
        login_gate::record_success(&self.deps, counted, self.client_ip(), &login_key, deadline)
            .await;
        // With the shared limits down, LOGIN-DELAY and the session cap fail open anyway:
        // asking again would only spend the deadline.
        let limits_up = counted == login_gate::Counted::Shared;
        let user_key = format!("{}/{}", principal.tenant, principal.user);
        if limits_up
            && !self
                .login_delay_passed(&user_key, &principal, deadline)
                .await
        {
            let reply =
                Response::err_code(RespCode::LoginDelay, "login too soon after the last one");
            return (State::Authorization(auth), reply.into());
        }
        let slot = if limits_up {
            match self.open_session_slot(&user_key, deadline).await {
                Ok(slot) => slot,
                Err(reply) => return (State::Authorization(auth), reply),
            }
        } else {
            None
        };
        let lease = match self.acquire_lock(&principal, deadline).await {
            Ok(lease) => lease,
            Err(reply) => {
                self.close_session_slot(slot.as_ref()).await;
                return (State::Authorization(auth), reply);
            }
        };
        // RFC 1939 §4: the listing is a snapshot; numbering stays fixed for the session.
        let listed = login_gate::within(deadline, self.deps.store.list(&principal.maildrop)).await;
        let messages = match listed {
            Some(Ok(messages)) => messages,
            failed => {
                match failed {
                    Some(Err(e)) => warn!(error = %e, "message store unavailable at login"),
                    _ => warn!("message store listing missed the login deadline"),
                }
                self.release(&lease).await;
                self.close_session_slot(slot.as_ref()).await;
                return (
                    State::Authorization(auth),
                    temp_failure("maildrop unavailable, try again later"),
                );
            }
        };
        self.stats.login = Some(principal.login.clone());
        let txn = Box::new(Transaction::new(principal, lease, slot, messages));
        let reply = Response::ok(format!(
            "maildrop has {} messages ({} octets)",
            txn.live_count(),
            txn.live_octets()
        ));
        (State::Transaction(txn), reply.into())
    }

    /// Takes the maildrop lock before `deadline`. A call cut off by the deadline leaves no
    /// lease behind (the lock's contract: it releases what it may still have taken).
    async fn acquire_lock(&self, principal: &Principal, deadline: Instant) -> Result<Lease, Reply> {
        let lock_ttl = self.deps.config.lock_ttl;
        let acquire = self.deps.lock.acquire(&principal.maildrop, lock_ttl);
        let acquired = login_gate::within(deadline, acquire).await;
        match acquired {
            Some(Ok(Some(lease))) => Ok(lease),
            Some(Ok(None)) => Err(Response::err_code(
                RespCode::InUse,
                "maildrop is in use by another session",
            )
            .into()),
            Some(Err(e)) => {
                warn!(error = %e, "maildrop lock unavailable at login");
                Err(temp_failure("maildrop lock unavailable, try again later"))
            }
            None => {
                warn!("maildrop lock missed the login deadline");
                Err(temp_failure("maildrop lock unavailable, try again later"))
            }
        }
    }

    /// An attempt the throttle refused: the same answer for right and wrong credentials,
    /// since the credential was not checked. It counts as a failure of this connection.
    fn login_throttled(&mut self, mut auth: Authorization, mechanism: &str) -> (State, Reply) {
        self.deps
            .metrics
            .auth_attempts
            .with_label_values(&[mechanism, "throttled"])
            .inc();
        auth.failures += 1;
        self.stats.auth_failures += 1;
        let reply = Response::err_code(
            RespCode::SysTemp,
            "too many login attempts for this login or address, try again later",
        );
        if auth.failures >= self.deps.config.max_auth_failures {
            return (State::Closed, Reply::Close(reply));
        }
        (State::Authorization(auth), reply.into())
    }

    fn client_ip(&self) -> IpAddr {
        self.info
            .client_addr
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip())
    }

    /// RFC 2449 §6.8 LOGIN-DELAY across pods. Fails open: a limits backend that is down
    /// must not lock users out.
    async fn login_delay_passed(
        &self,
        user_key: &str,
        principal: &Principal,
        deadline: Instant,
    ) -> bool {
        let delay = principal.policy.login_delay;
        if delay.is_zero() {
            return true;
        }
        let checked = self.deps.limits.check_login_delay(user_key, delay);
        match login_gate::within(deadline, checked).await {
            Some(Ok(passed)) => passed,
            Some(Err(e)) => {
                warn!(error = %e, "login delay unavailable; login admitted");
                true
            }
            None => {
                warn!("login delay missed the login deadline; login admitted");
                true
            }
        }
    }

    /// Takes a place in the per-user session cap. Fails open when the backend is down or
    /// misses the deadline; a place granted after the deadline is given back at once.
    async fn open_session_slot(
        &self,
        user_key: &str,
        deadline: Instant,
    ) -> Result<Option<SessionSlot>, Reply> {
        let max = self.deps.config.max_sessions_per_user;
        let (limits, late_limits) = (Arc::clone(&self.deps.limits), Arc::clone(&self.deps.limits));
        let user_key = user_key.to_owned();
        let opened = login_gate::within_or_undo(
            deadline,
            async move { limits.open_session(&user_key, max, SLOT_TTL).await },
            move |opened| async move {
                if let Ok(Some(slot)) = opened {
                    let _ = late_limits.close_session(&slot).await;
                }
            },
        )
        .await;
        match opened {
            Some(Ok(Some(slot))) => Ok(Some(slot)),
            Some(Ok(None)) => {
                Err(Response::err_code(RespCode::InUse, "too many sessions for this user").into())
            }
            Some(Err(e)) => {
                warn!(error = %e, "session limit unavailable; session admitted");
                Ok(None)
            }
            None => {
                warn!("session limit missed the login deadline; session admitted");
                Ok(None)
            }
        }
    }

    async fn close_session_slot(&self, slot: Option<&SessionSlot>) {
        if let Some(slot) = slot
            && let Err(e) = self.deps.limits.close_session(slot).await
        {
            debug!(error = %e, "could not release the session slot; it expires by itself");
        }
    }

    /// The session's slot in the per-user cap, to keep it refreshed.
    pub fn session_slot(&self) -> Option<&SessionSlot> {
        match &self.state {
            State::Transaction(t) => t.slot.as_ref(),
            _ => None,
        }
    }

    fn login_failed(&mut self, mut auth: Authorization, failure: AuthFailure) -> (State, Reply) {
        self.last_failure = Some(failure.clone());
        // RFC 3206: [AUTH] only for bad credentials; a dependency problem is [SYS/TEMP].
        let response = match &failure {
            AuthFailure::BadCredentials => {
                // The attempt was counted by the throttle when it was admitted.
                auth.failures += 1;
                self.stats.auth_failures += 1;
                if auth.failures >= self.deps.config.max_auth_failures {
                    let reply = Response::err_code(
                        RespCode::Auth,
                        "authentication failed; too many failures",
                    );
                    return (State::Closed, Reply::Close(reply));
                }
                Response::err_code(RespCode::Auth, "authentication failed")
            }
            AuthFailure::LoginTooSoon => {
                Response::err_code(RespCode::LoginDelay, "login too soon after the last one")
            }
            AuthFailure::Temporary(_) => Response::err_code(
                RespCode::SysTemp,
                "authentication unavailable, try again later",
            ),
            AuthFailure::Permanent(_) => {
                Response::err_code(RespCode::SysPerm, "account unavailable")
            }
            // Said before the credential is checked, so it is the same for right and wrong
            // passwords (Dovecot answers in the same way).
            AuthFailure::EncryptionRequired => Response::err_code(
                RespCode::Auth,
                "cleartext authentication is not allowed without TLS; use STLS or POP3S",
            ),
        };
        if let AuthFailure::Temporary(reason) | AuthFailure::Permanent(reason) = &failure {
            warn!(%reason, "login refused");
        }
        (State::Authorization(auth), response.into())
    }

    async fn transaction(&mut self, mut txn: Box<Transaction>, command: Command) -> (State, Reply) {
        let reply = match command {
            Command::Stat => {
                Response::ok(format!("{} {}", txn.live_count(), txn.live_octets())).into()
            }
            Command::List(None) => {
                let mut body = crate::reply::MultilineBody::new();
                for (n, m) in txn.live() {
                    body.push_line(format_args!("{n} {}", m.size));
                }
                let status = format!(
                    "{} messages ({} octets)",
                    txn.live_count(),
                    txn.live_octets()
                );
                Reply::Multiline(Response::ok(status), body)
            }
            Command::List(Some(n)) => match txn.get(n) {
                Some(m) => Response::ok(format!("{n} {}", m.size)).into(),
                None => no_such_message(),
            },
            Command::Uidl(None) => {
                let mut body = crate::reply::MultilineBody::new();
                for (n, m) in txn.live() {
                    body.push_line(format_args!("{n} {}", m.uid));
                }
                Reply::Multiline(Response::ok("unique-id listing follows"), body)
            }
            Command::Uidl(Some(n)) => match txn.get(n) {
                Some(m) => Response::ok(format!("{n} {}", m.uid)).into(),
                None => no_such_message(),
            },
            Command::Retr(n) => self.open(&txn, n, BodyLimit::Whole).await,
            Command::Top { message, lines } => {
                self.open(&txn, message, BodyLimit::TopLines(lines)).await
            }
            Command::Dele(n) => match txn.get(n).map(|m| m.size) {
                Some(size) => {
                    // RFC 1939 §5: DELE only marks; the message is removed in UPDATE.
                    txn.deleted[n.index()] = true;
                    txn.deleted_count += 1;
                    txn.deleted_octets += size;
                    Response::ok(format!("message {n} deleted")).into()
                }
                None => no_such_message(),
            },
            // RFC 1957: some clients need text after every +OK.
            Command::Noop => Response::ok("still here").into(),
            Command::Rset => {
                txn.deleted.iter_mut().for_each(|d| *d = false);
                txn.deleted_count = 0;
                txn.deleted_octets = 0;
                Response::ok(format!(
                    "maildrop has {} messages ({} octets)",
                    txn.live_count(),
                    txn.live_octets()
                ))
                .into()
            }
            Command::Quit => return (State::Closed, self.update(txn).await),
            Command::User(_)
            | Command::Pass(_)
            | Command::Apop { .. }
            | Command::Auth { .. }
            | Command::Stls => Response::err("already logged in").into(),
            Command::Capa => self.capa(),
        };
        (State::Transaction(txn), reply)
    }

    async fn open(&mut self, txn: &Transaction, n: MessageNumber, limit: BodyLimit) -> Reply {
        let Some(entry) = txn.get(n) else {
            return no_such_message();
        };
        match self
            .deps
            .store
            .open(&txn.principal.maildrop, &entry.uid)
            .await
        {
            Ok(body) => {
                if limit == BodyLimit::Whole {
                    self.stats.retrieved += 1;
                    self.deps.metrics.retrieved.inc();
                }
                let status = match limit {
                    BodyLimit::Whole => Response::ok(format!("{} octets", entry.size)),
                    BodyLimit::TopLines(_) => Response::ok("top of message follows"),
                };
                Reply::Message {
                    status,
                    body,
                    limit,
                    size: entry.size,
                }
            }
            Err(StoreError::NotFound) => {
                Response::err(format!("message {n} no longer exists")).into()
            }
            Err(e) => {
                warn!(error = %e, "message store unavailable during retrieval");
                temp_failure("message temporarily unavailable, try again later")
            }
        }
    }

    /// RFC 1939 §6: the UPDATE state, entered only from QUIT in TRANSACTION.
    async fn update(&mut self, txn: Box<Transaction>) -> Reply {
        let marked = txn.marked();
        // Nothing marked: nothing to fence and nothing to delete or sync.
        let outcome = if marked.is_empty() {
            DeleteOutcome::default()
        } else {
            let held = self.deps.lock.check(&txn.lease).await;
            if !matches!(held, Ok(true)) {
                // Fencing: another session may own the maildrop now. Deleting would be unsafe.
                warn!(?held, "maildrop lock lost before UPDATE; nothing deleted");
                self.release(&txn.lease).await;
                self.close_session_slot(txn.slot.as_ref()).await;
                return Reply::Close(Response::err_code(
                    RespCode::SysTemp,
                    "maildrop lock lost; no messages were deleted",
                ));
            }
            self.deps
                .store
                .delete(&txn.principal.maildrop, &marked)
                .await
        };
        self.release(&txn.lease).await;
        self.close_session_slot(txn.slot.as_ref()).await;
        self.stats.deleted = outcome.deleted.len() as u64;
        self.deps.metrics.deleted.inc_by(self.stats.deleted);
        let left = txn.messages.len() - outcome.deleted.len();
        if outcome.failed.is_empty() {
            Reply::Close(Response::ok(format!(
                "cloudpop signing off ({left} messages left)"
            )))
        } else {
            warn!(
                failed = outcome.failed.len(),
                "some deletions failed at UPDATE"
            );
            // RFC 1939 §6: -ERR if some deleted messages were not removed; they stay and are
            // served again next time.
            Reply::Close(Response::err_code(
                RespCode::SysTemp,
                format!(
                    "{} messages could not be deleted and remain",
                    outcome.failed.len()
                ),
            ))
        }
    }

    /// Ends the session without UPDATE (dropped connection, timeout, lost lock, shutdown).
    pub async fn abandon(&mut self) {
        if let State::Transaction(txn) = std::mem::replace(&mut self.state, State::Closed) {
            self.release(&txn.lease).await;
            self.close_session_slot(txn.slot.as_ref()).await;
        }
    }

    async fn release(&self, lease: &Lease) {
        if let Err(e) = self.deps.lock.release(lease).await {
            // The lease expires by itself; nothing else to do.
            warn!(error = %e, "could not release maildrop lock");
        }
    }
}

fn temp_failure(text: &str) -> Reply {
    Response::err_code(RespCode::SysTemp, text).into()
}

/// RFC 1939 §7: a timestamp unique to this greeting, `<random.time@host>`.
fn apop_challenge(hostname: &str) -> String {
    let mut random = [0u8; 8];
    // Without randomness the time and process id still make the challenge unique enough.
    let _ = getrandom::fill(&mut random);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("<{hex}.{secs}.{}@{hostname}>", std::process::id())
}
