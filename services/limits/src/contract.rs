//! The contract test suite of [`Limits`]. Every implementation, in this crate or another,
//! runs the same function from its tests; a check that fails panics with what it expected.
//!
//! The suite takes a `scope`: a short string unique to the run (e.g. `redis-4f2a`). User
//! keys start with it, and client addresses are derived from it (IPv6 in `fd00::/8`, IPv4
//! in `198.18.0.0/15`), so that runs sharing one backend — even at the same time — never
//! count each other's slots or attempts. Slots are closed at the end; login attempts and
//! login delays are left to expire (within a minute).
//!
//! These are test helpers, compiled into the library so that other crates' tests can call
//! them; nothing in production calls them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::limits::Limits;
use crate::slot::{ConnectionSlot, SessionSlot};
use crate::throttle::{Admission, LoginThrottle, ThrottlePolicy};

/// Checks every promise of [`Limits`] against `limits`, panicking on the first broken one.
///
/// Uses real time (short ttls and sleeps, under a second in all, because the timed checks
/// run concurrently), since a remote backend's clock cannot be paused.
pub async fn limits<L: Limits + ?Sized>(limits: &L, scope: &str) {
    limits
        .ping()
        .await
        .expect("ping of a working backend must be Ok");
    connection_caps(limits, scope).await;
    client_networks_share_a_count(limits, scope).await;
    session_caps_per_user(limits, scope).await;
    attempts_at_one_login_are_spaced(limits, scope).await;
    attempts_from_one_network_are_spaced(limits, scope).await;
    a_refusal_counts_only_with_the_holder_that_admitted(limits, scope).await;
    success_forgets_the_login_and_refunds_the_network(limits, scope).await;
    tokio::join!(
        connection_slot_lapses(limits, scope),
        connection_refresh_keeps_the_slot(limits, scope),
        session_slot_lapses(limits, scope),
        session_refresh_keeps_the_slot(limits, scope),
        attempts_expire_a_window_after_the_latest(limits, scope),
        login_delay_admits_one_login_per_delay(limits, scope),
    );
}

// Real-time checks: margins of at least 150 ms either side of each deadline absorb
// scheduling and network delay without making the suite slow.
const SHORT_TTL: Duration = Duration::from_millis(400);
const STEP: Duration = Duration::from_millis(250);
const PAST_SHORT_TTL: Duration = Duration::from_millis(600);
const LONG_TTL: Duration = Duration::from_secs(60);

/// How far a backend's wait may fall short of the spacing: the time between two calls.
const WAIT_SLACK: Duration = Duration::from_millis(150);

/// Spacing of 10, 20, then 40 s after the free attempts, remembered for a minute: long
/// enough that no check waits for a turn, and a wait is told from another by far more than
/// the time between two calls.
fn spaced(free_attempts: u64) -> ThrottlePolicy {
    ThrottlePolicy {
        free_attempts,
        base: ms(10_000),
        max: ms(40_000),
        window: LONG_TTL,
    }
}

/// Never spaced: for the holder a check is not about.
fn unspaced() -> ThrottlePolicy {
    spaced(1_000)
}

/// Logins spaced after two free attempts, networks never; waits up to 45 s.
fn per_login_throttle() -> LoginThrottle {
    LoginThrottle {
        per_login: spaced(2),
        per_network: unspaced(),
        max_wait: ms(45_000),
    }
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// FNV-1a of the scope, for addresses no other scope uses.
fn scope_hash(scope: &str) -> u64 {
    scope.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An IPv6 address of the scope: `fdXX:XXXX:XXXX:<network>::<host>`, so each `network`
/// number is its own /64.
fn v6(scope: &str, network: u16, host: u16) -> IpAddr {
    let scope_bits = u128::from(scope_hash(scope) & 0xff_ffff_ffff);
    let bits = (0xfd << 120) | (scope_bits << 80) | (u128::from(network) << 64) | u128::from(host);
    IpAddr::V6(Ipv6Addr::from_bits(bits))
}

/// The scope's IPv4 address, in the benchmarking range `198.18.0.0/15`.
fn v4(scope: &str) -> IpAddr {
    let low = u32::try_from(scope_hash(scope) & 0x1_ffff).unwrap();
    IpAddr::V4(Ipv4Addr::from_bits(
        u32::from(Ipv4Addr::new(198, 18, 0, 0)) | low,
    ))
}

fn user(scope: &str, tenant: &str, name: &str) -> String {
    format!("{scope}-{tenant}/{name}")
}

async fn connection_caps(limits: &(impl Limits + ?Sized), scope: &str) {
    let client = v6(scope, 1, 1);
    let mut slots = Vec::new();
    for i in 0..3 {
        let slot = open_connection(limits, client, 3, LONG_TTL).await;
        slots.push(slot.unwrap_or_else(|| panic!("slot {} of 3 refused", i + 1)));
    }
    assert_eq!(slots[0].client(), client, "a slot must name its client");
    assert!(
        slots[0] != slots[1] && slots[1] != slots[2] && slots[0] != slots[2],
        "slots must be told apart"
    );
    assert!(
        open_connection(limits, client, 3, LONG_TTL).await.is_none(),
        "a 4th slot under a cap of 3"
    );
    let neighbour = open_connection(limits, v6(scope, 2, 1), 3, LONG_TTL)
        .await
        .expect("another client's cap is independent");
    assert!(
        refresh_connection(limits, &slots[0], LONG_TTL).await,
        "refresh of a live slot"
    );

    let closed = slots.remove(0);
    close_connection(limits, &closed).await;
    slots.push(
        open_connection(limits, client, 3, LONG_TTL)
            .await
            .expect("close must free a slot at once"),
    );
    // Closing again, or refreshing a closed slot, must not touch the others.
    close_connection(limits, &closed).await;
    assert!(
        !refresh_connection(limits, &closed, LONG_TTL).await,
        "refresh of a closed slot must be false"
    );
    assert!(
        open_connection(limits, client, 3, LONG_TTL).await.is_none(),
        "a second close of one slot freed another"
    );
    for slot in slots.iter().chain([&neighbour]) {
        close_connection(limits, slot).await;
    }
    assert!(
        open_connection(limits, v6(scope, 1, 2), 0, LONG_TTL)
            .await
            .is_none(),
        "a cap of 0 admits nobody"
    );
}

async fn client_networks_share_a_count(limits: &(impl Limits + ?Sized), scope: &str) {
    let IpAddr::V4(v4) = v4(scope) else {
        unreachable!("v4 gives IPv4")
    };
    let v4_slot = open_connection(limits, IpAddr::V4(v4), 1, LONG_TTL)
        .await
        .expect("first slot of an IPv4 client");
    let mapped = IpAddr::V6(v4.to_ipv6_mapped());
    assert!(
        open_connection(limits, mapped, 1, LONG_TTL).await.is_none(),
        "{mapped} must count as {v4}"
    );
    let (a, same_64, other_64) = (v6(scope, 3, 1), v6(scope, 3, 2), v6(scope, 4, 1));
    let a_slot = open_connection(limits, a, 1, LONG_TTL)
        .await
        .expect("first slot of an IPv6 client");
    assert!(
        open_connection(limits, same_64, 1, LONG_TTL)
            .await
            .is_none(),
        "{same_64} must count with {a}: one /64"
    );
    let other_slot = open_connection(limits, other_64, 1, LONG_TTL)
        .await
        .expect("another /64 is another client");
    for slot in [&v4_slot, &a_slot, &other_slot] {
        close_connection(limits, slot).await;
    }
}

async fn session_caps_per_user(limits: &(impl Limits + ?Sized), scope: &str) {
    let alice = user(scope, "a", "alice");
    let namesake = user(scope, "b", "alice");
    let bob = user(scope, "a", "bob");
    let mut slots = Vec::new();
    for i in 0..2 {
        let slot = open_session(limits, &alice, 2, LONG_TTL).await;
        slots.push(slot.unwrap_or_else(|| panic!("session {} of 2 refused", i + 1)));
    }
    assert_eq!(slots[0].user_key(), alice, "a slot must name its user");
    assert!(
        open_session(limits, &alice, 2, LONG_TTL).await.is_none(),
        "a 3rd session under a cap of 2"
    );
    for other in [&namesake, &bob] {
        let slot = open_session(limits, other, 1, LONG_TTL).await;
        slots.push(slot.unwrap_or_else(|| panic!("{other} is counted with {alice}")));
    }
    assert!(
        refresh_session(limits, &slots[1], LONG_TTL).await,
        "refresh of a live session"
    );
    let closed = slots.remove(0);
    close_session(limits, &closed).await;
    assert!(
        !refresh_session(limits, &closed, LONG_TTL).await,
        "refresh of a closed session must be false"
    );
    slots.push(
        open_session(limits, &alice, 2, LONG_TTL)
            .await
            .expect("close must free a session at once"),
    );
    for slot in &slots {
        close_session(limits, slot).await;
    }
}

async fn attempts_at_one_login_are_spaced(limits: &(impl Limits + ?Sized), scope: &str) {
    let throttle = per_login_throttle();
    let guessed = user(scope, "a", "guessed");
    // From a fresh network each time: only the login's count matters. Turns at 0, 0 (free),
    // 10 s, 30 s; the next would be at 70 s, beyond the 45 s wait.
    for (host, expected) in [(1, 0), (2, 0), (3, 10_000), (4, 30_000)] {
        let admission = admit(limits, v6(scope, 100 + host, 1), &guessed, &throttle).await;
        assert_admitted(admission, ms(expected), "attempt at a spaced login");
    }
    for host in 5..=6 {
        let admission = admit(limits, v6(scope, 100 + host, 1), &guessed, &throttle).await;
        assert_throttled(admission, ms(70_000), "attempt beyond the longest wait");
    }
    let innocent = user(scope, "a", "innocent");
    let admission = admit(limits, v6(scope, 107, 1), &innocent, &throttle).await;
    assert_admitted(admission, Duration::ZERO, "another login is not spaced");
}

async fn attempts_from_one_network_are_spaced(limits: &(impl Limits + ?Sized), scope: &str) {
    let throttle = LoginThrottle {
        per_login: unspaced(),
        per_network: spaced(3),
        max_wait: ms(15_000),
    };
    // Hosts of one /64 count together, each at another login.
    let mut answers = Vec::new();
    for host in 1..=5 {
        let sprayed = user(scope, "b", &format!("sprayed-{host}"));
        answers.push(admit(limits, v6(scope, 6, host), &sprayed, &throttle).await);
    }
    for (answer, expected) in answers.iter().take(4).zip([0, 0, 0, 10_000]) {
        assert_admitted(*answer, ms(expected), "attempt from a spaced network");
    }
    assert_throttled(answers[4], ms(30_000), "attempt beyond the longest wait");
    let elsewhere = admit(limits, v6(scope, 7, 1), &user(scope, "b", "x"), &throttle).await;
    assert_admitted(elsewhere, Duration::ZERO, "another network is not spaced");
}

async fn a_refusal_counts_only_with_the_holder_that_admitted(
    limits: &(impl Limits + ?Sized),
    scope: &str,
) {
    // The network refuses (no free attempt, a turn 10 s out, waits of at most 5 s); the
    // login admits and counts.
    let throttle = LoginThrottle {
        per_login: spaced(1),
        per_network: spaced(1),
        max_wait: ms(5_000),
    };
    let (client, target) = (v6(scope, 8, 1), user(scope, "c", "target"));
    let first = admit(limits, client, &user(scope, "c", "first"), &throttle).await;
    assert_admitted(first, Duration::ZERO, "the network's first attempt");
    let refused = admit(limits, client, &target, &throttle).await;
    assert_throttled(refused, ms(10_000), "the network's second attempt");
    // Now the login refuses too (its turn is 10 s out): neither holder counts this one.
    let again = admit(limits, client, &target, &throttle).await;
    assert_throttled(
        again,
        ms(10_000),
        "a refused attempt must not move the turn",
    );
    let relaxed = LoginThrottle {
        max_wait: LONG_TTL,
        ..throttle
    };
    let from_elsewhere = admit(limits, v6(scope, 9, 1), &target, &relaxed).await;
    assert_admitted(
        from_elsewhere,
        ms(10_000),
        "the login counts the attempt it admitted, not the one it refused",
    );
}

async fn success_forgets_the_login_and_refunds_the_network(
    limits: &(impl Limits + ?Sized),
    scope: &str,
) {
    let throttle = LoginThrottle {
        per_login: spaced(1),
        per_network: spaced(2),
        max_wait: LONG_TTL,
    };
    let (client, forgetful) = (v6(scope, 10, 1), user(scope, "d", "forgetful"));
    assert_admitted(
        admit(limits, client, &forgetful, &throttle).await,
        Duration::ZERO,
        "first attempt",
    );
    assert_admitted(
        admit(limits, client, &forgetful, &throttle).await,
        ms(10_000),
        "second attempt",
    );
    limits
        .record_success(client, &forgetful)
        .await
        .expect("record_success failed");
    assert_admitted(
        admit(limits, v6(scope, 11, 1), &forgetful, &throttle).await,
        Duration::ZERO,
        "a success must forget the login's attempts",
    );
    // The network counted two and was refunded one: its next turn stays (10 s), and the
    // attempt taking it is its third, the first beyond the free ones (spacing 10 s), not
    // its fourth (20 s).
    assert_admitted(
        admit(limits, client, &user(scope, "d", "next"), &throttle).await,
        ms(10_000),
        "the network's next turn stays",
    );
    let last = admit(limits, client, &user(scope, "d", "last"), &throttle).await;
    assert_admitted(
        last,
        ms(20_000),
        "a success must refund one network attempt",
    );
}

async fn connection_slot_lapses(limits: &(impl Limits + ?Sized), scope: &str) {
    let client = v6(scope, 15, 1);
    let old = open_connection(limits, client, 1, SHORT_TTL)
        .await
        .expect("first slot");
    tokio::time::sleep(PAST_SHORT_TTL).await;
    let new = open_connection(limits, client, 1, LONG_TTL)
        .await
        .expect("a slot not refreshed within its ttl must stop counting");
    assert!(
        !refresh_connection(limits, &old, LONG_TTL).await,
        "refresh of a lapsed slot must be false"
    );
    close_connection(limits, &old).await;
    assert!(
        open_connection(limits, client, 1, LONG_TTL).await.is_none(),
        "a lapsed slot's refresh or close freed the new one"
    );
    close_connection(limits, &new).await;
}

async fn connection_refresh_keeps_the_slot(limits: &(impl Limits + ?Sized), scope: &str) {
    let client = v6(scope, 16, 1);
    let slot = open_connection(limits, client, 1, SHORT_TTL)
        .await
        .expect("first slot");
    tokio::time::sleep(STEP).await;
    assert!(
        refresh_connection(limits, &slot, SHORT_TTL).await,
        "refresh within the ttl"
    );
    // Past the first expiry, within the refreshed one.
    tokio::time::sleep(STEP).await;
    assert!(
        open_connection(limits, client, 1, LONG_TTL).await.is_none(),
        "refresh must keep the slot counting for its ttl from then"
    );
    close_connection(limits, &slot).await;
}

async fn session_slot_lapses(limits: &(impl Limits + ?Sized), scope: &str) {
    let lapsing = user(scope, "a", "lapsing");
    let old = open_session(limits, &lapsing, 1, SHORT_TTL)
        .await
        .expect("first session");
    tokio::time::sleep(PAST_SHORT_TTL).await;
    let new = open_session(limits, &lapsing, 1, LONG_TTL)
        .await
        .expect("a session not refreshed within its ttl must stop counting");
    assert!(
        !refresh_session(limits, &old, LONG_TTL).await,
        "refresh of a lapsed session must be false"
    );
    close_session(limits, &old).await;
    assert!(
        open_session(limits, &lapsing, 1, LONG_TTL).await.is_none(),
        "a lapsed session's refresh or close freed the new one"
    );
    close_session(limits, &new).await;
}

async fn session_refresh_keeps_the_slot(limits: &(impl Limits + ?Sized), scope: &str) {
    let kept = user(scope, "a", "kept");
    let slot = open_session(limits, &kept, 1, SHORT_TTL)
        .await
        .expect("first session");
    tokio::time::sleep(STEP).await;
    assert!(
        refresh_session(limits, &slot, SHORT_TTL).await,
        "refresh within the ttl"
    );
    tokio::time::sleep(STEP).await;
    assert!(
        open_session(limits, &kept, 1, LONG_TTL).await.is_none(),
        "refresh must keep the session counting for its ttl from then"
    );
    close_session(limits, &slot).await;
}

async fn attempts_expire_a_window_after_the_latest(limits: &(impl Limits + ?Sized), scope: &str) {
    // Spacing 100, 200, 400, 800 ms, remembered for 400 ms after the latest turn.
    let policy = ThrottlePolicy {
        free_attempts: 1,
        base: ms(100),
        max: ms(1000),
        window: SHORT_TTL,
    };
    let throttle = LoginThrottle {
        per_login: policy,
        per_network: unspaced(),
        max_wait: LONG_TTL,
    };
    let quiet = user(scope, "e", "quiet");
    let attempt = |host| admit(limits, v6(scope, 17, host), &quiet, &throttle);
    assert_admitted(attempt(1).await, Duration::ZERO, "first attempt");
    tokio::time::sleep(STEP).await;
    assert_admitted(attempt(2).await, Duration::ZERO, "second, after its turn");
    // Past a window after the first attempt, within one after the latest: the third counts
    // on, so the fourth waits 400 ms (100 ms if counting had started afresh).
    tokio::time::sleep(STEP).await;
    assert_admitted(attempt(3).await, Duration::ZERO, "third, after its turn");
    assert_admitted(
        attempt(4).await,
        ms(400),
        "the window must run from the latest attempt",
    );
    // The fourth's turn is 400 ms out and remembered a window after it.
    tokio::time::sleep(ms(400) + PAST_SHORT_TTL).await;
    assert_admitted(attempt(5).await, Duration::ZERO, "after a quiet window");
    assert_admitted(
        attempt(6).await,
        ms(100),
        "counting must start afresh after a quiet window",
    );
}

async fn login_delay_admits_one_login_per_delay(limits: &(impl Limits + ?Sized), scope: &str) {
    let (eager, other) = (user(scope, "a", "eager"), user(scope, "a", "other"));
    assert!(login_delay(limits, &eager, SHORT_TTL).await, "first login");
    assert!(
        !login_delay(limits, &eager, SHORT_TTL).await,
        "a second login within the delay"
    );
    assert!(
        login_delay(limits, &other, SHORT_TTL).await,
        "another user's login delay is independent"
    );
    assert!(
        login_delay(limits, &eager, Duration::ZERO).await,
        "a zero delay always admits"
    );
    tokio::time::sleep(PAST_SHORT_TTL).await;
    assert!(
        login_delay(limits, &eager, SHORT_TTL).await,
        "a login after the delay"
    );
    assert!(
        !login_delay(limits, &eager, SHORT_TTL).await,
        "the admitted login must be recorded"
    );
}

async fn open_connection(
    limits: &(impl Limits + ?Sized),
    client: IpAddr,
    max: u32,
    ttl: Duration,
) -> Option<ConnectionSlot> {
    limits
        .open_connection(client, max, ttl)
        .await
        .unwrap_or_else(|e| panic!("open_connection for {client} failed: {e}"))
}

async fn refresh_connection(
    limits: &(impl Limits + ?Sized),
    slot: &ConnectionSlot,
    ttl: Duration,
) -> bool {
    limits
        .refresh_connection(slot, ttl)
        .await
        .unwrap_or_else(|e| panic!("refresh_connection for {} failed: {e}", slot.client))
}

async fn close_connection(limits: &(impl Limits + ?Sized), slot: &ConnectionSlot) {
    limits
        .close_connection(slot)
        .await
        .unwrap_or_else(|e| panic!("close_connection for {} failed: {e}", slot.client));
}

async fn open_session(
    limits: &(impl Limits + ?Sized),
    user_key: &str,
    max: u32,
    ttl: Duration,
) -> Option<SessionSlot> {
    limits
        .open_session(user_key, max, ttl)
        .await
        .unwrap_or_else(|e| panic!("open_session for {user_key} failed: {e}"))
}

async fn refresh_session(
    limits: &(impl Limits + ?Sized),
    slot: &SessionSlot,
    ttl: Duration,
) -> bool {
    limits
        .refresh_session(slot, ttl)
        .await
        .unwrap_or_else(|e| panic!("refresh_session for {} failed: {e}", slot.user_key))
}

async fn close_session(limits: &(impl Limits + ?Sized), slot: &SessionSlot) {
    limits
        .close_session(slot)
        .await
        .unwrap_or_else(|e| panic!("close_session for {} failed: {e}", slot.user_key));
}

async fn admit(
    limits: &(impl Limits + ?Sized),
    client: IpAddr,
    user_key: &str,
    throttle: &LoginThrottle,
) -> Admission {
    limits
        .admit_login(client, user_key, throttle)
        .await
        .unwrap_or_else(|e| panic!("admit_login for {client}/{user_key} failed: {e}"))
}

/// `admission` is a turn after `wait`, less at most the time between two calls.
fn assert_admitted(admission: Admission, wait: Duration, what: &str) {
    match admission {
        Admission::Admitted { wait: got } if got <= wait && got + WAIT_SLACK >= wait => {}
        other => panic!("{what}: expected a turn after {wait:?}, got {other:?}"),
    }
}

/// `admission` is refused with a turn `retry_after` out, less at most the time between two
/// calls.
fn assert_throttled(admission: Admission, retry_after: Duration, what: &str) {
    match admission {
        Admission::Throttled { retry_after: got }
            if got <= retry_after && got + WAIT_SLACK >= retry_after => {}
        other => panic!("{what}: expected a refusal for {retry_after:?}, got {other:?}"),
    }
}

async fn login_delay(limits: &(impl Limits + ?Sized), user_key: &str, delay: Duration) -> bool {
    limits
        .check_login_delay(user_key, delay)
        .await
        .unwrap_or_else(|e| panic!("check_login_delay for {user_key} failed: {e}"))
}
