//! Where Redis is and how keys are named.

use std::fmt;
use std::time::Duration;

/// How to reach Redis, for the lock and the limits alike.
///
/// `Debug` redacts passwords inside the URLs (`redis://:<redacted>@host`), so the config can
/// be logged at start-up.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Redis URLs, `redis://[user][:password@]host:port[/db]` (TLS `rediss://` is not
    /// compiled in): one URL for a single node; with `cluster`, one or more seed nodes.
    pub urls: Vec<String>,
    /// Talk Redis Cluster (slot routing, `MOVED`/`ASK`) instead of a single node.
    pub cluster: bool,
    /// First part of every key, so that several installs can share one Redis; must not
    /// contain `{` or `}` (that would move the Cluster hash tag). Default `cloudpop`.
    pub key_prefix: String,
    /// Longest time one call may take, connecting included; a call that takes longer fails
    /// as unavailable. Default 2 s.
    pub command_timeout: Duration,
}

impl Default for RedisConfig {
    /// A single node on `redis://127.0.0.1:6379`, prefix `cloudpop`, 2 s per call.
    fn default() -> Self {
        Self {
            urls: vec!["redis://127.0.0.1:6379".to_owned()],
            cluster: false,
            key_prefix: "cloudpop".to_owned(),
            command_timeout: Duration::from_secs(2),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|url| redact_url(url)).collect();
        f.debug_struct("RedisConfig")
            .field("urls", &urls)
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

impl RedisConfig {
    /// Checks what can be checked without dialing; URLs are parsed by the client later.
    pub fn validate(&self) -> Result<(), String> {
        if self.urls.is_empty() {
            return Err("no Redis URL given".to_owned());
        }
        if !self.cluster && self.urls.len() > 1 {
            return Err(format!(
                "{} Redis URLs given for a single node; set cluster for Cluster seed nodes",
                self.urls.len()
            ));
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return Err(format!(
                "key prefix {:?} must be non-empty and free of '{{' and '}}'",
                self.key_prefix
            ));
        }
        if self.command_timeout.is_zero() {
            return Err("command timeout must be above zero".to_owned());
        }
        Ok(())
    }
}

const REDACTED: &str = "<redacted>";

/// `url` with the password of its user info and any `pass`/`password` query value replaced.
///
/// Works on the raw text rather than a parsed URL, so that even a URL that does not parse
/// (say, a password with an unescaped `/`, `?` or `@`) never shows its secret.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    // The last '@' ends the user info even if the password holds an unescaped '@', '/' or
    // '?'; if a query value holds an '@' instead, this hides too much, never too little.
    let (user_info, host_and_rest) = match rest.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => (format!("{user}:{REDACTED}@"), host),
            None => (format!("{user_info}@"), host),
        },
        None => (String::new(), rest),
    };
    let host_and_rest = match host_and_rest.split_once('?') {
        Some((address, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_secret_param(name) => format!("{name}={REDACTED}"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{address}?{}", pairs.join("&"))
        }
        None => host_and_rest.to_owned(),
    };
    format!("{scheme}{user_info}{host_and_rest}")
}

fn is_secret_param(name: &str) -> bool {
    name.eq_ignore_ascii_case("pass") || name.eq_ignore_ascii_case("password")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_passwords_in_urls() {
        let config = RedisConfig {
            urls: vec![
                "redis://:s3cr3t@10.0.0.1:6379/0".to_owned(),
                "redis://app:s3cr3t@redis-0:6379".to_owned(),
                "redis://app:pa/ss@w0rd?s3cr3t@redis-1".to_owned(),
                "redis+unix:///run/redis.sock?db=1&pass=s3cr3t".to_owned(),
                "redis://plain-host:6379".to_owned(),
            ],
            cluster: true,
            ..RedisConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        for visible in [
            "redis://:<redacted>@10.0.0.1:6379/0",
            "redis://app:<redacted>@redis-0:6379",
            "redis://app:<redacted>@redis-1",
            "redis+unix:///run/redis.sock?db=1&pass=<redacted>",
            "redis://plain-host:6379",
        ] {
            assert!(shown.contains(visible), "{visible} missing from {shown}");
        }
    }

    #[test]
    fn validation_refuses_configs_that_cannot_work() {
        let good = RedisConfig::default();
        assert_eq!(good.validate(), Ok(()));
        let bad = [
            RedisConfig {
                urls: vec![],
                ..good.clone()
            },
            RedisConfig {
                urls: vec!["redis://a".to_owned(), "redis://b".to_owned()],
                ..good.clone()
            },
            RedisConfig {
                key_prefix: "x{y}".to_owned(),
                ..good.clone()
            },
            RedisConfig {
                key_prefix: String::new(),
                ..good.clone()
            },
            RedisConfig {
                command_timeout: Duration::ZERO,
                ..good.clone()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?} accepted");
        }
    }
}
