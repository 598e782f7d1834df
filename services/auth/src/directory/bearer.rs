//! Bearer tokens against the directory: which tenant's keys to check a token with, the
//! cleartext policy, and which user a verified token names.

use cloudpop_maildrop::TenantId;

use super::jwt::{self, Refused, TenantJwt};
use super::{Directory, Tenant, User};
use crate::authenticator::AuthFailure;
use crate::login::Login;

/// Longest bearer token checked, in bytes. Identity providers' tokens with many groups or
/// roles run to several kilobytes; this leaves ample room and bounds the work per attempt.
pub(crate) const MAX_TOKEN_LEN: usize = 64 * 1024;

/// A tenant that may have issued a token.
struct Candidate<'d> {
    id: &'d TenantId,
    tenant: &'d Tenant,
    jwt: &'d TenantJwt,
}

impl Directory {
    /// Checks a bearer token and returns the user it proves, with the user's tenant.
    ///
    /// - `named` is the authorization identity the client gave (empty if none). When given,
    ///   its domain picks the tenant and the token's user must be that login. When not, the
    ///   token's unverified `iss` picks the tenants whose keys may verify it; nothing else
    ///   is read from the token before its signature is checked.
    /// - Without TLS, a tenant that does not allow cleartext credentials answers
    ///   [`AuthFailure::EncryptionRequired`] before the token is checked.
    /// - Any other refusal is [`AuthFailure::BadCredentials`]; the reason goes to the debug
    ///   log as a fixed word, never with the token or a claim.
    pub(super) fn check_bearer(
        &self,
        token: &[u8],
        named: &str,
        tls: bool,
    ) -> Result<(&User, &TenantId, &Tenant), AuthFailure> {
        let refused = |Refused(reason)| {
            tracing::debug!(reason, "bearer token refused");
            AuthFailure::BadCredentials
        };
        let token = std::str::from_utf8(token)
            .ok()
            .filter(|t| t.len() <= MAX_TOKEN_LEN)
            .ok_or(Refused("malformed"))
            .map_err(refused)?;
        let named = match named {
            "" => None,
            named => Some(
                Login::parse(named)
                    .map_err(|_| Refused("invalid login"))
                    .map_err(refused)?,
            ),
        };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refused("malformed"))
            .map_err(refused)?;
        let mut candidates = self
            .bearer_candidates(token, named.as_ref())
            .map_err(refused)?;
        if !tls {
            if candidates
                .iter()
                .all(|c| !c.tenant.policy.cleartext_allowed)
            {
                return Err(AuthFailure::EncryptionRequired);
            }
            candidates.retain(|c| c.tenant.policy.cleartext_allowed);
        }
        let mut last = Refused("no tenant");
        for candidate in candidates {
            match self.bearer_user(&candidate, token, &header, named.as_ref()) {
                Ok(user) => return Ok((user, candidate.id, candidate.tenant)),
                Err(why) => last = why,
            }
        }
        Err(refused(last))
    }

    /// The tenants whose keys may verify the token: the named login's tenant, or else those
    /// that trust the token's (unverified) issuer. Never empty when `Ok`.
    fn bearer_candidates(
        &self,
        token: &str,
        named: Option<&Login>,
    ) -> Result<Vec<Candidate<'_>>, Refused> {
        let candidates: Vec<_> = match named {
            Some(login) => {
                let (id, tenant) = self
                    .tenant_of(login)
                    .map_err(|_| Refused("unknown domain"))?;
                let jwt = tenant
                    .jwt
                    .as_deref()
                    .ok_or(Refused("tenant takes no tokens"))?;
                vec![Candidate { id, tenant, jwt }]
            }
            None => {
                let iss = jwt::unverified_issuer(token).ok_or(Refused("no issuer"))?;
                self.tenants
                    .iter()
                    .filter_map(|(id, tenant)| {
                        let jwt = tenant.jwt.as_deref()?;
                        jwt.trusts_issuer(&iss)
                            .then_some(Candidate { id, tenant, jwt })
                    })
                    .collect()
            }
        };
        if candidates.is_empty() {
            return Err(Refused("untrusted issuer"));
        }
        Ok(candidates)
    }

    /// Verifies the token with one tenant's keys and finds the user it names, which must be
    /// a login of that tenant (and the named login, if any).
    fn bearer_user(
        &self,
        candidate: &Candidate<'_>,
        token: &str,
        header: &jsonwebtoken::Header,
        named: Option<&Login>,
    ) -> Result<&User, Refused> {
        let claimed = candidate.jwt.verify(token, header)?;
        let login = Login::parse(&claimed).map_err(|_| Refused("user claim is not a login"))?;
        if self.domains.get(login.domain()) != Some(candidate.id) {
            return Err(Refused("user claim of another tenant"));
        }
        if named.is_some_and(|named| *named != login) {
            return Err(Refused("token of another user"));
        }
        self.users.get(&login.key()).ok_or(Refused("no such user"))
    }
}

#[cfg(test)]
mod tests;
