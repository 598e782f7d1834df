//! The filesystem message store: one file per message, one directory per maildrop.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::ids::{MaildropKey, UniqueId};
use crate::store::{DeleteOutcome, MessageEntry, MessageReader, MessageStore, StoreError};
use crate::uid_generator::{self, UidGenerator};

/// Where a maildrop keeps files being written. Its leading `.` can never start a
/// [`UniqueId`], so listing never mistakes it (or anything in it) for a message.
const TMP_DIR: &str = ".tmp";

/// Mode of message files: readable by the service's user only. Mail is private, and other
/// local users must not read it.
const FILE_MODE: u32 = 0o600;

/// Mode of the directories the store creates (root, tenants, maildrops, temp folders).
const DIR_MODE: u32 = 0o700;

/// How often `put` tries fresh names before giving up. Names are time-ordered with 80
/// random bits, so even one collision means something other than chance is going on.
const PUT_ATTEMPTS: usize = 8;

/// Messages as files: `{root}/{tenant}/{mailbox}/{uid}`.
///
/// A message is written under `{maildrop}/.tmp/`, fsynced, then published by hard-linking
/// it to its final name. A hard link, unlike a rename, fails if the name exists, so a
/// message is never overwritten. The maildrop directory is fsynced after every publish
/// and delete, so an acknowledged `put` or `delete` survives a crash. Directories are
/// created on first use, mode 0700; messages are mode 0600 (the umask may only narrow them).
///
/// Blocking filesystem calls run on Tokio's blocking pool. Several processes may share a
/// root (ids carry 80 random bits), but ids are only ordered across processes by their
/// millisecond.
#[derive(Debug, Clone)]
pub struct FsStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    uids: UidGenerator,
}

impl FsStore {
    /// A store under `root`. Nothing is touched until the first operation; use
    /// [`MessageStore::check`] to find out early whether `root` is usable.
    pub fn new(root: impl Into<PathBuf>) -> FsStore {
        FsStore {
            inner: Arc::new(Inner {
                root: root.into(),
                uids: UidGenerator::new(),
            }),
        }
    }

    /// The directory this store keeps its maildrops under.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Removes the temporary files of deliveries that were interrupted (a crash, a kill)
    /// and last modified more than `older_than` ago; returns how many. Meant for start-up:
    /// a leftover is never listed, but it keeps its disk space until removed.
    pub async fn remove_stale_temp_files(&self, older_than: Duration) -> Result<usize, StoreError> {
        self.blocking(move |inner| inner.remove_stale_temp_files(older_than))
            .await
    }

    /// Runs blocking filesystem work off the async threads.
    async fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| StoreError::Unavailable(format!("filesystem task failed: {e}")))?
    }
}

impl Inner {
    fn maildrop_dir(&self, drop: &MaildropKey) -> PathBuf {
        self.root
            .join(drop.tenant.as_str())
            .join(drop.mailbox.as_str())
    }

    fn put(&self, drop: &MaildropKey, message: &[u8]) -> Result<UniqueId, StoreError> {
        let dir = self.maildrop_dir(drop);
        let tmp_dir = dir.join(TMP_DIR);
        create_dir_durably(&tmp_dir).map_err(|e| unavailable("create", &tmp_dir, e))?;
        let tmp = self.write_tmp(&tmp_dir, message)?;
        let published = self.publish(&dir, &tmp);
        // The temp file is only a second name of the published message (or a failed write):
        // removing it never loses mail, and a leftover only costs space.
        if let Err(e) = fs::remove_file(&tmp) {
            tracing::warn!(path = %tmp.display(), error = %e, "cannot remove temp file");
        }
        let uid = published?;
        sync_dir(&dir).map_err(|e| unavailable("fsync", &dir, e))?;
        Ok(uid)
    }

    /// Writes `message` to a new file in `tmp_dir` and makes its contents durable.
    fn write_tmp(&self, tmp_dir: &Path, message: &[u8]) -> Result<PathBuf, StoreError> {
        for _ in 0..PUT_ATTEMPTS {
            let path = tmp_dir.join(self.uids.next().as_str());
            let mut file = match private_file().open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(unavailable("create", &path, e)),
            };
            let written = file.write_all(message).and_then(|()| file.sync_all());
            if let Err(e) = written {
                // Best effort: a partial temp file is never listed, it only wastes space.
                let _ = fs::remove_file(&path);
                return Err(unavailable("write", &path, e));
            }
            return Ok(path);
        }
        Err(StoreError::Unavailable(format!(
            "no free temp file name in {} after {PUT_ATTEMPTS} attempts",
            tmp_dir.display()
        )))
    }

    /// Links the durable temp file into `dir` under a fresh uid, never replacing a file.
    fn publish(&self, dir: &Path, tmp: &Path) -> Result<UniqueId, StoreError> {
        for _ in 0..PUT_ATTEMPTS {
            let uid = self.uids.next();
            let target = dir.join(uid.as_str());
            match fs::hard_link(tmp, &target) {
                Ok(()) => return Ok(uid),
                // Another process took this name: the next uid is a new one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(unavailable("link", &target, e)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "no free message name in {} after {PUT_ATTEMPTS} attempts",
            dir.display()
        )))
    }

    fn list(&self, drop: &MaildropKey) -> Result<Vec<MessageEntry>, StoreError> {
        let dir = self.maildrop_dir(drop);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // A maildrop that never received mail has no directory yet.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(unavailable("list", &dir, e)),
        };
        let mut listed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| unavailable("list", &dir, e))?;
            let Some(uid) = entry
                .file_name()
                .to_str()
                .and_then(|n| UniqueId::new(n).ok())
            else {
                // `.tmp` and anything else that is not a message.
                continue;
            };
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                // Deleted between read_dir and stat: it is not part of this listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(unavailable("stat", &entry.path(), e)),
            };
            if metadata.is_file() {
                listed.push(MessageEntry {
                    uid,
                    size: metadata.len(),
                });
            }
        }
        listed.sort_unstable_by(|a, b| a.uid.cmp(&b.uid));
        Ok(listed)
    }

    fn delete(&self, drop: &MaildropKey, uids: Vec<UniqueId>) -> DeleteOutcome {
        let dir = self.maildrop_dir(drop);
        let mut outcome = DeleteOutcome::default();
        for uid in uids {
            let path = dir.join(uid.as_str());
            match fs::remove_file(&path) {
                Ok(()) => outcome.deleted.push(uid),
                Err(e) if e.kind() == io::ErrorKind::NotFound => outcome.deleted.push(uid),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete message");
                    outcome.failed.push(uid);
                }
            }
        }
        match sync_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // The files are gone now; only their durability across a crash is in doubt,
            // and a message coming back after a crash is not lost mail.
            Err(e) => tracing::warn!(path = %dir.display(), error = %e, "cannot fsync maildrop"),
        }
        outcome
    }

    /// Removes what interrupted deliveries left in the maildrops' temp folders: files named
    /// as the store names them (a generated id), last modified more than `older_than` ago. Anything else, and
    /// anything younger (a delivery of another process in progress), is left alone.
    fn remove_stale_temp_files(&self, older_than: Duration) -> Result<usize, StoreError> {
        let mut removed = 0;
        for tenant in subdirectories(&self.root)? {
            for maildrop in subdirectories(&tenant)? {
                removed += remove_stale_in(&maildrop.join(TMP_DIR), older_than)?;
            }
        }
        Ok(removed)
    }

    fn check(&self) -> Result<(), StoreError> {
        let root = &self.root;
        create_dir_durably(root).map_err(|e| unavailable("create", root, e))?;
        // A leading '.' can never be a tenant id, so the probe cannot meet a maildrop.
        let probe = root.join(format!(".check-{}", self.uids.next()));
        private_file()
            .open(&probe)
            .and_then(|mut file| file.write_all(b"ok"))
            .map_err(|e| unavailable("write", &probe, e))?;
        fs::remove_file(&probe).map_err(|e| unavailable("remove", &probe, e))
    }
}

#[async_trait]
impl MessageStore for FsStore {
    async fn put(&self, drop: &MaildropKey, message: Bytes) -> Result<UniqueId, StoreError> {
        let drop = drop.clone();
        self.blocking(move |inner| inner.put(&drop, &message)).await
    }

    async fn list(&self, drop: &MaildropKey) -> Result<Vec<MessageEntry>, StoreError> {
        let drop = drop.clone();
        self.blocking(move |inner| inner.list(&drop)).await
    }

    async fn open(&self, drop: &MaildropKey, uid: &UniqueId) -> Result<MessageReader, StoreError> {
        let path = self.inner.maildrop_dir(drop).join(uid.as_str());
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(Box::pin(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound),
            Err(e) => Err(unavailable("open", &path, e)),
        }
    }

    async fn delete(&self, drop: &MaildropKey, uids: &[UniqueId]) -> DeleteOutcome {
        let drop = drop.clone();
        let uids = uids.to_vec();
        let requested = uids.clone();
        self.blocking(move |inner| Ok(inner.delete(&drop, uids)))
            .await
            // The task died before reporting: assume nothing was deleted, so the messages
            // are served again rather than reported gone.
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "delete task failed");
                DeleteOutcome {
                    deleted: Vec::new(),
                    failed: requested,
                }
            })
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.blocking(Inner::check).await
    }
}

/// The directories in `dir` whose names could be ids (no leading `.`); none if `dir` does not
/// exist.
fn subdirectories(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(unavailable("list", dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| unavailable("list", dir, e))?;
        let visible = !entry.file_name().to_string_lossy().starts_with('.');
        if visible && entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// Removes the stale temp files of one temp folder; see
/// [`FsStore::remove_stale_temp_files`].
fn remove_stale_in(tmp_dir: &Path, older_than: Duration) -> Result<usize, StoreError> {
    let entries = match fs::read_dir(tmp_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(unavailable("list", tmp_dir, e)),
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| unavailable("list", tmp_dir, e))?;
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(uid_generator::is_generated);
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        let age = metadata
            .modified()
            .ok()
            .and_then(|modified| now.duration_since(modified).ok());
        if ours && metadata.is_file() && age.is_some_and(|age| age > older_than) {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(unavailable("remove", &entry.path(), e)),
            }
        }
    }
    Ok(removed)
}

fn unavailable(action: &str, path: &Path, e: io::Error) -> StoreError {
    StoreError::Unavailable(format!("{action} {}: {e}", path.display()))
}

/// `create_dir_all` that also fsyncs the parent of every directory it creates, so that a
/// durably written message is not lost with a directory entry that was never synced.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dir_durably(parent)?;
    }
    match private_dir().create(dir) {
        Ok(()) => {}
        // Created concurrently by another put: the other put syncs the parent.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    match parent {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Options that create a new file that only its owner can read.
fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    options
}

/// A builder of directories that only their owner can enter.
fn private_dir() -> fs::DirBuilder {
    #[allow(unused_mut, reason = "only Unix has modes")]
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder
}

/// Makes the directory's entries (created, linked or removed names) durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Directories cannot be opened for syncing here; entries are as durable as the OS makes them.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::ids::{MailboxId, TenantId};

    fn key(tenant: &str, mailbox: &str) -> MaildropKey {
        MaildropKey::new(
            TenantId::new(tenant).unwrap(),
            MailboxId::new(mailbox).unwrap(),
        )
    }

    async fn read_all(store: &FsStore, maildrop: &MaildropKey, uid: &UniqueId) -> Vec<u8> {
        let mut body = Vec::new();
        store
            .open(maildrop, uid)
            .await
            .unwrap()
            .read_to_end(&mut body)
            .await
            .unwrap();
        body
    }

    #[tokio::test]
    async fn messages_live_at_root_tenant_mailbox_uid() {
        let root = tempfile::tempdir().unwrap();
        let store = FsStore::new(root.path());
        let maildrop = key("acme", "alice");
        let uid = store
            .put(&maildrop, Bytes::from_static(b"hello\r\n"))
            .await
            .unwrap();
        let path = root.path().join("acme").join("alice").join(uid.as_str());
        assert_eq!(fs::read(path).unwrap(), b"hello\r\n");
    }

    #[tokio::test]
    async fn put_leaves_no_temp_files() {
        let root = tempfile::tempdir().unwrap();
        let store = FsStore::new(root.path());
        let maildrop = key("acme", "alice");
        for _ in 0..5 {
            store
                .put(&maildrop, Bytes::from_static(b"x\r\n"))
                .await
                .unwrap();
        }
        let tmp = root.path().join("acme/alice").join(TMP_DIR);
        assert_eq!(fs::read_dir(tmp).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn list_skips_what_is_not_a_message() {
        let root = tempfile::tempdir().unwrap();
        let store = FsStore::new(root.path());
        let maildrop = key("acme", "alice");
        let uid = store
            .put(&maildrop, Bytes::from_static(b"mail\r\n"))
            .await
            .unwrap();
        let dir = root.path().join("acme/alice");
        fs::write(dir.join(".hidden"), b"junk").unwrap();
        fs::write(dir.join("has space"), b"junk").unwrap();
        fs::write(dir.join(TMP_DIR).join("01half-written"), b"junk").unwrap();
        fs::create_dir(dir.join("a-directory")).unwrap();
        let listed = store.list(&maildrop).await.unwrap();
        assert_eq!(listed, vec![MessageEntry { uid, size: 6 }]);
    }

    #[tokio::test]
    async fn put_after_restart_sorts_after_existing_mail_and_keeps_it() {
        let root = tempfile::tempdir().unwrap();
        let maildrop = key("acme", "alice");
        let before = FsStore::new(root.path());
        let mut uids = Vec::new();
        for i in 0..3 {
            uids.push(
                before
                    .put(&maildrop, Bytes::from(format!("old {i}\r\n")))
                    .await
                    .unwrap(),
            );
        }
        drop(before);
        // A restart takes far longer than a millisecond; make sure the clock moves here too,
        // since ids from different generators are ordered by their millisecond only.
        tokio::time::sleep(Duration::from_millis(2)).await;

        let after = FsStore::new(root.path());
        let new = after
            .put(&maildrop, Bytes::from_static(b"new\r\n"))
            .await
            .unwrap();
        assert!(
            uids.iter().all(|old| *old < new),
            "{new} sorts before an older id"
        );
        uids.push(new);
        let listed: Vec<_> = after
            .list(&maildrop)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.uid)
            .collect();
        assert_eq!(listed, uids);
        for (i, uid) in uids[..3].iter().enumerate() {
            assert_eq!(
                read_all(&after, &maildrop, uid).await,
                format!("old {i}\r\n").as_bytes()
            );
        }
    }

    #[tokio::test]
    async fn listing_ten_thousand_messages_is_fast() {
        let root = tempfile::tempdir().unwrap();
        let store = FsStore::new(root.path());
        let maildrop = key("acme", "big");
        let dir = root.path().join("acme/big");
        fs::create_dir_all(&dir).unwrap();
        // Written directly: 10,000 fsynced puts would test the disk, not the listing.
        let generator = UidGenerator::new();
        let mut expected = Vec::new();
        for i in 0..10_000u64 {
            let uid = generator.next();
            fs::write(dir.join(uid.as_str()), vec![b'x'; (i % 100) as usize]).unwrap();
            expected.push(MessageEntry { uid, size: i % 100 });
        }
        let started = Instant::now();
        let listed = store.list(&maildrop).await.unwrap();
        let took = started.elapsed();
        assert_eq!(listed, expected);
        assert!(took < Duration::from_secs(2), "listing took {took:?}");
    }

    #[tokio::test]
    async fn an_unusable_root_is_unavailable_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("not-a-directory");
        fs::write(&root, b"").unwrap();
        let store = FsStore::new(&root);
        let maildrop = key("acme", "alice");
        let put = store.put(&maildrop, Bytes::from_static(b"x")).await;
        assert!(matches!(put, Err(StoreError::Unavailable(_))), "{put:?}");
        assert!(matches!(
            store.check().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.list(&maildrop).await,
            Err(StoreError::Unavailable(_))
        ));
        let uid = UidGenerator::new().next();
        assert!(matches!(
            store.open(&maildrop, &uid).await,
            Err(StoreError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn check_creates_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data/messages");
        FsStore::new(&root).check().await.unwrap();
        assert!(root.is_dir());
        assert_eq!(
            fs::read_dir(&root).unwrap().count(),
            0,
            "probe file left behind"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn only_the_owner_can_read_mail() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let store_root = root.path().join("mail");
        let store = FsStore::new(&store_root);
        let maildrop = key("acme", "alice");
        let uid = store
            .put(&maildrop, Bytes::from_static(b"private\r\n"))
            .await
            .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = store_root.join("acme/alice");
        assert_eq!(mode(&dir.join(uid.as_str())), 0o600);
        for d in [
            store_root.clone(),
            store_root.join("acme"),
            dir.clone(),
            dir.join(TMP_DIR),
        ] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
    }

    #[tokio::test]
    async fn stale_temp_files_are_removed_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let store = FsStore::new(root.path());
        let maildrop = key("acme", "alice");
        let uid = store
            .put(&maildrop, Bytes::from_static(b"kept\r\n"))
            .await
            .unwrap();
        let tmp = root.path().join("acme/alice").join(TMP_DIR);
        let old = std::time::SystemTime::now() - Duration::from_secs(3 * 3600);
        let generator = UidGenerator::new();
        let stale = tmp.join(generator.next().as_str());
        let fresh = tmp.join(generator.next().as_str());
        let foreign = tmp.join("not-ours");
        for path in [&stale, &fresh, &foreign] {
            fs::write(path, b"partial").unwrap();
        }
        for path in [&stale, &foreign] {
            File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let removed = store
            .remove_stale_temp_files(Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(removed, 1);
        assert!(!stale.exists() && fresh.exists() && foreign.exists());
        assert_eq!(store.list(&maildrop).await.unwrap().len(), 1);
        assert_eq!(read_all(&store, &maildrop, &uid).await, b"kept\r\n");
    }
}
