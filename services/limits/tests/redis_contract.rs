//! `RedisLimits` against real `redis-server`s started by the tests: the limits contract on a
//! single node and on a three-node Cluster, counts shared by two pods, outages and recovery
//! of one instance, and what the counters look like inside Redis.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

#[path = "../../redis/tests/support/mod.rs"]
mod redis_support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudpop_limits::{
    Admission, ConnectionSlot, Limits, LimitsError, LoginThrottle, RedisLimits, RedisLimitsConfig,
    SessionSlot, ThrottlePolicy, contract,
};
use redis_support::{RedisCluster, RedisServer, free_port};
use tokio::task::JoinSet;

const LONG_TTL: Duration = Duration::from_secs(60);

fn single_node(url: String, command_timeout: Duration) -> RedisLimitsConfig {
    RedisLimitsConfig {
        urls: vec![url],
        command_timeout,
        ..RedisLimitsConfig::default()
    }
}

async fn connect(config: RedisLimitsConfig) -> RedisLimits {
    RedisLimits::connect(config).await.unwrap()
}

fn ip(address: &str) -> IpAddr {
    address.parse().unwrap()
}

fn is_unavailable<T: std::fmt::Debug>(result: &Result<T, LimitsError>) -> bool {
    matches!(result, Err(LimitsError::Unavailable(_)))
}

#[tokio::test(flavor = "multi_thread")]
async fn single_node_keeps_the_limits_contract() {
    let server = RedisServer::start_single();
    let limits = connect(single_node(server.url(), Duration::from_secs(2))).await;
    contract::limits(&limits, "redis-single").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scopes_and_key_prefixes_isolate_runs_on_one_redis() {
    let server = RedisServer::start_single();
    let config = single_node(server.url(), Duration::from_secs(2));
    let limits = connect(config.clone()).await;
    let other_install = connect(RedisLimitsConfig {
        key_prefix: "other-install".to_owned(),
        ..config
    })
    .await;
    // Three runs at once: two scopes on one prefix, and the same scope again on another
    // prefix. A key shared between any two would break a cap or a penalty in one of them.
    tokio::join!(
        contract::limits(&limits, "iso-a"),
        contract::limits(&limits, "iso-b"),
        contract::limits(&other_install, "iso-a"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_keeps_the_contract_with_keys_on_every_node() {
    let mut cluster = RedisCluster::stopped();
    let limits = RedisLimits::connect(RedisLimitsConfig {
        urls: cluster.urls(),
        cluster: true,
        command_timeout: Duration::from_secs(2),
        ..RedisLimitsConfig::default()
    })
    .await
    .expect("Cluster limits are built while the Cluster is down");
    assert!(
        is_unavailable(&limits.ping().await),
        "ping of a down Cluster"
    );

    cluster.start();
    limits.ping().await.expect("ping once the Cluster is up");
    contract::limits(&limits, "redis-cluster").await;

    // Many users: their hash tags spread over the slots of all three nodes, and each user's
    // keys live together on the node that owns the slot.
    let mut slots = Vec::new();
    let throttle = LoginThrottle::default();
    for i in 0..30 {
        let user = format!("spread/user-{i}");
        slots.push(
            limits
                .open_session(&user, 1, LONG_TTL)
                .await
                .unwrap()
                .unwrap(),
        );
        limits
            .admit_login(ip("192.0.2.1"), &user, &throttle)
            .await
            .unwrap();
        assert!(limits.check_login_delay(&user, LONG_TTL).await.unwrap());
    }
    let mut total = 0;
    for node in cluster.nodes() {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("cloudpop:*{spread/*")
            .query(&mut node.connection())
            .unwrap();
        assert!(
            !keys.is_empty(),
            "node {} holds none of 30 users",
            node.port()
        );
        for key in &keys {
            let tag = &key[key.find('{').unwrap()..];
            for kind in ["sess", "try:user", "delay"] {
                let sibling = format!("cloudpop:{kind}:{tag}");
                assert!(keys.contains(&sibling), "{sibling} not beside {key}");
            }
        }
        total += keys.len();
    }
    assert_eq!(
        total, 90,
        "every user's three keys, each stored exactly once"
    );
    for slot in &slots {
        limits.close_session(slot).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_pods_share_caps_and_login_delays() {
    let server = RedisServer::start_single();
    let config = single_node(server.url(), Duration::from_secs(2));
    let pods = [
        Arc::new(connect(config.clone()).await),
        Arc::new(connect(config).await),
    ];
    let client = ip("192.0.2.10");

    // 20 racing opens under a cap of 5, from two pods: exactly 5 win.
    let mut opens = JoinSet::new();
    for i in 0..20 {
        let pod = Arc::clone(&pods[i % 2]);
        opens.spawn(async move { pod.open_connection(client, 5, LONG_TTL).await.unwrap() });
    }
    let won: Vec<ConnectionSlot> = opens.join_all().await.into_iter().flatten().collect();
    assert_eq!(
        won.len(),
        5,
        "{} of 20 racing opens won under a cap of 5",
        won.len()
    );
    // A slot opened by one pod is closed by the other (say, after a handover).
    pods[1].close_connection(&won[0]).await.unwrap();
    assert!(
        pods[0]
            .open_connection(client, 5, LONG_TTL)
            .await
            .unwrap()
            .is_some()
    );

    // 20 racing logins of one user: exactly one is admitted.
    let mut logins = JoinSet::new();
    for i in 0..20 {
        let pod = Arc::clone(&pods[i % 2]);
        logins.spawn(async move { pod.check_login_delay("race/bob", LONG_TTL).await.unwrap() });
    }
    let admitted = logins.join_all().await.into_iter().filter(|ok| *ok).count();
    assert_eq!(admitted, 1, "{admitted} of 20 racing logins admitted");

    // 20 racing attempts at one login, from two pods and many addresses: the turns are
    // spaced as if they had come one after another (default: one free, then 1, 2, 4, 8 s;
    // the next turn, 31 s out, is beyond the 10 s wait).
    let mut attempts = JoinSet::new();
    for i in 0..20u8 {
        let pod = Arc::clone(&pods[usize::from(i % 2)]);
        let client = IpAddr::from([192, 0, 2, 100 + i]);
        attempts.spawn(async move {
            let throttle = LoginThrottle::default();
            pod.admit_login(client, "race/bob", &throttle)
                .await
                .unwrap()
        });
    }
    let mut waits: Vec<u64> = attempts
        .join_all()
        .await
        .into_iter()
        .filter_map(|admission| match admission {
            Admission::Admitted { wait } => Some(wait.as_secs_f64().round() as u64),
            Admission::Throttled { .. } => None,
        })
        .collect();
    waits.sort_unstable();
    assert_eq!(waits, [0, 0, 1, 3, 7], "turns of 20 racing attempts");
}

/// Runs every limits call once and asserts each fails as `Unavailable` within `limit`.
async fn assert_every_call_unavailable(
    limits: &RedisLimits,
    connection: &ConnectionSlot,
    session: &SessionSlot,
    limit: Duration,
) {
    let client = ip("192.0.2.20");
    let throttle = LoginThrottle::default();
    let mut results: Vec<(&str, Duration, Result<(), LimitsError>)> = Vec::new();
    macro_rules! call {
        ($op:literal, $call:expr) => {{
            let started = Instant::now();
            let result = $call.await.map(|_| ());
            results.push(($op, started.elapsed(), result));
        }};
    }
    call!(
        "open_connection",
        limits.open_connection(client, 5, LONG_TTL)
    );
    call!(
        "refresh_connection",
        limits.refresh_connection(connection, LONG_TTL)
    );
    call!("close_connection", limits.close_connection(connection));
    call!(
        "open_session",
        limits.open_session("outage/bob", 5, LONG_TTL)
    );
    call!("refresh_session", limits.refresh_session(session, LONG_TTL));
    call!("close_session", limits.close_session(session));
    call!(
        "admit_login",
        limits.admit_login(client, "outage/bob", &throttle)
    );
    call!(
        "record_success",
        limits.record_success(client, "outage/bob")
    );
    call!(
        "check_login_delay",
        limits.check_login_delay("outage/bob", LONG_TTL)
    );
    call!("ping", limits.ping());
    for (op, elapsed, result) in &results {
        assert!(
            is_unavailable(result),
            "{op} while Redis is unreachable: {result:?}"
        );
        assert!(
            *elapsed <= limit + Duration::from_millis(100),
            "{op} took {elapsed:?}, command timeout {limit:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_gives_unavailable_quickly_and_the_same_instance_recovers() {
    let mut server = RedisServer::start_single();
    let timeout = Duration::from_millis(500);
    let limits = connect(single_node(server.url(), timeout)).await;
    let client = ip("192.0.2.21");
    let connection = limits
        .open_connection(client, 1, LONG_TTL)
        .await
        .unwrap()
        .unwrap();
    let session = limits
        .open_session("outage/bob", 1, LONG_TTL)
        .await
        .unwrap()
        .unwrap();

    server.stop();
    assert_every_call_unavailable(&limits, &connection, &session, timeout).await;
    // Still down: calls keep failing fast and cleanly, not only the first one.
    assert_every_call_unavailable(&limits, &connection, &session, timeout).await;

    server.start();
    // The same instance reconnects on its own; the first call after the restart works.
    limits.ping().await.expect("ping after Redis came back");
    // The restarted Redis kept no data: old slots read as lapsed and count no more.
    assert!(
        !limits
            .refresh_connection(&connection, LONG_TTL)
            .await
            .unwrap()
    );
    assert!(!limits.refresh_session(&session, LONG_TTL).await.unwrap());
    let again = limits.open_connection(client, 1, LONG_TTL).await.unwrap();
    limits
        .close_connection(&again.expect("cap free after the restart"))
        .await
        .unwrap();
    let admission = limits
        .admit_login(client, "outage/bob", &LoginThrottle::default())
        .await;
    assert_eq!(
        admission.unwrap(),
        Admission::Admitted {
            wait: Duration::ZERO
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_server_gives_unavailable_at_the_command_timeout() {
    // Accepts connections (the kernel completes them into the backlog) but never answers,
    // like a hung or partitioned Redis.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    let timeout = Duration::from_millis(300);
    let limits = connect(single_node(url, timeout)).await;
    for _ in 0..2 {
        let started = Instant::now();
        let result = limits.open_connection(ip("192.0.2.30"), 1, LONG_TTL).await;
        let elapsed = started.elapsed();
        assert!(is_unavailable(&result), "{result:?}");
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_millis(500),
            "open_connection gave up after {elapsed:?}, command timeout {timeout:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_built_while_redis_is_down_work_once_redis_is_up() {
    let mut server = RedisServer::stopped(free_port());
    let limits = RedisLimits::connect(single_node(server.url(), Duration::from_secs(2)))
        .await
        .expect("connect must not need Redis to be up");
    assert!(is_unavailable(&limits.ping().await), "ping while down");
    let result = limits.check_login_delay("lazy/bob", LONG_TTL).await;
    assert!(is_unavailable(&result), "{result:?}");

    server.start();
    limits.ping().await.expect("ping once Redis is up");
    assert!(
        limits
            .check_login_delay("lazy/bob", LONG_TTL)
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_look_as_promised_inside_redis() {
    let server = RedisServer::start_single();
    let limits = connect(RedisLimitsConfig {
        key_prefix: "pop-test".to_owned(),
        ..single_node(server.url(), Duration::from_secs(2))
    })
    .await;
    let mut redis = server.connection();
    let mut query =
        |command: &mut redis::Cmd| -> redis::Value { command.query(&mut redis).unwrap() };
    let int = |value: redis::Value| -> i64 { redis::from_redis_value(value).unwrap() };

    // Connection slots of an IPv6 client: one sorted set per /64, expiring with its latest
    // member.
    let conn_key = "pop-test:conn:2001:db8:1:2::/64";
    let first = limits
        .open_connection(ip("2001:db8:1:2::1"), 3, Duration::from_secs(10))
        .await;
    let first = first.unwrap().unwrap();
    let second = limits
        .open_connection(ip("2001:db8:1:2::2"), 3, LONG_TTL)
        .await;
    let second = second.unwrap().unwrap();
    assert_eq!(int(query(redis::cmd("ZCARD").arg(conn_key))), 2);
    let left = int(query(redis::cmd("PTTL").arg(conn_key)));
    assert!(
        50_000 < left && left <= 60_000,
        "PTTL {left}: the latest member's expiry"
    );

    // A slot left behind by a pod that died: its score is in the past. It is pruned before
    // counting, so it holds no place under the cap.
    query(redis::cmd("ZADD").arg(conn_key).arg(1).arg("dead-pod-slot"));
    let third = limits
        .open_connection(ip("2001:db8:1:2::3"), 3, LONG_TTL)
        .await;
    let third = third.unwrap().expect("a dead pod's slot must not count");
    assert_eq!(
        int(query(redis::cmd("ZCARD").arg(conn_key))),
        3,
        "dead slot pruned"
    );
    for slot in [&first, &second, &third] {
        limits.close_connection(slot).await.unwrap();
    }
    assert_eq!(
        int(query(redis::cmd("EXISTS").arg(conn_key))),
        0,
        "an empty set is gone"
    );

    // Sessions: one sorted set per user, the user as the hash tag (braces escaped).
    let session = limits
        .open_session("acme/b{o}b", 1, LONG_TTL)
        .await
        .unwrap()
        .unwrap();
    let sess_key = "pop-test:sess:{acme/b%7Bo%7Db}";
    assert_eq!(int(query(redis::cmd("ZCARD").arg(sess_key))), 1);
    limits.close_session(&session).await.unwrap();

    // Login attempts: a hash per client network and per user, expiring a window after the
    // latest turn.
    let policy = ThrottlePolicy {
        free_attempts: 0,
        base: Duration::from_secs(1),
        max: Duration::from_secs(30),
        window: Duration::from_secs(100),
    };
    let throttle = LoginThrottle {
        per_login: policy,
        per_network: policy,
        max_wait: Duration::from_secs(10),
    };
    for _ in 0..2 {
        limits
            .admit_login(ip("::ffff:198.51.100.7"), "acme/bob", &throttle)
            .await
            .unwrap();
    }
    let time: Vec<u64> = redis::cmd("TIME").query(&mut server.connection()).unwrap();
    let now_ms = time[0] * 1000 + time[1] / 1000;
    for key in [
        "pop-test:try:ip:198.51.100.7",
        "pop-test:try:user:{acme/bob}",
    ] {
        let (count, next_ms): (u64, u64) = redis::cmd("HMGET")
            .arg(key)
            .arg("count")
            .arg("next_ms")
            .query(&mut server.connection())
            .unwrap();
        assert_eq!(count, 2, "{key}");
        // Turns now and 1 s from now; the next 2 s after that.
        let next_in = next_ms.saturating_sub(now_ms);
        assert!(
            (2_500..=3_000).contains(&next_in),
            "{key}: next turn in {next_in} ms"
        );
        let left = int(query(redis::cmd("PTTL").arg(key)));
        assert!(90_000 < left && left <= 101_000, "{key}: PTTL {left}");
    }
    limits
        .record_success(ip("198.51.100.7"), "acme/bob")
        .await
        .unwrap();
    assert_eq!(
        int(query(
            redis::cmd("EXISTS").arg("pop-test:try:user:{acme/bob}")
        )),
        0
    );
    let count: u64 = redis::cmd("HGET")
        .arg("pop-test:try:ip:198.51.100.7")
        .arg("count")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(count, 1, "a success refunds one network attempt");

    // LOGIN-DELAY: a string that expires after the delay.
    assert!(
        limits
            .check_login_delay("acme/bob", Duration::from_secs(30))
            .await
            .unwrap()
    );
    let left = int(query(redis::cmd("PTTL").arg("pop-test:delay:{acme/bob}")));
    assert!(25_000 < left && left <= 30_000, "PTTL {left}");

    // Scripts run by hash; after Redis forgets them (restart, SCRIPT FLUSH) they are reloaded.
    query(redis::cmd("SCRIPT").arg("FLUSH"));
    let slot = limits
        .open_connection(ip("192.0.2.40"), 1, LONG_TTL)
        .await
        .unwrap();
    let slot = slot.expect("open after SCRIPT FLUSH");
    query(redis::cmd("SCRIPT").arg("FLUSH"));
    assert!(
        limits.refresh_connection(&slot, LONG_TTL).await.unwrap(),
        "refresh after FLUSH"
    );
    query(redis::cmd("SCRIPT").arg("FLUSH"));
    let admission = limits
        .admit_login(ip("192.0.2.40"), "acme/flushed", &throttle)
        .await
        .unwrap();
    assert_eq!(
        admission,
        Admission::Admitted {
            wait: Duration::ZERO
        },
        "admit_login after FLUSH"
    );
    query(redis::cmd("SCRIPT").arg("FLUSH"));
    limits
        .record_success(ip("192.0.2.40"), "acme/flushed")
        .await
        .expect("record_success after FLUSH");
}

#[tokio::test]
async fn configs_that_cannot_work_are_refused_at_connect() {
    let bad = [
        RedisLimitsConfig {
            urls: vec![],
            ..RedisLimitsConfig::default()
        },
        RedisLimitsConfig {
            urls: vec![
                "redis://127.0.0.1:1".to_owned(),
                "redis://127.0.0.1:2".to_owned(),
            ],
            ..RedisLimitsConfig::default()
        },
        RedisLimitsConfig {
            urls: vec!["not a url".to_owned()],
            ..RedisLimitsConfig::default()
        },
        RedisLimitsConfig {
            urls: vec!["redis://:s3cr3t@127.0.0.1:1".to_owned()],
            key_prefix: "a{b}".to_owned(),
            ..RedisLimitsConfig::default()
        },
        RedisLimitsConfig {
            command_timeout: Duration::ZERO,
            ..RedisLimitsConfig::default()
        },
    ];
    for config in bad {
        let shown = format!("{config:?}");
        match RedisLimits::connect(config).await {
            Err(LimitsError::Unavailable(why)) => {
                assert!(why.contains("invalid Redis limits config"), "{why}");
                assert!(!why.contains("s3cr3t"), "{why}");
            }
            Ok(limits) => panic!("{shown} accepted: {limits:?}"),
        }
    }
}
