//! [`InstrumentedLimits`]: the abuse-protection counters (Redis or in-process), measured
//! and traced like the store and the lock. It lives here, where the limits backend is
//! chosen, because the limits crate knows nothing of metrics.

use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloudpop_limits::{Admission, ConnectionSlot, Limits, LimitsError, LoginThrottle, SessionSlot};
use prometheus::{HistogramOpts, HistogramVec, Registry};
use tracing::Instrument;

/// `cloudpop_limits_request_duration_seconds{backend, operation, outcome}`.
#[derive(Debug, Clone)]
pub struct LimitsMetrics {
    duration: HistogramVec,
}

impl LimitsMetrics {
    /// Creates the family and registers it on `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "cloudpop_limits_request_duration_seconds",
                "Time taken by abuse-protection calls (connection and session caps, login \
                 penalties, LOGIN-DELAY), by backend (in_process, redis), operation and \
                 outcome (ok, error; errors fail open).",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16)?),
            &["backend", "operation", "outcome"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { duration })
    }
}

/// A [`Limits`] that times and traces every call of the one it wraps.
#[derive(Debug)]
pub struct InstrumentedLimits<L> {
    inner: L,
    backend: &'static str,
    metrics: LimitsMetrics,
}

impl<L: Limits> InstrumentedLimits<L> {
    /// Wraps `inner`; `backend` (`in_process`, `redis`) labels its metrics and spans.
    pub fn new(inner: L, backend: &'static str, metrics: LimitsMetrics) -> Self {
        Self {
            inner,
            backend,
            metrics,
        }
    }

    async fn timed<T>(
        &self,
        (name, operation): (&'static str, &'static str),
        call: impl Future<Output = Result<T, LimitsError>>,
    ) -> Result<T, LimitsError> {
        let span = tracing::info_span!(
            "limits",
            otel.name = name,
            otel.kind = "client",
            backend = self.backend,
            operation,
        );
        let started = Instant::now();
        let result = call.instrument(span).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .duration
            .with_label_values(&[self.backend, operation, outcome])
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

#[async_trait]
impl<L: Limits> Limits for InstrumentedLimits<L> {
    async fn open_connection(
        &self,
        client: IpAddr,
        max: u32,
        ttl: Duration,
    ) -> Result<Option<ConnectionSlot>, LimitsError> {
        let call = self.inner.open_connection(client, max, ttl);
        self.timed(("limits.open_connection", "open_connection"), call)
            .await
    }

    async fn refresh_connection(
        &self,
        slot: &ConnectionSlot,
        ttl: Duration,
    ) -> Result<bool, LimitsError> {
        let call = self.inner.refresh_connection(slot, ttl);
        self.timed(("limits.refresh_connection", "refresh_connection"), call)
            .await
    }

    async fn close_connection(&self, slot: &ConnectionSlot) -> Result<(), LimitsError> {
        let call = self.inner.close_connection(slot);
        self.timed(("limits.close_connection", "close_connection"), call)
            .await
    }

    async fn open_session(
        &self,
        user_key: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<Option<SessionSlot>, LimitsError> {
        let call = self.inner.open_session(user_key, max, ttl);
        self.timed(("limits.open_session", "open_session"), call)
            .await
    }

    async fn refresh_session(
        &self,
        slot: &SessionSlot,
        ttl: Duration,
    ) -> Result<bool, LimitsError> {
        let call = self.inner.refresh_session(slot, ttl);
        self.timed(("limits.refresh_session", "refresh_session"), call)
            .await
    }

    async fn close_session(&self, slot: &SessionSlot) -> Result<(), LimitsError> {
        let call = self.inner.close_session(slot);
        self.timed(("limits.close_session", "close_session"), call)
            .await
    }

    async fn admit_login(
        &self,
        client: IpAddr,
        user_key: &str,
        throttle: &LoginThrottle,
    ) -> Result<Admission, LimitsError> {
        let call = self.inner.admit_login(client, user_key, throttle);
        self.timed(("limits.admit_login", "admit_login"), call)
            .await
    }

    async fn record_success(&self, client: IpAddr, user_key: &str) -> Result<(), LimitsError> {
        let call = self.inner.record_success(client, user_key);
        self.timed(("limits.record_success", "record_success"), call)
            .await
    }

    async fn check_login_delay(
        &self,
        user_key: &str,
        delay: Duration,
    ) -> Result<bool, LimitsError> {
        let call = self.inner.check_login_delay(user_key, delay);
        self.timed(("limits.check_login_delay", "check_login_delay"), call)
            .await
    }

    async fn ping(&self) -> Result<(), LimitsError> {
        self.inner.ping().await
    }
}
