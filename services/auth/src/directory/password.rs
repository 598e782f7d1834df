//! Stored password hashes: argon2id PHC strings, made and checked here only.

use std::fmt;

use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, PasswordHasher, Version};
use subtle::ConstantTimeEq;

/// Largest memory cost accepted from a stored hash, in KiB (1 GiB). The directory file may
/// come from an import; a hash asking for terabytes would take the service down on verify.
const MAX_M_COST_KIB: u32 = 1 << 20;
/// Largest time cost accepted from a stored hash.
const MAX_T_COST: u32 = 64;
/// Largest parallelism accepted from a stored hash.
const MAX_P_COST: u32 = 16;
/// Salt length in bytes (argon2's recommended length).
const SALT_LEN: usize = argon2::RECOMMENDED_SALT_LEN;

/// A hash of a random password with the default parameters, verified against when the user
/// does not exist, so that an unknown user costs the same time as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$gtTtwP3vAOZSzwQx9hWJ7A$\
                          8vwwHkU7BgVVwAwp2a+FeJMt6Xn0NCVv+aQc4OOz0Lg";

/// Why a password could not be hashed. Never carries the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HashError {
    #[error("the system random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("argon2 failed: {0}")]
    Argon2(argon2::password_hash::Error),
}

/// An argon2id PHC string, validated. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PasswordDigest(String);

impl PasswordDigest {
    /// Accepts only argon2id (version 0x13) PHC strings with a salt, an output and bounded
    /// parameters; returns `None` otherwise. The caller words the error, without the string.
    pub(crate) fn parse(phc: String) -> Option<Self> {
        let parsed = PasswordHash::new(&phc).ok()?;
        let argon2id = parsed.algorithm.as_str() == Algorithm::Argon2id.as_str()
            && parsed.version == Some(Version::V0x13.into())
            && parsed.salt.is_some()
            && parsed.hash.is_some();
        let params = Params::try_from(&parsed).ok()?;
        let bounded = params.m_cost() <= MAX_M_COST_KIB
            && params.t_cost() <= MAX_T_COST
            && params.p_cost() <= MAX_P_COST;
        (argon2id && bounded).then_some(Self(phc))
    }

    /// Hashes `password` with argon2id, the default parameters and a fresh random salt.
    pub(crate) fn hash(password: &[u8]) -> Result<Self, HashError> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(HashError::Random)?;
        let hash = Argon2::default()
            .hash_password_with_salt(password, &salt)
            .map_err(HashError::Argon2)?;
        Ok(Self(hash.to_string()))
    }

    /// The hash used for users that do not exist.
    pub(crate) fn dummy() -> Self {
        Self(DUMMY_HASH.to_owned())
    }

    /// Whether `password` matches. Slow by design (tens of milliseconds): call it off the
    /// async runtime. Allocates the hash's memory cost for this one check.
    #[cfg(test)]
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        self.verify_with(password, &mut Vec::new())
    }

    /// Whether `password` matches, hashing in `memory`, which is grown to the hash's memory
    /// cost and kept for the next check (one that asks for more than twice the default
    /// cost gets memory of its own). Slow by design: call it off the async runtime. The
    /// comparison is constant-time.
    pub(crate) fn verify_with(&self, password: &[u8], memory: &mut Vec<Block>) -> bool {
        let Ok(parsed) = PasswordHash::new(&self.0) else {
            return false;
        };
        let (Some(salt), Some(expected), Ok(params)) =
            (&parsed.salt, &parsed.hash, Params::try_from(&parsed))
        else {
            return false;
        };
        let blocks = params.block_count();
        let mut own = Vec::new();
        let memory = if blocks <= 2 * Params::default().block_count() {
            memory
        } else {
            &mut own
        };
        memory.resize(blocks, Block::default());
        let expected = expected.as_bytes();
        let mut computed = vec![0u8; expected.len()];
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        argon2
            .hash_password_into_with_memory(password, salt, &mut computed, &mut memory[..blocks])
            .is_ok()
            && bool::from(computed.ct_eq(expected))
    }

    /// The PHC string, for writing the directory file only.
    pub(crate) fn as_phc(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordDigest(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_refuse_wrong_passwords() {
        let digest = PasswordDigest::hash(b"correct horse").unwrap();
        assert!(
            digest
                .as_phc()
                .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
        );
        assert!(PasswordDigest::parse(digest.as_phc().to_owned()).is_some());
        assert!(digest.verify(b"correct horse"));
        assert!(!digest.verify(b"correct horsf"));
        assert_eq!(format!("{digest:?}"), "PasswordDigest(..)");
    }

    #[test]
    fn dummy_hash_is_valid_and_uses_default_params() {
        let dummy = PasswordDigest::parse(DUMMY_HASH.to_owned()).unwrap();
        let parsed = PasswordHash::new(dummy.as_phc()).unwrap();
        let params = Params::try_from(&parsed).unwrap();
        let default = Params::default();
        let costs = |p: &Params| (p.m_cost(), p.t_cost(), p.p_cost());
        assert_eq!(costs(&params), costs(&default));
    }

    #[test]
    fn refuses_other_algorithms_and_unbounded_params() {
        let salt_and_hash = "gtTtwP3vAOZSzwQx9hWJ7A$8vwwHkU7BgVVwAwp2a+FeJMt6Xn0NCVv+aQc4OOz0Lg";
        for bad in [
            String::new(),
            "plaintext".to_owned(),
            format!("$argon2i$v=19$m=19456,t=2,p=1${salt_and_hash}"),
            format!("$argon2d$v=19$m=19456,t=2,p=1${salt_and_hash}"),
            format!("$argon2id$v=16$m=19456,t=2,p=1${salt_and_hash}"),
            format!("$argon2id$v=19$m=4294967295,t=2,p=1${salt_and_hash}"),
            "$argon2id$v=19$m=19456,t=2,p=1".to_owned(),
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".to_owned(),
        ] {
            assert!(
                PasswordDigest::parse(bad.clone()).is_none(),
                "{bad:?} accepted"
            );
        }
    }
}
