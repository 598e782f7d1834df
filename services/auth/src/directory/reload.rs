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

/// What the reloader last read, and whether that can be trusted to detect the next change.
#[derive(Debug, Default)]
pub(super) struct Watch {
    last: Option<Fingerprint>,
    /// The JWKS files the last version named, with their fingerprints before they were read.
    key_files: Vec<(PathBuf, Option<Fingerprint>)>,
    /// The last version was so fresh that a second write could keep its fingerprint (the
    /// "racily clean" problem git solves the same way): read it again next time.
    racy: bool,
    /// Digest of the last contents read (the directory file and its JWKS files), so that
    /// reading a racy file again installs (and logs) nothing unless it really changed.
    contents: Option<String>,
}

impl Watch {
    /// The JWKS files to watch besides the directory file, in the order
    /// [`needs_reload`](Self::needs_reload) wants their fingerprints.
    pub(super) fn key_files(&self) -> impl Iterator<Item = &Path> {
        self.key_files.iter().map(|(path, _)| path.as_path())
    }

    /// Whether the files must be read again, given the directory file's fingerprint now and
    /// those of [`key_files`](Self::key_files) now.
    pub(super) fn needs_reload(
        &self,
        now: Option<Fingerprint>,
        key_files_now: &[Option<Fingerprint>],
    ) -> bool {
        let keys_changed = !self
            .key_files
            .iter()
            .map(|(_, f)| *f)
            .eq(key_files_now.iter().copied());
        self.racy || now != self.last || keys_changed
    }

    /// Remembers the version of the directory file about to be read.
    pub(super) fn record(&mut self, fingerprint: Option<Fingerprint>, now: SystemTime) {
        self.last = fingerprint;
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

    /// Remembers the contents just read (each part in order); returns whether they differ
    /// from the last ones.
    pub(super) fn record_contents<I, P>(&mut self, parts: I) -> bool
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
        let digest = hex::encode(md5.finalize());
        let changed = self.contents.as_ref() != Some(&digest);
        self.contents = Some(digest);
        changed
    }

    /// Whether the last version recorded was a file (and not its absence).
    pub(super) fn last_was_file(&self) -> bool {
        self.last.is_some()
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

    #[test]
    fn settled_files_are_read_once() {
        let now = SystemTime::now();
        let old = now - Duration::from_secs(60);
        let mut watch = Watch::default();
        assert!(!watch.needs_reload(None, &[]), "still no file");
        assert!(watch.needs_reload(fingerprint(10, old), &[]));
        watch.record(fingerprint(10, old), now);
        assert!(!watch.needs_reload(fingerprint(10, old), &[]));
        assert!(watch.needs_reload(fingerprint(11, old), &[]));
        assert!(watch.needs_reload(None, &[]));
    }

    #[test]
    fn fresh_files_are_read_again() {
        let now = SystemTime::now();
        let mut watch = Watch::default();
        watch.record(fingerprint(10, now), now);
        assert!(watch.needs_reload(fingerprint(10, now), &[]));
        watch.record(fingerprint(10, now), now + RACY_WINDOW);
        assert!(!watch.needs_reload(fingerprint(10, now), &[]));
    }

    #[test]
    fn key_files_are_watched_too() {
        let now = SystemTime::now();
        let old = now - Duration::from_secs(60);
        let mut watch = Watch::default();
        watch.record(fingerprint(10, old), now);
        watch.record_key_files(vec![("jwks.json".into(), fingerprint(5, old))], now);
        assert_eq!(
            watch.key_files().collect::<Vec<_>>(),
            [Path::new("jwks.json")]
        );
        assert!(!watch.needs_reload(fingerprint(10, old), &[fingerprint(5, old)]));
        assert!(watch.needs_reload(fingerprint(10, old), &[fingerprint(6, old)]));
        assert!(watch.needs_reload(fingerprint(10, old), &[None]));
        // A fresh key file makes the whole set racy.
        watch.record(fingerprint(10, old), now);
        watch.record_key_files(vec![("jwks.json".into(), fingerprint(5, now))], now);
        assert!(watch.needs_reload(fingerprint(10, old), &[fingerprint(5, now)]));
    }

    #[test]
    fn contents_read_again_are_recognised() {
        let mut watch = Watch::default();
        assert!(watch.record_contents(["a"]));
        assert!(!watch.record_contents(["a"]));
        assert!(watch.record_contents(["b"]));
        assert!(watch.record_contents(["b", "c"]));
        assert!(
            watch.record_contents(["bc"]),
            "parts are not just concatenated"
        );
    }
}
