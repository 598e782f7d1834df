//! `cloudpop.admin.v1.AdminService`: editing the directory file over gRPC.
//!
//! Every change reads the file, applies one [`Directory`] operation, writes the file back
//! atomically and reloads it into the running [`DirectoryAuthenticator`], so a user added
//! here can log in as soon as the call returns. Writes are serialised by one lock per
//! server, so two concurrent calls cannot lose each other's update. The file stays the
//! source of truth: an operator's hand edit is picked up by the next call.
//!
//! Errors map to gRPC codes in [`edit_status`] and [`load_status`], and only there.

use std::sync::Arc;

use cloudpop_maildrop::TenantId;
use cloudpop_proto::admin::v1 as pb;
use cloudpop_proto::admin::v1::admin_service_server::AdminService;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use super::convert::{policy_from_proto, tenant_to_proto, user_to_proto};
use crate::directory::{Directory, DirectoryAuthenticator, DirectoryError, TenantInfo};
use crate::login::Login;
use crate::secret::Secret;

/// Serves `AdminService` over the file behind a [`DirectoryAuthenticator`].
#[derive(Debug, Clone)]
pub(crate) struct AdminServiceImpl {
    directory: DirectoryAuthenticator,
    /// Held from load to reload of every change (not only while awaiting it): a caller that
    /// goes away must not let the next change start before this one is written.
    writes: Arc<Mutex<()>>,
}

impl AdminServiceImpl {
    pub(crate) fn new(directory: DirectoryAuthenticator) -> Self {
        Self {
            directory,
            writes: Arc::new(Mutex::new(())),
        }
    }

    /// Loads the file, applies `change`, saves and reloads; all on the blocking pool, since
    /// it does file I/O and (for passwords) argon2.
    async fn edit<T, F>(&self, change: F) -> Result<T, Status>
    where
        F: FnOnce(&mut Directory) -> Result<T, DirectoryError> + Send + 'static,
        T: Send + 'static,
    {
        let guard = Arc::clone(&self.writes).lock_owned().await;
        let authenticator = self.directory.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let path = authenticator.path();
            let (mut directory, edit) = Directory::load_for_edit(path).map_err(load_status)?;
            let value = change(&mut directory).map_err(edit_status)?;
            edit.save(&directory).map_err(edit_status)?;
            // The file is written: the change is made. A failed reload only delays it until
            // the reloader's next poll, so it is logged rather than reported as a failure.
            if let Err(error) = authenticator.reload_after_edit() {
                tracing::warn!(%error, "user directory saved but not reloaded");
            }
            Ok(value)
        });
        task.await
            .map_err(|_| Status::internal("the directory change did not complete"))?
    }

    /// Reads the file as it is now.
    async fn read(&self) -> Result<Directory, Status> {
        let path = self.directory.path().to_owned();
        tokio::task::spawn_blocking(move || Directory::load(path).map_err(load_status))
            .await
            .map_err(|_| Status::internal("reading the directory did not complete"))?
    }
}

fn login(login: &str) -> Result<Login, Status> {
    Login::parse(login).map_err(|e| Status::invalid_argument(format!("login: {e}")))
}

fn tenant_id(id: &str) -> Result<TenantId, Status> {
    TenantId::new(id).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn tenant_info(directory: &Directory, id: &TenantId) -> Result<TenantInfo, DirectoryError> {
    directory
        .tenants()
        .into_iter()
        .find(|t| &t.id == id)
        .ok_or_else(|| DirectoryError::UnknownTenant(id.clone()))
}

/// The status for a file that could not be loaded before a change: whatever is wrong is
/// wrong with the file, not with the request.
fn load_status(error: DirectoryError) -> Status {
    match error {
        DirectoryError::Read { .. } => internal(&error, "cannot read the user directory"),
        DirectoryError::ReadJwks { .. } => internal(&error, "cannot read a tenant's JWKS file"),
        other => Status::failed_precondition(format!("the directory file is invalid: {other}")),
    }
}

/// The status for a failed change. Messages name tenants, domains and logins, never a
/// secret (see [`DirectoryError`]); I/O details stay in the server's log.
fn edit_status(error: DirectoryError) -> Status {
    use DirectoryError as E;
    let message = error.to_string();
    match error {
        E::DuplicateTenant(_)
        | E::DomainTaken { .. }
        | E::DuplicateUser { .. }
        | E::DuplicateUserId { .. } => Status::already_exists(message),
        E::UnknownTenant(_) | E::UnknownUser { .. } => Status::not_found(message),
        E::InvalidTenantId { .. }
        | E::InvalidDomain { .. }
        | E::InvalidLogin { .. }
        | E::InvalidUserId { .. }
        | E::InvalidPasswordHash { .. }
        | E::EmptyPassword
        | E::InvalidApopSecret { .. }
        | E::InvalidCramSecret { .. } => Status::invalid_argument(message),
        E::UnknownDomain { .. } => {
            Status::failed_precondition(format!("{message}: add the domain to a tenant first"))
        }
        E::Syntax { .. }
        | E::Vanished { .. }
        | E::InvalidJwt { .. }
        | E::NotRegularFile { .. }
        | E::TooManyRemovals { .. } => Status::failed_precondition(message),
        E::Read { .. } => internal(&error, "cannot read the user directory"),
        E::ReadJwks { .. } => internal(&error, "cannot read a tenant's JWKS file"),
        E::Write { .. } | E::Render(_) => internal(&error, "cannot write the user directory"),
        E::Hash(_) => internal(&error, "cannot hash the password"),
        E::Random(_) => internal(&error, "cannot generate a user id"),
        E::PasswordThreads(_) => internal(&error, "cannot check passwords"),
    }
}

fn internal(error: &DirectoryError, message: &str) -> Status {
    tracing::error!(%error, "admin request failed");
    Status::internal(format!("{message} (details in the auth service's log)"))
}

#[tonic::async_trait]
impl AdminService for AdminServiceImpl {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::CreateTenantResponse>, Status> {
        let request = request.into_inner();
        let id = tenant_id(&request.tenant_id)?;
        let tenant = self
            .edit(move |d| {
                d.add_tenant(id.clone(), &request.domains)?;
                tenant_info(d, &id)
            })
            .await?;
        Ok(Response::new(pb::CreateTenantResponse {
            tenant: Some(tenant_to_proto(&tenant)),
        }))
    }

    async fn add_domain(
        &self,
        request: Request<pb::AddDomainRequest>,
    ) -> Result<Response<pb::AddDomainResponse>, Status> {
        let request = request.into_inner();
        let id = tenant_id(&request.tenant_id)?;
        let tenant = self
            .edit(move |d| {
                d.add_domain(&id, &request.domain)?;
                tenant_info(d, &id)
            })
            .await?;
        Ok(Response::new(pb::AddDomainResponse {
            tenant: Some(tenant_to_proto(&tenant)),
        }))
    }

    async fn set_policy(
        &self,
        request: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::SetPolicyResponse>, Status> {
        let request = request.into_inner();
        let id = tenant_id(&request.tenant_id)?;
        let policy = policy_from_proto(request.policy)
            .map_err(|_| Status::invalid_argument("invalid policy"))?;
        let tenant = self
            .edit(move |d| {
                d.set_policy(&id, policy)?;
                tenant_info(d, &id)
            })
            .await?;
        Ok(Response::new(pb::SetPolicyResponse {
            tenant: Some(tenant_to_proto(&tenant)),
        }))
    }

    async fn list_tenants(
        &self,
        _request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let tenants = self.read().await?.tenants();
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: tenants.iter().map(tenant_to_proto).collect(),
        }))
    }

    async fn add_user(
        &self,
        request: Request<pb::AddUserRequest>,
    ) -> Result<Response<pb::AddUserResponse>, Status> {
        let request = request.into_inner();
        let login = login(&request.login)?;
        let password = Secret::new(request.password);
        let user = self
            .edit(move |d| {
                d.add_user(&login, &password)?;
                d.user(&login).ok_or(DirectoryError::UnknownUser { login })
            })
            .await?;
        tracing::info!(login = %user.login, id = %user.id, "user added");
        Ok(Response::new(pb::AddUserResponse {
            user: Some(user_to_proto(&user)),
        }))
    }

    async fn set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Result<Response<pb::SetPasswordResponse>, Status> {
        let request = request.into_inner();
        let login = login(&request.login)?;
        let password = Secret::new(request.password);
        self.edit(move |d| d.set_password(&login, &password))
            .await?;
        Ok(Response::new(pb::SetPasswordResponse {}))
    }

    async fn set_apop_secret(
        &self,
        request: Request<pb::SetApopSecretRequest>,
    ) -> Result<Response<pb::SetApopSecretResponse>, Status> {
        let request = request.into_inner();
        let login = login(&request.login)?;
        let secret = request.secret.map(Secret::new);
        self.edit(move |d| d.set_apop_secret(&login, secret.as_ref()))
            .await?;
        Ok(Response::new(pb::SetApopSecretResponse {}))
    }

    async fn set_cram_secret(
        &self,
        request: Request<pb::SetCramSecretRequest>,
    ) -> Result<Response<pb::SetCramSecretResponse>, Status> {
        let request = request.into_inner();
        let login = login(&request.login)?;
        let secret = request.secret.map(Secret::new);
        self.edit(move |d| d.set_cram_secret(&login, secret.as_ref()))
            .await?;
        Ok(Response::new(pb::SetCramSecretResponse {}))
    }

    async fn set_disabled(
        &self,
        request: Request<pb::SetDisabledRequest>,
    ) -> Result<Response<pb::SetDisabledResponse>, Status> {
        let request = request.into_inner();
        let login = login(&request.login)?;
        self.edit(move |d| d.set_disabled(&login, request.disabled))
            .await?;
        Ok(Response::new(pb::SetDisabledResponse {}))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let login = login(&request.into_inner().login)?;
        let id = self.edit(move |d| d.remove_user(&login)).await?;
        Ok(Response::new(pb::DeleteUserResponse {
            user_id: id.to_string(),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let tenant = request
            .into_inner()
            .tenant_id
            .map(|id| tenant_id(&id))
            .transpose()?;
        let directory = self.read().await?;
        if let Some(tenant) = &tenant {
            tenant_info(&directory, tenant).map_err(edit_status)?;
        }
        let users = directory
            .users()
            .iter()
            .filter(|u| tenant.as_ref().is_none_or(|t| &u.tenant == t))
            .map(user_to_proto)
            .collect();
        Ok(Response::new(pb::ListUsersResponse { users }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_codes_without_secrets() {
        use tonic::Code;
        let tenant = TenantId::new("acme").unwrap();
        let alice = Login::parse("alice@acme.example").unwrap();
        let cases = [
            (
                DirectoryError::DuplicateTenant(tenant.clone()),
                Code::AlreadyExists,
            ),
            (
                DirectoryError::DomainTaken {
                    domain: "acme.example".into(),
                    owner: tenant.clone(),
                },
                Code::AlreadyExists,
            ),
            (
                DirectoryError::DuplicateUser {
                    login: alice.clone(),
                },
                Code::AlreadyExists,
            ),
            (DirectoryError::UnknownTenant(tenant), Code::NotFound),
            (
                DirectoryError::UnknownUser {
                    login: alice.clone(),
                },
                Code::NotFound,
            ),
            (DirectoryError::EmptyPassword, Code::InvalidArgument),
            (
                DirectoryError::InvalidApopSecret {
                    login: alice.clone(),
                },
                Code::InvalidArgument,
            ),
            (
                DirectoryError::InvalidCramSecret { login: alice },
                Code::InvalidArgument,
            ),
            (
                DirectoryError::InvalidJwt {
                    tenant: "acme".into(),
                    message: "algorithm HS256 is refused".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                DirectoryError::ReadJwks {
                    tenant: "acme".into(),
                    path: "/secret/place/jwks.json".into(),
                    source: std::io::Error::other("denied"),
                },
                Code::Internal,
            ),
            (
                DirectoryError::UnknownDomain {
                    domain: "nowhere.example".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                DirectoryError::Write {
                    path: "/secret/place/users.toml".into(),
                    source: std::io::Error::other("disk full"),
                },
                Code::Internal,
            ),
            (DirectoryError::Hash("argon2 broke".into()), Code::Internal),
        ];
        for (error, code) in cases {
            let status = edit_status(error);
            assert_eq!(status.code(), code, "{status:?}");
            assert!(!status.message().contains("/secret/place"), "{status:?}");
            assert!(!status.message().contains("argon2 broke"), "{status:?}");
        }
        let unreadable = load_status(DirectoryError::Read {
            path: "/secret/place/users.toml".into(),
            source: std::io::Error::other("denied"),
        });
        assert_eq!(unreadable.code(), Code::Internal);
        let invalid = load_status(DirectoryError::EmptyPassword);
        assert_eq!(invalid.code(), Code::FailedPrecondition);
    }
}
