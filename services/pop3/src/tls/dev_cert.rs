//! A self-signed certificate so that role `all` offers TLS with nothing configured.
//!
//! Clients will not trust it; it exists so that STLS and POP3S work out of the box on a
//! developer machine. Production installs configure real certificates.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use super::TlsError;

/// File name of the development certificate inside the directory given.
pub const DEV_CERT_FILE: &str = "dev-cert.pem";
/// File name of the development private key inside the directory given.
pub const DEV_KEY_FILE: &str = "dev-key.pem";

/// Names every development certificate covers, before the configured host names.
const BASE_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Returns `(certificate, key)` paths of a self-signed development certificate in `dir`,
/// creating `dir` and the files if they do not both exist yet.
///
/// A new certificate is ECDSA P-256 and covers `localhost`, `127.0.0.1`, `::1` and
/// `hostnames` (IP addresses become IP SANs). Existing files are reused as they are, so
/// clients that pinned the certificate keep working across restarts. Each file is written
/// to a temporary name and renamed into place; the key is mode 0600 from its creation.
pub fn ensure_dev_certificate(
    dir: &Path,
    hostnames: &[String],
) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join(DEV_CERT_FILE);
    let key_path = dir.join(DEV_KEY_FILE);
    if exists(&cert_path)? && exists(&key_path)? {
        return Ok((cert_path, key_path));
    }
    // One file without the other is useless (a certificate is worthless without its key),
    // so both are made anew.
    let (cert_pem, key_pem) = generate(hostnames)?;
    fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    // Key first: a crash between the two renames leaves no certificate, so the next start
    // generates a fresh pair instead of reusing a certificate with the wrong key.
    write_atomically(&key_path, key_pem.as_bytes(), 0o600)?;
    write_atomically(&cert_path, cert_pem.as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

fn exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A new self-signed certificate and its PKCS#8 key, both PEM.
fn generate(hostnames: &[String]) -> Result<(String, String), TlsError> {
    let mut names: Vec<String> = BASE_NAMES.iter().map(|name| (*name).to_owned()).collect();
    for name in hostnames {
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    let mut params = CertificateParams::new(names).map_err(TlsError::Generate)?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, "cloudpop development certificate");
    params.distinguished_name = subject;
    let key = KeyPair::generate().map_err(TlsError::Generate)?;
    let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `contents` to a temporary file beside `path` with `mode`, syncs it, and renames it
/// over `path`, so that readers see the old file or the whole new one.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let write_error = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    // A leftover from a crashed run of this same process id is ours to replace.
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(write_error(error)),
    }
    let result = write_new_file(&temp, contents, mode).and_then(|()| fs::rename(&temp, path));
    if let Err(error) = result {
        // Best effort: the error that matters is the one already in hand.
        let _ = fs::remove_file(&temp);
        return Err(write_error(error));
    }
    // Make the rename itself durable.
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(write_error)
}

fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    set_mode(&mut options, mode);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(unix)]
fn set_mode(options: &mut OpenOptions, mode: u32) {
    use std::os::unix::fs::OpenOptionsExt;
    // Created with the mode, so the key is never readable by others, not even briefly. The
    // umask can only remove bits.
    options.mode(mode);
}

#[cfg(not(unix))]
fn set_mode(_options: &mut OpenOptions, _mode: u32) {}
