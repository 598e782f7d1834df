//! The S3 store against a real S3-compatible server: `s3s-fs` over HTTP, checking SigV4.
//!
//! Every test starts its own server (see `s3_support`) on a free port with its own data, so
//! tests run in parallel and never see each other's objects.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod s3_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloudpop_maildrop::{
    MailboxId, MaildropKey, MessageEntry, MessageStore, S3Config, S3Store, StoreError, TenantId,
    UniqueId, contract,
};
use s3_support::{Moto, S3sFs, SECRET_KEY};
use tokio::io::AsyncReadExt;

fn key(tenant: &str, mailbox: &str) -> MaildropKey {
    MaildropKey::new(
        TenantId::new(tenant).unwrap(),
        MailboxId::new(mailbox).unwrap(),
    )
}

async fn read_in_chunks(reader: &mut cloudpop_maildrop::MessageReader, chunk: usize) -> Vec<u8> {
    let mut body = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .expect("read of an open message");
        if n == 0 {
            return body;
        }
        body.extend_from_slice(&buf[..n]);
    }
}

fn assert_unavailable<T>(result: Result<T, StoreError>, what: &str) -> String {
    match result {
        Err(StoreError::Unavailable(message)) => message,
        Err(e) => panic!("{what}: expected Unavailable, got {e}"),
        Ok(_) => panic!("{what}: expected Unavailable, but it succeeded"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_keeps_the_message_store_contract() {
    let server = S3sFs::start();
    contract::message_store(&S3Store::new(server.config()), "s3").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_keeps_the_contract_with_a_prefix_behind_dyn() {
    let server = S3sFs::start();
    let config = S3Config {
        prefix: "pop/".to_owned(),
        ..server.config()
    };
    let store: Arc<dyn MessageStore> = Arc::new(S3Store::new(config));
    contract::message_store(store.as_ref(), "s3-dyn").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_2500_messages_takes_3_pages() {
    let server = S3sFs::start();
    let store = S3Store::new(server.config());
    let drop = key("paging", "big");
    // 16 puts in flight keep the set-up short; the order to check comes from the uids.
    let mut expected = Vec::new();
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..2_500usize {
        if puts.len() >= 16 {
            expected.push(puts.join_next().await.unwrap().unwrap());
        }
        let (store, drop) = (store.clone(), drop.clone());
        puts.spawn(async move {
            let body = Bytes::from(format!("Subject: {i}\r\n\r\n{}\r\n", "x".repeat(i % 97)));
            let size = body.len() as u64;
            let uid = store.put(&drop, body).await.expect("put");
            MessageEntry { uid, size }
        });
    }
    expected.extend(puts.join_all().await);
    expected.sort_by(|a, b| a.uid.cmp(&b.uid));

    let before = store.request_counts();
    let started = Instant::now();
    let listed = store.list(&drop).await.expect("list of 2,500");
    let took = started.elapsed();
    let after = store.request_counts();

    assert_eq!(listed.len(), 2_500);
    assert!(listed == expected, "list must give all 2,500 in uid order");
    assert_eq!(after.list_objects_v2 - before.list_objects_v2, 3, "pages");
    assert_eq!(
        (after.put_object, after.get_object, after.head_bucket),
        (before.put_object, before.get_object, before.head_bucket),
        "list must send nothing but list pages"
    );
    eprintln!("listed 2,500 messages in {took:?} over 3 pages");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_is_refused_as_unavailable() {
    let server = S3sFs::start();
    let wrong = "not-the-secret-at-all";
    let store = S3Store::new(S3Config {
        secret_access_key: wrong.to_owned(),
        max_attempts: 1,
        ..server.config()
    });
    let drop = key("signing", "alice");
    let uid = UniqueId::new("some-uid").unwrap();
    let messages = [
        assert_unavailable(store.check().await, "check"),
        assert_unavailable(store.list(&drop).await, "list"),
        assert_unavailable(store.put(&drop, Bytes::from_static(b"x")).await, "put"),
        // A refused GetObject is not a missing message.
        assert_unavailable(store.open(&drop, &uid).await, "open"),
    ];
    for message in &messages {
        assert!(
            !message.contains(wrong) && !message.contains(SECRET_KEY),
            "error text shows a secret: {message}"
        );
    }
    let outcome = store.delete(&drop, std::slice::from_ref(&uid)).await;
    assert_eq!(
        outcome.failed,
        [uid],
        "a refused delete must report failure"
    );
    assert!(
        messages[1].contains("SignatureDoesNotMatch"),
        "{}",
        messages[1]
    );

    // The same server accepts the right secret, so the signature was what failed.
    S3Store::new(server.config())
        .check()
        .await
        .expect("right secret");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_is_unavailable_and_the_same_store_recovers() {
    let mut server = S3sFs::start();
    let store = S3Store::new(S3Config {
        connect_timeout: Duration::from_millis(200),
        operation_timeout: Duration::from_secs(2),
        max_attempts: 2,
        ..server.config()
    });
    let drop = key("outage", "alice");
    let body = Bytes::from_static(b"Subject: before\r\n\r\nsurvives the outage\r\n");
    let uid = store.put(&drop, body.clone()).await.expect("put before");

    server.kill();
    // Connection refused, one retry after a jittered backoff: well within the 2 s budget.
    let quick = |started: Instant, what: &str| {
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(4),
            "{what} while down took {took:?}"
        );
        took
    };
    let t = Instant::now();
    let message = assert_unavailable(store.list(&drop).await, "list while down");
    let list_took = quick(t, "list");
    let t = Instant::now();
    assert_unavailable(
        store.put(&drop, Bytes::from_static(b"x")).await,
        "put while down",
    );
    quick(t, "put");
    let t = Instant::now();
    assert_unavailable(store.open(&drop, &uid).await, "open while down");
    quick(t, "open");
    let t = Instant::now();
    assert_unavailable(store.check().await, "check while down");
    quick(t, "check");
    let t = Instant::now();
    let outcome = store.delete(&drop, std::slice::from_ref(&uid)).await;
    assert_eq!(
        outcome.failed,
        std::slice::from_ref(&uid),
        "delete while down"
    );
    quick(t, "delete");
    eprintln!("while s3s-fs was down, list gave {message:?} after {list_took:?}");

    server.restart();
    store.check().await.expect("check after restart");
    let listed = store.list(&drop).await.expect("list after restart");
    assert_eq!(
        listed.len(),
        1,
        "the message put before the outage is still there"
    );
    let mut reader = store.open(&drop, &uid).await.expect("open after restart");
    assert_eq!(read_in_chunks(&mut reader, 8192).await, body);
    let after = store
        .put(&drop, Bytes::from_static(b"after\r\n"))
        .await
        .expect("put after restart");
    assert!(after > uid);
    let outcome = store.delete(&drop, &[uid, after]).await;
    assert!(
        outcome.failed.is_empty(),
        "delete after restart: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn open_streams_a_5_mib_message_byte_exact() {
    let server = S3sFs::start();
    let store = S3Store::new(server.config());
    let drop = key("stream", "alice");
    // No period that divides a power of two, so a chunk out of place shows.
    let body: Bytes = (0..5 * 1024 * 1024u32)
        .map(|i| (i % 251) as u8 ^ (i / 65_521) as u8)
        .collect::<Vec<_>>()
        .into();
    let uid = store.put(&drop, body.clone()).await.expect("put 5 MiB");
    assert_eq!(store.list(&drop).await.unwrap()[0].size, 5 * 1024 * 1024);

    let mut reader = store.open(&drop, &uid).await.expect("open");
    // An odd, small chunk size: reads must never overrun it or drop bytes between them.
    let read = read_in_chunks(&mut reader, 1_021).await;
    assert_eq!(read.len(), body.len());
    let first_difference = read.iter().zip(body.iter()).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "read back differs");
}

#[tokio::test(flavor = "multi_thread")]
async fn prefixes_keep_stores_apart_in_one_bucket() {
    let server = S3sFs::start();
    let with_prefix = |prefix: &str| {
        S3Store::new(S3Config {
            prefix: prefix.to_owned(),
            ..server.config()
        })
    };
    let (alpha, beta, root) = (with_prefix("alpha"), with_prefix("/beta/"), with_prefix(""));
    let drop = key("shared", "alice");
    let mut owned = Vec::new();
    for (name, store) in [("alpha", &alpha), ("beta", &beta), ("root", &root)] {
        let body = Bytes::from(format!("Subject: {name}\r\n\r\nbody\r\n"));
        owned.push(store.put(&drop, body).await.expect("put"));
    }

    // The layout on the server is exactly {prefix}/{tenant}/{mailbox}/{uid}.
    for (prefix, uid) in ["alpha/", "beta/", ""].iter().zip(&owned) {
        let path = server.object_path(&format!("{prefix}shared/alice/{uid}"));
        assert!(path.is_file(), "no object at {}", path.display());
    }
    for (name, store, uid) in [
        ("alpha", &alpha, &owned[0]),
        ("beta", &beta, &owned[1]),
        ("root", &root, &owned[2]),
    ] {
        let listed: Vec<_> = store
            .list(&drop)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.uid)
            .collect();
        assert_eq!(
            listed,
            std::slice::from_ref(uid),
            "{name} must see only its own message"
        );
        for other in owned.iter().filter(|o| *o != uid) {
            assert!(
                matches!(store.open(&drop, other).await, Err(StoreError::NotFound)),
                "{name} opened another prefix's message"
            );
        }
    }
    // Deleting through the wrong prefix reports success (absent there) and removes nothing.
    let outcome = beta.delete(&drop, std::slice::from_ref(&owned[0])).await;
    assert_eq!(outcome.deleted, [owned[0].clone()]);
    assert_eq!(alpha.list(&drop).await.unwrap().len(), 1);

    // Keys under the root store's maildrop that are no message are skipped: a deeper key
    // (another store's object under tenant "alpha") and a name that is no uid.
    std::fs::write(server.object_path("shared/alice/.junk"), b"junk").unwrap();
    assert_eq!(root.list(&drop).await.unwrap().len(), 1);
    assert_eq!(root.list(&key("alpha", "shared")).await.unwrap(), []);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_times_out_as_unavailable() {
    // Accepts connections and reads nothing: only the SDK's timeouts can end the call.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let store = S3Store::new(S3Config {
        endpoint: Some(endpoint),
        bucket: "b".to_owned(),
        access_key_id: "ak".to_owned(),
        secret_access_key: "sk".to_owned(),
        connect_timeout: Duration::from_millis(200),
        operation_timeout: Duration::from_secs(1),
        max_attempts: 2,
        ..S3Config::default()
    });
    let started = Instant::now();
    let message = assert_unavailable(store.check().await, "check of a silent server");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "timed out only after {took:?}"
    );
    assert!(message.contains("timed out"), "{message}");
    eprintln!("a silent server gave {message:?} after {took:?}");
    silent.abort();
}

/// A PUT sent while the server is frozen times out, and the server stores it anyway once
/// it resumes. The store deletes that object in the background, so that the sender's
/// retry (a new put, acknowledged) leaves exactly one message.
///
/// The server is `moto_server`: it finishes a buffered request whose client has hung up,
/// as a node behind a proxy does. `s3s-fs` (hyper) drops such a request when it sees the
/// hang-up, so there the late PUT seldom lands at all.
#[tokio::test(flavor = "multi_thread")]
async fn a_put_that_timed_out_on_a_frozen_server_leaves_no_message_once_it_resumes() {
    let server = Moto::start();
    let store = S3Store::new(S3Config {
        operation_timeout: Duration::from_secs(1),
        max_attempts: 2,
        ..server.config()
    });
    let drop = key("frozen", "alice");
    store.check().await.expect("S3 answers before the freeze");
    let body = Bytes::from_static(b"Subject: once\r\n\r\ndelivered once\r\n");

    server.freeze();
    let failed = store.put(&drop, body.clone()).await;
    server.thaw();
    assert_unavailable(failed, "put while frozen");
    // The sender was told "try again later" and does.
    let kept = store.put(&drop, body).await.expect("put after the resume");

    let deadline = Instant::now() + Duration::from_secs(30);
    while store.orphan_cleanups().pending() > 0 {
        assert!(
            Instant::now() < deadline,
            "cleanup still pending: {:?}",
            store.orphan_cleanups()
        );
        // A poll interval, not a guess at how long the cleanup takes.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = store.orphan_cleanups();
    // `removed: 1` when the late PUT landed (most runs), `absent: 1` when it did not.
    eprintln!("cleanup after the frozen put: {counts:?}");
    assert_eq!((counts.scheduled, counts.abandoned), (1, 0), "{counts:?}");
    let listed: Vec<UniqueId> = store
        .list(&drop)
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.uid)
        .collect();
    assert_eq!(listed, [kept], "only the acknowledged message is left");
}
