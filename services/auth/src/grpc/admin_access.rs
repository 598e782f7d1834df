//! Who may call `cloudpop.admin.v1.AdminService`.
//!
//! With an admin token configured, every admin call must carry it as
//! `authorization: Bearer <token>` metadata; the comparison is constant-time, and a missing
//! or wrong token is `UNAUTHENTICATED` with the same message. Without one, admin calls are
//! open to whoever reaches the port, as before: keep it private (loopback or a
//! NetworkPolicy). AuthService, health and reflection are never gated here.

use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::secret::Secret;

/// The admin service's access rule: see the [module docs](self).
#[derive(Clone, Debug)]
pub struct AdminAccess {
    token: Option<Secret>,
}

impl AdminAccess {
    /// Admin calls need no token (the port must be private).
    pub fn open() -> Self {
        Self { token: None }
    }

    /// Admin calls must present `token`.
    pub fn token(token: Secret) -> Self {
        Self { token: Some(token) }
    }

    fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let presented = metadata
            .get("authorization")
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
            .map(Secret::new);
        match presented {
            Some(presented) if presented == *expected => Ok(()),
            _ => Err(Status::unauthenticated("a valid admin token is required")),
        }
    }
}

impl Interceptor for AdminAccess {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata())?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic::metadata::MetadataValue;

    use super::*;

    fn metadata(authorization: Option<&'static str>) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        if let Some(value) = authorization {
            metadata.insert("authorization", MetadataValue::from_static(value));
        }
        metadata
    }

    #[test]
    fn a_token_is_required_when_configured() {
        let access = AdminAccess::token(Secret::new("s3cret-admin-token"));
        assert!(
            access
                .check(&metadata(Some("Bearer s3cret-admin-token")))
                .is_ok()
        );
        for refused in [
            None,
            Some("Bearer s3cret-admin-tokeN"),
            Some("Bearer s3cret-admin-token "),
            Some("Bearer "),
            Some("bearer s3cret-admin-token"),
            Some("s3cret-admin-token"),
        ] {
            let status = access.check(&metadata(refused)).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{refused:?}");
            assert!(!status.message().contains("s3cret"));
        }
    }

    #[test]
    fn without_a_token_admin_calls_are_open() {
        assert!(AdminAccess::open().check(&metadata(None)).is_ok());
        assert!(
            AdminAccess::open()
                .check(&metadata(Some("Bearer x")))
                .is_ok()
        );
    }
}
