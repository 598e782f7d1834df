//! Keeping secrets out of what the configuration prints: `check-config` output and error
//! messages.

use toml::{Table, Value};

use super::Config;

/// What a secret is shown as.
pub const REDACTED: &str = "<redacted>";

/// Options whose whole value is a secret.
const SECRET_OPTIONS: [&str; 1] = ["store.s3.secret_access_key"];

/// Options holding URLs, which may carry a password (`redis://:password@host`).
const URL_OPTIONS: [&str; 5] = [
    "lock.redis.urls",
    "limits.redis.urls",
    "store.s3.endpoint",
    "auth.endpoint",
    "telemetry.otlp_endpoint",
];

/// Whether an error about `option` (dotted, as `serde_path_to_error` names it) must not show
/// the offending value.
pub fn is_secret_option(option: &str) -> bool {
    SECRET_OPTIONS
        .iter()
        .chain(&URL_OPTIONS)
        .any(|secret| option == *secret || option.starts_with(&format!("{secret}[")))
}

/// The configuration as TOML, with every secret replaced by [`REDACTED`].
pub fn redacted_toml(config: &Config) -> Result<String, toml::ser::Error> {
    let mut table = Table::try_from(config)?;
    for option in SECRET_OPTIONS {
        if let Some(Value::String(value)) = lookup(&mut table, option)
            && !value.is_empty()
        {
            *value = REDACTED.to_owned();
        }
    }
    for option in URL_OPTIONS {
        match lookup(&mut table, option) {
            Some(Value::String(url)) => *url = redact_url(url),
            Some(Value::Array(urls)) => {
                for url in urls {
                    if let Value::String(url) = url {
                        *url = redact_url(url);
                    }
                }
            }
            _ => {}
        }
    }
    toml::to_string_pretty(&table)
}

fn lookup<'t>(table: &'t mut Table, dotted: &str) -> Option<&'t mut Value> {
    let mut keys = dotted.split('.').peekable();
    let mut node = table;
    while let Some(key) = keys.next() {
        if keys.peek().is_none() {
            return node.get_mut(key);
        }
        node = node.get_mut(key)?.as_table_mut()?;
    }
    None
}

/// `scheme://user:password@host/…` → `scheme://user:<redacted>@host/…`. Userinfo without a
/// `:` may be a password alone (`redis://password@host` in some clients): all of it goes.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_owned(),
    };
    format!("{}{shown}{}", &url[..scheme_end], &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_only() {
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(
            redact_url("redis://:pw@h:6379/0"),
            "redis://:<redacted>@h:6379/0"
        );
        assert_eq!(redact_url("rediss://me:p@ss@h"), "rediss://me:<redacted>@h");
        assert_eq!(redact_url("redis://tok@h"), "redis://<redacted>@h");
        assert_eq!(redact_url("http://h/a@b"), "http://h/a@b");
    }

    #[test]
    fn secret_options_are_recognised() {
        assert!(is_secret_option("store.s3.secret_access_key"));
        assert!(is_secret_option("lock.redis.urls[0]"));
        assert!(!is_secret_option("store.s3.bucket"));
    }
}
