//! The S3 message store: one object per message in an S3-compatible bucket.
//!
//! Objects are keyed `{prefix}/{tenant}/{mailbox}/{uid}`, so listing one maildrop's key
//! prefix gives the drop in arrival order with sizes, a page of up to 1,000 messages per
//! request. Bodies stream from the HTTP response; nothing buffers a whole message.
//!
//! What this module does not do: create the bucket, pick a backend (that is the wiring's
//! job), or keep an index beside S3: S3 is the only source of truth for what a maildrop
//! holds. It relies on no conditional writes (many S3-compatible servers ignore or race
//! them); a new object's key is unique because its uid carries 80 random bits.
//!
//! ## A put that fails may still land
//!
//! A `put` that fails with an unknown outcome may still write its object later:
//!
//! - A frozen server (a stopped process, a stalled node behind a load balancer) still
//!   accepts connections in the kernel and buffers whole requests. The SDK's attempt times
//!   out, it retries on a new connection (same key, same body), the operation times out,
//!   and `put` fails. When the server resumes, it reads the buffered requests and stores
//!   the object, once or once per attempt (same key, so still one object).
//! - A proxy between us and S3 may hold the request and forward it after we gave up.
//!
//! LMTP then answers `451` for that recipient, the MTA delivers again, and without cleanup
//! the maildrop would hold the message twice. So `put` guards the key before sending: on
//! any failure (and when the caller drops the call) the key is deleted in the background,
//! retried with backoff while S3 does not answer, for up to [`S3Config::cleanup_window`],
//! and deleted once more an operation timeout after the first answered delete, because
//! S3 may serve our DELETE before the late PUT it is meant to undo (see `orphan_cleanup`).
//!
//! Deleting that key can never lose mail: the uid is fresh for each `put` call (a retried
//! delivery gets a new one), it was never returned, so no `250` named it and no other
//! delivery wrote it. What remains possible: a POP3 client listing the maildrop between
//! the late PUT landing and its deletion sees the orphan for that moment (if it downloads
//! it, its user sees the message twice), and a server that stays unreachable for longer
//! than the window keeps the duplicate.

mod config;
mod errors;

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use bytes::Bytes;

pub use config::S3Config;

use crate::ids::{MaildropKey, UniqueId};
use crate::instrumented::StorageMetrics;
use crate::orphan_cleanup::{OrphanCleanup, OrphanCleanupCounts, Timing, Undo};
use crate::store::{DeleteOutcome, MessageEntry, MessageReader, MessageStore, StoreError};
use crate::uid_generator::UidGenerator;
use errors::unavailable;

/// Keys per ListObjectsV2 page: the S3 maximum, so a maildrop of n messages costs
/// ⌈n / 1000⌉ requests (at least one).
const LIST_PAGE_SIZE: i32 = 1000;

/// Keys per DeleteObjects request: the S3 maximum.
const DELETE_BATCH: usize = 1000;

/// Messages as objects in one bucket, under `{prefix}/{tenant}/{mailbox}/{uid}`.
///
/// - `put` issues a fresh [`UniqueId`] and returns once S3 acknowledged the PutObject.
/// - `list` pages through ListObjectsV2 on the maildrop's key prefix; keys whose last
///   segment is not a valid unique id are skipped.
/// - `open` streams the GetObject body; a missing key is [`StoreError::NotFound`].
/// - `delete` sends DeleteObjects in batches of up to 1,000 keys; an absent key counts as
///   deleted, as in S3 itself.
/// - `check` sends HeadBucket.
///
/// Every other failure is [`StoreError::Unavailable`] with a short message naming the
/// operation and the S3 error code or transport cause, never a credential. Retries,
/// backoff and timeouts are the SDK's, configured from [`S3Config`].
///
/// A failed `put` deletes its key in the background (see the module docs), so a PUT that
/// lands late leaves no message for the sender's retry to duplicate.
///
/// Cloning is cheap and clones share the connection pool, the request counts and the
/// background cleanup.
#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
    orphans: Arc<OrphanCleanup<Inner>>,
    cleanup_timing: Timing,
}

struct Inner {
    client: Client,
    bucket: String,
    // Normalised: no leading or trailing '/'; empty for keys at the bucket root.
    prefix: String,
    uids: UidGenerator,
    requests: RequestCounters,
}

impl fmt::Debug for Inner {
    // The client's own Debug is long and says nothing an operator needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// How many S3 API calls a store has made since it was built, by operation.
///
/// One call is one request as the store sees it: one PutObject, one page of
/// ListObjectsV2, one DeleteObjects batch. Calls that failed count too; retries the SDK
/// makes inside one call do not. Useful as a cost metric and to check paging in tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct S3RequestCounts {
    /// PutObject calls (one per `put`).
    pub put_object: u64,
    /// ListObjectsV2 pages (one per 1,000 keys listed, at least one per `list`).
    pub list_objects_v2: u64,
    /// GetObject calls (one per `open`).
    pub get_object: u64,
    /// DeleteObjects calls (one per batch of up to 1,000 keys).
    pub delete_objects: u64,
    /// HeadBucket calls (one per `check`).
    pub head_bucket: u64,
    /// HeadObject calls (one per cleanup attempt after a failed `put`).
    pub head_object: u64,
}

#[derive(Debug, Default)]
struct RequestCounters {
    put_object: AtomicU64,
    list_objects_v2: AtomicU64,
    get_object: AtomicU64,
    delete_objects: AtomicU64,
    head_bucket: AtomicU64,
    head_object: AtomicU64,
}

impl RequestCounters {
    fn snapshot(&self) -> S3RequestCounts {
        // Independent counters: Relaxed is enough, nothing is ordered by them.
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        S3RequestCounts {
            put_object: load(&self.put_object),
            list_objects_v2: load(&self.list_objects_v2),
            get_object: load(&self.get_object),
            delete_objects: load(&self.delete_objects),
            head_bucket: load(&self.head_bucket),
            head_object: load(&self.head_object),
        }
    }
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl S3Store {
    /// A store for `config`'s bucket. Builds the client only: no request is sent until the
    /// first operation; use [`MessageStore::check`] to find out early whether the bucket is
    /// reachable with these credentials.
    pub fn new(config: S3Config) -> S3Store {
        // A late PUT is one the server had already received; by one operation timeout
        // after S3 answered our first DELETE it has been stored or dropped.
        let cleanup_timing = Timing {
            window: config.cleanup_window,
            settle: config.operation_timeout,
        };
        let inner = Arc::new(Inner {
            client: config.client(),
            prefix: config.normalised_prefix(),
            bucket: config.bucket,
            uids: UidGenerator::new(),
            requests: RequestCounters::default(),
        });
        S3Store {
            orphans: Arc::new(OrphanCleanup::new(inner.clone(), "message")),
            inner,
            cleanup_timing,
        }
    }

    /// The S3 API calls made so far by this store and its clones.
    pub fn request_counts(&self) -> S3RequestCounts {
        self.inner.requests.snapshot()
    }

    /// Counts the background deletions after failed puts in `metrics`
    /// (`cloudpop_orphan_cleanups_total{kind="message"}`).
    pub fn count_orphan_cleanups(&self, metrics: &StorageMetrics) {
        self.orphans.count_in(metrics.orphan_cleanups());
    }

    /// How many failed puts were scheduled for cleanup so far, and how that ended.
    pub fn orphan_cleanups(&self) -> OrphanCleanupCounts {
        self.orphans.counts()
    }

    /// Puts under a fresh uid, guarded: unless S3 acknowledged the object, its key is
    /// deleted in the background.
    async fn put_guarded(
        &self,
        drop: &MaildropKey,
        message: Bytes,
    ) -> Result<UniqueId, StoreError> {
        let uid = self.inner.uids.next();
        let orphan = OrphanObject {
            drop: drop.clone(),
            uid: uid.clone(),
        };
        let guard = self.orphans.guard(orphan, self.cleanup_timing);
        self.inner.put(drop, &uid, message).await?;
        guard.disarm();
        Ok(uid)
    }
}

/// The object a failed `put` may still write.
pub(crate) struct OrphanObject {
    drop: MaildropKey,
    uid: UniqueId,
}

impl fmt::Display for OrphanObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.drop, self.uid)
    }
}

impl Undo for Inner {
    type Target = OrphanObject;

    /// Looks whether the object is there (for the count), then deletes it either way: a
    /// PUT landing between the two is still removed.
    async fn undo(&self, orphan: &OrphanObject) -> Result<bool, String> {
        let existed = self
            .exists(&orphan.drop, &orphan.uid)
            .await
            .map_err(|e| e.to_string())?;
        let failed = self
            .delete_batch(&orphan.drop, std::slice::from_ref(&orphan.uid))
            .await
            .map_err(|e| e.to_string())?;
        if failed.is_empty() {
            Ok(existed)
        } else {
            Err("S3 DeleteObjects: the key was not deleted".to_owned())
        }
    }
}

impl Inner {
    /// `{prefix}/{tenant}/{mailbox}/`, or `{tenant}/{mailbox}/` without a prefix. Built from
    /// validated ids only, so it has exactly the segments it appears to have.
    fn maildrop_prefix(&self, drop: &MaildropKey) -> String {
        let (tenant, mailbox) = (drop.tenant.as_str(), drop.mailbox.as_str());
        if self.prefix.is_empty() {
            format!("{tenant}/{mailbox}/")
        } else {
            format!("{}/{tenant}/{mailbox}/", self.prefix)
        }
    }

    fn key(&self, drop: &MaildropKey, uid: &UniqueId) -> String {
        // A UniqueId never holds '/', so the uid is always exactly the last segment.
        format!("{}{uid}", self.maildrop_prefix(drop))
    }

    async fn put(
        &self,
        drop: &MaildropKey,
        uid: &UniqueId,
        message: Bytes,
    ) -> Result<(), StoreError> {
        let content_length = i64::try_from(message.len())
            .map_err(|_| StoreError::Unavailable("message too large for S3".to_owned()))?;
        count(&self.requests.put_object);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(drop, uid))
            .content_length(content_length)
            .content_type("message/rfc822")
            .body(ByteStream::from(message))
            .send()
            .await
            .map_err(|e| unavailable("PutObject", &e))?;
        Ok(())
    }

    /// Whether the object exists (HeadObject).
    async fn exists(&self, drop: &MaildropKey, uid: &UniqueId) -> Result<bool, StoreError> {
        count(&self.requests.head_object);
        let result = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(drop, uid))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(unavailable("HeadObject", &e)),
        }
    }

    /// Lists the maildrop and says how many pages that took.
    async fn list(&self, drop: &MaildropKey) -> Result<(Vec<MessageEntry>, u64), StoreError> {
        let prefix = self.maildrop_prefix(drop);
        let mut entries = Vec::new();
        let mut pages = 0;
        let mut token: Option<String> = None;
        loop {
            pages += 1;
            count(&self.requests.list_objects_v2);
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .max_keys(LIST_PAGE_SIZE)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| unavailable("ListObjectsV2", &e))?;
            for object in page.contents() {
                let Some(uid) = object
                    .key()
                    .and_then(|key| key.strip_prefix(&prefix))
                    .and_then(|name| UniqueId::new(name).ok())
                else {
                    // Deeper keys ("…/x/y") and names that are no uid are not messages.
                    continue;
                };
                let size = object
                    .size()
                    .and_then(|size| u64::try_from(size).ok())
                    .ok_or_else(|| {
                        StoreError::Unavailable("S3 ListObjectsV2: entry without size".to_owned())
                    })?;
                entries.push(MessageEntry { uid, size });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            match page.next_continuation_token() {
                // A token that does not move on would page forever.
                Some(next) if token.as_deref() != Some(next) => token = Some(next.to_owned()),
                _ => {
                    return Err(StoreError::Unavailable(
                        "S3 ListObjectsV2: truncated page without a new continuation token"
                            .to_owned(),
                    ));
                }
            }
        }
        // S3 lists in key order already; sorting by uid keeps that promise for servers
        // that do not, and costs little next to the requests.
        entries.sort_unstable_by(|a, b| a.uid.cmp(&b.uid));
        Ok((entries, pages))
    }

    async fn open(&self, drop: &MaildropKey, uid: &UniqueId) -> Result<MessageReader, StoreError> {
        count(&self.requests.get_object);
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(drop, uid))
            .send()
            .await;
        match result {
            Ok(object) => Ok(Box::pin(object.body.into_async_read())),
            Err(e) => match e.as_service_error() {
                Some(service)
                    if service.is_no_such_key() || service.code() == Some("NoSuchKey") =>
                {
                    Err(StoreError::NotFound)
                }
                _ => Err(unavailable("GetObject", &e)),
            },
        }
    }

    /// Deletes one batch (at most [`DELETE_BATCH`] uids) and returns the keys S3 reported
    /// as not deleted; `Err` if the request as a whole failed.
    async fn delete_batch(
        &self,
        drop: &MaildropKey,
        batch: &[UniqueId],
    ) -> Result<HashSet<String>, StoreError> {
        // S3 rejects a request naming one key twice; a repeated uid needs deleting once.
        let keys: BTreeSet<String> = batch.iter().map(|uid| self.key(drop, uid)).collect();
        let objects = keys
            .into_iter()
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Unavailable(format!("S3 DeleteObjects: {e}")))?;
        // Quiet: the response lists only the keys that failed, not every deleted one.
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("S3 DeleteObjects: {e}")))?;
        count(&self.requests.delete_objects);
        let output = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| unavailable("DeleteObjects", &e))?;
        let mut failed = HashSet::new();
        for error in output.errors() {
            // An absent key is what the caller wants; S3 itself never reports it, but
            // some compatible servers do.
            if error.code() == Some("NoSuchKey") {
                continue;
            }
            tracing::warn!(
                code = error.code().unwrap_or("unknown"),
                "S3 DeleteObjects: a key was not deleted"
            );
            if let Some(key) = error.key() {
                failed.insert(key.to_owned());
            }
        }
        Ok(failed)
    }

    async fn delete(&self, drop: &MaildropKey, uids: &[UniqueId]) -> DeleteOutcome {
        let mut outcome = DeleteOutcome::default();
        for batch in uids.chunks(DELETE_BATCH) {
            match self.delete_batch(drop, batch).await {
                Ok(failed_keys) => {
                    for uid in batch {
                        if failed_keys.contains(&self.key(drop, uid)) {
                            outcome.failed.push(uid.clone());
                        } else {
                            outcome.deleted.push(uid.clone());
                        }
                    }
                }
                Err(e) => {
                    // Nothing is known about this batch: report it all as still present,
                    // so the messages are served again rather than silently lost.
                    tracing::warn!(keys = batch.len(), error = %e, "S3 delete batch failed");
                    outcome.failed.extend_from_slice(batch);
                }
            }
        }
        outcome
    }

    async fn check(&self) -> Result<(), StoreError> {
        count(&self.requests.head_bucket);
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| unavailable("HeadBucket", &e))?;
        Ok(())
    }
}

/// One debug event per operation: its name, how many keys it touched, how many requests
/// it took and how long. Never a key's content, a body byte or a credential.
fn traced<T>(
    op: &'static str,
    keys: usize,
    requests: u64,
    started: Instant,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    let elapsed = started.elapsed();
    match &result {
        Ok(_) => tracing::debug!(op, keys, requests, ?elapsed, "s3 store operation"),
        Err(e) => {
            tracing::debug!(op, keys, requests, ?elapsed, error = %e, "s3 store operation failed")
        }
    }
    result
}

#[async_trait]
impl MessageStore for S3Store {
    async fn put(&self, drop: &MaildropKey, message: Bytes) -> Result<UniqueId, StoreError> {
        let started = Instant::now();
        traced("put", 1, 1, started, self.put_guarded(drop, message).await)
    }

    async fn list(&self, drop: &MaildropKey) -> Result<Vec<MessageEntry>, StoreError> {
        let started = Instant::now();
        let (result, keys, pages) = match self.inner.list(drop).await {
            Ok((entries, pages)) => {
                let keys = entries.len();
                (Ok(entries), keys, pages)
            }
            Err(e) => (Err(e), 0, 0),
        };
        traced("list", keys, pages, started, result)
    }

    async fn open(&self, drop: &MaildropKey, uid: &UniqueId) -> Result<MessageReader, StoreError> {
        let started = Instant::now();
        traced("open", 1, 1, started, self.inner.open(drop, uid).await)
    }

    async fn delete(&self, drop: &MaildropKey, uids: &[UniqueId]) -> DeleteOutcome {
        let started = Instant::now();
        let outcome = self.inner.delete(drop, uids).await;
        let batches = uids.len().div_ceil(DELETE_BATCH);
        tracing::debug!(
            op = "delete",
            keys = uids.len(),
            requests = batches,
            deleted = outcome.deleted.len(),
            failed = outcome.failed.len(),
            elapsed = ?started.elapsed(),
            "s3 store operation"
        );
        outcome
    }

    async fn check(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        traced("check", 0, 1, started, self.inner.check().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{MailboxId, TenantId};

    fn store(prefix: &str) -> S3Store {
        S3Store::new(S3Config {
            endpoint: Some("http://127.0.0.1:9".to_owned()),
            bucket: "b".to_owned(),
            prefix: prefix.to_owned(),
            ..S3Config::default()
        })
    }

    fn maildrop() -> MaildropKey {
        MaildropKey::new(
            TenantId::new("acme").unwrap(),
            MailboxId::new("alice").unwrap(),
        )
    }

    #[test]
    fn keys_are_prefix_tenant_mailbox_uid() {
        let uid = UniqueId::new("01abc").unwrap();
        for (prefix, expected) in [
            ("", "acme/alice/01abc"),
            ("/", "acme/alice/01abc"),
            ("mail", "mail/acme/alice/01abc"),
            ("mail/", "mail/acme/alice/01abc"),
            ("/a/b/", "a/b/acme/alice/01abc"),
        ] {
            assert_eq!(store(prefix).inner.key(&maildrop(), &uid), expected);
        }
    }

    #[test]
    fn building_a_store_sends_nothing() {
        // Port 9 (discard) is closed here; building must not connect anyway.
        let store = store("");
        assert_eq!(store.request_counts(), S3RequestCounts::default());
        assert!(!format!("{store:?}").contains("secret"));
    }
}
