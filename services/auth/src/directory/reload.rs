//! Noticing that the directory file (or a JWKS file it names) changed, cheaply: by their
//! metadata, not their contents.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use md5::{Digest, Md5};

/// Changes closer together than this may share a modification time on coarse file systems
/// (FAT and HFS+ keep 1–2 s; even ext4 stamps from a clock that ticks every few ms).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    /// An atomic save (write temp, rename) gives the file a new inode.
    inode: u64,
}

impl Fingerprint {
    /// The fingerprint of the file at `path`; `Ok(None)` if there is no file.
    pub(super) fn of(path: &Path) -> io::Result<Option<Fingerprint>> {
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Some(Fingerprint {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            inode,
        }))
    }

    /// The fingerprint of a JWKS file. A file that cannot be examined counts as missing:
    /// reading it will then report why.
    pub(super) fn of_key_file(path: &Path) -> Option<Fingerprint> {
        Self::of(path).ok().flatten()
    }

    /// Whether this version is so fresh that a second write could keep its fingerprint.
    fn is_racy(self, now: SystemTime) -> bool {
        match self.modified {
            // A modification time in the future is as untrustworthy as a recent one.
            Some(modified) => now
                .duration_since(modified)
                .map_or(true, |age| age < RACY_WINDOW),
            None => true,
        }
    }
}

/// What a poll concluded about the version of the files it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The version already installed or refused: nothing to do.
    Unchanged,
    /// A version not seen on the poll before: it may still be being written, so it is taken
    /// (or refused) only if the next poll finds it again.
    Settling,
    /// A version to install (or refuse) now.
    Take,
}

/// What the reloader last read, and whether that can be trusted to detect the next change.
///
/// A version is taken only when two consecutive polls find the same metadata and the same
/// contents, so that a file rewritten in place (truncated, then written) is never taken
/// half-written. Every version is identified by a digest of what was read, including
/// failures to read it, so a broken version is also reported once, when it has settled.
#[derive(Debug, Default)]
pub(super) struct Watch {
    last: Option<Fingerprint>,
    /// The directory file's metadata was the same on the last two reads.
    steady: bool,
    /// The JWKS files the last version named, with their fingerprints before they were read.
    key_files: Vec<(PathBuf, Option<Fingerprint>)>,
    /// The approval file (see the `approval` module) as of the last read.
    approval: Option<Fingerprint>,
    /// The last version was so fresh that a second write could keep its fingerprint (the
    /// "racily clean" problem git solves the same way): read it again next time.
    racy: bool,
    /// Digest of the version read last.
    seen: Option<String>,
    /// Digest of the version last installed or refused.
    taken: Option<String>,
    /// Digest of the version in use.
    installed: Option<String>,
}

impl Watch {
    /// The JWKS files to watch besides the directory file, in the order
    /// [`needs_reload`](Self::needs_reload) wants their fingerprints.
    pub(super) fn key_files(&self) -> impl Iterator<Item = &Path> {
        self.key_files.iter().map(|(path, _)| path.as_path())
    }

    /// Whether the files must be read again, given the directory file's fingerprint now,
    /// those of [`key_files`](Self::key_files) now, and the approval file's now.
    pub(super) fn needs_reload(
        &self,
        now: Option<Fingerprint>,
        key_files_now: &[Option<Fingerprint>],
        approval_now: Option<Fingerprint>,
    ) -> bool {
        let keys_changed = !self
            .key_files
            .iter()
            .map(|(_, f)| *f)
            .eq(key_files_now.iter().copied());
        self.racy
            || now != self.last
            || keys_changed
            || approval_now != self.approval
            || self.seen != self.taken
    }

    /// Remembers the version of the directory file, and of its approval file, about to be
    /// read.
    pub(super) fn record(
        &mut self,
        fingerprint: Option<Fingerprint>,
        approval: Option<Fingerprint>,
        now: SystemTime,
    ) {
        self.steady = self.last == fingerprint;
        self.last = fingerprint;
        self.approval = approval;
        self.racy = fingerprint.is_some_and(|f| f.is_racy(now));
    }

    /// Remembers the JWKS files the version just read names, fingerprinted before they are
    /// read. Call after [`record`](Self::record).
    pub(super) fn record_key_files(
        &mut self,
        files: Vec<(PathBuf, Option<Fingerprint>)>,
        now: SystemTime,
    ) {
        self.racy |= files.iter().any(|(_, f)| f.is_some_and(|f| f.is_racy(now)));
        self.key_files = files;
    }

    /// Remembers the version just read, given as its parts in order (the contents of the
    /// files, or why they could not be read), and decides what to do with it. `at_once`
    /// takes a new version without waiting for it to settle: for the first load, and for a
    /// file this process has just replaced atomically.
    pub(super) fn observe<I, P>(&mut self, parts: I, at_once: bool) -> Verdict
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let mut md5 = Md5::new();
        for part in parts {
            let part = part.as_ref();
            // Length-prefixed, so that moving bytes from one part to the next is a change.
            md5.update((part.len() as u64).to_be_bytes());
            md5.update(part);
        }
        let digest = Some(hex::encode(md5.finalize()));
        let settled = self.steady && self.seen == digest;
        self.seen = digest;
        if self.seen == self.installed {
            // Back to the version in use (after a refused one, say): nothing to wait for.
            self.taken = self.seen.clone();
            return Verdict::Unchanged;
        }
        if self.seen == self.taken {
            return Verdict::Unchanged;
        }
        if !settled && !at_once {
            return Verdict::Settling;
        }
        self.taken = self.seen.clone();
        Verdict::Take
    }

    /// Remembers that the version just taken was installed.
    pub(super) fn installed(&mut self) {
        self.installed = self.taken.clone();
    }

    /// Whether nothing was installed yet (the first load has not happened).
    pub(super) fn nothing_installed(&self) -> bool {
        self.installed.is_none()
    }

    /// Whether the files on disk are not the version in use: a newer version is settling or
    /// was refused.
    pub(super) fn in_doubt(&self) -> bool {
        self.seen != self.installed
    }

    /// Whether the latest version that settled was refused, so an older one is in use.
    pub(super) fn refused(&self) -> bool {
        self.taken != self.installed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(len: u64, modified: SystemTime) -> Option<Fingerprint> {
        Some(Fingerprint {
            len,
            modified: Some(modified),
            inode: 1,
        })
    }

    /// A modification time long past, the same on every call.
    fn old() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    /// One poll with the version `(fingerprint, contents)` on disk: whether it is read, and
    /// what is decided.
    fn poll(watch: &mut Watch, file: Option<Fingerprint>, contents: &str) -> Option<Verdict> {
        if !watch.needs_reload(file, &[], None) {
            return None;
        }
        watch.record(file, None, SystemTime::now());
        Some(watch.observe([contents], false))
    }

    #[test]
    fn settled_files_are_read_once() {
        let now = SystemTime::now();
        let old = now - Duration::from_secs(60);
        let mut watch = Watch::default();
        assert!(!watch.needs_reload(None, &[], None), "still no file");
        assert!(watch.needs_reload(fingerprint(10, old), &[], None));
        watch.record(fingerprint(10, old), None, now);
        assert_eq!(watch.observe(["a"], true), Verdict::Take);
        watch.installed();
        assert!(!watch.needs_reload(fingerprint(10, old), &[], None));
        assert!(watch.needs_reload(fingerprint(11, old), &[], None));
        assert!(watch.needs_reload(None, &[], None));
        assert!(watch.needs_reload(fingerprint(10, old), &[], fingerprint(1, old)));
    }

    #[test]
    fn a_version_is_taken_once_two_polls_agree() {
        let mut watch = Watch::default();
        watch.record(fingerprint(3, old()), None, SystemTime::now());
        assert_eq!(watch.observe(["one"], true), Verdict::Take);
        watch.installed();
        assert!(!watch.in_doubt());

        // Truncated: seen once, not taken.
        assert_eq!(
            poll(&mut watch, fingerprint(0, old()), ""),
            Some(Verdict::Settling)
        );
        assert!(watch.in_doubt());
        assert!(!watch.refused());
        // Half written: changed again, still not taken.
        assert_eq!(
            poll(&mut watch, fingerprint(2, old()), "tw"),
            Some(Verdict::Settling)
        );
        // Complete, then the same on the next poll: taken.
        assert_eq!(
            poll(&mut watch, fingerprint(3, old()), "two"),
            Some(Verdict::Settling)
        );
        assert_eq!(
            poll(&mut watch, fingerprint(3, old()), "two"),
            Some(Verdict::Take)
        );
        watch.installed();
        assert!(!watch.in_doubt());
        assert_eq!(poll(&mut watch, fingerprint(3, old()), "two"), None);
    }

    #[test]
    fn a_refused_version_is_reported_once_and_stays_in_doubt() {
        let mut watch = Watch::default();
        watch.record(fingerprint(3, old()), None, SystemTime::now());
        assert_eq!(watch.observe(["one"], true), Verdict::Take);
        watch.installed();
        assert_eq!(
            poll(&mut watch, fingerprint(0, old()), ""),
            Some(Verdict::Settling)
        );
        assert_eq!(
            poll(&mut watch, fingerprint(0, old()), ""),
            Some(Verdict::Take)
        );
        // Not installed: refused.
        assert!(watch.refused());
        assert!(watch.in_doubt());
        assert_eq!(poll(&mut watch, fingerprint(0, old()), ""), None);
        // The version in use comes back: nothing to install, no doubt left.
        assert_eq!(
            poll(&mut watch, fingerprint(3, old()), "one"),
            Some(Verdict::Unchanged)
        );
        assert!(!watch.in_doubt());
    }

    #[test]
    fn fresh_files_are_read_again() {
        let now = SystemTime::now();
        let mut watch = Watch::default();
        watch.record(fingerprint(10, now), None, now);
        assert_eq!(watch.observe(["a"], true), Verdict::Take);
        assert!(watch.needs_reload(fingerprint(10, now), &[], None));
        watch.record(fingerprint(10, now), None, now + RACY_WINDOW);
        assert_eq!(watch.observe(["a"], false), Verdict::Unchanged);
        assert!(!watch.needs_reload(fingerprint(10, now), &[], None));
    }

    #[test]
    fn key_files_are_watched_too() {
        let now = SystemTime::now();
        let old = now - Duration::from_secs(60);
        let mut watch = Watch::default();
        watch.record(fingerprint(10, old), None, now);
        watch.record_key_files(vec![("jwks.json".into(), fingerprint(5, old))], now);
        assert_eq!(
            watch.key_files().collect::<Vec<_>>(),
            [Path::new("jwks.json")]
        );
        assert!(!watch.needs_reload(fingerprint(10, old), &[fingerprint(5, old)], None));
        assert!(watch.needs_reload(fingerprint(10, old), &[fingerprint(6, old)], None));
        assert!(watch.needs_reload(fingerprint(10, old), &[None], None));
        // A fresh key file makes the whole set racy.
        watch.record(fingerprint(10, old), None, now);
        watch.record_key_files(vec![("jwks.json".into(), fingerprint(5, now))], now);
        assert!(watch.needs_reload(fingerprint(10, old), &[fingerprint(5, now)], None));
    }

    #[test]
    fn parts_are_not_just_concatenated() {
        let mut watch = Watch::default();
        assert_eq!(watch.observe(["b", "c"], true), Verdict::Take);
        assert_eq!(watch.observe(["bc"], true), Verdict::Take);
        assert_eq!(watch.observe(["bc"], true), Verdict::Unchanged);
    }
}
