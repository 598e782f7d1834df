//! The contract suite run against the in-process implementation.

use std::sync::Arc;

use cloudpop_limits::{InProcessLimits, Limits, contract};

#[tokio::test]
async fn in_process_limits_keep_the_contract() {
    // Callers hold limits as trait objects; the suite must accept those too.
    let limits: Arc<dyn Limits> = Arc::new(InProcessLimits::new());
    contract::limits(limits.as_ref(), "in-process").await;
}

#[tokio::test]
async fn scopes_sharing_one_instance_do_not_see_each_other() {
    // Two runs at once on one instance: any key shared between scopes would break a cap or
    // a penalty in one of them.
    let limits = InProcessLimits::new();
    tokio::join!(
        contract::limits(&limits, "shared-a"),
        contract::limits(&limits, "shared-b"),
    );
}
