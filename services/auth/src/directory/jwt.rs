//! Bearer tokens (JWTs) for OAUTHBEARER (RFC 7628) and XOAUTH2: a tenant's trust in an
//! identity provider, and the check of one token against it.
//!
//! Only asymmetric signatures are accepted (RS*, PS*, ES256/384, EdDSA). HMAC algorithms are
//! refused in the configuration and in every token, whatever the configuration says: a
//! verifier that accepts HS256 can be fooled by a token "signed" with the provider's public
//! key as the HMAC secret. The key is chosen by `kid`, must be of the type the token's `alg`
//! needs, and `alg` must be one the tenant allows. Keys a token carries or points to (`jwk`,
//! `jku`, `x5u`, `x5c` headers) are ignored: only the tenant's JWKS is trusted.
//!
//! Not here: fetching JWKS over the network (keys come from the directory file or a file it
//! names, reloaded with it), token introspection, and revocation.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Header, Validation};
use serde::Deserialize;

use super::file::JwtRepr;

/// Largest clock skew a tenant may allow, in seconds.
const MAX_LEEWAY_SECS: u64 = 3600;

/// Why a `[tenants.jwt]` table is not usable. Never holds a key or a token (a JWKS holds only
/// public keys, but messages stay short anyway).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigError(String);

fn config_error(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

/// Why a token was refused: a fixed word for debug logs, never the token or a claim value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) &'static str);

/// A key from the JWKS, with what it may verify.
struct SigningKey {
    kid: Option<String>,
    /// The JWK's own `alg`, if it names one: then only that algorithm may use it.
    alg: Option<Algorithm>,
    kind: KeyKind,
    key: DecodingKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind verifies `alg` (and only asymmetric algorithms).
    fn fits(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Rsa => alg.family() == AlgorithmFamily::Rsa,
            KeyKind::P256 => alg == Algorithm::ES256,
            KeyKind::P384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        }
    }
}

/// A tenant's trust in bearer tokens, validated: issuers, audiences, algorithms, keys.
pub(crate) struct TenantJwt {
    /// As written in the file, to be saved again.
    repr: JwtRepr,
    algorithms: Vec<Algorithm>,
    user_claim: String,
    keys: Vec<SigningKey>,
    /// Issuer, audience, required claims and leeway; the algorithm is set per token.
    validation: Validation,
}

impl fmt::Debug for TenantJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantJwt")
            .field("issuers", &self.repr.issuers)
            .field("audience", &self.repr.audience)
            .field("algorithms", &self.algorithms)
            .field("user_claim", &self.user_claim)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Where a `jwks_file` is: a relative path is relative to the directory file's folder, so a
/// directory and its key files can move together.
pub(super) fn resolve(directory_file: &Path, jwks_file: &str) -> PathBuf {
    let folder = directory_file.parent().unwrap_or(Path::new(""));
    folder.join(jwks_file)
}

impl TenantJwt {
    /// Validates the table. `jwks_file_text` is the contents of its `jwks_file`, read by the
    /// caller (absent if the table has inline `jwks` instead).
    pub(super) fn new(repr: JwtRepr, jwks_file_text: Option<&str>) -> Result<Self, ConfigError> {
        let issuers = non_empty("issuers", &repr.issuers)?;
        let audience = non_empty("audience", &repr.audience)?;
        let algorithms = algorithms(&repr.algorithms)?;
        if repr.leeway_secs > MAX_LEEWAY_SECS {
            return Err(config_error(format!(
                "leeway_secs must be at most {MAX_LEEWAY_SECS}"
            )));
        }
        if repr.user_claim.is_empty() {
            return Err(config_error("user_claim must not be empty"));
        }
        let jwks = match (&repr.jwks_file, &repr.jwks, jwks_file_text) {
            (Some(_), None, Some(text)) => text,
            (None, Some(inline), None) => inline.as_str(),
            (Some(_), Some(_), _) | (None, None, _) => {
                return Err(config_error("set exactly one of jwks_file and jwks"));
            }
            // The caller reads every jwks_file it finds; anything else is a bug there.
            (Some(_), None, None) | (None, Some(_), Some(_)) => {
                return Err(config_error("jwks_file was not read"));
            }
        };
        let keys = keys(jwks)?;
        if !keys
            .iter()
            .any(|k| algorithms.iter().any(|alg| k.usable_for(*alg)))
        {
            return Err(config_error(
                "no key in the JWKS can verify any of the algorithms",
            ));
        }
        let mut validation = Validation::new(algorithms[0]);
        validation.set_issuer(&issuers);
        validation.set_audience(&audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = repr.leeway_secs;
        Ok(Self {
            user_claim: repr.user_claim.clone(),
            repr,
            algorithms,
            keys,
            validation,
        })
    }

    /// The table as written in the file.
    pub(super) fn repr(&self) -> &JwtRepr {
        &self.repr
    }

    /// Whether `iss` is one of this tenant's issuers.
    pub(super) fn trusts_issuer(&self, iss: &str) -> bool {
        self.repr.issuers.iter().any(|i| i == iss)
    }

    /// Verifies `token` (whose header the caller decoded, unverified, as `header`): its
    /// algorithm, key, signature, issuer, audience and times. Returns the value of the user
    /// claim, which the caller still has to check against the tenant's domains.
    pub(super) fn verify(&self, token: &str, header: &Header) -> Result<String, Refused> {
        let alg = header.alg;
        if alg.family() == AlgorithmFamily::Hmac {
            return Err(Refused("symmetric algorithm"));
        }
        // RFC 7515 §4.1.11: a recipient must refuse critical extensions it does not
        // understand, and we understand none.
        if header.crit.is_some() {
            return Err(Refused("critical header extension"));
        }
        if !self.algorithms.contains(&alg) {
            return Err(Refused("algorithm not allowed"));
        }
        let key = self.key_for(header.kid.as_deref(), alg)?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![alg];
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.key,
            &validation,
        )
        .map_err(|e| refusal(e.kind()))?;
        match data.claims.get(&self.user_claim) {
            Some(serde_json::Value::String(user)) => Ok(user.clone()),
            _ => Err(Refused("no user claim")),
        }
    }

    /// The key named by `kid`; without a `kid`, the only key there is. It must fit `alg`.
    fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<&SigningKey, Refused> {
        let key = match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or(Refused("unknown kid"))?,
            None => match self.keys.as_slice() {
                [only] => only,
                _ => return Err(Refused("no kid and several keys")),
            },
        };
        if key.usable_for(alg) {
            Ok(key)
        } else {
            Err(Refused("key does not fit the algorithm"))
        }
    }
}

impl SigningKey {
    fn usable_for(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|own| own == alg)
    }
}

fn non_empty(field: &str, values: &[String]) -> Result<Vec<String>, ConfigError> {
    if values.is_empty() || values.iter().any(String::is_empty) {
        return Err(config_error(format!(
            "{field} must be a non-empty list of non-empty strings"
        )));
    }
    Ok(values.to_vec())
}

fn algorithms(names: &[String]) -> Result<Vec<Algorithm>, ConfigError> {
    if names.is_empty() {
        return Err(config_error("algorithms must not be empty"));
    }
    names
        .iter()
        .map(|name| {
            let alg = Algorithm::from_str(name).map_err(|_| {
                config_error(format!(
                    "algorithm {name:?} is not one of RS256, RS384, RS512, PS256, PS384, \
                     PS512, ES256, ES384, EdDSA"
                ))
            })?;
            if alg.family() == AlgorithmFamily::Hmac {
                return Err(config_error(format!(
                    "algorithm {name} is refused: HMAC keys are shared secrets, and a verifier \
                     that accepts them can be fooled with the provider's public key"
                )));
            }
            Ok(alg)
        })
        .collect()
}

/// The usable signing keys of a JWKS. Keys for encryption and of unknown types or curves are
/// skipped (an identity provider's JWKS may hold them); symmetric keys are an error.
fn keys(jwks: &str) -> Result<Vec<SigningKey>, ConfigError> {
    // serde_json's messages name a position and the expected shape, not the input.
    let set: JwkSet =
        serde_json::from_str(jwks).map_err(|e| config_error(format!("invalid JWKS: {e}")))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if let Some(key) = signing_key(jwk)? {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err(config_error("the JWKS has no usable signing key"));
    }
    Ok(keys)
}

fn signing_key(jwk: &Jwk) -> Result<Option<SigningKey>, ConfigError> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return Ok(None);
    }
    let kid = jwk.common.key_id.clone();
    let name = kid.as_deref().unwrap_or("without kid");
    let invalid = |what: &str| config_error(format!("JWK {name:?}: {what}"));
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => match Algorithm::try_from(alg) {
            Ok(alg) if alg.family() != AlgorithmFamily::Hmac => Some(alg),
            Ok(_) => return Err(invalid("HMAC keys are refused")),
            // An encryption algorithm (RSA-OAEP, ...): not a signing key.
            Err(_) => return Ok(None),
        },
    };
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(ec) => {
            let (kind, len) = match ec.curve {
                EllipticCurve::P256 => (KeyKind::P256, 32),
                EllipticCurve::P384 => (KeyKind::P384, 48),
                _ => return Ok(None),
            };
            let coordinate_ok = |c: &str| URL_SAFE_NO_PAD.decode(c).is_ok_and(|b| b.len() == len);
            if !coordinate_ok(&ec.x) || !coordinate_ok(&ec.y) {
                return Err(invalid(
                    "x and y must be base64url coordinates of the curve",
                ));
            }
            kind
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            if okp.curve != EllipticCurve::Ed25519 {
                return Ok(None);
            }
            if !URL_SAFE_NO_PAD.decode(&okp.x).is_ok_and(|b| b.len() == 32) {
                return Err(invalid("x must be a base64url Ed25519 public key"));
            }
            KeyKind::Ed25519
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err(invalid("symmetric (\"oct\") keys are refused"));
        }
        _ => return Ok(None),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(&e.to_string()))?;
    Ok(Some(SigningKey {
        kid,
        alg,
        kind,
        key,
    }))
}

/// A fixed word for why jsonwebtoken refused a token.
fn refusal(kind: &ErrorKind) -> Refused {
    Refused(match kind {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not yet valid",
        ErrorKind::InvalidIssuer => "untrusted issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm => "algorithm not allowed",
        ErrorKind::MissingRequiredClaim(_) => "missing claim",
        _ => "malformed",
    })
}

/// The `iss` claim of a token, read WITHOUT verifying anything: only to pick the tenants
/// whose keys to verify it with. Nothing else may be decided on it.
pub(super) fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Issuer {
        iss: Option<String>,
    }
    jsonwebtoken::dangerous::insecure_decode_claims::<Issuer>(token)
        .ok()?
        .iss
}
