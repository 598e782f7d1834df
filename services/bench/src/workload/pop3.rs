//! POP3 workloads: retr-all, login-only, top, big, big-rss and stat-large.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::xxh3_64;

use super::{Ctx, Tally, back_off};
use crate::cli::Mode;
use crate::corpus::User;
use crate::memory::{self, Usage};
use crate::pop3::{MAX_PREFIX, Pop3, Received};
use crate::report::MemoryResult;
use crate::verify::{Part, Seen, check_message, prefix_len};
use crate::wire::SessionError;

/// Sessions of retr-all, login-only or top. Task `task` of `tasks` owns the users
/// `task`, `task + tasks`, … of the mail group and takes them in turn, so that no two
/// sessions ever share a maildrop.
pub(super) async fn mail_task(ctx: &Ctx, mode: Mode, task: usize, tasks: usize) -> Tally {
    let mut tally = Tally::default();
    let users: Vec<usize> = ctx.corpus.mail.clone().skip(task).step_by(tasks).collect();
    let mut turn = 0;
    while !users.is_empty() && ctx.window.may_start() {
        let user = users[turn % users.len()];
        turn += 1;
        let began = Instant::now();
        let result = match mode {
            Mode::RetrAll => retr_all(ctx, user, &mut tally).await,
            Mode::Top => top(ctx, user, &mut tally).await,
            _ => login_only(ctx, user, &mut tally).await,
        };
        match result {
            Ok(()) => tally.session(&ctx.window, began),
            Err(e) => {
                tally.error(&e);
                back_off().await;
            }
        }
    }
    tally
}

async fn open(ctx: &Ctx, user: &User, tally: &mut Tally) -> Result<Pop3, SessionError> {
    let mut pop = Pop3::connect(ctx.pop3, ctx.timeout).await?;
    pop.login(&user.login, &user.password).await?;
    tally.login(&ctx.window);
    Ok(pop)
}

fn verify_error(user: &User, what: String) -> SessionError {
    SessionError::Verify(format!("{}: {what}", user.login))
}

/// LIST, checked against what was seeded: one size per seeded message.
async fn listed(pop: &mut Pop3, user: &User) -> Result<Vec<u64>, SessionError> {
    let sizes = pop.list().await?;
    if sizes.len() != user.count() as usize {
        return Err(verify_error(
            user,
            format!(
                "LIST shows {} messages, {} were seeded",
                sizes.len(),
                user.count()
            ),
        ));
    }
    Ok(sizes)
}

/// Marks seed index `index` as retrieved in this session; twice is an error.
fn mark(seen: &mut [bool], user: &User, index: u32) -> Result<(), SessionError> {
    match seen.get_mut(index as usize) {
        Some(slot) if !*slot => {
            *slot = true;
            Ok(())
        }
        _ => Err(verify_error(
            user,
            format!("message {index} appeared twice in one listing"),
        )),
    }
}

/// STAT, UIDL, LIST, RETR of every message, QUIT without DELE.
async fn retr_all(ctx: &Ctx, u: usize, tally: &mut Tally) -> Result<(), SessionError> {
    let user = &ctx.corpus.users[u];
    let mut pop = open(ctx, user, tally).await?;
    let (count, octets) = pop.stat().await?;
    if count != u64::from(user.count()) {
        return Err(verify_error(
            user,
            format!("STAT counts {count} messages, {} were seeded", user.count()),
        ));
    }
    let uids = pop.uidl().await?;
    let unique: HashSet<&String> = uids.iter().collect();
    let valid = |uid: &String| {
        (1..=70).contains(&uid.len()) && uid.bytes().all(|b| (0x21..=0x7e).contains(&b))
    };
    if uids.len() as u64 != count || unique.len() != uids.len() || !uids.iter().all(valid) {
        return Err(verify_error(
            user,
            format!(
                "UIDL gave {} ids ({} distinct) for {count} messages, or an invalid one (RFC 1939 §7)",
                uids.len(),
                unique.len()
            ),
        ));
    }
    let sizes = listed(&mut pop, user).await?;
    if sizes.iter().sum::<u64>() != octets {
        return Err(verify_error(
            user,
            format!("LIST sizes do not add up to STAT's {octets}"),
        ));
    }
    let mut seen = vec![false; sizes.len()];
    for (i, (&size, uid)) in sizes.iter().zip(&uids).enumerate() {
        let mut received = Received::new(prefix_len(user, size)?);
        pop.fetch(&format!("RETR {}", i + 1), &mut received).await?;
        let got = received.finish();
        let index = check_message(user, size, &got, Part::Whole)?;
        mark(&mut seen, user, index)?;
        let first = Seen {
            index,
            size,
            prefix: xxh3_64(&got.prefix),
        };
        ctx.registry.check(u, &user.login, uid, first)?;
        tally.message(&ctx.window, got.total, None);
    }
    pop.quit().await
}

/// USER, PASS, QUIT.
async fn login_only(ctx: &Ctx, u: usize, tally: &mut Tally) -> Result<(), SessionError> {
    let user = &ctx.corpus.users[u];
    let pop = open(ctx, user, tally).await?;
    pop.quit().await
}

/// LIST, TOP n 0 of every message, QUIT.
async fn top(ctx: &Ctx, u: usize, tally: &mut Tally) -> Result<(), SessionError> {
    let user = &ctx.corpus.users[u];
    let mut pop = open(ctx, user, tally).await?;
    let sizes = listed(&mut pop, user).await?;
    let mut seen = vec![false; sizes.len()];
    for (i, &size) in sizes.iter().enumerate() {
        let mut received = Received::new(prefix_len(user, size)?);
        pop.fetch(&format!("TOP {} 0", i + 1), &mut received)
            .await?;
        let got = received.finish();
        let index = check_message(user, size, &got, Part::Header)?;
        mark(&mut seen, user, index)?;
        tally.message(&ctx.window, got.total, None);
    }
    pop.quit().await
}

/// One session retrieving the one message of `user` again and again while the window is
/// open; each RETR is an operation with its own latency.
async fn repeat_retr(ctx: &Ctx, u: usize, tally: &mut Tally) -> Result<(), SessionError> {
    let user = &ctx.corpus.users[u];
    let mut pop = open(ctx, user, tally).await?;
    let sizes = listed(&mut pop, user).await?;
    let size = sizes[0];
    let prefix = prefix_len(user, size)?;
    while ctx.window.may_start() {
        let began = Instant::now();
        let mut received = Received::new(prefix);
        pop.fetch("RETR 1", &mut received).await?;
        let got = received.finish();
        check_message(user, size, &got, Part::Whole)?;
        tally.message(&ctx.window, got.total, Some(began));
    }
    pop.quit().await
}

/// `big`: the big message, retrieved repeatedly in one session (reconnecting after a
/// failure).
pub(super) async fn big_task(ctx: &Ctx) -> Tally {
    let mut tally = Tally::default();
    let Some(u) = ctx.corpus.big else {
        return tally;
    };
    while ctx.window.is_open() {
        if let Err(e) = repeat_retr(ctx, u, &mut tally).await {
            tally.error(&e);
            back_off().await;
        }
    }
    tally
}

/// `stat-large`: USER, PASS, STAT, QUIT on the maildrop of many messages.
pub(super) async fn stat_large_task(ctx: &Ctx) -> Tally {
    let mut tally = Tally::default();
    let Some(u) = ctx.corpus.large else {
        return tally;
    };
    let user = &ctx.corpus.users[u];
    while ctx.window.may_start() {
        let began = Instant::now();
        let result = async {
            let mut pop = open(ctx, user, &mut tally).await?;
            let (count, octets) = pop.stat().await?;
            let seeded = u64::from(user.count());
            let least = seeded * user.size as u64;
            if count != seeded || octets < least || octets - least > seeded * MAX_PREFIX {
                return Err(verify_error(
                    user,
                    format!(
                        "STAT says {count} {octets}; seeded {seeded} messages of {} octets",
                        user.size
                    ),
                ));
            }
            pop.quit().await
        }
        .await;
        match result {
            Ok(()) => tally.session(&ctx.window, began),
            Err(e) => {
                tally.error(&e);
                back_off().await;
            }
        }
    }
    tally
}

/// `big-rss`: after a login, samples the server's memory every 10 ms while the huge
/// message is retrieved (at least once, then while the window is open), and reports the
/// largest growth over the level just before the first RETR.
pub(super) async fn big_rss(ctx: Arc<Ctx>, pid: Option<u32>) -> (Tally, Option<MemoryResult>) {
    let mut tally = Tally::default();
    let (Some(u), Some(pid)) = (ctx.corpus.huge, pid) else {
        return (tally, None);
    };
    let user = &ctx.corpus.users[u];
    let result = async {
        let mut pop = open(&ctx, user, &mut tally).await?;
        let sizes = listed(&mut pop, user).await?;
        let size = sizes[0];
        let prefix = prefix_len(user, size)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let baseline = memory::usage(pid)?;
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = tokio::task::spawn_blocking({
            let stop = stop.clone();
            move || {
                let mut peak = baseline;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(now) = memory::usage(pid) {
                        peak.rss_kib = peak.rss_kib.max(now.rss_kib);
                        peak.pss_kib = peak.pss_kib.max(now.pss_kib);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                peak
            }
        });
        let mut first = true;
        let outcome = async {
            while first || ctx.window.may_start() {
                first = false;
                let began = Instant::now();
                let mut received = Received::new(prefix);
                pop.fetch("RETR 1", &mut received).await?;
                let got = received.finish();
                check_message(user, size, &got, Part::Whole)?;
                tally.message(&ctx.window, got.total, Some(began));
            }
            Ok::<(), SessionError>(())
        }
        .await;
        stop.store(true, Ordering::Relaxed);
        let peak = sampler.await.unwrap_or(baseline);
        outcome?;
        pop.quit().await?;
        Ok::<(Usage, Usage), SessionError>((baseline, peak))
    }
    .await;
    match result {
        Ok((baseline, peak)) => (tally, Some(MemoryResult::growth(baseline, peak))),
        Err(e) => {
            tally.error(&e);
            (tally, None)
        }
    }
}
