//! [`AdminClient`]: a typed client of `cloudpop.admin.v1.AdminService`, for `cloudpop admin`.
//!
//! Calls are not retried: adding a user is not idempotent, and an operator at a prompt
//! is better served by a clear error than by a hidden second attempt.

use std::time::Duration;

use cloudpop_maildrop::TenantId;
use cloudpop_proto::admin::v1 as pb;
use cloudpop_proto::admin::v1::admin_service_client::AdminServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::convert::{
    InvalidResponse, policy_to_proto, safe_message, tenant_from_proto, user_from_proto,
};
use crate::authenticator::Policy;
use crate::directory::{TenantInfo, UserId, UserInfo};
use crate::login::Login;
use crate::secret::Secret;

/// Why an admin call failed. Variants follow the gRPC codes the service documents; messages
/// are the server's (never a secret) and are meant to be shown to the operator as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The endpoint is not an `http://host:port` URL.
    #[error("auth service endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    /// The auth service could not be reached, or did not answer in time.
    #[error("cannot reach the auth service at {endpoint}: {message}")]
    Unavailable { endpoint: String, message: String },
    /// No such tenant or user.
    #[error("{0}")]
    NotFound(String),
    /// The tenant, domain or login is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// A malformed tenant id, domain, login, password or secret.
    #[error("{0}")]
    InvalidArgument(String),
    /// The login's domain belongs to no tenant, or the directory file is invalid.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The auth service requires an admin token, and none or a wrong one was sent.
    #[error("the auth service refused the admin call: {0} (set auth.admin_token_file)")]
    Unauthenticated(String),
    /// The admin token cannot be sent (it is not printable ASCII).
    #[error("the admin token must be printable ASCII")]
    InvalidToken,
    /// The auth service failed (e.g. could not write the directory).
    #[error("the auth service failed: {0}")]
    Server(String),
    /// The auth service sent something that does not validate.
    #[error("{0}")]
    InvalidResponse(String),
}

impl From<InvalidResponse> for AdminError {
    fn from(e: InvalidResponse) -> Self {
        AdminError::InvalidResponse(e.to_string())
    }
}

/// A connection to the auth service's admin API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminClient {
    client: AdminServiceClient<Channel>,
    endpoint: String,
    timeout: Duration,
    /// Sent as `authorization: Bearer …` with every call, when the service requires one.
    token: Option<MetadataValue<Ascii>>,
}

impl AdminClient {
    /// Connects to `endpoint` (`http://host:port`); each call, and connecting, may take at
    /// most `timeout`.
    pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Self, AdminError> {
        let invalid = |reason: String| AdminError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let target =
            Endpoint::from_shared(endpoint.to_owned()).map_err(|e| invalid(e.to_string()))?;
        if target.uri().scheme_str() != Some("http") {
            return Err(invalid(
                "must be an http://host:port URL (TLS to the auth service is not supported yet)"
                    .to_owned(),
            ));
        }
        let channel = target
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect()
            .await
            .map_err(|e| AdminError::Unavailable {
                endpoint: endpoint.to_owned(),
                message: error_chain(&e),
            })?;
        Ok(Self {
            client: AdminServiceClient::new(channel),
            endpoint: endpoint.to_owned(),
            timeout,
            token: None,
        })
    }

    /// Sends `token` with every call, for an auth service that requires an admin token.
    pub fn with_token(mut self, token: &Secret) -> Result<Self, AdminError> {
        let bearer = [b"Bearer ".as_slice(), token.expose()].concat();
        let mut value: MetadataValue<Ascii> = String::from_utf8(bearer)
            .ok()
            .and_then(|text| MetadataValue::try_from(text).ok())
            .ok_or(AdminError::InvalidToken)?;
        // Never printed by `Debug`.
        value.set_sensitive(true);
        self.token = Some(value);
        Ok(self)
    }

    /// Adds tenant `id` owning `domains` (possibly none).
    pub async fn create_tenant(
        &self,
        id: &TenantId,
        domains: &[impl AsRef<str>],
    ) -> Result<TenantInfo, AdminError> {
        let request = pb::CreateTenantRequest {
            tenant_id: id.to_string(),
            domains: domains.iter().map(|d| d.as_ref().to_owned()).collect(),
        };
        let response = self
            .client()
            .create_tenant(self.request(request))
            .await
            .map_err(|s| self.error(s))?;
        tenant(response.into_inner().tenant)
    }

    /// Gives `domain` to `tenant`; a domain the tenant owns already is a no-op.
    pub async fn add_domain(
        &self,
        tenant_id: &TenantId,
        domain: &str,
    ) -> Result<TenantInfo, AdminError> {
        let request = pb::AddDomainRequest {
            tenant_id: tenant_id.to_string(),
            domain: domain.to_owned(),
        };
        let response = self
            .client()
            .add_domain(self.request(request))
            .await
            .map_err(|s| self.error(s))?;
        tenant(response.into_inner().tenant)
    }

    /// Replaces a tenant's policy.
    pub async fn set_policy(
        &self,
        tenant_id: &TenantId,
        policy: &Policy,
    ) -> Result<TenantInfo, AdminError> {
        let request = pb::SetPolicyRequest {
            tenant_id: tenant_id.to_string(),
            policy: Some(policy_to_proto(policy)),
        };
        let response = self
            .client()
            .set_policy(self.request(request))
            .await
            .map_err(|s| self.error(s))?;
        tenant(response.into_inner().tenant)
    }

    /// All tenants, ordered by id.
    pub async fn list_tenants(&self) -> Result<Vec<TenantInfo>, AdminError> {
        let response = self
            .client()
            .list_tenants(self.request(pb::ListTenantsRequest {}))
            .await
            .map_err(|s| self.error(s))?;
        let tenants = response.into_inner().tenants.into_iter();
        Ok(tenants.map(tenant_from_proto).collect::<Result<_, _>>()?)
    }

    /// Adds a user with `password` and returns its fresh id (also its mailbox id).
    pub async fn add_user(&self, login: &Login, password: &Secret) -> Result<UserId, AdminError> {
        let request = pb::AddUserRequest {
            login: login.to_string(),
            password: password.expose().to_vec(),
        };
        let response = self
            .client()
            .add_user(self.request(request))
            .await
            .map_err(|s| self.error(s))?;
        let user = response.into_inner().user.ok_or_else(|| missing("user"))?;
        Ok(user_from_proto(user)?.id)
    }

    /// Replaces a user's password.
    pub async fn set_password(&self, login: &Login, password: &Secret) -> Result<(), AdminError> {
        let request = pb::SetPasswordRequest {
            login: login.to_string(),
            password: password.expose().to_vec(),
        };
        self.client()
            .set_password(self.request(request))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    /// Sets, or with `None` removes, a user's APOP secret.
    pub async fn set_apop_secret(
        &self,
        login: &Login,
        secret: Option<&Secret>,
    ) -> Result<(), AdminError> {
        let request = pb::SetApopSecretRequest {
            login: login.to_string(),
            secret: secret.map(|s| s.expose().to_vec()),
        };
        self.client()
            .set_apop_secret(self.request(request))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    /// Sets, or with `None` removes, a user's CRAM-MD5 secret.
    pub async fn set_cram_secret(
        &self,
        login: &Login,
        secret: Option<&Secret>,
    ) -> Result<(), AdminError> {
        let request = pb::SetCramSecretRequest {
            login: login.to_string(),
            secret: secret.map(|s| s.expose().to_vec()),
        };
        self.client()
            .set_cram_secret(self.request(request))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    /// Disables or re-enables a user.
    pub async fn set_disabled(&self, login: &Login, disabled: bool) -> Result<(), AdminError> {
        let request = pb::SetDisabledRequest {
            login: login.to_string(),
            disabled,
        };
        self.client()
            .set_disabled(self.request(request))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    /// Removes a user and returns its id; the mailbox stays in storage.
    pub async fn delete_user(&self, login: &Login) -> Result<UserId, AdminError> {
        let request = pb::DeleteUserRequest {
            login: login.to_string(),
        };
        let response = self
            .client()
            .delete_user(self.request(request))
            .await
            .map_err(|s| self.error(s))?;
        UserId::new(response.into_inner().user_id)
            .map_err(|e| AdminError::InvalidResponse(format!("user_id: {e}")))
    }

    /// Users (without secrets), of one tenant or of all, ordered by login.
    pub async fn list_users(
        &self,
        tenant_id: Option<&TenantId>,
    ) -> Result<Vec<UserInfo>, AdminError> {
        let request = pb::ListUsersRequest {
            tenant_id: tenant_id.map(ToString::to_string),
        };
        let response = self
            .client()
            .list_users(self.request(request))
            .await
            .map_err(|s| self.error(s))?;
        let users = response.into_inner().users.into_iter();
        Ok(users.map(user_from_proto).collect::<Result<_, _>>()?)
    }

    fn client(&self) -> AdminServiceClient<Channel> {
        self.client.clone()
    }

    fn request<M>(&self, message: M) -> Request<M> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request
    }

    /// The one place gRPC statuses become [`AdminError`]s.
    fn error(&self, status: Status) -> AdminError {
        let message = safe_message(status.message());
        match status.code() {
            Code::NotFound => AdminError::NotFound(message),
            Code::AlreadyExists => AdminError::AlreadyExists(message),
            Code::InvalidArgument => AdminError::InvalidArgument(message),
            Code::FailedPrecondition => AdminError::FailedPrecondition(message),
            Code::Unauthenticated => AdminError::Unauthenticated(message),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                AdminError::Unavailable {
                    endpoint: self.endpoint.clone(),
                    message: format!("{:?}: {message}", status.code()),
                }
            }
            code => AdminError::Server(format!("{code:?}: {message}")),
        }
    }
}

fn tenant(tenant: Option<pb::Tenant>) -> Result<TenantInfo, AdminError> {
    Ok(tenant_from_proto(tenant.ok_or_else(|| missing("tenant"))?)?)
}

fn missing(field: &str) -> AdminError {
    AdminError::InvalidResponse(format!("the auth service's answer has no {field}"))
}

/// An error and its causes, `: `-separated (a connect error's own message is just
/// "transport error").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
