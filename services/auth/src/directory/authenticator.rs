//! [`DirectoryAuthenticator`]: the [`Authenticator`] seam served from the directory file.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use cloudpop_maildrop::{MaildropKey, TenantId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::file::FileRepr;
use super::password::PasswordDigest;
use super::password_check::{PasswordCheckSettings, PasswordChecker};
use super::reload::{Fingerprint, Verdict, Watch};
use super::reload_metrics::ReloadMetrics;
use super::removal_limit::RemovalLimit;
use super::{
    Directory, DirectoryError, JwksTexts, Tenant, User, UserId, apop, approval, cram, file,
    jwks_files, read_jwks_files,
};
use crate::authenticator::{
    AuthFailure, AuthRequest, Authenticator, Credential, LookupError, Policy, Principal,
};
use crate::login::Login;

/// Shortest reload poll interval; shorter ones are raised to it.
const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(10);

/// Checked against when the user has no APOP secret, so that the check costs the same.
const NO_APOP_SECRET: &[u8] = b"cloudpop: this user has no APOP secret";
/// Checked against when the user has no CRAM-MD5 secret, so that the check costs the same.
const NO_CRAM_SECRET: &[u8] = b"cloudpop: this user has no CRAM-MD5 secret";

/// Serves [`Authenticator`] from a directory file, and reloads it when it changes.
///
/// - Passwords are checked with argon2id on a fixed set of hashing threads that reuse their
///   memory, and a correct password is then remembered for a while in a bounded cache
///   keyed by the stored hash (see [`PasswordCheckSettings`]), so a changed password takes
///   effect as soon as the directory reloads. An unknown user costs the same check against
///   a dummy hash, so timing does not reveal which users exist.
/// - APOP and CRAM-MD5 digests are compared in constant time; a user without the
///   mechanism's secret fails it, after a check that costs the same.
/// - Bearer tokens (OAUTHBEARER, XOAUTH2) are JWTs checked against the tenant's
///   `[tenants.jwt]` settings (see the [module docs](super)); a tenant without them refuses
///   every token.
/// - A disabled account is reported as [`AuthFailure::Permanent`] only to a client that
///   proved the credential; otherwise the answer is [`AuthFailure::BadCredentials`], so that
///   account status is not disclosed to guessers.
/// - Where the tenant forbids cleartext (the default), a password or bearer token without
///   TLS is refused with [`AuthFailure::EncryptionRequired`] before it is checked, so the
///   answer says nothing about the credential. APOP and CRAM-MD5 never send the secret and
///   are allowed without TLS.
/// - The tenant's login delay (RFC 2449 LOGIN-DELAY) is enforced per process, in memory.
/// - Disabled users still resolve as recipients: disabling stops access, not mail, so a
///   suspended account does not bounce its mail. Removing the user stops delivery.
/// - A recipient unknown to the directory in use is [`LookupError::DirectoryInDoubt`]
///   rather than unknown while the file on disk is another version (settling or refused),
///   or while the directory in use has no users: the user may exist, so it must not bounce.
///
/// Cloning is cheap and shares the directory, the reload state and the login-delay record.
#[derive(Clone)]
pub struct DirectoryAuthenticator {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    current: RwLock<Arc<Snapshot>>,
    /// Held for the whole of a reload, so concurrent reloads do not interleave.
    watch: Mutex<Watch>,
    /// Where reloads after the first load are counted, once set.
    reload_metrics: OnceLock<ReloadMetrics>,
    /// How many users one reload may remove; the default until set.
    removal_limit: OnceLock<RemovalLimit>,
    /// The file on disk is not the version in use (it is settling, or it was refused): an
    /// unknown recipient may be a user of either, so it is not refused for good.
    in_doubt: AtomicBool,
    /// Last successful login per user, for the login delay.
    last_login: Mutex<HashMap<UserId, Instant>>,
    /// Runs and caches argon2 checks.
    passwords: PasswordChecker,
}

/// One installed version of the directory, with what is derived from it once.
struct Snapshot {
    directory: Arc<Directory>,
    apop_offered: bool,
    cram_md5_offered: bool,
}

impl Snapshot {
    fn new(directory: Directory) -> Arc<Self> {
        let apop_offered = directory.has_apop_secrets();
        let cram_md5_offered = directory.has_cram_secrets();
        let directory = Arc::new(directory);
        Arc::new(Snapshot {
            directory,
            apop_offered,
            cram_md5_offered,
        })
    }
}

impl fmt::Debug for DirectoryAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryAuthenticator")
            .field("path", &self.inner.path)
            .field("directory", &self.inner.snapshot().directory)
            .finish()
    }
}

/// Locks a mutex, recovering from poisoning: the data guarded here stays consistent even if
/// a holder panicked (every update is a single insert or assignment).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DirectoryAuthenticator {
    /// Loads the directory file at `path` (missing file: no users yet), with the default
    /// [`PasswordCheckSettings`]. A file that does not validate (or is not a regular file) is
    /// an error here; later, on reload, it is refused and the directory in use stays.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, DirectoryError> {
        Self::open_with(path, &PasswordCheckSettings::default())
    }

    /// [`open`](Self::open), with password checks set up by `passwords`.
    pub fn open_with(
        path: impl Into<PathBuf>,
        passwords: &PasswordCheckSettings,
    ) -> Result<Self, DirectoryError> {
        let path = path.into();
        let passwords =
            PasswordChecker::start(passwords).map_err(DirectoryError::PasswordThreads)?;
        let inner = Inner {
            path,
            current: RwLock::new(Snapshot::new(Directory::new())),
            watch: Mutex::new(Watch::default()),
            reload_metrics: OnceLock::new(),
            removal_limit: OnceLock::new(),
            in_doubt: AtomicBool::new(false),
            last_login: Mutex::new(HashMap::new()),
            passwords,
        };
        // The first load is taken as it is, without waiting for it to settle: there is no
        // directory to keep instead. A missing file leaves the directory empty, an invalid
        // one is an error.
        inner.reload(true)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The directory file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The directory in use now (a snapshot: later reloads do not change it).
    pub fn directory(&self) -> Arc<Directory> {
        Arc::clone(&self.inner.snapshot().directory)
    }

    /// One poll: reads the file (and the JWKS files it names) again if the metadata of any
    /// of them changed since they were last read, and installs the result once it has
    /// settled, that is once the previous poll found the same metadata and contents, so that
    /// a file being rewritten in place is never installed half-written. Returns whether a new
    /// directory was installed.
    ///
    /// The directory in use is kept, and an error returned once per version, when the new
    /// version is unreadable, not a regular file, invalid or vanished, when a JWKS file cannot
    /// be read, or when it removes more users than the [`RemovalLimit`] allows and is not
    /// approved ([`DirectoryError::TooManyRemovals`]). Blocking: call it off the async runtime.
    pub fn reload_if_changed(&self) -> Result<bool, DirectoryError> {
        self.inner.reload(false)
    }

    /// [`reload_if_changed`](Self::reload_if_changed) after this process replaced the file
    /// atomically (as [`FileEdit::save`](super::FileEdit::save) does): a new version is taken
    /// at once, since it cannot be half-written. The removal limit still applies.
    pub fn reload_after_edit(&self) -> Result<bool, DirectoryError> {
        self.inner.reload(true)
    }

    /// Counts every later reload (by the reloader task or after an admin edit) into
    /// `metrics`. Only the first call has an effect.
    pub fn count_reloads(&self, metrics: ReloadMetrics) {
        let _ = self.inner.reload_metrics.set(metrics);
    }

    /// Limits how many users one later reload may remove (default:
    /// [`RemovalLimit::default`]). Only the first call has an effect.
    pub fn limit_removals(&self, limit: RemovalLimit) {
        let _ = self.inner.removal_limit.set(limit);
    }

    /// Whether an unknown recipient may still be a user: the installed directory has no
    /// users at all (an empty or truncated file at start-up), or the file on disk is a
    /// version not in use (settling, or refused).
    fn recipients_in_doubt(&self, directory: &Directory) -> bool {
        directory.users.is_empty() || self.inner.in_doubt.load(Ordering::Relaxed)
    }

    /// Spawns a task that calls [`reload_if_changed`](Self::reload_if_changed) every
    /// `interval` (at least 10 ms) until `shutdown` is cancelled or every clone of this
    /// authenticator is dropped. Refused versions are logged as errors. Needs a Tokio runtime.
    pub fn spawn_reloader(
        &self,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(reload_loop(
            inner,
            interval.max(MIN_RELOAD_INTERVAL),
            shutdown,
        ))
    }

    /// Checks a password, APOP or CRAM-MD5 credential (not a bearer token) and returns the
    /// user it proves, with the user's tenant.
    async fn check_secret<'d>(
        &self,
        directory: &'d Directory,
        login: &str,
        credential: Credential,
        tls: bool,
    ) -> Result<(&'d User, &'d TenantId, &'d Tenant), AuthFailure> {
        let Ok(login) = Login::parse(login) else {
            return Err(AuthFailure::BadCredentials);
        };
        // Decided before the password is looked at: the answer is the same for right and
        // wrong passwords, and for users that do not exist.
        if matches!(credential, Credential::Password(_))
            && !tls
            && let Ok((_, tenant)) = directory.tenant_of(&login)
            && !tenant.policy.cleartext_allowed
        {
            return Err(AuthFailure::EncryptionRequired);
        }
        let found = directory.resolve(&login);
        let proven = match credential {
            Credential::Password(password) => {
                let digest =
                    found.map_or_else(PasswordDigest::dummy, |(user, ..)| user.password.clone());
                self.inner
                    .passwords
                    .check(digest, password)
                    .await
                    .map_err(|e| AuthFailure::Temporary(e.to_string()))?
            }
            Credential::Apop { challenge, digest } => {
                let secret = found.and_then(|(user, ..)| user.apop_secret.as_ref());
                let key = secret.map_or(NO_APOP_SECRET, |s| s.as_str().as_bytes());
                apop::verify(&challenge, key, digest.expose()) && secret.is_some()
            }
            Credential::CramMd5 { challenge, digest } => {
                let secret = found.and_then(|(user, ..)| user.cram_secret.as_ref());
                let key = secret.map_or(NO_CRAM_SECRET, |s| s.as_str().as_bytes());
                cram::verify(&challenge, key, digest.expose()) && secret.is_some()
            }
            // Checked by `Directory::check_bearer`; never proven here.
            Credential::Bearer { .. } => false,
        };
        found.filter(|_| proven).ok_or(AuthFailure::BadCredentials)
    }

    /// Enforces the login delay and records this login; atomic, so two concurrent logins
    /// cannot both slip through.
    fn check_login_delay(&self, user: &UserId, delay: Duration) -> Result<(), AuthFailure> {
        if delay.is_zero() {
            return Ok(());
        }
        let now = Instant::now();
        let mut last_login = lock(&self.inner.last_login);
        if let Some(last) = last_login.get(user)
            && now.duration_since(*last) < delay
        {
            return Err(AuthFailure::LoginTooSoon);
        }
        last_login.insert(user.clone(), now);
        Ok(())
    }
}

async fn reload_loop(inner: Weak<Inner>, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let path = inner.path.clone();
        match tokio::task::spawn_blocking(move || inner.reload(false)).await {
            Ok(Ok(true)) => tracing::info!(path = %path.display(), "user directory reloaded"),
            Ok(Ok(false)) => {}
            // An error: until the file is fixed or approved, unknown recipients are deferred.
            Ok(Err(error)) => tracing::error!(
                %error,
                "user directory not reloaded; keeping the one loaded before"
            ),
            Err(error) => tracing::warn!(%error, "user directory reload task failed"),
        }
    }
}

impl Inner {
    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn reload(&self, at_once: bool) -> Result<bool, DirectoryError> {
        let mut watch = lock(&self.watch);
        let result = self.poll(&mut watch, at_once);
        self.in_doubt.store(watch.in_doubt(), Ordering::Relaxed);
        if let Some(metrics) = self.reload_metrics.get() {
            match &result {
                Ok(true) => metrics.success.inc(),
                Ok(false) => {}
                Err(DirectoryError::TooManyRemovals { .. }) => metrics.removal_refused.inc(),
                Err(_) => metrics.failure.inc(),
            }
            metrics.refused.set(i64::from(watch.refused()));
        }
        result
    }

    /// One look at the files: reads them if their metadata changed, and installs (or
    /// refuses) a new version once it has settled.
    fn poll(&self, watch: &mut Watch, at_once: bool) -> Result<bool, DirectoryError> {
        let fingerprint = Fingerprint::of(&self.path).map_err(|source| DirectoryError::Read {
            path: self.path.clone(),
            source,
        })?;
        let key_files_now: Vec<_> = watch.key_files().map(Fingerprint::of_key_file).collect();
        let approval_now = Fingerprint::of_key_file(&approval::path_for(&self.path));
        if !watch.needs_reload(fingerprint, &key_files_now, approval_now) {
            return Ok(false);
        }
        // Recorded before reading: a write that lands while we read changes the fingerprint
        // again, and the version is read once more.
        let now = SystemTime::now();
        watch.record(fingerprint, approval_now, now);
        let version = self.read_version(watch, now);
        if watch.observe(version.parts(), at_once) != Verdict::Take {
            return Ok(false);
        }
        if version.text?.is_none() {
            // A missing file is an empty directory only at start-up. Later it is far more
            // likely an editor between delete and write than an intent to lock every user out.
            if watch.nothing_installed() {
                watch.installed();
                return Ok(false);
            }
            return Err(DirectoryError::Vanished {
                path: self.path.clone(),
            });
        }
        let directory = Directory::from_repr(version.repr?, &self.path, &version.jwks?)?;
        // The first load has nothing to keep; later, a version that removes too many users is
        // more likely an accident than an intent, unless it says otherwise.
        if !watch.nothing_installed() && !version.approved {
            self.check_removals(&directory)?;
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Snapshot::new(directory);
        watch.installed();
        Ok(true)
    }

    /// Reads the directory file, the JWKS files it names, and whether its approval file
    /// approves it.
    fn read_version(&self, watch: &mut Watch, now: SystemTime) -> Version {
        let text = file::read(&self.path);
        let (repr, approved) = match &text {
            Ok(Some(text)) => (
                file::parse(&self.path, text),
                approval::approves(&self.path, text),
            ),
            _ => (Ok(FileRepr::default()), false),
        };
        let key_files = repr
            .as_ref()
            .map(|repr| jwks_files(repr, &self.path))
            .unwrap_or_default();
        // JWKS files too are fingerprinted before they are read: a key rotation is noticed
        // even when the directory file does not change.
        let fingerprints = key_files
            .iter()
            .map(|(_, path)| (path.clone(), Fingerprint::of_key_file(path)))
            .collect();
        watch.record_key_files(fingerprints, now);
        Version {
            text,
            repr,
            jwks: read_jwks_files(&key_files),
            approved,
        }
    }

    /// Refuses `candidate` if it removes more of the users in use than the limit allows.
    fn check_removals(&self, candidate: &Directory) -> Result<(), DirectoryError> {
        let in_use = self.snapshot();
        let users = &in_use.directory.users;
        let removed = users
            .keys()
            .filter(|login| !candidate.users.contains_key(*login))
            .count();
        let limit = self.removal_limit.get().copied().unwrap_or_default();
        if limit.allows(users.len(), removed) {
            return Ok(());
        }
        Err(DirectoryError::TooManyRemovals {
            path: self.path.clone(),
            removed,
            in_use: users.len(),
            max_fraction: limit.max_fraction(),
        })
    }
}

/// One version of the files as read, or why it could not be.
struct Version {
    /// The directory file's text; `None`: there is no file.
    text: Result<Option<String>, DirectoryError>,
    repr: Result<FileRepr, DirectoryError>,
    jwks: Result<JwksTexts, DirectoryError>,
    /// The approval file names this version (see the `approval` module).
    approved: bool,
}

impl Version {
    /// What identifies this version: contents, or the reasons they could not be read.
    fn parts(&self) -> Vec<Vec<u8>> {
        let mut parts = match &self.text {
            Ok(Some(text)) => vec![b"file".to_vec(), text.as_bytes().to_vec()],
            Ok(None) => vec![b"missing".to_vec()],
            // The same unreadable file is reported once, like the same invalid text.
            Err(error) => vec![b"error".to_vec(), error.to_string().into_bytes()],
        };
        match &self.jwks {
            Ok(texts) => {
                for (path, text) in texts {
                    parts.push(path.to_string_lossy().as_bytes().to_vec());
                    parts.push(text.as_bytes().to_vec());
                }
            }
            Err(error) => parts.push(error.to_string().into_bytes()),
        }
        parts.push(if self.approved {
            b"approved".to_vec()
        } else {
            Vec::new()
        });
        parts
    }
}

fn principal(user: &User, tenant: &TenantId, policy: &Policy) -> Principal {
    Principal {
        tenant: tenant.clone(),
        user: user.id.to_string(),
        login: user.login.to_string(),
        maildrop: MaildropKey::new(tenant.clone(), user.id.mailbox().clone()),
        policy: policy.clone(),
    }
}

#[async_trait]
impl Authenticator for DirectoryAuthenticator {
    async fn authenticate(&self, request: AuthRequest) -> Result<Principal, AuthFailure> {
        let snapshot = self.inner.snapshot();
        let directory = &snapshot.directory;
        let (user, tenant, owner) = match request.credential {
            Credential::Bearer { token, .. } => {
                directory.check_bearer(token.expose(), &request.login, request.tls)?
            }
            credential => {
                self.check_secret(directory, &request.login, credential, request.tls)
                    .await?
            }
        };
        if user.disabled {
            return Err(AuthFailure::Permanent("account disabled".into()));
        }
        self.check_login_delay(&user.id, owner.policy.login_delay)?;
        Ok(principal(user, tenant, &owner.policy))
    }

    async fn lookup_recipient(&self, address: &str) -> Result<Option<Principal>, LookupError> {
        let Ok(login) = Login::parse(address) else {
            return Ok(None);
        };
        let snapshot = self.inner.snapshot();
        match snapshot.directory.resolve(&login) {
            Some((user, tenant, t)) => Ok(Some(principal(user, tenant, &t.policy))),
            // RFC 5321 §4.2.1: a 5yz makes the client bounce the mail; when the directory is
            // in doubt, a 4yz makes it try again later instead.
            None if self.recipients_in_doubt(&snapshot.directory) => {
                Err(LookupError::DirectoryInDoubt)
            }
            None => Ok(None),
        }
    }

    fn apop_offered(&self) -> bool {
        self.inner.snapshot().apop_offered
    }

    fn cram_md5_offered(&self) -> bool {
        self.inner.snapshot().cram_md5_offered
    }
}

#[cfg(test)]
mod tests;
