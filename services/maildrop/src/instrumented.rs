//! Decorators that measure the seams: [`InstrumentedStore`] and [`InstrumentedLock`] wrap
//! any implementation, time each call into a histogram by operation and outcome, count
//! lock acquisitions and renewals by outcome, and open one `tracing` span per call (which
//! becomes a child span of the session's trace when traces are exported).
//!
//! They change nothing else: every call is passed through, and its result returned as is.

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tracing::Instrument;

use crate::ids::{MaildropKey, UniqueId};
use crate::lock::{Lease, LockError, MaildropLock};
use crate::store::{DeleteOutcome, MessageEntry, MessageReader, MessageStore, StoreError};

/// Latency buckets in seconds: 0.5 ms to ~16 s, doubling.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 16).unwrap_or_default()
}

/// The storage metric families, registered once per process and shared by every decorator.
///
/// - `cloudpop_store_request_duration_seconds{backend, operation, outcome}` (histogram)
/// - `cloudpop_lock_request_duration_seconds{backend, operation, outcome}` (histogram)
/// - `cloudpop_lock_acquisitions_total{outcome}`: `acquired`, `contended` (held by
///   another session: the lock contention), `error`
/// - `cloudpop_lock_renewals_total{outcome}`: `renewed`, `lost`, `error`
/// - `cloudpop_orphan_cleanups_total{kind, outcome}`: writes with an unknown outcome undone
///   in the background; `kind` is `lock_lease` or `message`, `outcome` is `scheduled`,
///   `removed` (the late write had landed), `absent` or `abandoned`
#[derive(Debug, Clone)]
pub struct StorageMetrics {
    store_duration: HistogramVec,
    lock_duration: HistogramVec,
    acquisitions: IntCounterVec,
    renewals: IntCounterVec,
    orphan_cleanups: IntCounterVec,
}

impl StorageMetrics {
    /// Creates the families and registers them on `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let store_duration = HistogramVec::new(
            HistogramOpts::new(
                "cloudpop_store_request_duration_seconds",
                "Time taken by message store calls, by backend (fs, s3), operation (put, list, \
                 open, delete, check) and outcome (ok, not_found, unavailable, corrupt, \
                 partial).",
            )
            .buckets(latency_buckets()),
            &["backend", "operation", "outcome"],
        )?;
        let lock_duration = HistogramVec::new(
            HistogramOpts::new(
                "cloudpop_lock_request_duration_seconds",
                "Time taken by maildrop lock calls, by backend (in_process, redis), operation \
                 (acquire, renew, check, release) and outcome (ok, error).",
            )
            .buckets(latency_buckets()),
            &["backend", "operation", "outcome"],
        )?;
        let acquisitions = IntCounterVec::new(
            Opts::new(
                "cloudpop_lock_acquisitions_total",
                "Maildrop lock acquisitions at login, by outcome: acquired, contended (held by \
                 another session), error (backend unavailable).",
            ),
            &["outcome"],
        )?;
        let renewals = IntCounterVec::new(
            Opts::new(
                "cloudpop_lock_renewals_total",
                "Maildrop lease renewals, by outcome: renewed, lost (expired or taken over), \
                 error (backend unavailable).",
            ),
            &["outcome"],
        )?;
        let orphan_cleanups = IntCounterVec::new(
            Opts::new(
                "cloudpop_orphan_cleanups_total",
                "Writes whose outcome was unknown (a lock acquire or a message put that timed \
                 out), undone in the background, by kind (lock_lease, message) and outcome: \
                 scheduled, removed (the late write had landed), absent (it never did), \
                 abandoned (the backend did not answer in time).",
            ),
            &["kind", "outcome"],
        )?;
        for kind in ["lock_lease", "message"] {
            for outcome in ["scheduled", "removed", "absent", "abandoned"] {
                orphan_cleanups.with_label_values(&[kind, outcome]);
            }
        }
        for outcome in ["acquired", "contended", "error"] {
            acquisitions.with_label_values(&[outcome]);
        }
        for outcome in ["renewed", "lost", "error"] {
            renewals.with_label_values(&[outcome]);
        }
        registry.register(Box::new(store_duration.clone()))?;
        registry.register(Box::new(lock_duration.clone()))?;
        registry.register(Box::new(acquisitions.clone()))?;
        registry.register(Box::new(renewals.clone()))?;
        registry.register(Box::new(orphan_cleanups.clone()))?;
        Ok(Self {
            store_duration,
            lock_duration,
            acquisitions,
            renewals,
            orphan_cleanups,
        })
    }

    /// The orphan cleanup counter, for the backends that undo writes in the background.
    pub(crate) fn orphan_cleanups(&self) -> IntCounterVec {
        self.orphan_cleanups.clone()
    }
}

fn seconds(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64()
}

/// Runs `call`, then records its duration under `labels` with the outcome `outcome_of`
/// gives its result.
async fn timed<T>(
    histogram: &HistogramVec,
    backend: &str,
    operation: &str,
    call: impl Future<Output = T>,
    outcome_of: impl FnOnce(&T) -> &'static str,
) -> T {
    let started = Instant::now();
    let result = call.await;
    histogram
        .with_label_values(&[backend, operation, outcome_of(&result)])
        .observe(seconds(started.elapsed()));
    result
}

fn store_outcome<T>(result: &Result<T, StoreError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(StoreError::NotFound) => "not_found",
        Err(StoreError::Unavailable(_)) => "unavailable",
        Err(StoreError::Corrupt(_)) => "corrupt",
    }
}

fn lock_outcome<T>(result: &Result<T, LockError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(_) => "error",
    }
}

/// A [`MessageStore`] that measures and traces every call of the store it wraps.
///
/// The `open` timing covers opening the message, not streaming it (the session's bytes
/// sent and command latency cover that).
#[derive(Debug)]
pub struct InstrumentedStore<S> {
    inner: S,
    backend: &'static str,
    metrics: StorageMetrics,
}

impl<S: MessageStore> InstrumentedStore<S> {
    /// Wraps `inner`; `backend` (`fs`, `s3`) labels its metrics and spans.
    pub fn new(inner: S, backend: &'static str, metrics: StorageMetrics) -> Self {
        Self {
            inner,
            backend,
            metrics,
        }
    }

    /// Times and traces one call; `name` is the span's name (`store.put`).
    async fn timed<T>(
        &self,
        (name, operation): (&'static str, &'static str),
        call: impl Future<Output = T>,
        outcome_of: impl FnOnce(&T) -> &'static str,
    ) -> T {
        let span = tracing::info_span!(
            "store",
            otel.name = name,
            otel.kind = "client",
            backend = self.backend,
            operation,
        );
        let histogram = &self.metrics.store_duration;
        timed(histogram, self.backend, operation, call, outcome_of)
            .instrument(span)
            .await
    }
}

#[async_trait]
impl<S: MessageStore> MessageStore for InstrumentedStore<S> {
    async fn put(&self, drop: &MaildropKey, message: Bytes) -> Result<UniqueId, StoreError> {
        self.timed(
            ("store.put", "put"),
            self.inner.put(drop, message),
            store_outcome,
        )
        .await
    }

    async fn list(&self, drop: &MaildropKey) -> Result<Vec<MessageEntry>, StoreError> {
        self.timed(("store.list", "list"), self.inner.list(drop), store_outcome)
            .await
    }

    async fn open(&self, drop: &MaildropKey, uid: &UniqueId) -> Result<MessageReader, StoreError> {
        self.timed(
            ("store.open", "open"),
            self.inner.open(drop, uid),
            store_outcome,
        )
        .await
    }

    async fn delete(&self, drop: &MaildropKey, uids: &[UniqueId]) -> DeleteOutcome {
        self.timed(
            ("store.delete", "delete"),
            self.inner.delete(drop, uids),
            |outcome| {
                if outcome.failed.is_empty() {
                    "ok"
                } else {
                    "partial"
                }
            },
        )
        .await
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.timed(("store.check", "check"), self.inner.check(), store_outcome)
            .await
    }
}

/// A [`MaildropLock`] that measures and traces every call of the lock it wraps.
#[derive(Debug)]
pub struct InstrumentedLock<L> {
    inner: L,
    backend: &'static str,
    metrics: StorageMetrics,
}

impl<L: MaildropLock> InstrumentedLock<L> {
    /// Wraps `inner`; `backend` (`in_process`, `redis`) labels its metrics and spans.
    pub fn new(inner: L, backend: &'static str, metrics: StorageMetrics) -> Self {
        Self {
            inner,
            backend,
            metrics,
        }
    }

    /// Times and traces one call; `name` is the span's name (`lock.acquire`).
    async fn timed<T>(
        &self,
        (name, operation): (&'static str, &'static str),
        call: impl Future<Output = Result<T, LockError>>,
    ) -> Result<T, LockError> {
        let span = tracing::info_span!(
            "lock",
            otel.name = name,
            otel.kind = "client",
            backend = self.backend,
            operation,
        );
        let histogram = &self.metrics.lock_duration;
        timed(histogram, self.backend, operation, call, lock_outcome)
            .instrument(span)
            .await
    }
}

#[async_trait]
impl<L: MaildropLock> MaildropLock for InstrumentedLock<L> {
    async fn acquire(&self, key: &MaildropKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let result = self
            .timed(("lock.acquire", "acquire"), self.inner.acquire(key, ttl))
            .await;
        let outcome = match &result {
            Ok(Some(_)) => "acquired",
            Ok(None) => "contended",
            Err(_) => "error",
        };
        self.metrics
            .acquisitions
            .with_label_values(&[outcome])
            .inc();
        result
    }

    async fn renew(&self, lease: &Lease) -> Result<bool, LockError> {
        let result = self
            .timed(("lock.renew", "renew"), self.inner.renew(lease))
            .await;
        let outcome = match &result {
            Ok(true) => "renewed",
            Ok(false) => "lost",
            Err(_) => "error",
        };
        self.metrics.renewals.with_label_values(&[outcome]).inc();
        result
    }

    async fn check(&self, lease: &Lease) -> Result<bool, LockError> {
        self.timed(("lock.check", "check"), self.inner.check(lease))
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        self.timed(("lock.release", "release"), self.inner.release(lease))
            .await
    }
}
