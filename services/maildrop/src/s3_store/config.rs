//! How to reach the bucket: [`S3Config`] and the SDK client built from it.

use std::fmt;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

/// Where and how [`super::S3Store`] reaches its bucket.
///
/// Credentials are static and explicit: nothing is read from the environment, profile
/// files or instance metadata, so the same config always talks to the same place as the
/// same identity.
#[derive(Clone)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible server (`http://127.0.0.1:9000`); `None` means AWS
    /// S3 itself, resolved from the region.
    pub endpoint: Option<String>,
    /// Signing region; S3-compatible servers mostly accept `us-east-1`.
    pub region: String,
    /// The bucket every maildrop lives in. It must exist; the store never creates it.
    pub bucket: String,
    /// Key prefix in front of `{tenant}/{mailbox}/{uid}`. Leading and trailing `/` are
    /// ignored, so `""` puts keys at the bucket root and `"mail"` and `"mail/"` are the same.
    pub prefix: String,
    /// Access key id of the static credentials.
    pub access_key_id: String,
    /// Secret access key of the static credentials; redacted from `Debug`.
    pub secret_access_key: String,
    /// Path-style URLs (`endpoint/bucket/key`) instead of virtual-hosted ones
    /// (`bucket.endpoint/key`); most self-hosted servers need `true`.
    pub force_path_style: bool,
    /// Longest wait for a TCP (and TLS) connection to be established.
    pub connect_timeout: Duration,
    /// Longest time one operation may take, all retries and backoff included. Each attempt
    /// gets an equal share of it (see [`S3Config::attempt_timeout`]). For `open` it bounds
    /// the wait for the response headers; the body then streams at the reader's pace.
    pub operation_timeout: Duration,
    /// Attempts per operation, the first included (1 = no retry). Retries use the SDK's
    /// standard mode: exponential backoff with jitter, for transient errors only. 0 counts
    /// as 1.
    pub max_attempts: u32,
    /// How long after a failed `put` the store keeps trying to delete the object that
    /// request may still write (the server answers again only after this window at worst
    /// leaves a duplicate behind). See `orphan_cleanup`.
    pub cleanup_window: Duration,
}

impl Default for S3Config {
    /// Path-style `us-east-1` with no prefix, 2 s to connect, 10 s per operation, 3 attempts,
    /// 5 minutes to clean up after a failed put.
    /// Endpoint, bucket and credentials are empty and must be set.
    fn default() -> Self {
        Self {
            endpoint: None,
            region: "us-east-1".to_owned(),
            bucket: String::new(),
            prefix: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            force_path_style: true,
            connect_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(10),
            max_attempts: 3,
            cleanup_window: Duration::from_secs(5 * 60),
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("force_path_style", &self.force_path_style)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("cleanup_window", &self.cleanup_window)
            .finish()
    }
}

impl S3Config {
    /// Attempts per operation, at least 1.
    pub fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }

    /// Time allowed for one attempt: an equal share of the operation timeout, so that a
    /// hung attempt leaves time for a retry, but never less than the connect timeout.
    pub fn attempt_timeout(&self) -> Duration {
        (self.operation_timeout / self.attempts()).max(self.connect_timeout)
    }

    /// The key prefix without leading or trailing `/`; empty for keys at the bucket root.
    pub(super) fn normalised_prefix(&self) -> String {
        self.prefix.trim_matches('/').to_owned()
    }

    /// Builds the SDK client. No network I/O happens here; connections are made on demand.
    pub(super) fn client(&self) -> Client {
        let credentials = Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.clone(),
            None,
            None,
            "cloudpop-s3-config",
        );
        let retry = RetryConfig::standard().with_max_attempts(self.attempts());
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_timeout(self.operation_timeout)
            .operation_attempt_timeout(self.attempt_timeout())
            .build();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(self.force_path_style)
            .retry_config(retry)
            .timeout_config(timeouts);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        Client::from_conf(builder.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_secret() {
        let config = S3Config {
            access_key_id: "AKIDEXAMPLE".to_owned(),
            secret_access_key: "wJalrXUtnFEMI-very-secret".to_owned(),
            ..S3Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = S3Config::default();
        assert_eq!(config.region, "us-east-1");
        assert_eq!(config.prefix, "");
        assert!(config.force_path_style);
        assert_eq!(config.connect_timeout, Duration::from_secs(2));
        assert_eq!(config.operation_timeout, Duration::from_secs(10));
        assert_eq!(config.max_attempts, 3);
        assert_eq!(config.cleanup_window, Duration::from_secs(300));
    }

    #[test]
    fn attempts_share_the_operation_timeout() {
        let mut config = S3Config::default();
        assert_eq!(config.attempt_timeout(), Duration::from_secs(10) / 3);
        config.max_attempts = 0;
        assert_eq!(config.attempts(), 1);
        assert_eq!(config.attempt_timeout(), config.operation_timeout);
        config.max_attempts = 100;
        assert_eq!(config.attempt_timeout(), config.connect_timeout);
    }

    #[test]
    fn prefix_slashes_are_normalised() {
        for (given, expected) in [("", ""), ("/", ""), ("mail", "mail"), ("/mail/", "mail")] {
            let config = S3Config {
                prefix: given.to_owned(),
                ..S3Config::default()
            };
            assert_eq!(config.normalised_prefix(), expected, "{given:?}");
        }
    }
}
