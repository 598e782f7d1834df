//! `cloudpop_config_reloads_total`: how reloads of the users file went.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Counts reloads of the users file (the configuration cloudpop reloads while it runs):
/// `cloudpop_config_reloads_total{outcome="success"}` each time a changed file is installed,
/// `{outcome="failure"}` each time a changed file is refused (the one in use stays).
#[derive(Debug, Clone)]
pub struct ReloadMetrics {
    pub(super) success: IntCounter,
    pub(super) failure: IntCounter,
}

impl ReloadMetrics {
    /// Creates the family and registers it on `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "cloudpop_config_reloads_total",
                "Reloads of the users file after it changed, by outcome: success (installed), \
                 failure (refused; the version in use stays).",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        Ok(Self {
            success: reloads.with_label_values(&["success"]),
            failure: reloads.with_label_values(&["failure"]),
        })
    }
}
