//! Contract test suites for the two seams. Every implementation, in this crate or another,
//! runs the same functions from its tests; a check that fails panics with what it expected.
//!
//! Each suite takes a `scope`: a tenant-id prefix unique to the run (1–60 characters of
//! `[a-z0-9-]`, e.g. `s3-4f2a`), so that runs sharing one backend (an S3 bucket, a Redis)
//! never see each other's data. Suites leave their data behind; use a fresh scope per run.
//!
//! These are test helpers, compiled into the library so that other crates' tests can call
//! them; nothing in production calls them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::ids::{MailboxId, MaildropKey, TenantId, UniqueId};
use crate::lock::{Lease, MaildropLock};
use crate::store::{MessageEntry, MessageStore, StoreError};

/// Checks every promise of [`MessageStore`] against `store`, panicking on the first broken one.
pub async fn message_store<S: MessageStore + ?Sized>(store: &S, scope: &str) {
    store
        .check()
        .await
        .expect("check() of a working store must be Ok");
    round_trip(store, &key(scope, "a", "round-trip")).await;
    unknown_maildrop_is_empty(store, &key(scope, "a", "never-delivered")).await;
    isolation(store, scope).await;
    deletion(store, scope).await;
    many_in_order(store, &key(scope, "a", "many")).await;
    concurrent_puts(store, &key(scope, "a", "concurrent")).await;
}

/// Checks every promise of [`MaildropLock`] against `lock`, panicking on the first broken one.
///
/// Uses real time (short ttls and sleeps, about four seconds in all), because a remote
/// backend's clock cannot be paused.
pub async fn maildrop_lock<L: MaildropLock + ?Sized>(lock: &L, scope: &str) {
    exclusive_per_key(lock, scope).await;
    release_and_reacquire(lock, &key(scope, "a", "release")).await;
    renew_extends(lock, &key(scope, "a", "renew")).await;
    expiry_and_takeover(lock, &key(scope, "a", "expiry")).await;
}

fn key(scope: &str, tenant: &str, mailbox: &str) -> MaildropKey {
    let tenant = TenantId::new(format!("{scope}-{tenant}"))
        .unwrap_or_else(|e| panic!("scope {scope:?} is not a usable tenant id prefix: {e}"));
    MaildropKey::new(tenant, MailboxId::new(mailbox).unwrap())
}

// ---- message store ----

/// Bodies that trip up naive stores: nothing at all, no final CRLF, every byte value.
fn tricky_messages() -> Vec<(&'static str, Bytes)> {
    vec![
        (
            "plain",
            Bytes::from_static(b"Subject: hi\r\n\r\nHello.\r\n"),
        ),
        ("empty", Bytes::new()),
        (
            "no final CRLF",
            Bytes::from_static(b"Subject: x\r\n\r\nno end"),
        ),
        (
            "binary 0..=255",
            Bytes::from((0..=255u8).collect::<Vec<_>>()),
        ),
        (
            "dot lines",
            Bytes::from_static(b"Subject: .\r\n\r\n.\r\n..\r\n.x\r\n"),
        ),
        ("1 MiB", one_mib()),
    ]
}

fn one_mib() -> Bytes {
    // A pattern that does not repeat on any power-of-two boundary, so a misplaced chunk shows.
    (0..1024 * 1024u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into()
}

async fn put(store: &(impl MessageStore + ?Sized), drop: &MaildropKey, body: Bytes) -> UniqueId {
    store
        .put(drop, body)
        .await
        .unwrap_or_else(|e| panic!("put into {drop} failed: {e}"))
}

async fn list(store: &(impl MessageStore + ?Sized), drop: &MaildropKey) -> Vec<MessageEntry> {
    store
        .list(drop)
        .await
        .unwrap_or_else(|e| panic!("list of {drop} failed: {e}"))
}

fn uids(entries: &[MessageEntry]) -> Vec<UniqueId> {
    entries.iter().map(|e| e.uid.clone()).collect()
}

/// Reads the whole message in 8 KiB reads, as a POP3 session streams it.
async fn read(store: &(impl MessageStore + ?Sized), drop: &MaildropKey, uid: &UniqueId) -> Vec<u8> {
    let mut reader = store
        .open(drop, uid)
        .await
        .unwrap_or_else(|e| panic!("open of {drop}/{uid} failed: {e}"));
    let mut body = Vec::new();
    let mut chunk = vec![0u8; 8 * 1024];
    loop {
        let n = reader
            .read(&mut chunk)
            .await
            .unwrap_or_else(|e| panic!("read of {drop}/{uid} failed: {e}"));
        if n == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

fn assert_strictly_increasing(ids: &[UniqueId], what: &str) {
    for pair in ids.windows(2) {
        assert!(
            pair[0] < pair[1],
            "{what}: id {} does not sort after {}",
            pair[1],
            pair[0]
        );
    }
}

async fn round_trip(store: &(impl MessageStore + ?Sized), drop: &MaildropKey) {
    let messages = tricky_messages();
    let mut expected = Vec::new();
    for (_, body) in &messages {
        let uid = put(store, drop, body.clone()).await;
        expected.push(MessageEntry {
            uid,
            size: body.len() as u64,
        });
    }
    assert_strictly_increasing(&uids(&expected), "ids in put order");
    assert_eq!(
        list(store, drop).await,
        expected,
        "list must give put order and exact sizes"
    );
    for ((name, body), entry) in messages.iter().zip(&expected) {
        let read_back = read(store, drop, &entry.uid).await;
        // Not assert_eq!: a 1 MiB diff in a panic message helps nobody.
        let first_difference = read_back.iter().zip(body.iter()).position(|(a, b)| a != b);
        assert!(
            read_back == body.as_ref(),
            "message {name:?} did not read back byte-exact: put {} bytes, read {}, \
             first difference at {first_difference:?}",
            body.len(),
            read_back.len()
        );
    }
}

async fn unknown_maildrop_is_empty(store: &(impl MessageStore + ?Sized), drop: &MaildropKey) {
    assert_eq!(
        list(store, drop).await,
        [],
        "a maildrop never delivered to must list empty"
    );
    let stranger = UniqueId::new("no-such-message").unwrap();
    assert_not_found(store, drop, &stranger, "open in an unknown maildrop").await;
}

async fn assert_not_found(
    store: &(impl MessageStore + ?Sized),
    drop: &MaildropKey,
    uid: &UniqueId,
    what: &str,
) {
    match store.open(drop, uid).await {
        Err(StoreError::NotFound) => {}
        Err(e) => panic!("{what}: expected NotFound for {drop}/{uid}, got error {e}"),
        Ok(_) => panic!("{what}: expected NotFound for {drop}/{uid}, but it opened"),
    }
}

/// Two mailboxes of one tenant, and the same mailbox id under two tenants, never mix.
async fn isolation(store: &(impl MessageStore + ?Sized), scope: &str) {
    let drops = [
        key(scope, "a", "shared-name"),
        key(scope, "a", "neighbour"),
        key(scope, "b", "shared-name"),
    ];
    let mut owned = Vec::new();
    for drop in &drops {
        let body = Bytes::from(format!("Subject: for {drop}\r\n\r\nbody\r\n"));
        owned.push((put(store, drop, body.clone()).await, body));
    }
    for (drop, (uid, body)) in drops.iter().zip(&owned) {
        let expected = [MessageEntry {
            uid: uid.clone(),
            size: body.len() as u64,
        }];
        assert_eq!(
            list(store, drop).await,
            expected,
            "{drop} must list only its own message"
        );
        assert_eq!(
            read(store, drop, uid).await,
            body.as_ref(),
            "{drop} body mixed up"
        );
    }
    // Another maildrop's uid must be unknown here, and deleting it here must not touch it.
    let (victim_drop, (victim, _)) = (&drops[0], &owned[0]);
    for other in &drops[1..] {
        assert_not_found(store, other, victim, "open of another maildrop's id").await;
        let outcome = store.delete(other, std::slice::from_ref(victim)).await;
        assert_eq!(
            outcome.deleted,
            std::slice::from_ref(victim),
            "an id absent from {other} is deleted there"
        );
    }
    assert_eq!(
        uids(&list(store, victim_drop).await),
        std::slice::from_ref(victim),
        "delete crossed maildrops"
    );
}

async fn deletion(store: &(impl MessageStore + ?Sized), scope: &str) {
    let drop = &key(scope, "a", "deletion");
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(put(store, drop, Bytes::from(format!("message {i}\r\n"))).await);
    }
    let doomed = vec![all[1].clone(), all[3].clone()];
    let outcome = store.delete(drop, &doomed).await;
    assert_eq!(
        outcome.deleted, doomed,
        "delete must report both as deleted"
    );
    assert!(
        outcome.failed.is_empty(),
        "delete failed for {:?}",
        outcome.failed
    );
    let kept = vec![all[0].clone(), all[2].clone(), all[4].clone()];
    assert_eq!(
        uids(&list(store, drop).await),
        kept,
        "delete must leave the others listed"
    );
    for uid in &doomed {
        assert_not_found(store, drop, uid, "open of a deleted message").await;
    }
    for (i, uid) in [(0, &all[0]), (2, &all[2]), (4, &all[4])] {
        let body = format!("message {i}\r\n");
        assert_eq!(
            read(store, drop, uid).await,
            body.as_bytes(),
            "survivor {uid} changed"
        );
    }

    let again = store.delete(drop, &doomed).await;
    assert_eq!(
        again.deleted, doomed,
        "deleting absent ids again must report them deleted"
    );
    assert!(
        again.failed.is_empty(),
        "repeated delete failed for {:?}",
        again.failed
    );
    let never = UniqueId::new("never-stored").unwrap();
    let outcome = store
        .delete(
            &key(scope, "a", "no-such-drop"),
            std::slice::from_ref(&never),
        )
        .await;
    assert_eq!(
        outcome.deleted,
        [never],
        "delete in an unknown maildrop must report deleted"
    );
    assert_eq!(
        uids(&list(store, drop).await),
        kept,
        "repeated delete changed the listing"
    );
}

async fn many_in_order(store: &(impl MessageStore + ?Sized), drop: &MaildropKey) {
    let mut expected = Vec::new();
    for i in 0..200 {
        let body = Bytes::from(format!("Subject: {i}\r\n\r\n{}\r\n", "x".repeat(i)));
        let size = body.len() as u64;
        expected.push(MessageEntry {
            uid: put(store, drop, body).await,
            size,
        });
    }
    assert_strictly_increasing(&uids(&expected), "ids of 200 puts");
    let listed = list(store, drop).await;
    assert_eq!(listed.len(), 200, "list must return all 200 messages");
    assert_eq!(
        listed, expected,
        "list of 200 must be in put order with exact sizes"
    );
}

async fn concurrent_puts(store: &(impl MessageStore + ?Sized), drop: &MaildropKey) {
    let puts = (0..50).map(|i| put(store, drop, Bytes::from(format!("concurrent {i}\r\n"))));
    let mut put_ids = join_all(puts.collect()).await;
    put_ids.sort();
    put_ids.dedup();
    assert_eq!(
        put_ids.len(),
        50,
        "50 concurrent puts must give 50 distinct ids"
    );
    assert_eq!(
        uids(&list(store, drop).await),
        put_ids,
        "list must show every concurrent put"
    );
}

/// Polls all futures concurrently on the current task (no `'static` bound, unlike spawning).
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    poll_fn(|cx| {
        for (slot, output) in pending.iter_mut().zip(&mut outputs) {
            if let Some(future) = slot
                && let Poll::Ready(value) = future.as_mut().poll(cx)
            {
                *output = Some(value);
                *slot = None;
            }
        }
        if pending.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}

// ---- maildrop lock ----

/// A ttl no test step gets near, so that only the expiry checks depend on timing.
const LONG_TTL: Duration = Duration::from_secs(60);

async fn exclusive_per_key(lock: &(impl MaildropLock + ?Sized), scope: &str) {
    let key_a = key(scope, "a", "exclusive");
    let neighbour = key(scope, "a", "exclusive-neighbour");
    let other_tenant = key(scope, "b", "exclusive");

    let held = acquire(lock, &key_a, LONG_TTL)
        .await
        .expect("first acquire of a free key");
    assert_eq!(
        (&held.key, held.ttl),
        (&key_a, LONG_TTL),
        "lease must name its key and ttl"
    );
    assert!(
        acquire(lock, &key_a, LONG_TTL).await.is_none(),
        "second acquire of a held key"
    );
    let b = acquire(lock, &neighbour, LONG_TTL)
        .await
        .expect("another mailbox must be free");
    let c = acquire(lock, &other_tenant, LONG_TTL)
        .await
        .expect("same mailbox id, other tenant");
    assert!(
        held.token != b.token && b.token != c.token,
        "tokens must differ between leases"
    );
    assert!(check(lock, &held).await, "check of a held lease");
    for lease in [&held, &b, &c] {
        assert!(
            release(lock, lease).await,
            "release of a held lease on {}",
            lease.key
        );
    }
}

async fn release_and_reacquire(lock: &(impl MaildropLock + ?Sized), key: &MaildropKey) {
    let first = acquire(lock, key, LONG_TTL)
        .await
        .expect("acquire of a free key");
    assert!(release(lock, &first).await, "release of a held lease");
    assert!(
        !check(lock, &first).await,
        "check after release must be false"
    );
    assert!(
        !renew(lock, &first).await,
        "renew after release must be false"
    );
    assert!(!release(lock, &first).await, "second release must be false");
    let second = acquire(lock, key, LONG_TTL)
        .await
        .expect("acquire after release");
    assert!(
        !release(lock, &first).await,
        "an old lease must not release the new holder's"
    );
    assert!(
        check(lock, &second).await,
        "new holder lost its lease to an old release"
    );
    assert!(release(lock, &second).await, "release of the new lease");
}

// Real-time checks: margins of 600 ms either side of each deadline absorb scheduling and
// network delay on a loaded machine (CI runs many test processes on two cores).
const SHORT_TTL: Duration = Duration::from_millis(1500);
const STEP: Duration = Duration::from_millis(900);

async fn renew_extends(lock: &(impl MaildropLock + ?Sized), key: &MaildropKey) {
    let lease = acquire(lock, key, SHORT_TTL)
        .await
        .expect("acquire of a free key");
    tokio::time::sleep(STEP).await;
    assert!(
        renew(lock, &lease).await,
        "renew before the ttl must succeed"
    );
    // Now past the original expiry, but within the renewed one.
    tokio::time::sleep(STEP).await;
    assert!(
        check(lock, &lease).await,
        "renew must extend the lease by its ttl"
    );
    assert!(
        acquire(lock, key, SHORT_TTL).await.is_none(),
        "a renewed lease must still exclude"
    );
    assert!(release(lock, &lease).await, "release of a renewed lease");
}

async fn expiry_and_takeover(lock: &(impl MaildropLock + ?Sized), key: &MaildropKey) {
    let old = acquire(lock, key, SHORT_TTL)
        .await
        .expect("acquire of a free key");
    tokio::time::sleep(SHORT_TTL + Duration::from_millis(600)).await;
    assert!(
        !check(lock, &old).await,
        "check of an expired lease must be false"
    );
    let new = acquire(lock, key, LONG_TTL)
        .await
        .expect("acquire after the old lease expired");
    assert!(
        !renew(lock, &old).await,
        "renew of an expired, taken-over lease must be false"
    );
    assert!(
        !check(lock, &old).await,
        "check of a taken-over lease must be false"
    );
    assert!(
        !release(lock, &old).await,
        "release of a taken-over lease must be false"
    );
    assert!(
        check(lock, &new).await,
        "a stale release removed the new holder's lease"
    );
    assert!(
        acquire(lock, key, LONG_TTL).await.is_none(),
        "the new holder must still exclude"
    );
    assert!(release(lock, &new).await, "release of the new lease");
}

async fn acquire(
    lock: &(impl MaildropLock + ?Sized),
    key: &MaildropKey,
    ttl: Duration,
) -> Option<Lease> {
    lock.acquire(key, ttl)
        .await
        .unwrap_or_else(|e| panic!("acquire of {key} failed: {e}"))
}

async fn renew(lock: &(impl MaildropLock + ?Sized), lease: &Lease) -> bool {
    lock.renew(lease)
        .await
        .unwrap_or_else(|e| panic!("renew on {} failed: {e}", lease.key))
}

async fn check(lock: &(impl MaildropLock + ?Sized), lease: &Lease) -> bool {
    lock.check(lease)
        .await
        .unwrap_or_else(|e| panic!("check on {} failed: {e}", lease.key))
}

async fn release(lock: &(impl MaildropLock + ?Sized), lease: &Lease) -> bool {
    lock.release(lease)
        .await
        .unwrap_or_else(|e| panic!("release on {} failed: {e}", lease.key))
}
