//! `cloudpop.auth.v1.AuthService`: the [`Authenticator`] seam served over gRPC.
//!
//! The outcome of a credential check travels in the response (`principal` or `failure`); a
//! non-OK status means the check did not happen (malformed request), and the front-end
//! answers `[SYS/TEMP]`. This layer adds no policy of its own: it translates and delegates.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use cloudpop_proto::auth::v1 as pb;
use cloudpop_proto::auth::v1::auth_service_server::AuthService;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::convert::{failure_to_proto, principal_to_proto};
use super::metrics::{AuthServerMetrics, attempt_outcome, outcome};
use super::trace_context;
use crate::authenticator::{AuthRequest, Authenticator, BearerScheme, Credential};
use crate::secret::Secret;

/// Serves `AuthService` from any [`Authenticator`] (in practice the directory).
#[derive(Debug, Clone)]
pub(crate) struct AuthServiceImpl {
    authenticator: Arc<dyn Authenticator>,
    metrics: Option<AuthServerMetrics>,
}

impl AuthServiceImpl {
    pub(crate) fn new(
        authenticator: Arc<dyn Authenticator>,
        metrics: Option<AuthServerMetrics>,
    ) -> Self {
        Self {
            authenticator,
            metrics,
        }
    }

    /// Runs one call, timed into the metrics.
    async fn timed<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let started = Instant::now();
        let result = call.await;
        if let Some(metrics) = &self.metrics {
            metrics
                .duration
                .with_label_values(&[method, outcome(&result)])
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }
}

/// The server span of one call, continuing the caller's trace when it sent one.
fn server_span<T>(request: &Request<T>, name: &'static str, method: &'static str) -> tracing::Span {
    let span = tracing::info_span!(
        "auth_rpc",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = "cloudpop.auth.v1.AuthService",
        rpc.method = method,
        mechanism = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    trace_context::continue_from(request.metadata(), &span);
    span
}

/// Parses an optional `ip:port`; empty means unknown.
fn address(field: &str, value: &str) -> Result<Option<SocketAddr>, Status> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| Status::invalid_argument(format!("{field} must be empty or ip:port")))
}

fn auth_request(request: pb::AuthenticateRequest) -> Result<AuthRequest, Status> {
    let secret = Secret::new(request.credential);
    let credential = match pb::Mechanism::try_from(request.mechanism) {
        Ok(pb::Mechanism::Password) => Credential::Password(secret),
        Ok(pb::Mechanism::Apop) => Credential::Apop {
            challenge: request.challenge,
            digest: secret,
        },
        Ok(pb::Mechanism::CramMd5) => Credential::CramMd5 {
            challenge: request.challenge,
            digest: secret,
        },
        Ok(pb::Mechanism::Oauthbearer) => Credential::Bearer {
            token: secret,
            scheme: BearerScheme::OAuthBearer,
        },
        Ok(pb::Mechanism::Xoauth2) => Credential::Bearer {
            token: secret,
            scheme: BearerScheme::XOAuth2,
        },
        Ok(pb::Mechanism::Unspecified) | Err(_) => {
            return Err(Status::invalid_argument("unsupported mechanism"));
        }
    };
    Ok(AuthRequest {
        login: request.login,
        credential,
        client_addr: address("client_address", &request.client_address)?,
        local_addr: address("local_address", &request.local_address)?,
        tls: request.tls,
    })
}

#[tonic::async_trait]
impl AuthService for AuthServiceImpl {
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let span = server_span(
            &request,
            "cloudpop.auth.v1.AuthService/Authenticate",
            "Authenticate",
        );
        let call = async {
            let request = auth_request(request.into_inner())?;
            let mechanism = request.credential.mechanism();
            let checked = self.authenticator.authenticate(request).await;
            let outcome = attempt_outcome(&checked);
            tracing::Span::current().record("mechanism", mechanism);
            tracing::Span::current().record("outcome", outcome);
            if let Some(metrics) = &self.metrics {
                metrics
                    .attempts
                    .with_label_values(&[mechanism, outcome])
                    .inc();
            }
            let result = match checked {
                Ok(principal) => {
                    pb::authenticate_response::Result::Principal(principal_to_proto(&principal))
                }
                Err(failure) => {
                    tracing::debug!(mechanism, %failure, "authentication refused");
                    pb::authenticate_response::Result::Failure(failure_to_proto(&failure))
                }
            };
            Ok(Response::new(pb::AuthenticateResponse {
                result: Some(result),
            }))
        };
        self.timed("Authenticate", call).instrument(span).await
    }

    async fn lookup_recipient(
        &self,
        request: Request<pb::LookupRecipientRequest>,
    ) -> Result<Response<pb::LookupRecipientResponse>, Status> {
        let span = server_span(
            &request,
            "cloudpop.auth.v1.AuthService/LookupRecipient",
            "LookupRecipient",
        );
        let call = async {
            let address = request.into_inner().address;
            let result = match self.authenticator.lookup_recipient(&address).await {
                Ok(Some(principal)) => {
                    pb::lookup_recipient_response::Result::Principal(principal_to_proto(&principal))
                }
                Ok(None) => pb::lookup_recipient_response::Result::NotFound(pb::NotFound {}),
                Err(error) => return Err(Status::unavailable(error.to_string())),
            };
            Ok(Response::new(pb::LookupRecipientResponse {
                result: Some(result),
            }))
        };
        self.timed("LookupRecipient", call).instrument(span).await
    }

    async fn capabilities(
        &self,
        _request: Request<pb::CapabilitiesRequest>,
    ) -> Result<Response<pb::CapabilitiesResponse>, Status> {
        // No span: front-ends ask every few seconds (readiness probes), see the client.
        let call = async {
            Ok(Response::new(pb::CapabilitiesResponse {
                apop_offered: self.authenticator.apop_offered(),
                cram_md5_offered: self.authenticator.cram_md5_offered(),
            }))
        };
        self.timed("Capabilities", call).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(mechanism: i32) -> pb::AuthenticateRequest {
        pb::AuthenticateRequest {
            mechanism,
            login: "alice@example.com".into(),
            credential: b"secret".to_vec(),
            challenge: "<1.2@host>".into(),
            client_address: "192.0.2.1:5555".into(),
            local_address: String::new(),
            tls: true,
        }
    }

    #[test]
    fn requests_are_translated() {
        let apop = auth_request(request(pb::Mechanism::Apop.into())).unwrap();
        assert!(matches!(
            &apop.credential,
            Credential::Apop { challenge, digest }
                if challenge == "<1.2@host>" && digest.expose() == b"secret"
        ));
        assert_eq!(apop.client_addr, "192.0.2.1:5555".parse().ok());
        assert_eq!(apop.local_addr, None);
        assert!(apop.tls);
        let pass = auth_request(request(pb::Mechanism::Password.into())).unwrap();
        assert!(matches!(pass.credential, Credential::Password(_)));
        let cram = auth_request(request(pb::Mechanism::CramMd5.into())).unwrap();
        assert!(matches!(
            &cram.credential,
            Credential::CramMd5 { challenge, digest }
                if challenge == "<1.2@host>" && digest.expose() == b"secret"
        ));
        for (mechanism, expected) in [
            (pb::Mechanism::Oauthbearer, BearerScheme::OAuthBearer),
            (pb::Mechanism::Xoauth2, BearerScheme::XOAuth2),
        ] {
            let bearer = auth_request(request(mechanism.into())).unwrap();
            assert!(matches!(
                &bearer.credential,
                Credential::Bearer { token, scheme }
                    if token.expose() == b"secret" && *scheme == expected
            ));
            assert_eq!(bearer.login, "alice@example.com");
        }
    }

    #[test]
    fn unknown_mechanisms_and_bad_addresses_are_invalid_arguments() {
        // 3 and 4 were PLAIN and LOGIN, which travel as PASSWORD.
        for mechanism in [0, 3, 4, 99] {
            let status = auth_request(request(mechanism)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
        let bad = pb::AuthenticateRequest {
            local_address: "not an address".into(),
            ..request(pb::Mechanism::Password.into())
        };
        let status = auth_request(bad).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(!status.message().contains("not an address"));
    }
}
