//! [`GrpcAuthenticator`]: the [`Authenticator`] seam over gRPC, for the POP3 and LMTP
//! front-ends.
//!
//! Every way of not getting a trustworthy answer (auth service down or slow, a transport
//! error, a malformed response, an id that does not validate) is a temporary failure: a
//! dependency being down must never look like bad credentials (`[AUTH]`) or an unknown
//! recipient (LMTP `550`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use cloudpop_proto::auth::v1 as pb;
use cloudpop_proto::auth::v1::auth_service_client::AuthServiceClient;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use std::time::Instant;

use tracing::Instrument;

use super::convert::{failure_from_proto, principal_from_proto, safe_message};
use super::metrics::{GrpcClientMetrics, outcome};
use super::trace_context;
use crate::authenticator::{
    AuthFailure, AuthRequest, Authenticator, BearerScheme, Credential, LookupError, Principal,
};

/// First retry delay; it doubles with each retry (with jitter) up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(50);
/// Longest delay between two attempts.
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// HTTP/2 pings on an idle connection, so a peer that vanished without closing (a killed
/// pod, a dropped NAT entry) is noticed before the next login waits on it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered before the connection is dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the auth service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcClientConfig {
    /// The auth service's URL, `http://host:port` (no TLS yet).
    pub endpoint: String,
    /// The most one attempt may take, connecting included; also sent to the server as the
    /// call's deadline. More than zero.
    pub timeout: Duration,
    /// Attempts per call, at least 1. Only failures that say nothing about the credential
    /// (unreachable, timed out, transport error) are retried.
    pub max_attempts: u32,
    /// Whether APOP is offered until the auth service has told us (see
    /// [`GrpcAuthenticator::spawn_capabilities_refresh`]).
    pub apop_offered_default: bool,
}

impl Default for GrpcClientConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:50051".to_owned(),
            timeout: Duration::from_secs(2),
            max_attempts: 3,
            apop_offered_default: false,
        }
    }
}

impl GrpcClientConfig {
    /// The longest a call can take before it fails: every attempt timing out, plus the
    /// longest delays between them. A front-end's own timeouts should exceed it.
    pub fn worst_case(&self) -> Duration {
        let retries = self.max_attempts.saturating_sub(1);
        self.timeout.saturating_mul(self.max_attempts) + BACKOFF_MAX.saturating_mul(retries)
    }
}

/// Why a [`GrpcAuthenticator`] could not be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrpcClientError {
    /// The endpoint is not an `http://host:port` URL.
    #[error("auth service endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    /// The timeout is zero.
    #[error("auth service timeout must be more than zero")]
    ZeroTimeout,
    /// `max_attempts` is zero.
    #[error("auth service max_attempts must be at least 1")]
    ZeroAttempts,
}

/// The [`Authenticator`] seam served by a remote auth service over gRPC.
///
/// - Creating it does not connect: the front-end starts even while the auth service is down,
///   and calls succeed as soon as it is up, without recreating the client.
/// - Each attempt is bounded by the configured timeout; unreachable, timed-out and transport
///   failures are retried with exponential backoff and jitter, up to `max_attempts`. An
///   answer from the server (including a wrong password) is never retried.
/// - A call that gets no valid answer is [`AuthFailure::Temporary`] or
///   [`LookupError::Temporary`]. Ids and logins received are validated, never trusted.
/// - [`apop_offered`](Authenticator::apop_offered) is answered from a cached value, set from
///   the configuration and refreshed from the server's `Capabilities`;
///   [`cram_md5_offered`](Authenticator::cram_md5_offered) likewise, false until refreshed.
///
/// Cloning is cheap and shares the connection and the cached capabilities.
#[derive(Debug, Clone)]
pub struct GrpcAuthenticator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: AuthServiceClient<Channel>,
    timeout: Duration,
    max_attempts: u32,
    apop_offered: AtomicBool,
    cram_md5_offered: AtomicBool,
    metrics: Option<GrpcClientMetrics>,
}

impl GrpcAuthenticator {
    /// Builds the client from `config`. Does not connect (see the type's docs). Needs a Tokio
    /// runtime: the connection's worker task is spawned on it.
    pub fn new(config: &GrpcClientConfig) -> Result<Self, GrpcClientError> {
        Self::build(config, None)
    }

    /// Like [`new`](Self::new), and times every call into `metrics`.
    pub fn instrumented(
        config: &GrpcClientConfig,
        metrics: GrpcClientMetrics,
    ) -> Result<Self, GrpcClientError> {
        Self::build(config, Some(metrics))
    }

    fn build(
        config: &GrpcClientConfig,
        metrics: Option<GrpcClientMetrics>,
    ) -> Result<Self, GrpcClientError> {
        if config.timeout.is_zero() {
            return Err(GrpcClientError::ZeroTimeout);
        }
        if config.max_attempts == 0 {
            return Err(GrpcClientError::ZeroAttempts);
        }
        let invalid = |reason: String| GrpcClientError::InvalidEndpoint {
            endpoint: config.endpoint.clone(),
            reason,
        };
        let endpoint =
            Endpoint::from_shared(config.endpoint.clone()).map_err(|e| invalid(e.to_string()))?;
        if endpoint.uri().scheme_str() != Some("http") {
            return Err(invalid(
                "must be an http://host:port URL (TLS to the auth service is not supported yet)"
                    .to_owned(),
            ));
        }
        let channel = endpoint
            .connect_timeout(config.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(Self {
            inner: Arc::new(Inner {
                client: AuthServiceClient::new(channel),
                timeout: config.timeout,
                max_attempts: config.max_attempts,
                apop_offered: AtomicBool::new(config.apop_offered_default),
                // Not offered until the server says so: a mechanism offered in vain fails
                // every client that picks it.
                cram_md5_offered: AtomicBool::new(false),
                metrics,
            }),
        })
    }

    /// Asks the server which mechanisms may be offered, caches the answers for
    /// [`apop_offered`](Authenticator::apop_offered) and
    /// [`cram_md5_offered`](Authenticator::cram_md5_offered), and returns whether APOP may be
    /// offered. On failure the cached values are kept and the error is
    /// [`AuthFailure::Temporary`].
    pub async fn refresh_capabilities(&self) -> Result<bool, AuthFailure> {
        self.inner.refresh_capabilities().await
    }

    /// Spawns a task that calls [`refresh_capabilities`](Self::refresh_capabilities) now and
    /// then every `interval` (at least one second), until `shutdown` is cancelled or every
    /// clone of this client is dropped. Failures are logged and the cached value is kept.
    pub fn spawn_capabilities_refresh(
        &self,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let inner = Arc::downgrade(&self.inner);
        let interval = interval.max(Duration::from_secs(1));
        tokio::spawn(refresh_loop(inner, interval, shutdown))
    }
}

async fn refresh_loop(inner: Weak<Inner>, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        if let Err(error) = inner.refresh_capabilities().await {
            tracing::warn!(%error, "auth service capabilities not refreshed");
        }
    }
}

impl Inner {
    async fn refresh_capabilities(&self) -> Result<bool, AuthFailure> {
        let response = self
            .call(
                "Capabilities",
                pb::CapabilitiesRequest {},
                |mut client, request| async move { client.capabilities(request).await },
            )
            .await
            .map_err(|status| AuthFailure::Temporary(unavailable(&status)))?;
        self.apop_offered
            .store(response.apop_offered, Ordering::Relaxed);
        self.cram_md5_offered
            .store(response.cram_md5_offered, Ordering::Relaxed);
        Ok(response.apop_offered)
    }

    /// Makes one call of `method`, timed into the metrics.
    async fn call<M, T, F, Fut>(
        &self,
        method: &'static str,
        message: M,
        rpc: F,
    ) -> Result<T, Status>
    where
        M: Clone,
        F: Fn(AuthServiceClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let started = Instant::now();
        let result = self.attempts(method, message, rpc).await;
        if let Some(metrics) = &self.metrics {
            metrics
                .duration
                .with_label_values(&[method, outcome(&result)])
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }

    /// Makes the call with the per-attempt timeout, retrying what is worth retrying.
    async fn attempts<M, T, F, Fut>(
        &self,
        method: &'static str,
        message: M,
        rpc: F,
    ) -> Result<T, Status>
    where
        M: Clone,
        F: Fn(AuthServiceClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut attempt = 1;
        loop {
            let mut request = Request::new(message.clone());
            // Tells the server when to give up; the local timeout below also covers connecting.
            request.set_timeout(self.timeout);
            // W3C trace context, so the auth service's spans join the caller's trace.
            trace_context::inject_current(request.metadata_mut());
            let attempted = tokio::time::timeout(self.timeout, rpc(self.client.clone(), request));
            let status = match attempted.await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) if !timed_out(&status) => status,
                // tonic enforces the request's timeout itself and calls it CANCELLED.
                Ok(Err(_)) | Err(_) => Status::deadline_exceeded("no answer within the timeout"),
            };
            if attempt >= self.max_attempts || !retryable(&status) {
                return Err(status);
            }
            tracing::debug!(attempt, code = ?status.code(), "auth service call failed; retrying");
            if let Some(metrics) = &self.metrics {
                metrics.retries.with_label_values(&[method]).inc();
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}

/// Whether a failed call may be tried again: the server was not reached, did not answer in
/// time, or the connection broke. A status the server sent (which has no local source) is
/// an answer and is not retried, except UNAVAILABLE, which a server sends when it is
/// overloaded or shutting down.
fn retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded => true,
        // Made here from a transport error (e.g. a connection reset mid-call).
        Code::Unknown | Code::Cancelled => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

/// Whether the status is tonic's own report of the request's timeout expiring.
fn timed_out(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Delay before retry number `attempt` (1-based): `BACKOFF_BASE` doubled per retry, capped
/// at `BACKOFF_MAX`, then scaled by a random factor in [0.5, 1) so that many front-ends do
/// not retry in step after an auth service restart.
fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    let full = BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX);
    let per_mille = getrandom::u32().unwrap_or(0) % 500;
    full / 2 + full * per_mille / 1000
}

/// The message of a temporary failure made from a status: its code and its (sanitised)
/// message, for logs.
fn unavailable(status: &Status) -> String {
    format!(
        "auth service call failed: {:?}: {}",
        status.code(),
        safe_message(status.message())
    )
}

/// The span of one call to the auth service (its attempts included). Capabilities calls
/// (periodic, and from readiness probes) get none: they would each start a trace of their
/// own and drown the sessions' traces.
fn client_span(method: &'static str, mechanism: &'static str) -> tracing::Span {
    let name = match method {
        "Authenticate" => "cloudpop.auth.v1.AuthService/Authenticate",
        _ => "cloudpop.auth.v1.AuthService/LookupRecipient",
    };
    tracing::info_span!(
        "auth_call",
        otel.name = name,
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = "cloudpop.auth.v1.AuthService",
        rpc.method = method,
        mechanism,
    )
}

fn request_to_proto(request: AuthRequest) -> pb::AuthenticateRequest {
    let (mechanism, credential, challenge) = match request.credential {
        Credential::Password(password) => (
            pb::Mechanism::Password,
            password.expose().to_vec(),
            String::new(),
        ),
        Credential::Apop { challenge, digest } => {
            (pb::Mechanism::Apop, digest.expose().to_vec(), challenge)
        }
        Credential::CramMd5 { challenge, digest } => {
            (pb::Mechanism::CramMd5, digest.expose().to_vec(), challenge)
        }
        Credential::Bearer { token, scheme } => {
            let mechanism = match scheme {
                BearerScheme::OAuthBearer => pb::Mechanism::Oauthbearer,
                BearerScheme::XOAuth2 => pb::Mechanism::Xoauth2,
            };
            (mechanism, token.expose().to_vec(), String::new())
        }
    };
    let address = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    pb::AuthenticateRequest {
        mechanism: mechanism.into(),
        login: request.login,
        credential,
        challenge,
        client_address: address(request.client_addr),
        local_address: address(request.local_addr),
        tls: request.tls,
    }
}

#[async_trait]
impl Authenticator for GrpcAuthenticator {
    async fn authenticate(&self, request: AuthRequest) -> Result<Principal, AuthFailure> {
        use pb::authenticate_response::Result as Outcome;
        let span = client_span("Authenticate", request.credential.mechanism());
        let response = self
            .inner
            .call(
                "Authenticate",
                request_to_proto(request),
                |mut client, request| async move { client.authenticate(request).await },
            )
            .instrument(span)
            .await
            .map_err(|status| AuthFailure::Temporary(unavailable(&status)))?;
        match response.result {
            Some(Outcome::Principal(principal)) => principal_from_proto(principal).map_err(|e| {
                tracing::warn!(error = %e, "auth service sent an invalid principal");
                AuthFailure::Temporary(e.to_string())
            }),
            Some(Outcome::Failure(failure)) => Err(failure_from_proto(&failure)),
            None => Err(AuthFailure::Temporary(
                "auth service sent an empty answer".to_owned(),
            )),
        }
    }

    async fn lookup_recipient(&self, address: &str) -> Result<Option<Principal>, LookupError> {
        use pb::lookup_recipient_response::Result as Outcome;
        let message = pb::LookupRecipientRequest {
            address: address.to_owned(),
        };
        let response = self
            .inner
            .call(
                "LookupRecipient",
                message,
                |mut client, request| async move { client.lookup_recipient(request).await },
            )
            .instrument(client_span("LookupRecipient", ""))
            .await
            .map_err(|status| LookupError::Temporary(unavailable(&status)))?;
        match response.result {
            Some(Outcome::Principal(principal)) => {
                principal_from_proto(principal).map(Some).map_err(|e| {
                    tracing::warn!(error = %e, "auth service sent an invalid principal");
                    LookupError::Temporary(e.to_string())
                })
            }
            Some(Outcome::NotFound(_)) => Ok(None),
            None => Err(LookupError::Temporary(
                "auth service sent an empty answer".to_owned(),
            )),
        }
    }

    fn apop_offered(&self) -> bool {
        self.inner.apop_offered.load(Ordering::Relaxed)
    }

    fn cram_md5_offered(&self) -> bool {
        self.inner.cram_md5_offered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(
                first >= BACKOFF_BASE / 2 && first < BACKOFF_BASE,
                "{first:?}"
            );
            let second = backoff(2);
            assert!(
                second >= BACKOFF_BASE && second < BACKOFF_BASE * 2,
                "{second:?}"
            );
            let late = backoff(40);
            assert!(late >= BACKOFF_MAX / 2 && late < BACKOFF_MAX, "{late:?}");
        }
    }

    #[test]
    fn only_transport_trouble_is_retried() {
        assert!(retryable(&Status::unavailable("down")));
        assert!(retryable(&Status::deadline_exceeded("slow")));
        for status in [
            Status::invalid_argument("x"),
            Status::internal("x"),
            Status::unknown("sent by the server"),
            Status::cancelled("sent by the server"),
            Status::permission_denied("x"),
        ] {
            assert!(!retryable(&status), "{status:?}");
        }
        let local = Status::from_error(Box::new(std::io::Error::other("reset")));
        assert_eq!(local.code(), Code::Unknown);
        assert!(retryable(&local));
        assert!(!timed_out(&local));
        let expired = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert!(timed_out(&expired));
        assert!(!timed_out(&Status::cancelled("sent by the server")));
    }

    #[test]
    fn config_is_validated() {
        let config = |f: fn(&mut GrpcClientConfig)| {
            let mut config = GrpcClientConfig::default();
            f(&mut config);
            config
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        assert!(GrpcAuthenticator::new(&GrpcClientConfig::default()).is_ok());
        for (bad, expected) in [
            (config(|c| c.timeout = Duration::ZERO), "timeout"),
            (config(|c| c.max_attempts = 0), "max_attempts"),
            (config(|c| c.endpoint = "127.0.0.1:50051".into()), "http://"),
            (
                config(|c| c.endpoint = "https://auth:50051".into()),
                "http://",
            ),
            (
                config(|c| c.endpoint = "http://bad host".into()),
                "bad host",
            ),
        ] {
            let error = GrpcAuthenticator::new(&bad).unwrap_err();
            assert!(error.to_string().contains(expected), "{error}");
        }
        let worst = GrpcClientConfig::default().worst_case();
        assert_eq!(worst, Duration::from_secs(6) + BACKOFF_MAX * 2);
    }

    #[test]
    fn requests_carry_what_the_client_sent() {
        let request = AuthRequest {
            login: "alice@example.com".into(),
            credential: Credential::Apop {
                challenge: "<1.2@host>".into(),
                digest: Secret::new("abc"),
            },
            client_addr: "[2001:db8::1]:110".parse().ok(),
            local_addr: None,
            tls: false,
        };
        let wire = request_to_proto(request);
        assert_eq!(wire.mechanism(), pb::Mechanism::Apop);
        assert_eq!(wire.credential, b"abc");
        assert_eq!(wire.challenge, "<1.2@host>");
        assert_eq!(wire.client_address, "[2001:db8::1]:110");
        assert_eq!(wire.local_address, "");
    }

    #[test]
    fn cram_md5_and_bearer_requests_carry_their_mechanism() {
        let request = |credential| AuthRequest {
            login: String::new(),
            credential,
            client_addr: None,
            local_addr: None,
            tls: true,
        };
        let cram = request_to_proto(request(Credential::CramMd5 {
            challenge: "<1.2@host>".into(),
            digest: Secret::new("abc"),
        }));
        assert_eq!(cram.mechanism(), pb::Mechanism::CramMd5);
        assert_eq!(cram.challenge, "<1.2@host>");
        assert_eq!(cram.credential, b"abc");
        for (scheme, mechanism) in [
            (BearerScheme::OAuthBearer, pb::Mechanism::Oauthbearer),
            (BearerScheme::XOAuth2, pb::Mechanism::Xoauth2),
        ] {
            let token = Secret::new("eyJ.token.sig");
            let wire = request_to_proto(request(Credential::Bearer { token, scheme }));
            assert_eq!(wire.mechanism(), mechanism);
            assert_eq!(wire.credential, b"eyJ.token.sig");
            assert_eq!(wire.challenge, "");
            assert_eq!(wire.login, "");
        }
    }
}
