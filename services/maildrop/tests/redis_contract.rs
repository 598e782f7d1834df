//! `RedisLock` against real `redis-server`s started by the tests: the maildrop lock contract
//! on a single node and on a three-node Cluster, outages and recovery of one lock instance,
//! and what a lease looks like inside Redis.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

#[path = "../../redis/tests/support/mod.rs"]
mod redis_support;

use std::time::{Duration, Instant};

use cloudpop_maildrop::{
    Lease, LockError, MailboxId, MaildropKey, MaildropLock, RedisLock, RedisLockConfig, TenantId,
    contract,
};
use redis_support::{RedisCluster, RedisServer, free_port};

const LONG_TTL: Duration = Duration::from_secs(60);

fn single_node(url: String, command_timeout: Duration) -> RedisLockConfig {
    RedisLockConfig {
        urls: vec![url],
        command_timeout,
        ..RedisLockConfig::default()
    }
}

fn maildrop(tenant: &str, mailbox: &str) -> MaildropKey {
    MaildropKey::new(
        TenantId::new(tenant).unwrap(),
        MailboxId::new(mailbox).unwrap(),
    )
}

fn is_unavailable<T: std::fmt::Debug>(result: &Result<T, LockError>) -> bool {
    matches!(result, Err(LockError::Unavailable(_)))
}

/// Runs every lock call once and asserts each fails as `Unavailable` within `limit`.
async fn assert_every_call_unavailable(lock: &RedisLock, lease: &Lease, limit: Duration) {
    let key = maildrop("outage", "other");
    let mut results = Vec::new();
    let started = Instant::now();
    results.push(("acquire", lock.acquire(&key, LONG_TTL).await.map(|_| ())));
    results.push(("renew", lock.renew(lease).await.map(|_| ())));
    results.push(("check", lock.check(lease).await.map(|_| ())));
    results.push(("release", lock.release(lease).await.map(|_| ())));
    results.push(("ping", lock.ping().await));
    let elapsed = started.elapsed();
    for (op, result) in &results {
        assert!(
            is_unavailable(result),
            "{op} while Redis is unreachable: {result:?}"
        );
    }
    assert!(
        elapsed <= limit * 5,
        "five calls took {elapsed:?}, more than {limit:?} each"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn single_node_keeps_the_maildrop_lock_contract() {
    let server = RedisServer::start_single();
    let lock = RedisLock::connect(single_node(server.url(), Duration::from_secs(2)))
        .await
        .unwrap();
    lock.ping().await.unwrap();
    contract::maildrop_lock(&lock, "redis-single").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_keeps_the_contract_with_keys_on_every_node() {
    let mut cluster = RedisCluster::stopped();
    let lock = RedisLock::connect(RedisLockConfig {
        urls: cluster.urls(),
        cluster: true,
        command_timeout: Duration::from_secs(2),
        ..RedisLockConfig::default()
    })
    .await
    .expect("a Cluster lock is built while the Cluster is down");
    assert!(is_unavailable(&lock.ping().await), "ping of a down Cluster");

    cluster.start();
    lock.ping().await.expect("ping once the Cluster is up");
    contract::maildrop_lock(&lock, "redis-cluster").await;

    // Many maildrops: their hash tags spread over the slots of all three nodes, and each
    // lease lives on the node that owns its slot, where a plain connection finds it.
    let mut leases = Vec::new();
    for i in 0..30 {
        let key = maildrop("spread", &format!("box-{i}"));
        leases.push(
            lock.acquire(&key, LONG_TTL)
                .await
                .unwrap()
                .expect("free key"),
        );
    }
    let mut total = 0;
    for node in cluster.nodes() {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("cloudpop:lock:{spread/*")
            .query(&mut node.connection())
            .unwrap();
        assert!(
            !keys.is_empty(),
            "node {} holds none of 30 leases",
            node.port()
        );
        total += keys.len();
    }
    assert_eq!(total, 30, "every lease must be stored exactly once");
    for lease in &leases {
        assert!(lock.check(lease).await.unwrap(), "lost {}", lease.key);
        assert!(
            lock.release(lease).await.unwrap(),
            "release of {}",
            lease.key
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_gives_unavailable_quickly_and_the_same_lock_recovers() {
    let mut server = RedisServer::start_single();
    let timeout = Duration::from_millis(500);
    let lock = RedisLock::connect(single_node(server.url(), timeout))
        .await
        .unwrap();
    let key = maildrop("outage", "box");
    let lease = lock
        .acquire(&key, LONG_TTL)
        .await
        .unwrap()
        .expect("free key");

    server.stop();
    assert_every_call_unavailable(&lock, &lease, timeout).await;
    // Still down: calls keep failing fast and cleanly, not only the first one.
    assert_every_call_unavailable(&lock, &lease, timeout).await;

    server.start();
    // The same instance reconnects on its own; the first call after the restart works.
    lock.ping().await.expect("ping after Redis came back");
    // The restarted Redis kept no data: the old lease reads as lost, never as held.
    assert!(!lock.check(&lease).await.unwrap(), "lease survived a wipe");
    assert!(!lock.renew(&lease).await.unwrap(), "renew of a wiped lease");
    let again = lock
        .acquire(&key, LONG_TTL)
        .await
        .unwrap()
        .expect("key free after the restart");
    assert!(lock.release(&again).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_while_idle_costs_at_most_one_call() {
    let mut server = RedisServer::start_single();
    let lock = RedisLock::connect(single_node(server.url(), Duration::from_millis(500)))
        .await
        .unwrap();
    lock.ping().await.unwrap();
    server.stop();
    server.start();
    // The old connection died unnoticed between calls; whether the command reached Redis
    // cannot be told, so that call is not retried (a retried SET NX could report our own
    // lease as someone else's). It fails as Unavailable, and the next call dials afresh.
    let key = maildrop("idle-restart", "box");
    let first = lock.acquire(&key, LONG_TTL).await;
    let lease = match first {
        Ok(lease) => lease,
        Err(LockError::Unavailable(_)) => lock.acquire(&key, LONG_TTL).await.unwrap(),
    };
    assert!(lease.is_some(), "the key is free after the restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_server_gives_unavailable_at_the_command_timeout() {
    // Accepts connections (the kernel completes them into the backlog) but never answers,
    // like a hung or partitioned Redis.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    let timeout = Duration::from_millis(300);
    let lock = RedisLock::connect(single_node(url, timeout)).await.unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        let result = lock.acquire(&maildrop("silent", "box"), LONG_TTL).await;
        let elapsed = started.elapsed();
        assert!(is_unavailable(&result), "{result:?}");
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_millis(500),
            "acquire gave up after {elapsed:?}, command timeout {timeout:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_built_while_redis_is_down_works_once_redis_is_up() {
    let mut server = RedisServer::stopped(free_port());
    let lock = RedisLock::connect(single_node(server.url(), Duration::from_secs(2)))
        .await
        .expect("connect must not need Redis to be up");
    assert!(is_unavailable(&lock.ping().await), "ping while down");
    let key = maildrop("lazy", "box");
    assert!(is_unavailable(&lock.acquire(&key, LONG_TTL).await));

    server.start();
    lock.ping().await.expect("ping once Redis is up");
    let lease = lock
        .acquire(&key, LONG_TTL)
        .await
        .unwrap()
        .expect("free key");
    assert!(lock.release(&lease).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_look_as_promised_inside_redis() {
    let server = RedisServer::start_single();
    let lock = RedisLock::connect(RedisLockConfig {
        key_prefix: "pop-test".to_owned(),
        ..single_node(server.url(), Duration::from_secs(2))
    })
    .await
    .unwrap();
    let mut redis = server.connection();
    let key = maildrop("visible", "box");
    // The maildrop is the Cluster hash tag, so every key of one maildrop shares a slot.
    let redis_key = "pop-test:lock:{visible/box}";
    let get = |redis: &mut redis::Connection| -> Option<String> {
        redis::cmd("GET").arg(redis_key).query(redis).unwrap()
    };
    let pttl = |redis: &mut redis::Connection| -> i64 {
        redis::cmd("PTTL").arg(redis_key).query(redis).unwrap()
    };

    let stale = lock
        .acquire(&key, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(get(&mut redis).as_deref(), Some(stale.token.as_str()));
    let left = pttl(&mut redis);
    assert!(0 < left && left <= 10_000, "PTTL {left} after acquire");

    // Renew sets the expiry to the full ttl again.
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(redis_key)
        .arg(1_000)
        .query(&mut redis)
        .unwrap();
    assert!(lock.renew(&stale).await.unwrap());
    let left = pttl(&mut redis);
    assert!(9_000 < left && left <= 10_000, "PTTL {left} after renew");

    // The lease expires (here: vanishes at once) and another session takes the maildrop.
    let _: i64 = redis::cmd("DEL").arg(redis_key).query(&mut redis).unwrap();
    let current = lock.acquire(&key, LONG_TTL).await.unwrap().unwrap();
    assert!(!lock.release(&stale).await.unwrap(), "stale release");
    assert!(!lock.renew(&stale).await.unwrap(), "stale renew");
    assert_eq!(
        get(&mut redis).as_deref(),
        Some(current.token.as_str()),
        "a stale lease touched the new holder's key"
    );
    let left = pttl(&mut redis);
    assert!(left > 10_000, "stale renew cut the new lease to {left} ms");

    // Scripts run by hash; after Redis forgets them (restart, SCRIPT FLUSH) they are reloaded.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut redis).unwrap();
    assert!(
        lock.renew(&current).await.unwrap(),
        "renew after SCRIPT FLUSH"
    );
    assert!(lock.release(&current).await.unwrap());
    let exists: i64 = redis::cmd("EXISTS")
        .arg(redis_key)
        .query(&mut redis)
        .unwrap();
    assert_eq!(exists, 0, "release left the key behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_pods_racing_for_one_maildrop_get_one_lease() {
    let server = RedisServer::start_single();
    let config = single_node(server.url(), Duration::from_secs(2));
    let pods = [
        RedisLock::connect(config.clone()).await.unwrap(),
        RedisLock::connect(config).await.unwrap(),
    ];
    let key = maildrop("race", "box");
    let attempts = (0..20).map(|i| pods[i % 2].acquire(&key, LONG_TTL));
    let results = futures_join_all(attempts).await;
    let winners: Vec<Lease> = results.into_iter().filter_map(|r| r.unwrap()).collect();
    assert_eq!(
        winners.len(),
        1,
        "{} of 20 racing acquires won",
        winners.len()
    );
}

/// The process id of the `redis-server` behind `server`, as it reports it.
fn redis_pid(server: &RedisServer) -> String {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut server.connection())
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .expect("INFO server names the process id")
        .trim()
        .to_owned()
}

/// Sends `signal` (`-STOP` freezes, `-CONT` resumes) to process `pid`.
fn signal(pid: &str, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}: {status}");
}

/// An acquire sent to a frozen Redis times out, and Redis applies its `SET` once it
/// resumes. Nobody holds that lease; it is released in the background, so another pod
/// gets the maildrop long before the lease would have expired.
#[tokio::test(flavor = "multi_thread")]
async fn an_acquire_that_timed_out_leaves_no_lease_once_redis_resumes() {
    let server = RedisServer::start_single();
    let timeout = Duration::from_millis(300);
    let lock = RedisLock::connect(single_node(server.url(), timeout))
        .await
        .unwrap();
    // Connected before the freeze, so the SET waits in Redis's socket buffer.
    lock.ping().await.unwrap();
    let key = maildrop("frozen", "box");
    let pid = redis_pid(&server);

    signal(&pid, "-STOP");
    let started = Instant::now();
    let failed = lock.acquire(&key, LONG_TTL).await;
    signal(&pid, "-CONT");
    assert!(
        is_unavailable(&failed),
        "acquire on a frozen Redis: {failed:?}"
    );

    // Another pod, as the user's next login would reach.
    let other = RedisLock::connect(single_node(server.url(), Duration::from_secs(2)))
        .await
        .unwrap();
    let within = Duration::from_secs(15);
    let lease = loop {
        if let Some(lease) = other.acquire(&key, LONG_TTL).await.unwrap() {
            break lease;
        }
        assert!(
            started.elapsed() < within,
            "the maildrop is still locked {:?} after the failed acquire (lease ttl {LONG_TTL:?})",
            started.elapsed()
        );
        // A poll interval, not a guess at how long the release takes.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "maildrop free again {:?} after the failed acquire",
        started.elapsed()
    );
    // The late lease is gone for good: the background release never touches the new one.
    assert!(other.check(&lease).await.unwrap());
    assert!(other.release(&lease).await.unwrap());
}

#[tokio::test]
async fn configs_that_cannot_work_are_refused_at_connect() {
    let bad = [
        RedisLockConfig {
            urls: vec![],
            ..RedisLockConfig::default()
        },
        RedisLockConfig {
            urls: vec![
                "redis://127.0.0.1:1".to_owned(),
                "redis://127.0.0.1:2".to_owned(),
            ],
            ..RedisLockConfig::default()
        },
        RedisLockConfig {
            urls: vec!["not a url".to_owned()],
            ..RedisLockConfig::default()
        },
        RedisLockConfig {
            urls: vec!["redis://:s3cr3t@127.0.0.1:1".to_owned()],
            key_prefix: "a{b}".to_owned(),
            ..RedisLockConfig::default()
        },
    ];
    for config in bad {
        let shown = format!("{config:?}");
        match RedisLock::connect(config).await {
            Err(LockError::Unavailable(why)) => {
                assert!(why.contains("invalid Redis lock config"), "{why}");
                assert!(!why.contains("s3cr3t"), "{why}");
            }
            Ok(lock) => panic!("{shown} accepted: {lock:?}"),
        }
    }
}

/// Polls all futures concurrently on this task, so racing calls really overlap.
async fn futures_join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        for slot in &mut pending {
            if let Some(future) = slot
                && let std::task::Poll::Ready(value) = future.as_mut().poll(cx)
            {
                outputs.push(value);
                *slot = None;
            }
        }
        if pending.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs
}
