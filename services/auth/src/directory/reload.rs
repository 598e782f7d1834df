//! Noticing that the directory file changed, cheaply: by its metadata, not its contents.

use std::io;
use std::path::Path;
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
}

/// What the reloader last read, and whether that can be trusted to detect the next change.
#[derive(Debug, Default)]
pub(super) struct Watch {
    last: Option<Fingerprint>,
    /// The last version was so fresh that a second write could keep its fingerprint (the
    /// "racily clean" problem git solves the same way): read it again next time.
    racy: bool,
    /// Digest of the last contents read, so that reading a racy file again installs (and
    /// logs) nothing unless it really changed.
    contents: Option<String>,
}

impl Watch {
    /// Whether the file must be read again, given its fingerprint now.
    pub(super) fn needs_reload(&self, now: Option<Fingerprint>) -> bool {
        self.racy || now != self.last
    }

    /// Remembers the version about to be read.
    pub(super) fn record(&mut self, fingerprint: Option<Fingerprint>, now: SystemTime) {
        self.last = fingerprint;
        self.racy = fingerprint.is_some_and(|f| match f.modified {
            // A modification time in the future is as untrustworthy as a recent one.
            Some(modified) => now
                .duration_since(modified)
                .map_or(true, |age| age < RACY_WINDOW),
            None => true,
        });
    }

    /// Remembers the contents just read; returns whether they differ from the last ones.
    pub(super) fn record_contents(&mut self, text: &str) -> bool {
        let digest = hex::encode(Md5::digest(text.as_bytes()));
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
        assert!(!watch.needs_reload(None), "still no file");
        assert!(watch.needs_reload(fingerprint(10, old)));
        watch.record(fingerprint(10, old), now);
        assert!(!watch.needs_reload(fingerprint(10, old)));
        assert!(watch.needs_reload(fingerprint(11, old)));
        assert!(watch.needs_reload(None));
    }

    #[test]
    fn fresh_files_are_read_again() {
        let now = SystemTime::now();
        let mut watch = Watch::default();
        watch.record(fingerprint(10, now), now);
        assert!(watch.needs_reload(fingerprint(10, now)));
        watch.record(fingerprint(10, now), now + RACY_WINDOW);
        assert!(!watch.needs_reload(fingerprint(10, now)));
    }

    #[test]
    fn contents_read_again_are_recognised() {
        let mut watch = Watch::default();
        assert!(watch.record_contents("a"));
        assert!(!watch.record_contents("a"));
        assert!(watch.record_contents("b"));
    }
}
