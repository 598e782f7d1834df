//! The Prometheus text exposition, and the metrics that describe the process itself.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{Gauge, IntGaugeVec, Opts, Registry, TextEncoder};

/// `cloudpop_build_info` and `cloudpop_start_time_seconds`.
#[derive(Debug, Clone)]
pub struct ProcessMetrics {
    _build_info: IntGaugeVec,
    _start_time: Gauge,
}

impl ProcessMetrics {
    /// Registers the process metrics on `registry`; `version` is the binary's version.
    pub fn new(registry: &Registry, version: &str) -> prometheus::Result<Self> {
        let build_info = IntGaugeVec::new(
            Opts::new(
                "cloudpop_build_info",
                "Always 1; the version label says which cloudpop is running.",
            ),
            &["version"],
        )?;
        build_info.with_label_values(&[version]).set(1);
        registry.register(Box::new(build_info.clone()))?;
        let start_time = Gauge::new(
            "cloudpop_start_time_seconds",
            "When the process started, in seconds since the Unix epoch.",
        )?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        start_time.set(now);
        registry.register(Box::new(start_time.clone()))?;
        Ok(Self {
            _build_info: build_info,
            _start_time: start_time,
        })
    }
}

/// The text exposition (format 0.0.4) of everything registered on `registry`.
pub fn encode(registry: &Registry) -> Result<String, prometheus::Error> {
    TextEncoder::new().encode_to_string(&registry.gather())
}
