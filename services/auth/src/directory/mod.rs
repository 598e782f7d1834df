//! The user directory: tenants, their domains and policies, and users with their credentials.
//!
//! It lives in one TOML file, which is both the embedded default's users file and the auth
//! service's directory:
//!
//! ```toml
//! [[tenants]]
//! id = "default"                    # tenant id: [a-z0-9-]
//! domains = ["example.com"]
//! [tenants.policy]                  # every field optional
//! login_delay_secs = 0              # RFC 2449 LOGIN-DELAY
//! expire_days = "never"             # or a number of days (RFC 2449 EXPIRE)
//! cleartext_allowed = false         # passwords and bearer tokens without TLS (default false)
//! [tenants.jwt]                     # optional; without it bearer tokens are refused
//! issuers = ["https://idp.example.com/"]
//! audience = ["pop3"]               # a token's `aud` must contain one of these
//! algorithms = ["RS256", "ES256"]   # RS*/PS*/ES256/ES384/EdDSA; HS* is refused
//! leeway_secs = 60                  # optional (default 60, at most 3600): clock skew on exp/nbf
//! user_claim = "email"              # optional (default "email"): holds the login
//! jwks_file = "jwks.json"           # relative to this file's folder; or, instead:
//! # jwks = '{"keys":[...]}'         # inline JWKS (JSON text)
//!
//! [[users]]
//! login = "demo@example.com"
//! id = "u-0123456789abcdef"         # opaque user id, also the mailbox id: [a-z0-9-]
//! password = "$argon2id$v=19$..."   # PHC string, argon2id only
//! apop_secret = "..."               # optional; plaintext-equivalent (RFC 1939 §7)
//! cram_secret = "..."               # optional; plaintext-equivalent (RFC 2195 §2)
//! disabled = false                  # optional
//! ```
//!
//! A bearer token (OAUTHBEARER, XOAUTH2) is accepted when it is a JWT signed by a key of the
//! tenant's JWKS with an allowed algorithm, from one of its issuers, for one of its
//! audiences, not expired (`exp` is required, `nbf` honoured), and its `user_claim` is the
//! login of a user of that tenant. The JWKS files are read with the directory file and
//! reloaded when either changes; one that cannot be read at reload keeps the directory in use.
//!
//! [`Directory`] is the validated, in-memory form, with the editing operations behind
//! `cloudpop admin`. [`DirectoryAuthenticator`] serves the [`Authenticator`] seam from the file
//! and reloads it when it changes: a new version is taken once it has settled (two polls
//! agree), is a regular file, is valid, and removes no more users than the [`RemovalLimit`]
//! allows unless an approval file names it (see [`FileEdit`] and
//! [`Directory::approve_removals`]); otherwise the directory in use stays.
//!
//! [`Authenticator`]: crate::Authenticator

mod apop;
mod approval;
mod authenticator;
mod bearer;
mod cram;
mod file;
mod jwt;
mod password;
mod password_check;
mod reload;
mod reload_metrics;
mod removal_limit;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cloudpop_maildrop::{IdError, MailboxId, TenantId};

use crate::authenticator::Policy;
use crate::login::{self, Login, LoginError};
use crate::secret::Secret;
use apop::ApopSecret;
use cram::CramSecret;
use file::{ExpireRepr, FileRepr, PolicyRepr, SecretText, TenantRepr, UserRepr};
use jwt::TenantJwt;
use password::{HashError, PasswordDigest};

pub use authenticator::DirectoryAuthenticator;
pub use password_check::PasswordCheckSettings;
pub use reload_metrics::ReloadMetrics;
pub use removal_limit::{InvalidRemovalLimit, RemovalLimit};

/// Why the directory could not be read, validated, changed or written.
///
/// Messages name tenants, domains, logins and paths, never a password, hash or secret.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file (or its temp file or directory) cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or not the expected shape; 1-based position.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The threads that check passwords could not be started.
    #[error("cannot start the password check threads: {0}")]
    PasswordThreads(std::io::Error),
    /// The directory could not be turned into TOML (not expected to happen).
    #[error("cannot render the directory file: {0}")]
    Render(String),
    /// The path is a FIFO, socket, device or folder: refused unread, since opening a FIFO
    /// would wait for a writer.
    #[error("{path} is a {kind}, not a regular file")]
    NotRegularFile { path: PathBuf, kind: &'static str },
    /// On reload: the new version removes more of the users in use than the removal limit
    /// allows, and its approval file does not name it.
    #[error(
        "{path} would remove {removed} of the {in_use} users in use, more than the share of \
         {max_fraction} one reload may remove; approve this version to take it"
    )]
    TooManyRemovals {
        path: PathBuf,
        removed: usize,
        in_use: usize,
        max_fraction: f64,
    },
    /// On reload: the file that was there is gone.
    #[error("{path} disappeared")]
    Vanished { path: PathBuf },
    /// A tenant id is not `[a-z0-9-]`, 1–64 characters.
    #[error("tenant id {id:?}: {source}")]
    InvalidTenantId { id: String, source: IdError },
    /// Two tenants share an id.
    #[error("tenant {0} is defined twice")]
    DuplicateTenant(TenantId),
    /// No tenant has this id.
    #[error("no tenant {0}")]
    UnknownTenant(TenantId),
    /// Not a valid DNS name.
    #[error("{domain:?} is not a valid domain name")]
    InvalidDomain { domain: String },
    /// Another tenant already owns the domain.
    #[error("domain {domain} already belongs to tenant {owner}")]
    DomainTaken { domain: String, owner: TenantId },
    /// No tenant owns the login's domain.
    #[error("domain {domain} belongs to no tenant")]
    UnknownDomain { domain: String },
    /// A login in the file is not `local@domain`.
    #[error("login {login:?}: {source}")]
    InvalidLogin { login: String, source: LoginError },
    /// A user id is not `[a-z0-9-]`, 1–64 characters.
    #[error("user id {id:?} of {login}: {source}")]
    InvalidUserId {
        login: Login,
        id: String,
        source: IdError,
    },
    /// Two users share a login (case-insensitively).
    #[error("user {login} is defined twice (logins compare case-insensitively)")]
    DuplicateUser { login: Login },
    /// Two users share an id (and so a mailbox).
    #[error("user id {id} is used twice")]
    DuplicateUserId { id: UserId },
    /// No user has this login.
    #[error("no user {login}")]
    UnknownUser { login: Login },
    /// A stored password is not an acceptable argon2id PHC string.
    #[error("password of {login} is not an argon2id PHC string with sane parameters")]
    InvalidPasswordHash { login: Login },
    /// A new password is empty.
    #[error("the password must not be empty")]
    EmptyPassword,
    /// An APOP secret is empty, too long, not UTF-8 or has control characters.
    #[error("APOP secret of {login} must be 1 to 1024 bytes of UTF-8 without control characters")]
    InvalidApopSecret { login: Login },
    /// A CRAM-MD5 secret is empty, too long, not UTF-8 or has control characters.
    #[error(
        "CRAM-MD5 secret of {login} must be 1 to 1024 bytes of UTF-8 without control characters"
    )]
    InvalidCramSecret { login: Login },
    /// A tenant's `[tenants.jwt]` table (or the JWKS it names) is not usable.
    #[error("bearer token settings of tenant {tenant}: {message}")]
    InvalidJwt { tenant: String, message: String },
    /// A tenant's `jwks_file` cannot be read.
    #[error("cannot read the JWKS file {path} of tenant {tenant}: {source}")]
    ReadJwks {
        tenant: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Hashing a new password failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// The system random number generator failed.
    #[error("cannot generate a user id: {0}")]
    Random(String),
}

impl From<HashError> for DirectoryError {
    fn from(e: HashError) -> Self {
        DirectoryError::Hash(e.to_string())
    }
}

/// A user's opaque id: `[a-z0-9-]`, 1–64 characters. It is also the user's mailbox id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(MailboxId);

impl UserId {
    /// Validates `id` with the mailbox id rules.
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        MailboxId::new(id).map(Self)
    }

    /// A fresh id: `u-` and 16 random lower-case hex digits.
    fn generate() -> Result<Self, DirectoryError> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| DirectoryError::Random(e.to_string()))?;
        // Cannot fail ("u-" and hex digits are valid), but an error beats a panic.
        Self::new(format!("u-{}", hex::encode(random)))
            .map_err(|e| DirectoryError::Random(e.to_string()))
    }

    /// The id as stored.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The user's mailbox.
    pub fn mailbox(&self) -> &MailboxId {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A tenant as listed: no secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantInfo {
    /// The tenant's id.
    pub id: TenantId,
    /// The domains it owns: lower-cased, sorted.
    pub domains: Vec<String>,
    /// Its policy, returned with every principal of the tenant.
    pub policy: Policy,
}

/// A user as listed: no secrets, only whether an APOP or CRAM-MD5 secret is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The login, as stored.
    pub login: Login,
    /// The user's id, also its mailbox id.
    pub id: UserId,
    /// The tenant owning the login's domain.
    pub tenant: TenantId,
    /// Whether logins are refused (mail is still delivered).
    pub disabled: bool,
    /// Whether the user can log in with APOP.
    pub has_apop_secret: bool,
    /// Whether the user can log in with CRAM-MD5.
    pub has_cram_secret: bool,
}

#[derive(Clone)]
struct Tenant {
    domains: BTreeSet<String>,
    policy: Policy,
    /// Which bearer tokens the tenant trusts; `None`: none.
    jwt: Option<Arc<TenantJwt>>,
}

#[derive(Clone)]
struct User {
    login: Login,
    id: UserId,
    password: PasswordDigest,
    apop_secret: Option<ApopSecret>,
    cram_secret: Option<CramSecret>,
    disabled: bool,
}

/// The contents of the JWKS files a directory file names, by resolved path.
type JwksTexts = BTreeMap<PathBuf, String>;

/// The validated, in-memory directory.
///
/// Invariants: every domain belongs to at most one tenant; every user's domain belongs to a
/// tenant; logins (compared case-insensitively) and user ids are unique.
#[derive(Clone, Default)]
pub struct Directory {
    tenants: BTreeMap<TenantId, Tenant>,
    /// Domain → owning tenant.
    domains: HashMap<String, TenantId>,
    /// [`Login::key`] → user.
    users: BTreeMap<String, User>,
    user_ids: HashSet<UserId>,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("tenants", &self.tenants.len())
            .field("users", &self.users.len())
            .finish()
    }
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads and validates the file at `path`, and the JWKS files it names. A missing
    /// directory file is an empty directory, so that a first `cloudpop admin` command can
    /// create it; a missing JWKS file is an error.
    pub fn load(path: impl AsRef<Path>) -> Result<Directory, DirectoryError> {
        let path = path.as_ref();
        match file::read(path)? {
            None => Ok(Directory::new()),
            Some(text) => Directory::from_text(path, &text),
        }
    }

    /// Builds the directory from the text of the file at `path`, reading the JWKS files it
    /// names.
    fn from_text(path: &Path, text: &str) -> Result<Directory, DirectoryError> {
        let repr = file::parse(path, text)?;
        let jwks = read_jwks_files(&jwks_files(&repr, path))?;
        Directory::from_repr(repr, path, &jwks)
    }

    /// Reads the file at `path` to change it and save it back with [`FileEdit::save`], which
    /// approves the version it writes when that is needed for a running server to take it.
    pub fn load_for_edit(path: impl AsRef<Path>) -> Result<(Directory, FileEdit), DirectoryError> {
        let path = path.as_ref();
        let text = file::read(path)?;
        let approved = text
            .as_deref()
            .is_some_and(|text| approval::approves(path, text));
        let directory = match text {
            None => Directory::new(),
            Some(text) => Directory::from_text(path, &text)?,
        };
        let edit = FileEdit {
            path: path.to_owned(),
            approved,
            logins: directory.users.keys().cloned().collect(),
        };
        Ok((directory, edit))
    }

    /// Approves the file at `path` as it is now (see the `approval` module): a running server
    /// takes this exact version even if it removes more users than its removal limit allows.
    /// The file must be valid; returns what it holds.
    pub fn approve_removals(path: impl AsRef<Path>) -> Result<Directory, DirectoryError> {
        let path = path.as_ref();
        let text = file::read(path)?.ok_or_else(|| DirectoryError::Vanished {
            path: path.to_owned(),
        })?;
        let directory = Directory::from_text(path, &text)?;
        approval::write(path, &text)?;
        Ok(directory)
    }

    /// Writes the directory to `path` atomically (temp file in the same directory, fsync,
    /// rename), mode 0600. Comments in a hand-edited file are not kept.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), DirectoryError> {
        let text = file::render(&self.to_repr())?;
        file::write_atomic(path.as_ref(), text.as_bytes())
    }

    /// Adds a tenant owning `domains` (which may be empty).
    pub fn add_tenant<I, S>(&mut self, id: TenantId, domains: I) -> Result<(), DirectoryError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        if self.tenants.contains_key(&id) {
            return Err(DirectoryError::DuplicateTenant(id));
        }
        // Check every domain before changing anything, so a failure leaves no half-added tenant.
        let mut parsed = BTreeSet::new();
        for domain in domains {
            let domain = self.free_domain(domain.as_ref())?;
            parsed.insert(domain);
        }
        for domain in &parsed {
            self.domains.insert(domain.clone(), id.clone());
        }
        self.tenants.insert(
            id,
            Tenant {
                domains: parsed,
                policy: Policy::default(),
                jwt: None,
            },
        );
        Ok(())
    }

    /// Gives `domain` to `tenant`. Adding a domain the tenant already owns is a no-op.
    pub fn add_domain(&mut self, tenant: &TenantId, domain: &str) -> Result<(), DirectoryError> {
        let parsed = parse_domain(domain)?;
        if self.domains.get(&parsed) == Some(tenant) {
            return Ok(());
        }
        let domain = self.free_domain(&parsed)?;
        let owner = self
            .tenants
            .get_mut(tenant)
            .ok_or_else(|| DirectoryError::UnknownTenant(tenant.clone()))?;
        owner.domains.insert(domain.clone());
        self.domains.insert(domain, tenant.clone());
        Ok(())
    }

    /// Replaces `tenant`'s policy.
    pub fn set_policy(&mut self, tenant: &TenantId, policy: Policy) -> Result<(), DirectoryError> {
        let owner = self
            .tenants
            .get_mut(tenant)
            .ok_or_else(|| DirectoryError::UnknownTenant(tenant.clone()))?;
        owner.policy = policy;
        Ok(())
    }

    /// Adds a user with a fresh id and `password` hashed with argon2id (slow by design).
    ///
    /// Fails with [`DirectoryError::UnknownDomain`] if no tenant owns the login's domain; the
    /// caller decides whether to add the domain and retry.
    pub fn add_user(&mut self, login: &Login, password: &Secret) -> Result<UserId, DirectoryError> {
        self.tenant_of(login)?;
        if self.users.contains_key(&login.key()) {
            return Err(DirectoryError::DuplicateUser {
                login: login.clone(),
            });
        }
        let password = hash_password(password)?;
        let id = loop {
            let id = UserId::generate()?;
            if !self.user_ids.contains(&id) {
                break id;
            }
        };
        self.user_ids.insert(id.clone());
        let user = User {
            login: login.clone(),
            id: id.clone(),
            password,
            apop_secret: None,
            cram_secret: None,
            disabled: false,
        };
        self.users.insert(login.key(), user);
        Ok(id)
    }

    /// Replaces a user's password.
    pub fn set_password(&mut self, login: &Login, password: &Secret) -> Result<(), DirectoryError> {
        self.user_mut(login)?;
        let digest = hash_password(password)?;
        self.user_mut(login)?.password = digest;
        Ok(())
    }

    /// Sets or (with `None`) removes a user's APOP secret.
    pub fn set_apop_secret(
        &mut self,
        login: &Login,
        secret: Option<&Secret>,
    ) -> Result<(), DirectoryError> {
        let user = self.user_mut(login)?;
        user.apop_secret = match secret {
            None => None,
            Some(secret) => Some(ApopSecret::new(secret.expose()).ok_or_else(|| {
                DirectoryError::InvalidApopSecret {
                    login: login.clone(),
                }
            })?),
        };
        Ok(())
    }

    /// Sets or (with `None`) removes a user's CRAM-MD5 secret (RFC 2195): 1 to 1024 bytes of
    /// UTF-8 without control characters, stored as is (it is the HMAC key).
    pub fn set_cram_secret(
        &mut self,
        login: &Login,
        secret: Option<&Secret>,
    ) -> Result<(), DirectoryError> {
        let user = self.user_mut(login)?;
        user.cram_secret = match secret {
            None => None,
            Some(secret) => Some(CramSecret::new(secret.expose()).ok_or_else(|| {
                DirectoryError::InvalidCramSecret {
                    login: login.clone(),
                }
            })?),
        };
        Ok(())
    }

    /// Disables or re-enables a user. A disabled user cannot log in but still receives mail.
    pub fn set_disabled(&mut self, login: &Login, disabled: bool) -> Result<(), DirectoryError> {
        self.user_mut(login)?.disabled = disabled;
        Ok(())
    }

    /// Removes a user and returns its id. The user's mailbox is left in storage.
    pub fn remove_user(&mut self, login: &Login) -> Result<UserId, DirectoryError> {
        let user = self
            .users
            .remove(&login.key())
            .ok_or_else(|| DirectoryError::UnknownUser {
                login: login.clone(),
            })?;
        self.user_ids.remove(&user.id);
        Ok(user.id)
    }

    /// All tenants, ordered by id.
    pub fn tenants(&self) -> Vec<TenantInfo> {
        self.tenants
            .iter()
            .map(|(id, t)| tenant_info(id, t))
            .collect()
    }

    /// All users, ordered by login (case-insensitively).
    pub fn users(&self) -> Vec<UserInfo> {
        self.users
            .values()
            .filter_map(|u| self.user_info(u))
            .collect()
    }

    /// One user, if it exists.
    pub fn user(&self, login: &Login) -> Option<UserInfo> {
        self.users.get(&login.key()).and_then(|u| self.user_info(u))
    }

    /// The tenant owning `domain`, if any.
    pub fn tenant_for_domain(&self, domain: &str) -> Option<TenantInfo> {
        let id = self.domains.get(&domain.to_ascii_lowercase())?;
        self.tenants.get(id).map(|t| tenant_info(id, t))
    }

    /// Whether any user has an APOP secret (only then is APOP worth offering).
    pub fn has_apop_secrets(&self) -> bool {
        self.users.values().any(|u| u.apop_secret.is_some())
    }

    /// Whether any user has a CRAM-MD5 secret (only then is CRAM-MD5 worth offering).
    pub fn has_cram_secrets(&self) -> bool {
        self.users.values().any(|u| u.cram_secret.is_some())
    }

    fn user_info(&self, user: &User) -> Option<UserInfo> {
        let tenant = self.domains.get(user.login.domain())?;
        Some(UserInfo {
            login: user.login.clone(),
            id: user.id.clone(),
            tenant: tenant.clone(),
            disabled: user.disabled,
            has_apop_secret: user.apop_secret.is_some(),
            has_cram_secret: user.cram_secret.is_some(),
        })
    }

    fn user_mut(&mut self, login: &Login) -> Result<&mut User, DirectoryError> {
        self.users
            .get_mut(&login.key())
            .ok_or_else(|| DirectoryError::UnknownUser {
                login: login.clone(),
            })
    }

    /// The tenant owning the login's domain.
    fn tenant_of(&self, login: &Login) -> Result<(&TenantId, &Tenant), DirectoryError> {
        let unknown = || DirectoryError::UnknownDomain {
            domain: login.domain().to_owned(),
        };
        let id = self.domains.get(login.domain()).ok_or_else(unknown)?;
        let tenant = self.tenants.get(id).ok_or_else(unknown)?;
        Ok((id, tenant))
    }

    /// A user and its tenant, for the authenticator.
    fn resolve(&self, login: &Login) -> Option<(&User, &TenantId, &Tenant)> {
        let user = self.users.get(&login.key())?;
        let (id, tenant) = self.tenant_of(login).ok()?;
        Some((user, id, tenant))
    }

    /// Parses `domain` and checks that no tenant owns it yet.
    fn free_domain(&self, domain: &str) -> Result<String, DirectoryError> {
        let domain = parse_domain(domain)?;
        match self.domains.get(&domain) {
            Some(owner) => Err(DirectoryError::DomainTaken {
                domain,
                owner: owner.clone(),
            }),
            None => Ok(domain),
        }
    }

    /// Builds the directory from the parsed file at `path`; `jwks` holds the JWKS files it
    /// names (see [`jwks_files`]).
    fn from_repr(
        repr: FileRepr,
        path: &Path,
        jwks: &JwksTexts,
    ) -> Result<Directory, DirectoryError> {
        let mut directory = Directory::new();
        for tenant in repr.tenants {
            directory.add_tenant_repr(tenant, path, jwks)?;
        }
        for user in repr.users {
            directory.add_user_repr(user)?;
        }
        Ok(directory)
    }

    fn add_tenant_repr(
        &mut self,
        repr: TenantRepr,
        path: &Path,
        jwks: &JwksTexts,
    ) -> Result<(), DirectoryError> {
        let id =
            TenantId::new(repr.id.as_str()).map_err(|source| DirectoryError::InvalidTenantId {
                id: repr.id,
                source,
            })?;
        let jwt = match repr.jwt {
            None => None,
            Some(jwt) => {
                let file_text = jwt
                    .jwks_file
                    .as_deref()
                    .and_then(|file| jwks.get(&jwt::resolve(path, file)));
                let jwt = TenantJwt::new(jwt, file_text.map(String::as_str)).map_err(|e| {
                    DirectoryError::InvalidJwt {
                        tenant: id.to_string(),
                        message: e.to_string(),
                    }
                })?;
                Some(Arc::new(jwt))
            }
        };
        self.add_tenant(id.clone(), &repr.domains)?;
        let policy = Policy {
            login_delay: Duration::from_secs(repr.policy.login_delay_secs),
            expire_days: repr.policy.expire_days.0,
            cleartext_allowed: repr.policy.cleartext_allowed,
        };
        self.set_policy(&id, policy)?;
        if let Some(tenant) = self.tenants.get_mut(&id) {
            tenant.jwt = jwt;
        }
        Ok(())
    }

    fn add_user_repr(&mut self, repr: UserRepr) -> Result<(), DirectoryError> {
        let login = Login::parse(&repr.login).map_err(|source| DirectoryError::InvalidLogin {
            login: repr.login.clone(),
            source,
        })?;
        self.tenant_of(&login)?;
        let id = UserId::new(repr.id.as_str()).map_err(|source| DirectoryError::InvalidUserId {
            login: login.clone(),
            id: repr.id.clone(),
            source,
        })?;
        let password = PasswordDigest::parse(repr.password.0).ok_or_else(|| {
            DirectoryError::InvalidPasswordHash {
                login: login.clone(),
            }
        })?;
        let apop_secret = match repr.apop_secret {
            None => None,
            Some(SecretText(s)) => Some(ApopSecret::new(s.as_bytes()).ok_or_else(|| {
                DirectoryError::InvalidApopSecret {
                    login: login.clone(),
                }
            })?),
        };
        let cram_secret = match repr.cram_secret {
            None => None,
            Some(SecretText(s)) => Some(CramSecret::new(s.as_bytes()).ok_or_else(|| {
                DirectoryError::InvalidCramSecret {
                    login: login.clone(),
                }
            })?),
        };
        if self.users.contains_key(&login.key()) {
            return Err(DirectoryError::DuplicateUser { login });
        }
        if !self.user_ids.insert(id.clone()) {
            return Err(DirectoryError::DuplicateUserId { id });
        }
        let user = User {
            login,
            id,
            password,
            apop_secret,
            cram_secret,
            disabled: repr.disabled,
        };
        self.users.insert(user.login.key(), user);
        Ok(())
    }

    fn to_repr(&self) -> FileRepr {
        let tenants = self
            .tenants
            .iter()
            .map(|(id, t)| TenantRepr {
                id: id.to_string(),
                domains: t.domains.iter().cloned().collect(),
                policy: PolicyRepr {
                    login_delay_secs: t.policy.login_delay.as_secs(),
                    expire_days: ExpireRepr(t.policy.expire_days),
                    cleartext_allowed: t.policy.cleartext_allowed,
                },
                jwt: t.jwt.as_ref().map(|jwt| jwt.repr().clone()),
            })
            .collect();
        let users = self
            .users
            .values()
            .map(|u| UserRepr {
                login: u.login.to_string(),
                id: u.id.to_string(),
                password: SecretText(u.password.as_phc().to_owned()),
                apop_secret: u
                    .apop_secret
                    .as_ref()
                    .map(|s| SecretText(s.as_str().to_owned())),
                cram_secret: u
                    .cram_secret
                    .as_ref()
                    .map(|s| SecretText(s.as_str().to_owned())),
                disabled: u.disabled,
            })
            .collect();
        FileRepr { tenants, users }
    }
}

/// A version of the directory file loaded by [`Directory::load_for_edit`] to be changed and
/// written back, as `cloudpop admin` does.
#[derive(Debug)]
pub struct FileEdit {
    path: PathBuf,
    /// The version loaded was approved.
    approved: bool,
    /// The users of the version loaded, by [`Login::key`].
    logins: BTreeSet<String>,
}

impl FileEdit {
    /// Saves `directory` (the one loaded, changed) back to the file, atomically.
    ///
    /// A running server refuses a version that removes more users than its removal limit
    /// allows unless the approval file names it (see the `approval` module). An edit is
    /// deliberate, so the version written is approved when the edit removed users, or when
    /// the version loaded was approved itself (its removals may not be taken yet); the
    /// approval is written first, so a server never sees the file without it. Other edits
    /// approve nothing: editing a file that someone else emptied does not make its removals
    /// deliberate.
    pub fn save(self, directory: &Directory) -> Result<(), DirectoryError> {
        let removes = self
            .logins
            .iter()
            .any(|login| !directory.users.contains_key(login));
        let text = file::render(&directory.to_repr())?;
        if removes || self.approved {
            approval::write(&self.path, &text)?;
        }
        file::write_atomic(&self.path, text.as_bytes())
    }
}

fn tenant_info(id: &TenantId, tenant: &Tenant) -> TenantInfo {
    TenantInfo {
        id: id.clone(),
        domains: tenant.domains.iter().cloned().collect(),
        policy: tenant.policy.clone(),
    }
}

fn parse_domain(domain: &str) -> Result<String, DirectoryError> {
    login::parse_domain(domain).map_err(|_| DirectoryError::InvalidDomain {
        domain: domain.to_owned(),
    })
}

/// Every `jwks_file` the parsed file at `path` names, resolved, with the (unvalidated) id of
/// the tenant that names it.
fn jwks_files(repr: &FileRepr, path: &Path) -> Vec<(String, PathBuf)> {
    repr.tenants
        .iter()
        .filter_map(|t| {
            let file = t.jwt.as_ref()?.jwks_file.as_deref()?;
            Some((t.id.clone(), jwt::resolve(path, file)))
        })
        .collect()
}

fn read_jwks_files(files: &[(String, PathBuf)]) -> Result<JwksTexts, DirectoryError> {
    files
        .iter()
        .map(|(tenant, path)| Ok((path.clone(), file::read_jwks(tenant, path)?)))
        .collect()
}

fn hash_password(password: &Secret) -> Result<PasswordDigest, DirectoryError> {
    if password.expose().is_empty() {
        return Err(DirectoryError::EmptyPassword);
    }
    Ok(PasswordDigest::hash(password.expose())?)
}

#[cfg(test)]
mod tests;
