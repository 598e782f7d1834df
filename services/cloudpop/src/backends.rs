//! Builds the seams' implementations from configuration: which authenticator, store and
//! lock a role uses is chosen here, and only here.

use std::sync::Arc;

use anyhow::Context;
use cloudpop_auth::directory::ReloadMetrics;
use cloudpop_auth::grpc::{GrpcAuthenticator, GrpcClientConfig, GrpcClientMetrics};
use cloudpop_auth::{Authenticator, DirectoryAuthenticator, Secret};
use cloudpop_limits::{InProcessLimits, Limits, RedisLimits, RedisLimitsConfig};
use cloudpop_maildrop::{
    FsStore, InProcessLock, InstrumentedLock, InstrumentedStore, MaildropLock, MessageStore,
    RedisLock, RedisLockConfig, S3Config, S3Store, StorageMetrics,
};
use cloudpop_telemetry::ReadinessCheck;
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use cloudpop_pop3::Pop3Metrics;
use cloudpop_pop3::tls::{SniCert, TlsSettings, TlsTerminator, ensure_dev_certificate};

use crate::config::{AuthBackend, Config, LockBackend, StoreBackend};
use crate::instrumented_limits::{InstrumentedLimits, LimitsMetrics};

/// How often a gRPC front-end asks the auth service whether APOP is offered.
const CAPABILITIES_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// The authenticator, with a readiness check for it. Its metrics (gRPC client latency, or
/// users file reloads) are registered on `registry`.
pub async fn authenticator(
    config: &Config,
    shutdown: &CancellationToken,
    registry: &Registry,
) -> anyhow::Result<(Arc<dyn Authenticator>, Option<ReadinessCheck>)> {
    match config.auth.backend {
        AuthBackend::File => {
            let directory = users_directory(config, shutdown, registry)?;
            Ok((Arc::new(directory), None))
        }
        AuthBackend::Grpc => {
            let client = GrpcAuthenticator::instrumented(
                &GrpcClientConfig {
                    endpoint: config.auth.endpoint.clone(),
                    timeout: config.auth.timeout,
                    max_attempts: config.auth.max_attempts,
                    apop_offered_default: config.auth.apop,
                },
                GrpcClientMetrics::new(registry)?,
            )
            .with_context(|| format!("auth.endpoint {:?}", config.auth.endpoint))?;
            client.spawn_capabilities_refresh(CAPABILITIES_REFRESH, shutdown.clone());
            let probe = client.clone();
            let check: ReadinessCheck = Arc::new(move || {
                let probe = probe.clone();
                Box::pin(async move {
                    probe
                        .refresh_capabilities()
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            });
            Ok((Arc::new(client), Some(check)))
        }
    }
}

/// The admin token of `auth.admin_token_file`, if one is configured: the file's contents
/// without surrounding whitespace, which must not be empty.
pub fn admin_token(config: &Config) -> anyhow::Result<Option<Secret>> {
    let Some(path) = &config.auth.admin_token_file else {
        return Ok(None);
    };
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read auth.admin_token_file {}", path.display()))?;
    let token = text.trim_ascii();
    anyhow::ensure!(
        !token.is_empty(),
        "auth.admin_token_file {} is empty",
        path.display()
    );
    Ok(Some(Secret::new(token)))
}

/// The users file as a live directory, reloaded when it changes (reloads counted in
/// `cloudpop_config_reloads_total`).
pub fn users_directory(
    config: &Config,
    shutdown: &CancellationToken,
    registry: &Registry,
) -> anyhow::Result<DirectoryAuthenticator> {
    let path = config.users_file();
    let directory = DirectoryAuthenticator::open_with(&path, &config.users.password_checks())
        .with_context(|| format!("cannot load users file {}", path.display()))?;
    directory.count_reloads(ReloadMetrics::new(registry)?);
    directory.limit_removals(config.users.removal_limit());
    directory.spawn_reloader(config.users.reload_interval, shutdown.clone());
    Ok(directory)
}

/// The message store, measured and traced, with its readiness check. The filesystem store
/// first loses the temporary files of interrupted deliveries.
pub async fn store(
    config: &Config,
    metrics: &StorageMetrics,
) -> anyhow::Result<(Arc<dyn MessageStore>, ReadinessCheck)> {
    Ok(match config.store.backend {
        StoreBackend::Fs => {
            let store = FsStore::new(config.store_path());
            // Housekeeping only: a folder that cannot be cleaned must not stop the service.
            match store
                .remove_stale_temp_files(config.store.stale_temp_file_age)
                .await
            {
                Ok(0) => {}
                Ok(removed) => {
                    tracing::info!(removed, "removed temporary files of interrupted deliveries");
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot remove the temporary files of interrupted deliveries"
                ),
            }
            instrumented_store(store, "fs", metrics)
        }
        StoreBackend::S3 => {
            let store = S3Store::new(s3_config(config)?);
            store.count_orphan_cleanups(metrics);
            instrumented_store(store, "s3", metrics)
        }
    })
}

/// Wraps `store` for the sessions; the readiness probe asks the bare store, so probes
/// neither start traces of their own nor skew the latency of real requests.
fn instrumented_store<S: MessageStore + 'static>(
    store: S,
    backend: &'static str,
    metrics: &StorageMetrics,
) -> (Arc<dyn MessageStore>, ReadinessCheck) {
    let store = Arc::new(store);
    let probe = store.clone();
    let check: ReadinessCheck = Arc::new(move || {
        let probe = probe.clone();
        Box::pin(async move { probe.check().await.map_err(|e| e.to_string()) })
    });
    let instrumented = InstrumentedStore::new(store, backend, metrics.clone());
    (Arc::new(instrumented), check)
}

fn s3_config(config: &Config) -> anyhow::Result<S3Config> {
    let s3 = &config.store.s3;
    let secret_access_key = match &s3.secret_access_key_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| {
                format!(
                    "cannot read store.s3.secret_access_key_file {}",
                    path.display()
                )
            })?
            .trim_end()
            .to_owned(),
        None => s3.secret_access_key.clone(),
    };
    Ok(S3Config {
        endpoint: (!s3.endpoint.is_empty()).then(|| s3.endpoint.clone()),
        region: s3.region.clone(),
        bucket: s3.bucket.clone(),
        prefix: s3.prefix.clone(),
        access_key_id: s3.access_key_id.clone(),
        secret_access_key,
        force_path_style: s3.force_path_style,
        connect_timeout: s3.connect_timeout,
        operation_timeout: s3.operation_timeout,
        max_attempts: s3.max_attempts,
        cleanup_window: s3.cleanup_window,
    })
}

/// The maildrop lock, measured and traced, with a readiness check when it has a backend to
/// reach.
pub async fn lock(
    config: &Config,
    metrics: &StorageMetrics,
) -> anyhow::Result<(Arc<dyn MaildropLock>, Option<ReadinessCheck>)> {
    match config.lock.backend {
        LockBackend::InProcess => {
            let lock = InProcessLock::default();
            let instrumented = InstrumentedLock::new(lock, "in_process", metrics.clone());
            Ok((Arc::new(instrumented), None))
        }
        LockBackend::Redis => {
            let redis = &config.lock.redis;
            let lock = Arc::new(
                RedisLock::connect(RedisLockConfig {
                    urls: redis.urls.clone(),
                    cluster: redis.cluster,
                    key_prefix: redis.key_prefix.clone(),
                    command_timeout: redis.command_timeout,
                })
                .await
                .context("lock.redis")?,
            );
            lock.count_orphan_cleanups(metrics);
            let probe = lock.clone();
            let check: ReadinessCheck = Arc::new(move || {
                let probe = probe.clone();
                Box::pin(async move { probe.ping().await.map_err(|e| e.to_string()) })
            });
            let instrumented = InstrumentedLock::new(lock, "redis", metrics.clone());
            Ok((Arc::new(instrumented), Some(check)))
        }
    }
}

/// The TLS certificates for STLS and POP3S, reloaded when their files change. Without a
/// configured certificate, role `all` makes a self-signed development one; other roles run
/// without TLS (and say so, since passwords then can't be used unless a tenant allows
/// cleartext).
pub fn tls(
    config: &Config,
    embedded: bool,
    shutdown: &CancellationToken,
    metrics: &Pop3Metrics,
) -> anyhow::Result<Option<TlsTerminator>> {
    let tls = &config.tls;
    let (cert, key) = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ if embedded && tls.dev_certificate => {
            let dir = config.data_dir.join("tls");
            let names = vec![config.pop3.hostname.clone()];
            let (cert, key) = ensure_dev_certificate(&dir, &names)
                .context("cannot create the development certificate")?;
            println!(
                "cloudpop: TLS uses the self-signed development certificate {}",
                cert.display()
            );
            (cert, key)
        }
        _ => {
            tracing::warn!(
                "no TLS certificate configured ([tls] cert and key): STLS and POP3S are off"
            );
            return Ok(None);
        }
    };
    let settings = TlsSettings {
        cert,
        key,
        sni: tls
            .sni
            .iter()
            .map(|s| SniCert {
                domains: s.domains.clone(),
                cert: s.cert.clone(),
                key: s.key.clone(),
            })
            .collect(),
        reload_interval: tls.reload_interval,
    };
    let terminator = TlsTerminator::load(&settings).context("[tls]")?;
    terminator.count_reloads(metrics);
    terminator.spawn_reloader(shutdown.clone());
    Ok(Some(terminator))
}

/// The abuse-protection counters, with a readiness check when they live in Redis. Failing
/// limits never refuse service (callers fail open), so the check only reports.
///
/// Measured and traced; the readiness check's `ping` is neither.
pub async fn limits(
    config: &Config,
    registry: &Registry,
) -> anyhow::Result<(Arc<dyn Limits>, Option<ReadinessCheck>)> {
    let metrics = LimitsMetrics::new(registry)?;
    match config.limits.backend {
        LockBackend::InProcess => {
            let limits = InstrumentedLimits::new(InProcessLimits::new(), "in_process", metrics);
            Ok((Arc::new(limits), None))
        }
        LockBackend::Redis => {
            let redis = &config.limits.redis;
            let limits = RedisLimits::connect(RedisLimitsConfig {
                urls: redis.urls.clone(),
                cluster: redis.cluster,
                key_prefix: redis.key_prefix.clone(),
                command_timeout: redis.command_timeout,
            })
            .await
            .context("limits.redis")?;
            let limits = Arc::new(InstrumentedLimits::new(limits, "redis", metrics));
            let probe = limits.clone();
            let check: ReadinessCheck = Arc::new(move || {
                let probe = probe.clone();
                Box::pin(async move { probe.ping().await.map_err(|e| e.to_string()) })
            });
            Ok((limits, Some(check)))
        }
    }
}
