//! Approvals of large removals: `<users file>.approved` names one version of the users file,
//! by the SHA-256 of its bytes, whose removals of users are deliberate.
//!
//! A running server refuses a version of the users file that removes more users than its
//! removal limit allows (see [`RemovalLimit`](super::RemovalLimit)), unless that exact
//! version is approved. An approval is bound to the bytes, so it is used once: the next
//! version needs its own. Its format is that of `sha256sum`, so `sha256sum users.toml >
//! users.toml.approved` approves a hand edit; `cloudpop admin` writes it for its own edits
//! that remove users (see [`FileEdit`](super::FileEdit)).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::DirectoryError;
use super::file::{self, ReadError};

/// An approval file larger than this is not one (a digest and a file name fit easily).
const MAX_APPROVAL_BYTES: usize = 4096;

/// The approval file of the users file at `users_file`: the same path with `.approved` added.
pub(super) fn path_for(users_file: &Path) -> PathBuf {
    let mut name = users_file.as_os_str().to_owned();
    name.push(".approved");
    PathBuf::from(name)
}

/// The SHA-256 of `text`, in lower-case hex.
fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Whether the approval file of `users_file` approves the version whose contents are `text`.
/// A missing, unreadable or malformed approval approves nothing.
pub(super) fn approves(users_file: &Path, text: &str) -> bool {
    let approval = match file::read_regular(&path_for(users_file)) {
        Ok(Some(approval)) if approval.len() <= MAX_APPROVAL_BYTES => approval,
        Ok(_) | Err(ReadError::Io(_) | ReadError::NotRegular(_)) => return false,
    };
    // `sha256sum` writes "<digest>  <name>"; only the digest counts.
    approval
        .split_whitespace()
        .next()
        .is_some_and(|named| named.eq_ignore_ascii_case(&digest(text)))
}

/// Writes the approval file of `users_file` for the version whose contents are `text`,
/// atomically and mode 0600.
pub(super) fn write(users_file: &Path, text: &str) -> Result<(), DirectoryError> {
    let name = users_file
        .file_name()
        .map_or_else(|| "users.toml".into(), |n| n.to_string_lossy());
    let line = format!("{}  {name}\n", digest(text));
    file::write_atomic(&path_for(users_file), line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_approval_names_one_version() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.toml");
        assert_eq!(path_for(&users), dir.path().join("users.toml.approved"));
        assert!(!approves(&users, "a"), "no approval file");
        write(&users, "a").unwrap();
        assert!(approves(&users, "a"));
        assert!(!approves(&users, "b"));
        let written = std::fs::read_to_string(path_for(&users)).unwrap();
        assert!(written.ends_with("  users.toml\n"), "{written}");
    }

    #[test]
    fn sha256sum_output_is_an_approval() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.toml");
        std::fs::write(&users, "# no users\n").unwrap();
        let output = std::process::Command::new("sha256sum")
            .arg("users.toml")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(output.status.success());
        std::fs::write(path_for(&users), &output.stdout).unwrap();
        assert!(approves(&users, "# no users\n"));
        std::fs::write(path_for(&users), "not a digest\n").unwrap();
        assert!(!approves(&users, "# no users\n"));
    }
}
