//! `idle`: memory per idle connection, before and after login.
//!
//! On a freshly (re)started server: one login, measure; then a few bursts of concurrent
//! logins (each session quits), measure again. What the bursts leave behind (auth caches,
//! auth worker processes, allocator arenas grown by password hashing) is a one-time cost of
//! logging users in, not a cost per session, so it is reported on its own and kept out of the
//! per-connection figures. Then: open K/2 connections that only read the greeting, measure,
//! open K/2 more that log in (each to a maildrop of its own, as many at once as in the
//! bursts), measure. The differences divided by K/2 are the memory per connection in each
//! state. Then every connection says QUIT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Ctx, Tally};
use crate::memory;
use crate::pop3::Pop3;
use crate::report::MemoryResult;
use crate::wire::SessionError;

/// Connections opened at once.
const OPENING: usize = 16;
/// Login bursts before the baseline.
const BURSTS: usize = 3;
/// Time given to the server to settle before each measurement.
const SETTLE: Duration = Duration::from_millis(1000);

pub(super) async fn run(
    ctx: &Ctx,
    conns: usize,
    pid: Option<u32>,
) -> anyhow::Result<(Tally, MemoryResult)> {
    let pid = pid.context("idle: no server process to measure (--server-pid)")?;
    let mut tally = Tally::default();
    let half = conns / 2;
    let warm = ctx
        .corpus
        .mail
        .clone()
        .next()
        .context("idle: no mail user for the warm-up login")?;
    let user = &ctx.corpus.users[warm];
    let warmed = async {
        let mut pop = Pop3::connect(ctx.pop3, ctx.timeout).await?;
        pop.login(&user.login, &user.password).await?;
        pop.quit().await
    }
    .await;
    match warmed {
        Ok(()) => tally.sessions += 1,
        Err(e) => tally.error(&e),
    }

    tokio::time::sleep(SETTLE).await;
    let fresh = memory::usage(pid)?;
    let burst: Vec<Option<(String, String)>> = ctx
        .corpus
        .idle
        .clone()
        .take(OPENING)
        .map(|u| {
            let user = &ctx.corpus.users[u];
            Some((user.login.clone(), user.password.clone()))
        })
        .collect();
    for _ in 0..BURSTS {
        let open = open_all(ctx, burst.clone(), &mut tally).await;
        close_all(open, &mut tally).await;
    }

    tokio::time::sleep(SETTLE).await;
    let baseline = memory::usage(pid)?;
    let logins: Vec<Option<(String, String)>> = vec![None; half];
    let pre_login = open_all(ctx, logins, &mut tally).await;
    tokio::time::sleep(SETTLE).await;
    let after_pre_login = memory::usage(pid)?;

    let logins: Vec<Option<(String, String)>> = ctx
        .corpus
        .idle
        .clone()
        .map(|u| {
            let user = &ctx.corpus.users[u];
            Some((user.login.clone(), user.password.clone()))
        })
        .collect();
    let logged_in = open_all(ctx, logins, &mut tally).await;
    tokio::time::sleep(SETTLE).await;
    let after_login = memory::usage(pid)?;

    let memory = MemoryResult::idle(
        fresh,
        baseline,
        after_pre_login,
        after_login,
        pre_login.len(),
        logged_in.len(),
    );
    close_all(pre_login.into_iter().chain(logged_in).collect(), &mut tally).await;
    Ok((tally, memory))
}

/// QUIT on every connection, at once.
async fn close_all(open: Vec<Pop3>, tally: &mut Tally) {
    let mut closing = JoinSet::new();
    for pop in open {
        closing.spawn(pop.quit());
    }
    while let Some(result) = closing.join_next().await {
        match result {
            Ok(Ok(())) => tally.sessions += 1,
            Ok(Err(e)) => tally.error(&e),
            Err(e) => tally.error(&SessionError::Verify(format!("a task failed: {e}"))),
        }
    }
}

/// Opens one connection per entry, logging in where a login is given; returns the open ones.
async fn open_all(
    ctx: &Ctx,
    logins: Vec<Option<(String, String)>>,
    tally: &mut Tally,
) -> Vec<Pop3> {
    let gate = Arc::new(Semaphore::new(OPENING));
    let mut tasks = JoinSet::new();
    for login in logins {
        let gate = gate.clone();
        let (addr, timeout) = (ctx.pop3, ctx.timeout);
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let mut pop = Pop3::connect(addr, timeout).await?;
            let logs_in = login.is_some();
            if let Some((user, password)) = login {
                pop.login(&user, &password).await?;
            }
            Ok::<(Pop3, bool), SessionError>((pop, logs_in))
        });
    }
    let mut open = Vec::new();
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok((pop, logged_in))) => {
                tally.logins += u64::from(logged_in);
                open.push(pop);
            }
            Ok(Err(e)) => tally.error(&e),
            Err(e) => tally.error(&SessionError::Verify(format!("a task failed: {e}"))),
        }
    }
    open
}
