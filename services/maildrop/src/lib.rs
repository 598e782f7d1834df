//! Storage for maildrops: where messages live and who may serve a maildrop right now.
//!
//! Two seams, each a trait with a contract test suite in [`contract`] that every
//! implementation must pass:
//!
//! - [`MessageStore`]: immutable message blobs keyed by `{tenant}/{mailbox}/{uid}`.
//!   Implemented here by [`FsStore`] (files, fsync + hard link) and [`S3Store`].
//! - [`MaildropLock`]: a lease per maildrop with renewal and release, so that one maildrop is
//!   served by at most one session. Implemented here by [`InProcessLock`] and [`RedisLock`].
//!
//! [`InstrumentedStore`] and [`InstrumentedLock`] wrap either seam to measure it (Prometheus
//! histograms and counters in [`StorageMetrics`]) and trace it (one span per call).
//!
//! A write whose outcome is unknown (a lock `acquire` or a store `put` that timed out) is
//! undone in the background by the Redis lock and the S3 store, so that a late write leaves
//! no orphan behind (see `orphan_cleanup`).
//!
//! Keys are built only from the validated id types in [`ids`], never from client input.
//! This crate does not know about POP3 or LMTP.

pub mod contract;
mod fs_store;
pub mod ids;
mod in_process_lock;
mod instrumented;
mod lock;
mod orphan_cleanup;
mod redis_lock;
mod s3_store;
mod store;
mod uid_generator;

pub use fs_store::FsStore;
pub use ids::{IdError, MailboxId, MaildropKey, TenantId, UniqueId};
pub use in_process_lock::InProcessLock;
pub use instrumented::{InstrumentedLock, InstrumentedStore, StorageMetrics};
pub use lock::{Lease, LockError, MaildropLock};
pub use orphan_cleanup::OrphanCleanupCounts;
pub use redis_lock::{RedisLock, RedisLockConfig};
pub use s3_store::{S3Config, S3RequestCounts, S3Store};
pub use store::{DeleteOutcome, MessageEntry, MessageReader, MessageStore, StoreError};
pub use uid_generator::UidGenerator;
