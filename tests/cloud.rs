//! Cloud mode end to end: a real `redis-server`, a real S3 server (`s3s-fs`, SigV4), one
//! `auth`, one `lmtp` and two `pop3` processes of the built binary, all on loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::time::{Duration, Instant};

use support::cloud::{Cloud, LOCK_TTL};
use support::{Lmtp, Server, admin_remote, message, without_trace_headers};

fn login(server: &Server, user: &str, password: &str) -> (support::Pop3, String) {
    let mut pop = server.pop3();
    let reply = pop.login(user, password);
    (pop, reply)
}

fn stat_count(pop: &mut support::Pop3) -> usize {
    let stat = pop.cmd("STAT");
    assert!(stat.starts_with("+OK"), "{stat}");
    stat.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Retries `f` until it returns true or `within` passes; returns the time it took.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn mail_flows_through_lmtp_and_either_pop3_pod_and_tenants_stay_apart() {
    let cloud = Cloud::start();
    cloud.tenant("acme", "acme.example");
    cloud.tenant("globex", "globex.example");
    // Added through the running auth service: usable at once, no restart.
    cloud.user("alice@acme.example", "acme pass");
    cloud.user("alice@globex.example", "globex pass");

    let acme_mail = message("for acme", ".dot line\r\nbody of acme\r\n");
    let globex_mail = message("for globex", "body of globex\r\n");
    cloud.lmtp.deliver_ok("alice@acme.example", &acme_mail);
    cloud.lmtp.deliver_ok("alice@globex.example", &globex_mail);
    assert_eq!(
        cloud.lmtp.deliver(&["nobody@acme.example"], b"x\r\n"),
        ["550 no recipient accepted"]
    );

    for pod in [&cloud.pop_a, &cloud.pop_b] {
        let mut pop = pod.pop3();
        pop.login_ok("alice@acme.example", "acme pass");
        assert_eq!(stat_count(&mut pop), 1);
        assert!(
            without_trace_headers(&pop.retr(1)) == acme_mail,
            "acme mail differs via {}",
            pod.pop3
        );
        pop.quit();
        let mut pop = pod.pop3();
        pop.login_ok("alice@globex.example", "globex pass");
        assert_eq!(stat_count(&mut pop), 1);
        assert!(
            without_trace_headers(&pop.retr(1)) == globex_mail,
            "globex mail differs via {}",
            pod.pop3
        );
        pop.quit();
    }
    // One tenant's password does not open the other tenant's maildrop.
    let (_, reply) = login(&cloud.pop_a, "alice@globex.example", "acme pass");
    assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");
    // Crafted logins reach nobody's maildrop.
    for crafted in [
        "../alice@acme.example",
        "alice%2f@acme.example",
        "alice@acme.example/../globex.example",
        &"a".repeat(300),
    ] {
        let (_, reply) = login(&cloud.pop_a, crafted, "acme pass");
        assert!(reply.starts_with("-ERR"), "{crafted}: {reply}");
    }
    // Deletion through pod A is seen by pod B.
    let mut pop = cloud.pop_a.pop3();
    pop.login_ok("alice@acme.example", "acme pass");
    assert!(pop.cmd("DELE 1").starts_with("+OK"));
    assert!(pop.quit().starts_with("+OK"));
    let mut pop = cloud.pop_b.pop3();
    pop.login_ok("alice@acme.example", "acme pass");
    assert_eq!(stat_count(&mut pop), 0);
    let mut pop = cloud.pop_b.pop3();
    pop.login_ok("alice@globex.example", "globex pass");
    assert_eq!(
        stat_count(&mut pop),
        1,
        "the other tenant's mail is untouched"
    );
}

#[test]
fn a_maildrop_is_locked_across_pods_and_a_killed_pod_frees_it_within_the_lease() {
    let mut cloud = Cloud::start();
    cloud.tenant("acme", "acme.example");
    cloud.user("bob@acme.example", "bob pass");
    for i in 0..3 {
        cloud
            .lmtp
            .deliver_ok("bob@acme.example", &message(&format!("m{i}"), "x\r\n"));
    }
    let (mut on_a, reply) = login(&cloud.pop_a, "bob@acme.example", "bob pass");
    assert!(reply.starts_with("+OK"), "{reply}");
    assert!(on_a.cmd("DELE 1").starts_with("+OK"));
    assert!(on_a.cmd("DELE 2").starts_with("+OK"));
    let (_, reply) = login(&cloud.pop_b, "bob@acme.example", "bob pass");
    assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");

    // Pod A dies mid-session: no QUIT, no UPDATE, no lock release.
    cloud.pop_a.kill();
    // The session that gets in is the one checked: a second login right after it would race
    // the server's release of its lock when the probe's connection closes.
    let mut session = None;
    let freed_after = eventually(LOCK_TTL + Duration::from_secs(3), || {
        let (pop, reply) = login(&cloud.pop_b, "bob@acme.example", "bob pass");
        let in_ = reply.starts_with("+OK");
        if in_ {
            session = Some(pop);
        }
        in_
    });
    let freed_after = freed_after.expect("the lock was never freed");
    assert!(
        freed_after <= LOCK_TTL + Duration::from_secs(1),
        "freed after {freed_after:?}"
    );
    let mut pop = session.expect("logged in");
    assert_eq!(
        stat_count(&mut pop),
        3,
        "nothing was deleted by the killed session"
    );
}

#[test]
fn admin_calls_need_the_admin_token_when_one_is_configured() {
    let cloud = Cloud::start();
    cloud.tenant("acme", "acme.example");
    // Without the token, or with a wrong one: refused, and the directory is unchanged.
    let wrong = cloud.admin_token.with_file_name("wrong-token");
    std::fs::write(&wrong, "e2e-admin-token-7f3a9d").unwrap();
    for token in [None, Some(wrong.as_path())] {
        let out = admin_remote(
            cloud.auth.grpc,
            token,
            &["user", "add", "eve@acme.example"],
            "eve pass",
        );
        assert!(!out.status.success(), "admin call admitted with {token:?}");
        assert!(
            out.stderr.contains("refused the admin call")
                && out.stderr.contains("admin_token_file"),
            "{}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("7f3a9"),
            "the token is echoed: {}",
            out.stderr
        );
    }
    let users = cloud.admin(&["user", "list"], "");
    assert!(!users.contains("eve@acme.example"), "{users}");
    // The front-ends' AuthService calls need no admin token.
    cloud.user("eve@acme.example", "eve pass");
    let (mut pop, reply) = login(&cloud.pop_a, "eve@acme.example", "eve pass");
    assert!(reply.starts_with("+OK"), "{reply}");
    pop.quit();
}

#[test]
fn redis_down_is_sys_temp_and_recovers_without_restart() {
    let mut cloud = Cloud::start();
    cloud.tenant("acme", "acme.example");
    cloud.user("carol@acme.example", "carol pass");
    cloud.redis.stop();
    let (_, reply) = login(&cloud.pop_a, "carol@acme.example", "carol pass");
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
    cloud.redis.start();
    let recovered = eventually(Duration::from_secs(10), || {
        login(&cloud.pop_a, "carol@acme.example", "carol pass")
            .1
            .starts_with("+OK")
    });
    assert!(recovered.is_some(), "no recovery after Redis came back");
}

#[test]
fn a_lock_request_lost_in_a_frozen_redis_leaves_no_orphan_lock() {
    // A lease long enough that an orphan would outlast the test by far.
    let lease = "60s";
    let cloud = Cloud::start_with(|pop3| pop3.option("POP3__LOCK_TTL", lease));
    cloud.tenant("acme", "acme.example");
    cloud.user("gina@acme.example", "gina pass");
    // The pod is connected to Redis when it freezes, so the lock request waits in Redis's
    // socket buffer and is applied when Redis resumes.
    let (mut pop, reply) = login(&cloud.pop_a, "gina@acme.example", "gina pass");
    assert!(reply.starts_with("+OK"), "{reply}");
    pop.quit();

    cloud.redis.freeze();
    let (_, reply) = login(&cloud.pop_a, "gina@acme.example", "gina pass");
    cloud.redis.thaw();
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");

    let got_in = eventually(Duration::from_secs(15), || {
        login(&cloud.pop_b, "gina@acme.example", "gina pass")
            .1
            .starts_with("+OK")
    });
    let got_in = got_in.unwrap_or_else(|| {
        panic!("the maildrop stayed [IN-USE] (lease {lease}) after the lost lock request")
    });
    eprintln!("logged in again {got_in:?} after Redis resumed");
}

#[test]
fn a_login_against_a_frozen_redis_gets_sys_temp_within_one_deadline() {
    // Limits and lock in Redis, each call allowed 2 s: one login makes four calls, so
    // without an overall deadline it would answer after about 8 s.
    let cloud = Cloud::start_with(|pop3| {
        pop3.option("LIMITS__BACKEND", "redis")
            .option("LIMITS__REDIS__COMMAND_TIMEOUT", "2s")
            .option("LOCK__REDIS__COMMAND_TIMEOUT", "2s")
            .option("POP3__LOGIN_DEADLINE", "3s")
            .option("POP3__LOCK_TTL", "60s")
    });
    cloud.tenant("acme", "acme.example");
    cloud.user("gina@acme.example", "gina pass");
    let (mut pop, reply) = login(&cloud.pop_a, "gina@acme.example", "gina pass");
    assert!(reply.starts_with("+OK"), "{reply}");
    pop.quit();

    cloud.redis.freeze();
    // The connection's own slot (asked before the greeting) fails open at its timeout;
    // the login starts with USER.
    let mut pop = cloud.pop_a.pop3();
    let started = Instant::now();
    let reply = pop.login("gina@acme.example", "gina pass");
    let took = started.elapsed();
    cloud.redis.thaw();
    eprintln!("login against a frozen Redis: {reply:?} after {took:?}");
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
    assert!(
        took < Duration::from_millis(4500),
        "the login took {took:?}, past its 3 s deadline"
    );
    // Nothing it started is left behind: the maildrop is free again long before the lease.
    let got_in = eventually(Duration::from_secs(15), || {
        login(&cloud.pop_b, "gina@acme.example", "gina pass")
            .1
            .starts_with("+OK")
    });
    assert!(
        got_in.is_some(),
        "the maildrop stayed locked after the frozen login"
    );
}

/// `cloudpop_orphan_cleanups_total{kind="message"}` of `server` by outcome, from `/metrics`.
fn message_cleanups(server: &Server) -> std::collections::HashMap<String, u64> {
    let (status, body) = support::http_get(server.admin, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter_map(|line| line.strip_prefix("cloudpop_orphan_cleanups_total{"))
        .filter(|line| line.contains("kind=\"message\""))
        .filter_map(|line| {
            let outcome = line.split("outcome=\"").nth(1)?.split('"').next()?;
            let value = line.rsplit(' ').next()?.parse().ok()?;
            Some((outcome.to_owned(), value))
        })
        .collect()
}

/// The S3 server is `moto_server`, which stores a PUT it buffered while frozen even though
/// the client hung up (`s3s-fs` drops such a request, so there the duplicate seldom shows).
#[test]
fn a_delivery_answered_451_while_s3_was_frozen_is_stored_once_after_the_retry() {
    let cloud = Cloud::start_on(support::backends::moto(), |pop3| pop3);
    cloud.tenant("acme", "acme.example");
    cloud.user("hank@acme.example", "hank pass");
    // Also connects the LMTP pod to S3, so the next PUT waits in the server's buffers.
    cloud
        .lmtp
        .deliver_ok("hank@acme.example", &message("before", "1\r\n"));

    let mail = message("frozen", "sent while S3 was frozen\r\n");
    cloud.s3.freeze();
    let replies = cloud.lmtp.deliver(&["hank@acme.example"], &mail);
    cloud.s3.thaw();
    assert!(replies[0].starts_with("451"), "{replies:?}");
    // The MTA was told to try again later, and does.
    cloud.lmtp.deliver_ok("hank@acme.example", &mail);

    // The PUT that got 451 lands once S3 resumes; the LMTP pod deletes it in the background.
    let settled = eventually(Duration::from_secs(20), || {
        let counts = message_cleanups(&cloud.lmtp);
        let count = |outcome: &str| counts.get(outcome).copied().unwrap_or(0);
        count("scheduled") >= 1
            && count("removed") + count("absent") + count("abandoned") == count("scheduled")
    });
    let (mut pop, reply) = login(&cloud.pop_a, "hank@acme.example", "hank pass");
    assert!(reply.starts_with("+OK"), "{reply}");
    assert_eq!(
        stat_count(&mut pop),
        2,
        "the first message and one copy of the one retried after 451"
    );
    let counts = message_cleanups(&cloud.lmtp);
    assert!(settled.is_some(), "cleanup did not end: {counts:?}");
    eprintln!("cleanups on the LMTP pod: {counts:?}");
}

#[test]
fn s3_down_is_sys_temp_and_451_and_recovers_without_restart() {
    let mut cloud = Cloud::start();
    cloud.tenant("acme", "acme.example");
    cloud.user("dave@acme.example", "dave pass");
    let mail = message("kept", "still here\r\n");
    cloud.lmtp.deliver_ok("dave@acme.example", &mail);

    cloud.s3.stop();
    let (_, reply) = login(&cloud.pop_a, "dave@acme.example", "dave pass");
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
    let replies = cloud
        .lmtp
        .deliver(&["dave@acme.example"], &message("later", "x\r\n"));
    assert!(replies[0].starts_with("451"), "{replies:?}");

    cloud.s3.start();
    let recovered = eventually(Duration::from_secs(10), || {
        let (mut pop, reply) = login(&cloud.pop_a, "dave@acme.example", "dave pass");
        reply.starts_with("+OK") && {
            let ok = stat_count(&mut pop) == 1 && without_trace_headers(&pop.retr(1)) == mail;
            pop.quit();
            ok
        }
    });
    assert!(recovered.is_some(), "no recovery after S3 came back");
    cloud
        .lmtp
        .deliver_ok("dave@acme.example", &message("after", "x\r\n"));
}

#[test]
fn s3_failing_at_quit_keeps_the_mail() {
    let mut cloud = Cloud::start();
    cloud.tenant("acme", "acme.example");
    cloud.user("erin@acme.example", "erin pass");
    cloud
        .lmtp
        .deliver_ok("erin@acme.example", &message("one", "1\r\n"));
    cloud
        .lmtp
        .deliver_ok("erin@acme.example", &message("two", "2\r\n"));
    let (mut pop, reply) = login(&cloud.pop_a, "erin@acme.example", "erin pass");
    assert!(reply.starts_with("+OK"), "{reply}");
    assert!(pop.cmd("DELE 1").starts_with("+OK"));
    cloud.s3.stop();
    // RETR while S3 is down is [SYS/TEMP], and the session stays usable.
    let retr = pop.cmd("RETR 2");
    assert!(retr.starts_with("-ERR [SYS/TEMP]"), "{retr}");
    assert!(pop.cmd("NOOP").starts_with("+OK"));
    let quit = pop.quit();
    assert!(quit.starts_with("-ERR [SYS/TEMP]"), "{quit}");
    cloud.s3.start();
    let served_again = eventually(Duration::from_secs(10), || {
        let (mut pop, reply) = login(&cloud.pop_b, "erin@acme.example", "erin pass");
        reply.starts_with("+OK") && stat_count(&mut pop) == 2
    });
    assert!(
        served_again.is_some(),
        "the message whose deletion failed is served again"
    );
}

#[test]
fn auth_down_is_sys_temp_and_451_and_recovers_without_restart() {
    let mut cloud = Cloud::start();
    cloud.tenant("acme", "acme.example");
    cloud.user("frank@acme.example", "frank pass");
    let auth_port = cloud.auth.grpc;
    cloud.auth.kill();
    let (_, reply) = login(&cloud.pop_a, "frank@acme.example", "frank pass");
    assert!(
        reply.starts_with("-ERR [SYS/TEMP]"),
        "never [AUTH] when auth is down: {reply}"
    );
    let mut lmtp = Lmtp::connect(cloud.lmtp.lmtp);
    assert!(lmtp.cmd("MAIL FROM:<a@example.net>").starts_with("250"));
    let rcpt = lmtp.cmd("RCPT TO:<frank@acme.example>");
    assert!(rcpt.starts_with("451"), "{rcpt}");
    lmtp.quit();

    cloud.auth.restart_on(auth_port);
    let recovered = eventually(Duration::from_secs(10), || {
        login(&cloud.pop_a, "frank@acme.example", "frank pass")
            .1
            .starts_with("+OK")
    });
    assert!(recovered.is_some(), "no recovery after auth came back");
    cloud
        .lmtp
        .deliver_ok("frank@acme.example", &message("back", "x\r\n"));
}
