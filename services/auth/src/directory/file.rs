//! The directory file: its TOML shape, and reading and writing it safely.
//!
//! Secrets in the file (password hashes, APOP and CRAM-MD5 secrets) never appear in an error message:
//! syntax errors report a position and the parser's message but not the offending line, and
//! secret fields refuse a wrong type without echoing the value.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::DirectoryError;

/// The whole file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRepr {
    #[serde(default)]
    pub(super) tenants: Vec<TenantRepr>,
    #[serde(default)]
    pub(super) users: Vec<UserRepr>,
}

/// One `[[tenants]]` entry.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantRepr {
    pub(super) id: String,
    #[serde(default)]
    pub(super) domains: Vec<String>,
    #[serde(default)]
    pub(super) policy: PolicyRepr,
    /// Trust in bearer tokens; absent: bearer tokens are refused for this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) jwt: Option<JwtRepr>,
}

/// A `[tenants.policy]` table; every field is optional.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyRepr {
    #[serde(default)]
    pub(super) login_delay_secs: u64,
    #[serde(default)]
    pub(super) expire_days: ExpireRepr,
    /// False when absent: passwords and tokens need TLS unless the tenant opts in. Always
    /// written on save, so a saved file says what it means.
    #[serde(default)]
    pub(super) cleartext_allowed: bool,
}

/// A `[tenants.jwt]` table: which bearer tokens the tenant trusts. Validated (and its JWKS
/// read) when the directory is built, see `super::jwt`; kept as written, to be saved again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JwtRepr {
    /// Accepted `iss` values.
    pub(super) issuers: Vec<String>,
    /// Accepted `aud` values: a token's `aud` must contain one of them.
    pub(super) audience: Vec<String>,
    /// Accepted `alg` values: RS256/384/512, PS256/384/512, ES256/384, EdDSA.
    pub(super) algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_secs")]
    pub(super) leeway_secs: u64,
    /// The claim holding the login (`local@domain` of this tenant).
    #[serde(default = "default_user_claim")]
    pub(super) user_claim: String,
    /// A JWKS file; relative paths are relative to the directory file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) jwks_file: Option<String>,
    /// An inline JWKS (JSON text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) jwks: Option<String>,
}

fn default_leeway_secs() -> u64 {
    60
}

fn default_user_claim() -> String {
    "email".to_owned()
}

/// `expire_days`: `"never"` or a number of days (RFC 2449 EXPIRE).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct ExpireRepr(pub(super) Option<u32>);

const NEVER: &str = "never";

impl Serialize for ExpireRepr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => serializer.serialize_str(NEVER),
            Some(days) => serializer.serialize_u32(days),
        }
    }
}

impl<'de> Deserialize<'de> for ExpireRepr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let message = "expire_days must be \"never\" or a number of days (0 to 4294967295)";
        match toml::Value::deserialize(deserializer)? {
            toml::Value::String(s) if s == NEVER => Ok(Self(None)),
            toml::Value::Integer(days) => u32::try_from(days)
                .map(|d| Self(Some(d)))
                .map_err(|_| D::Error::custom(message)),
            _ => Err(D::Error::custom(message)),
        }
    }
}

/// One `[[users]]` entry.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserRepr {
    pub(super) login: String,
    pub(super) id: String,
    pub(super) password: SecretText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) apop_secret: Option<SecretText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cram_secret: Option<SecretText>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub(super) disabled: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

/// A string field holding a secret: `Debug` hides it, and a value of the wrong type is
/// refused without being repeated in the error.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct SecretText(pub(super) String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(..)")
    }
}

impl Serialize for SecretText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(deserializer) {
            Ok(toml::Value::String(s)) => Ok(Self(s)),
            _ => Err(D::Error::custom("secret fields must be strings")),
        }
    }
}

/// Written at the top of every saved file.
const HEADER: &str = "\
# cloudpop user directory. Maintained by `cloudpop admin`; hand edits are picked up on
# reload, but comments are not kept when the file is saved again. Contains password hashes
# and APOP and CRAM-MD5 secrets: keep it mode 0600.
";

/// Reads a JWKS file named by a tenant's `jwks_file`.
pub(super) fn read_jwks(tenant: &str, path: &Path) -> Result<String, DirectoryError> {
    let error = |source| DirectoryError::ReadJwks {
        tenant: tenant.to_owned(),
        path: path.to_owned(),
        source,
    };
    match read_regular(path) {
        Ok(Some(text)) => Ok(text),
        Ok(None) => Err(error(io::ErrorKind::NotFound.into())),
        Err(ReadError::Io(source)) => Err(error(source)),
        Err(ReadError::NotRegular(kind)) => Err(DirectoryError::NotRegularFile {
            path: path.to_owned(),
            kind,
        }),
    }
}

/// Reads the file; `Ok(None)` if it does not exist.
pub(super) fn read(path: &Path) -> Result<Option<String>, DirectoryError> {
    read_regular(path).map_err(|error| match error {
        ReadError::Io(source) => DirectoryError::Read {
            path: path.to_owned(),
            source,
        },
        ReadError::NotRegular(kind) => DirectoryError::NotRegularFile {
            path: path.to_owned(),
            kind,
        },
    })
}

/// Why [`read_regular`] failed.
pub(super) enum ReadError {
    Io(io::Error),
    /// What the path is instead of a regular file.
    NotRegular(&'static str),
}

/// Reads the regular file at `path` as UTF-8; `Ok(None)` if there is none.
///
/// Anything else (a FIFO, a socket, a device, a folder) is refused before it is read: opening
/// a FIFO for reading waits for a writer, which would hold up every later reload. The type is
/// checked before opening, the open does not block, and the type is checked again on what was
/// opened, since the path may have been replaced in between.
pub(super) fn read_regular(path: &Path) -> Result<Option<String>, ReadError> {
    match fs::metadata(path) {
        Ok(metadata) if !metadata.is_file() => {
            return Err(ReadError::NotRegular(kind(metadata.file_type())));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ReadError::Io(e)),
    }
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ReadError::Io(e)),
    };
    let metadata = file.metadata().map_err(ReadError::Io)?;
    if !metadata.is_file() {
        return Err(ReadError::NotRegular(kind(metadata.file_type())));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(ReadError::Io)?;
    Ok(Some(text))
}

/// What a file that is not a regular file is, for the error message.
fn kind(file_type: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "FIFO";
        }
        if file_type.is_socket() {
            return "socket";
        }
        if file_type.is_block_device() || file_type.is_char_device() {
            return "device";
        }
    }
    if file_type.is_dir() {
        "folder"
    } else {
        "special file"
    }
}

/// Parses the file's text.
pub(super) fn parse(path: &Path, text: &str) -> Result<FileRepr, DirectoryError> {
    toml::from_str(text).map_err(|e| {
        // Not `e.to_string()`: that quotes the offending line, which may hold a secret.
        let (line, column) = e.span().map_or((0, 0), |span| position(text, span.start));
        DirectoryError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message: e.message().to_owned(),
        }
    })
}

/// 1-based line and column of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Renders the file's text.
pub(super) fn render(repr: &FileRepr) -> Result<String, DirectoryError> {
    let body = toml::to_string(repr).map_err(|e| DirectoryError::Render(e.to_string()))?;
    Ok(format!("{HEADER}\n{body}"))
}

/// Replaces the file at `path` with `contents` atomically: a reader sees the old file or the
/// new one, never a mix, even across a crash. The file is mode 0600.
pub(super) fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), DirectoryError> {
    let write_error = |source| DirectoryError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let temp = temp_path(&dir, path).map_err(write_error)?;
    let result = write_and_rename(&temp, path, contents);
    if result.is_err() {
        // Best effort: the write already failed, and a stray temp file is harmless.
        let _ = fs::remove_file(&temp);
    }
    result.map_err(write_error)?;
    // The rename is durable only once the directory entry is on disk.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(write_error)
}

fn write_and_rename(temp: &Path, path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(temp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(temp, path)
}

/// A fresh name in the target's directory, so that the rename never crosses file systems.
fn temp_path(dir: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(io::Error::other)?;
    let name = path
        .file_name()
        .map_or_else(|| "directory".into(), |n| n.to_string_lossy());
    Ok(dir.join(format!(".{name}.{}.tmp", hex::encode(random))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        assert_eq!(position("abc", 0), (1, 1));
        assert_eq!(position("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn syntax_errors_do_not_quote_secrets() {
        let text =
            "[[users]]\nlogin = \"a@example.com\"\nid = \"u-1\"\npassword = \"$argon2id$leak\" x\n";
        let err = parse(Path::new("users.toml"), text).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("users.toml:4:"), "{message}");
        assert!(!message.contains("leak"), "{message}");

        let text = "[[users]]\nlogin = \"a@example.com\"\nid = \"u-1\"\npassword = 12345678\n";
        let message = parse(Path::new("users.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(!message.contains("12345678"), "{message}");
    }

    #[test]
    fn expire_days_is_never_or_a_number() {
        let parse_policy = |v: &str| {
            let text = format!("[[tenants]]\nid = \"t\"\n[tenants.policy]\nexpire_days = {v}\n");
            parse(Path::new("f"), &text).map(|f| f.tenants[0].policy.expire_days)
        };
        assert_eq!(parse_policy("\"never\"").unwrap(), ExpireRepr(None));
        assert_eq!(parse_policy("30").unwrap(), ExpireRepr(Some(30)));
        assert!(parse_policy("-1").is_err());
        assert!(parse_policy("\"sometimes\"").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let error = read(&path).unwrap_err();
        assert!(
            matches!(error, DirectoryError::NotRegularFile { kind: "FIFO", .. }),
            "{error}"
        );
        assert!(matches!(
            read_regular(dir.path()),
            Err(ReadError::NotRegular("folder"))
        ));
        assert!(read(&dir.path().join("missing.toml")).unwrap().is_none());
    }

    #[cfg(unix)]
    #[test]
    fn writes_atomically_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left behind"
        );
    }
}
