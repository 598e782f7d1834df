//! `cloudpop_config_reloads_total` and `cloudpop_users_file_refused`: how reloads of the
//! users file went.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Counts reloads of the users file (the configuration cloudpop reloads while it runs):
/// `cloudpop_config_reloads_total{outcome="success"}` each time a changed file is installed,
/// `{outcome="failure"}` each time a changed file is refused as unreadable or invalid,
/// `{outcome="removal_refused"}` each time one is refused for removing too many users (the
/// one in use stays). `cloudpop_users_file_refused` is 1 while the latest version of the
/// file was refused, so an older one is in use.
#[derive(Debug, Clone)]
pub struct ReloadMetrics {
    pub(super) success: IntCounter,
    pub(super) failure: IntCounter,
    pub(super) removal_refused: IntCounter,
    pub(super) refused: IntGauge,
}

impl ReloadMetrics {
    /// Creates the families and registers them on `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "cloudpop_config_reloads_total",
                "Reloads of the users file after it changed, by outcome: success (installed), \
                 failure (unreadable or invalid), removal_refused (removes more users than \
                 users.max_removed_fraction allows); the version in use stays when refused.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        let refused = IntGauge::new(
            "cloudpop_users_file_refused",
            "1 while the latest version of the users file was refused and an older one is in \
             use (unknown LMTP recipients then get 450), else 0.",
        )?;
        registry.register(Box::new(refused.clone()))?;
        Ok(Self {
            success: reloads.with_label_values(&["success"]),
            failure: reloads.with_label_values(&["failure"]),
            removal_refused: reloads.with_label_values(&["removal_refused"]),
            refused,
        })
    }
}
