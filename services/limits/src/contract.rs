//! The contract test suite of [`Limits`]. Every implementation, in this crate or another,
//! runs the same function from its tests; a check that fails panics with what it expected.
//!
//! The suite takes a `scope`: a short string unique to the run (e.g. `redis-4f2a`). User
//! keys start with it, and client addresses are derived from it (IPv6 in `fd00::/8`, IPv4
//! in `198.18.0.0/15`), so that runs sharing one backend — even at the same time — never
//! count each other's slots or failures. Slots are closed at the end; failure counts and
//! login delays are left to expire (within a minute).
//!
//! These are test helpers, compiled into the library so that other crates' tests can call
//! them; nothing in production calls them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::limits::Limits;
use crate::penalty::PenaltyPolicy;
use crate::slot::{ConnectionSlot, SessionSlot};

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
    penalties_grow_and_are_capped(limits, scope).await;
    success_resets_the_user_not_the_client(limits, scope).await;
    tokio::join!(
        connection_slot_lapses(limits, scope),
        connection_refresh_keeps_the_slot(limits, scope),
        session_slot_lapses(limits, scope),
        session_refresh_keeps_the_slot(limits, scope),
        failures_expire_a_window_after_the_latest(limits, scope),
        login_delay_admits_one_login_per_delay(limits, scope),
    );
}

// Real-time checks: margins of at least 150 ms either side of each deadline absorb
// scheduling and network delay without making the suite slow.
const SHORT_TTL: Duration = Duration::from_millis(400);
const STEP: Duration = Duration::from_millis(250);
const PAST_SHORT_TTL: Duration = Duration::from_millis(600);
const LONG_TTL: Duration = Duration::from_secs(60);

/// Penalties 100, 200, 400, 800, then 1000 ms, remembered for a minute.
fn policy() -> PenaltyPolicy {
    PenaltyPolicy {
        base: ms(100),
        max: ms(1000),
        window: LONG_TTL,
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

async fn penalties_grow_and_are_capped(limits: &(impl Limits + ?Sized), scope: &str) {
    let policy = policy();
    let (client, guessed) = (v6(scope, 5, 1), user(scope, "a", "guessed"));
    assert_eq!(
        penalty(limits, client, Some(&guessed)).await,
        Duration::ZERO,
        "no failures, no penalty"
    );
    for expected in [100, 200, 400, 800, 1000, 1000] {
        assert_eq!(
            fail(limits, client, Some(&guessed), &policy).await,
            ms(expected),
            "penalty returned by record_failure"
        );
        assert_eq!(
            penalty(limits, client, Some(&guessed)).await,
            ms(expected),
            "penalty after the failure"
        );
    }
    let elsewhere = v6(scope, 6, 1);
    assert_eq!(
        penalty(limits, client, None).await,
        ms(1000),
        "the client's own penalty"
    );
    assert_eq!(
        penalty(limits, elsewhere, Some(&guessed)).await,
        ms(1000),
        "the user's penalty from a fresh client"
    );
    let innocent = user(scope, "a", "innocent");
    assert_eq!(
        penalty(limits, elsewhere, Some(&innocent)).await,
        Duration::ZERO,
        "a fresh client and a fresh user"
    );

    // Failures without a user count for the client only.
    let anonymous = v6(scope, 7, 1);
    fail(limits, anonymous, None, &policy).await;
    assert_eq!(fail(limits, anonymous, None, &policy).await, ms(200));
    assert_eq!(
        penalty(limits, anonymous, Some(&innocent)).await,
        ms(200),
        "the client's penalty applies to any user"
    );
    assert_eq!(
        penalty(limits, elsewhere, Some(&innocent)).await,
        Duration::ZERO,
        "a failure without a user counted for a user"
    );

    // The penalty of an attempt is the larger of its client's and its user's.
    let spread = user(scope, "a", "spread");
    for host in 1..=3 {
        fail(limits, v6(scope, 8 + host, 1), Some(&spread), &policy).await;
    }
    assert_eq!(
        fail(limits, v6(scope, 12, 1), Some(&spread), &policy).await,
        ms(800),
        "4th failure of the user from a fresh client"
    );
}

async fn success_resets_the_user_not_the_client(limits: &(impl Limits + ?Sized), scope: &str) {
    let policy = policy();
    let (client, forgetful) = (v6(scope, 13, 1), user(scope, "a", "forgetful"));
    for _ in 0..3 {
        fail(limits, client, Some(&forgetful), &policy).await;
    }
    limits
        .record_success(client, Some(&forgetful))
        .await
        .expect("record_success failed");
    assert_eq!(
        penalty(limits, v6(scope, 14, 1), Some(&forgetful)).await,
        Duration::ZERO,
        "success must reset the user"
    );
    assert_eq!(
        penalty(limits, client, Some(&forgetful)).await,
        ms(400),
        "success must not reset the client"
    );
    assert_eq!(
        fail(limits, client, Some(&forgetful), &policy).await,
        ms(800),
        "the client counts on (4th), the user restarts (1st)"
    );
    limits
        .record_success(client, None)
        .await
        .expect("record_success without a user failed");
    assert_eq!(
        penalty(limits, client, None).await,
        ms(800),
        "success without a user must change nothing"
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

async fn failures_expire_a_window_after_the_latest(limits: &(impl Limits + ?Sized), scope: &str) {
    let policy = PenaltyPolicy {
        window: SHORT_TTL,
        ..policy()
    };
    let (client, quiet) = (v6(scope, 17, 1), user(scope, "a", "quiet"));
    assert_eq!(fail(limits, client, Some(&quiet), &policy).await, ms(100));
    tokio::time::sleep(STEP).await;
    assert_eq!(fail(limits, client, Some(&quiet), &policy).await, ms(200));
    // Past a window after the first failure, within one after the latest.
    tokio::time::sleep(STEP).await;
    assert_eq!(
        penalty(limits, client, Some(&quiet)).await,
        ms(200),
        "the window must run from the latest failure"
    );
    tokio::time::sleep(PAST_SHORT_TTL).await;
    assert_eq!(
        penalty(limits, client, Some(&quiet)).await,
        Duration::ZERO,
        "a quiet window must forget the failures"
    );
    assert_eq!(
        fail(limits, client, Some(&quiet), &policy).await,
        ms(100),
        "counting must start afresh after a quiet window"
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

async fn penalty(
    limits: &(impl Limits + ?Sized),
    client: IpAddr,
    user_key: Option<&str>,
) -> Duration {
    limits
        .login_penalty(client, user_key)
        .await
        .unwrap_or_else(|e| panic!("login_penalty for {client}/{user_key:?} failed: {e}"))
}

async fn fail(
    limits: &(impl Limits + ?Sized),
    client: IpAddr,
    user_key: Option<&str>,
    policy: &PenaltyPolicy,
) -> Duration {
    limits
        .record_failure(client, user_key, policy)
        .await
        .unwrap_or_else(|e| panic!("record_failure for {client}/{user_key:?} failed: {e}"))
}

async fn login_delay(limits: &(impl Limits + ?Sized), user_key: &str, delay: Duration) -> bool {
    limits
        .check_login_delay(user_key, delay)
        .await
        .unwrap_or_else(|e| panic!("check_login_delay for {user_key} failed: {e}"))
}
