//! `cloudpop.auth.v1.AuthService`: the [`Authenticator`] seam served over gRPC.
//!
//! The outcome of a credential check travels in the response (`principal` or `failure`); a
//! non-OK status means the check did not happen (malformed request), and the front-end
//! answers `[SYS/TEMP]`. This layer adds no policy of its own: it translates and delegates.

use std::net::SocketAddr;
use std::sync::Arc;

use cloudpop_proto::auth::v1 as pb;
use cloudpop_proto::auth::v1::auth_service_server::AuthService;
use tonic::{Request, Response, Status};

use super::convert::{failure_to_proto, principal_to_proto};
use crate::authenticator::{AuthRequest, Authenticator, BearerScheme, Credential};
use crate::secret::Secret;

/// Serves `AuthService` from any [`Authenticator`] (in practice the directory).
#[derive(Debug, Clone)]
pub(crate) struct AuthServiceImpl {
    authenticator: Arc<dyn Authenticator>,
}

impl AuthServiceImpl {
    pub(crate) fn new(authenticator: Arc<dyn Authenticator>) -> Self {
        Self { authenticator }
    }
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
        let request = auth_request(request.into_inner())?;
        let mechanism = request.credential.mechanism();
        let result = match self.authenticator.authenticate(request).await {
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
    }

    async fn lookup_recipient(
        &self,
        request: Request<pb::LookupRecipientRequest>,
    ) -> Result<Response<pb::LookupRecipientResponse>, Status> {
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
    }

    async fn capabilities(
        &self,
        _request: Request<pb::CapabilitiesRequest>,
    ) -> Result<Response<pb::CapabilitiesResponse>, Status> {
        Ok(Response::new(pb::CapabilitiesResponse {
            apop_offered: self.authenticator.apop_offered(),
            cram_md5_offered: self.authenticator.cram_md5_offered(),
        }))
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
