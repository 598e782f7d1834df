//! The contract suites run against this crate's own implementations.

use std::sync::Arc;

use cloudpop_maildrop::{FsStore, InProcessLock, MaildropLock, MessageStore, contract};

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
