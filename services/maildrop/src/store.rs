//! The message store seam.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncRead;

use crate::ids::{MaildropKey, UniqueId};

/// A message as listed: its unique id and its exact size in octets (the POP3 size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEntry {
    /// The message's unique id (UIDL).
    pub uid: UniqueId,
    /// Exact size in octets, as stored and as served.
    pub size: u64,
}

/// A message body being read from the store, in bounded chunks.
pub type MessageReader = Pin<Box<dyn AsyncRead + Send>>;

/// Errors of a message store. `Unavailable` is temporary (retry later); the others are not.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The message does not exist (never stored, or already deleted).
    #[error("message not found")]
    NotFound,
    /// The backend is down, slow or failing; the operation may succeed later.
    #[error("message store unavailable: {0}")]
    Unavailable(String),
    /// The backend holds data this store cannot interpret.
    #[error("message store corrupt: {0}")]
    Corrupt(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound,
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// Which of the requested deletions took effect.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeleteOutcome {
    /// Gone now (deleted by this call, or already absent).
    pub deleted: Vec<UniqueId>,
    /// Still present: the deletion failed and the message will be served again.
    pub failed: Vec<UniqueId>,
}

/// Immutable message blobs, one set per maildrop.
///
/// Contract (checked by `contract::message_store`):
/// - `put` returns only once the message is durable, under a fresh [`UniqueId`] that sorts
///   after every id the same store issued before; it never overwrites an existing message.
/// - `list` returns the maildrop in arrival (id) order with exact sizes; an unknown maildrop
///   is an empty list.
/// - `open` streams exactly the bytes that were put.
/// - `delete` is idempotent: an absent message counts as deleted.
/// - Maildrops are isolated: no operation on one key sees another key's messages.
#[async_trait]
pub trait MessageStore: Send + Sync + std::fmt::Debug {
    /// Stores `message` durably in `drop` and returns its new unique id.
    async fn put(&self, drop: &MaildropKey, message: Bytes) -> Result<UniqueId, StoreError>;

    /// Lists the maildrop in arrival order.
    async fn list(&self, drop: &MaildropKey) -> Result<Vec<MessageEntry>, StoreError>;

    /// Opens one message for streaming.
    async fn open(&self, drop: &MaildropKey, uid: &UniqueId) -> Result<MessageReader, StoreError>;

    /// Deletes the given messages, reporting which are gone and which remain.
    async fn delete(&self, drop: &MaildropKey, uids: &[UniqueId]) -> DeleteOutcome;

    /// Checks that the backend is reachable (for readiness probes).
    async fn check(&self) -> Result<(), StoreError>;
}

/// A shared store is a store (so decorators and callers can hold an `Arc`).
#[async_trait]
impl<T: MessageStore + ?Sized> MessageStore for std::sync::Arc<T> {
    async fn put(&self, drop: &MaildropKey, message: Bytes) -> Result<UniqueId, StoreError> {
        (**self).put(drop, message).await
    }

    async fn list(&self, drop: &MaildropKey) -> Result<Vec<MessageEntry>, StoreError> {
        (**self).list(drop).await
    }

    async fn open(&self, drop: &MaildropKey, uid: &UniqueId) -> Result<MessageReader, StoreError> {
        (**self).open(drop, uid).await
    }

    async fn delete(&self, drop: &MaildropKey, uids: &[UniqueId]) -> DeleteOutcome {
        (**self).delete(drop, uids).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        (**self).check().await
    }
}
