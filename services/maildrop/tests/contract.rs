//! The contract suites run against this crate's own implementations.

use std::sync::Arc;

use cloudpop_maildrop::{
    FsStore, InProcessLock, InstrumentedLock, InstrumentedStore, MaildropLock, MessageStore,
    StorageMetrics, contract,
};

#[tokio::test(flavor = "multi_thread")]
async fn fs_store_keeps_the_message_store_contract() {
    let root = tempfile::tempdir().unwrap();
    contract::message_store(&FsStore::new(root.path()), "fs").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fs_store_keeps_the_contract_behind_dyn() {
    // Callers hold stores as trait objects; the suite must accept those too.
    let root = tempfile::tempdir().unwrap();
    let store: Arc<dyn MessageStore> = Arc::new(FsStore::new(root.path()));
    contract::message_store(store.as_ref(), "fs-dyn").await;
}

#[tokio::test]
async fn in_process_lock_keeps_the_maildrop_lock_contract() {
    let lock: Arc<dyn MaildropLock> = Arc::new(InProcessLock::new());
    contract::maildrop_lock(lock.as_ref(), "in-process").await;
}

/// Finds the value of the sample `name{labels}` in the text exposition of `registry`.
#[allow(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn sample(registry: &prometheus::Registry, name: &str, labels: &str) -> f64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    let wanted = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&wanted))
        .map_or(0.0, |value| value.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn instrumented_store_keeps_the_contract_and_counts_calls() {
    let root = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let metrics = StorageMetrics::new(&registry).unwrap();
    let store = InstrumentedStore::new(FsStore::new(root.path()), "fs", metrics);
    contract::message_store(&store, "instrumented").await;
    let puts = sample(
        &registry,
        "cloudpop_store_request_duration_seconds_count",
        "backend=\"fs\",operation=\"put\",outcome=\"ok\"",
    );
    assert!(puts >= 10.0, "puts counted: {puts}");
    let not_found = sample(
        &registry,
        "cloudpop_store_request_duration_seconds_count",
        "backend=\"fs\",operation=\"open\",outcome=\"not_found\"",
    );
    assert!(
        not_found >= 1.0,
        "a missing message is not_found: {not_found}"
    );
}

#[tokio::test]
async fn instrumented_lock_keeps_the_contract_and_counts_contention() {
    let registry = prometheus::Registry::new();
    let metrics = StorageMetrics::new(&registry).unwrap();
    let lock = InstrumentedLock::new(Arc::new(InProcessLock::new()), "in_process", metrics);
    contract::maildrop_lock(&lock, "instrumented").await;
    let acquired = sample(
        &registry,
        "cloudpop_lock_acquisitions_total",
        "outcome=\"acquired\"",
    );
    let contended = sample(
        &registry,
        "cloudpop_lock_acquisitions_total",
        "outcome=\"contended\"",
    );
    assert!(
        acquired >= 3.0 && contended >= 1.0,
        "{acquired} {contended}"
    );
    let lost = sample(
        &registry,
        "cloudpop_lock_renewals_total",
        "outcome=\"lost\"",
    );
    assert!(lost >= 1.0, "an expired lease's renewal is lost: {lost}");
}
