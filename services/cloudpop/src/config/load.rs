//! Reading the configuration: defaults, then the TOML file, then environment overrides.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{Config, paths, redact};

/// Prefix of environment overrides: `CLOUDPOP_POP3__LISTEN` sets `pop3.listen`.
const ENV_PREFIX: &str = "CLOUDPOP_";
/// Variables with the prefix that are not configuration keys.
const ENV_NOT_OPTIONS: [&str; 1] = ["CLOUDPOP_CONFIG"];
/// Top-level options that a variable without `__` may set. Other single-segment names are
/// not options: Kubernetes defines `CLOUDPOP_AUTH_PORT=tcp://…` and the like for every
/// Service named `cloudpop-…`, and those must not stop the process.
const ENV_TOP_LEVEL: [&str; 1] = ["data_dir"];

/// Why the configuration cannot be used. Each message names the file, variable or option.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration (from {path} and CLOUDPOP_* variables): {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Loads the configuration. `explicit` is `--config`; without it `./cloudpop.toml` is read
/// if it exists. `env` is the process environment (passed in so tests can choose it).
#[cfg(test)]
pub fn load(
    explicit: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    load_reporting(explicit, env, |_| {})
}

/// [`load`], telling `warn` about what is suspicious but not fatal: a `CLOUDPOP_` variable
/// that sets no option (a typo such as `CLOUDPOP_DATADIR`).
pub fn load_reporting(
    explicit: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    mut warn: impl FnMut(&str),
) -> Result<Config, ConfigError> {
    let default_file = Path::new("cloudpop.toml");
    let (path, mut table) = match explicit {
        Some(path) => (path.to_owned(), read_table(path)?),
        None if default_file.exists() => (default_file.to_owned(), read_table(default_file)?),
        None => (PathBuf::from("built-in defaults"), Table::new()),
    };
    if let Some(folder) = path.parent() {
        paths::resolve_relative(&mut table, folder);
    }
    for (name, value) in env {
        if !name.starts_with(ENV_PREFIX) || ENV_NOT_OPTIONS.contains(&name.as_str()) {
            continue;
        }
        if !apply_env(&mut table, &name, &value)? && !is_service_link(&name) {
            warn(&format!(
                "{name} sets no option and is ignored; options are CLOUDPOP_SECTION__KEY \
                 (two underscores), e.g. CLOUDPOP_POP3__LISTEN, or CLOUDPOP_DATA_DIR"
            ));
        }
    }
    // The path names the option even when its value came from the environment.
    let config: Config = serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
        let option = e.path().to_string();
        let message = if redact::is_secret_option(&option) {
            // Serde's messages quote the value ("invalid type: integer 1234").
            "invalid value (not shown: it may be a secret)".to_owned()
        } else {
            e.into_inner().message().to_owned()
        };
        ConfigError::Parse {
            path: path.clone(),
            message: format!("{option}: {message}"),
        }
    })?;
    config.validate().map_err(ConfigError::Invalid)?;
    Ok(config)
}

/// Whether `name` is one of the variables Kubernetes defines for a Service named
/// `cloudpop…` (`CLOUDPOP_POP3_SERVICE_HOST`, `CLOUDPOP_POP3_PORT_1110_TCP_ADDR`, …).
fn is_service_link(name: &str) -> bool {
    if name.contains("_SERVICE_HOST") || name.contains("_SERVICE_PORT") || name.ends_with("_PORT") {
        return true;
    }
    // `…_PORT_<number>_<protocol>[_PROTO|_PORT|_ADDR]`
    let Some((_, tail)) = name.rsplit_once("_PORT_") else {
        return false;
    };
    let mut parts = tail.split('_');
    let number = parts.next().is_some_and(|n| n.parse::<u16>().is_ok());
    let protocol = parts
        .next()
        .is_some_and(|p| matches!(p, "TCP" | "UDP" | "SCTP"));
    let suffix = match parts.next() {
        None => true,
        Some(s) => matches!(s, "PROTO" | "PORT" | "ADDR") && parts.next().is_none(),
    };
    number && protocol && suffix
}

fn read_table(path: &Path) -> Result<Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<Table>().map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: syntax_error(&text, &e),
    })
}

/// Where a TOML syntax error is, and which key's line it is on, without quoting the line:
/// it may hold a secret (`secret_access_key = "…`).
fn syntax_error(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else {
        return format!("TOML syntax error: {}", error.message());
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let key = line_text
        .split_once('=')
        .map(|(key, _)| key.trim())
        .filter(|key| {
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c))
        });
    let near = key.map_or(String::new(), |key| format!(" (in the value of {key})"));
    format!(
        "TOML syntax error at line {line}, column {column}{near}: {}",
        error.message().trim_end()
    )
}

/// Sets the option named by `CLOUDPOP_A__B` to `value`. A value that reads as a TOML value
/// (a number, `true`, `["a", "b"]`, a quoted string) is taken as one; anything else is a
/// plain string, so `127.0.0.1:1110` and `30s` need no quotes.
/// Returns whether the name is an option's (single-segment names other than the top-level
/// options are not, see [`ENV_TOP_LEVEL`]).
fn apply_env(table: &mut Table, name: &str, value: &str) -> Result<bool, ConfigError> {
    let path: Vec<String> = name[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    if path.len() == 1 && !ENV_TOP_LEVEL.contains(&path[0].as_str()) {
        return Ok(false);
    }
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Env {
            name: name.to_owned(),
            message: "empty key segment".into(),
        });
    }
    let typed = format!("v = {value}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(value.to_owned()));
    let (last, parents) = path.split_last().ok_or_else(|| ConfigError::Env {
        name: name.to_owned(),
        message: "no key".into(),
    })?;
    let mut node = table;
    for key in parents {
        let entry = node
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        node = match entry {
            Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Env {
                    name: name.to_owned(),
                    message: format!("{key} is not a section"),
                });
            }
        };
    }
    node.insert(last.clone(), typed);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let config = load(Some(Path::new("/dev/null")), env(&[])).unwrap();
        assert_eq!(config.pop3.listen.to_string(), "127.0.0.1:1110");
        assert_eq!(config.lmtp.listen.to_string(), "127.0.0.1:2424");
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9090");
    }

    #[test]
    fn file_then_env_overrides() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "data_dir = \"/srv/a\"\n[pop3]\nlisten = \"127.0.0.1:1\"\nidle_timeout_authorization = \"30s\"").unwrap();
        let config = load(
            Some(file.path()),
            env(&[
                ("CLOUDPOP_POP3__LISTEN", "127.0.0.1:2"),
                ("CLOUDPOP_POP3__MAX_AUTH_FAILURES", "5"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/a"));
        assert_eq!(config.pop3.listen.to_string(), "127.0.0.1:2");
        assert_eq!(config.pop3.max_auth_failures, 5);
        assert_eq!(config.pop3.idle_timeout_authorization.as_secs(), 30);
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let cases = [
            ("CLOUDPOP_POP3__LISTEN", "nowhere", "pop3"),
            ("CLOUDPOP_POP3__MAX_LINE_LENGTH", "100", "max_line_length"),
            (
                "CLOUDPOP_POP3__IDLE_TIMEOUT_TRANSACTION",
                "5m",
                "idle_timeout_transaction",
            ),
            (
                "CLOUDPOP_POP3__IDLE_TIMEOUT_TRANSACTION",
                "soon",
                "duration",
            ),
            ("CLOUDPOP_POP3__NO_SUCH_OPTION", "1", "no_such_option"),
            ("CLOUDPOP_LOG__FORMAT", "xml", "xml"),
        ];
        for (name, value, needle) in cases {
            let error = load(Some(Path::new("/dev/null")), env(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{name}={value}: {error}");
        }
    }

    #[test]
    fn the_s3_cleanup_window_is_read_and_checked() {
        let name = "CLOUDPOP_STORE__S3__CLEANUP_WINDOW";
        let config = load(Some(Path::new("/dev/null")), env(&[(name, "90s")])).unwrap();
        assert_eq!(config.store.s3.cleanup_window.as_secs(), 90);
        let error = load(Some(Path::new("/dev/null")), env(&[(name, "0s")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("store.s3.cleanup_window"), "{error}");
    }

    #[test]
    fn kubernetes_service_link_variables_are_not_options() {
        let c = load(
            Some(Path::new("/dev/null")),
            env(&[
                ("CLOUDPOP_AUTH_PORT", "tcp://10.0.0.1:50051"),
                ("CLOUDPOP_POP3_SERVICE_HOST", "10.0.0.2"),
                ("CLOUDPOP_DATA_DIR", "/srv/x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/x"));
    }

    #[test]
    fn env_values_may_be_lists() {
        let c = load(
            Some(Path::new("/dev/null")),
            env(&[(
                "CLOUDPOP_LOCK__REDIS__URLS",
                r#"["redis://a:1", "redis://b:2"]"#,
            )]),
        )
        .unwrap();
        assert_eq!(c.lock.redis.urls, ["redis://a:1", "redis://b:2"]);
    }

    #[test]
    fn s3_needs_a_bucket() {
        let error = load(
            Some(Path::new("/dev/null")),
            env(&[("CLOUDPOP_STORE__BACKEND", "s3")]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("store.s3.bucket"), "{error}");
    }

    #[test]
    fn expire_is_never_or_days() {
        let c = load(
            Some(Path::new("/dev/null")),
            env(&[("CLOUDPOP_POP3__EXPIRE", "30")]),
        )
        .unwrap();
        assert_eq!(c.pop3.expire, super::super::ExpireSetting::Days(30));
        let c = load(
            Some(Path::new("/dev/null")),
            env(&[("CLOUDPOP_POP3__EXPIRE", "never")]),
        )
        .unwrap();
        assert!(matches!(
            c.pop3.expire,
            super::super::ExpireSetting::Never(_)
        ));
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_is_set() {
        let c = load(Some(Path::new("/dev/null")), env(&[])).unwrap();
        assert!(c.telemetry.trace_settings("pop3").is_none());
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[telemetry]\notlp_endpoint = \"http://collector:4317\"\nsampling_ratio = 0.25\n\
             [telemetry.resource_attributes]\n\"deployment.environment\" = \"prod\""
        )
        .unwrap();
        let c = load(Some(file.path()), env(&[])).unwrap();
        let traces = c.telemetry.trace_settings("pop3").unwrap();
        assert_eq!(traces.endpoint, "http://collector:4317");
        assert_eq!(traces.sampling_ratio, 0.25);
        assert_eq!(traces.service_name, "cloudpop-pop3");
        assert_eq!(
            traces.resource_attributes,
            [("deployment.environment".to_owned(), "prod".to_owned())]
        );
        let c = load(
            Some(file.path()),
            env(&[("CLOUDPOP_TELEMETRY__SERVICE_NAME", "pop-eu")]),
        )
        .unwrap();
        assert_eq!(
            c.telemetry.trace_settings("pop3").unwrap().service_name,
            "pop-eu"
        );
    }

    #[test]
    fn telemetry_and_shutdown_values_are_checked() {
        let cases = [
            (
                "CLOUDPOP_TELEMETRY__SAMPLING_RATIO",
                "1.5",
                "sampling_ratio",
            ),
            (
                "CLOUDPOP_TELEMETRY__OTLP_ENDPOINT",
                "collector:4317",
                "otlp_endpoint",
            ),
            (
                "CLOUDPOP_TELEMETRY__EXPORT_TIMEOUT",
                "1ms",
                "export_timeout",
            ),
            ("CLOUDPOP_TELEMETRY__MAX_QUEUE_SIZE", "0", "max_queue_size"),
            ("CLOUDPOP_SHUTDOWN__READY_DELAY", "30s", "ready_delay"),
            ("CLOUDPOP_SHUTDOWN__GRACE_PERIOD", "0s", "grace_period"),
        ];
        for (name, value, needle) in cases {
            let error = load(Some(Path::new("/dev/null")), env(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{name}={value}: {error}");
        }
        let c = load(
            Some(Path::new("/dev/null")),
            env(&[("CLOUDPOP_SHUTDOWN__READY_DELAY", "5s")]),
        )
        .unwrap();
        assert_eq!(c.shutdown.ready_delay.as_secs(), 5);
    }

    #[test]
    fn variables_that_set_no_option_are_warned_about_unless_service_links() {
        let mut warnings = Vec::new();
        load_reporting(
            Some(Path::new("/dev/null")),
            env(&[
                ("CLOUDPOP_DATADIR", "/srv/x"),
                ("CLOUDPOP_POP3_LISTEN", "0.0.0.0:1"),
                ("CLOUDPOP_POP3_SERVICE_HOST", "10.0.0.2"),
                ("CLOUDPOP_POP3_SERVICE_PORT_POP3S", "995"),
                ("CLOUDPOP_AUTH_PORT", "tcp://10.0.0.1:50051"),
                ("CLOUDPOP_AUTH_PORT_50051_TCP_ADDR", "10.0.0.1"),
                ("CLOUDPOP_DATA_DIR", "/srv/y"),
            ]),
            |w| warnings.push(w.to_owned()),
        )
        .unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("CLOUDPOP_DATADIR"), "{warnings:?}");
        assert!(warnings[1].contains("CLOUDPOP_POP3_LISTEN"), "{warnings:?}");
    }

    #[test]
    fn syntax_errors_name_the_place_not_the_text() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[store.s3]\nbucket = \"b\"\nsecret_access_key = \"hunter2-secret"
        )
        .unwrap();
        let error = load(Some(file.path()), env(&[])).unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
        assert!(error.contains("line 3"), "{error}");
        assert!(error.contains("secret_access_key"), "{error}");
    }

    #[test]
    fn type_errors_of_secrets_do_not_show_the_value() {
        let error = load(
            Some(Path::new("/dev/null")),
            env(&[("CLOUDPOP_STORE__S3__SECRET_ACCESS_KEY", "123456789")]),
        )
        .unwrap_err()
        .to_string();
        assert!(!error.contains("123456789"), "{error}");
        assert!(error.contains("store.s3.secret_access_key"), "{error}");
    }
}
