//! `lmtp`: deliveries per second. Each task keeps one LMTP connection and delivers to a
//! recipient of its own, one message per transaction, as an MTA does.

use std::time::Instant;

use super::{Ctx, Tally, back_off};
use crate::content;
use crate::lmtp::Lmtp;

/// Distinct messages each task cycles through (generated before the clock starts).
const VARIANTS: u32 = 8;

pub(super) async fn task(ctx: &Ctx, task: usize) -> Tally {
    let mut tally = Tally::default();
    let Some(user) = ctx
        .corpus
        .sinks
        .clone()
        .nth(task)
        .map(|u| &ctx.corpus.users[u])
    else {
        return tally;
    };
    let messages: Vec<Vec<u8>> = (0..VARIANTS)
        .map(|i| content::stuff(&user.message(ctx.corpus.seed, i)))
        .collect();
    let mut turn = 0;
    let mut connection: Option<Lmtp> = None;
    while ctx.window.may_start() {
        let began = Instant::now();
        let lmtp = match connection.as_mut() {
            Some(lmtp) => lmtp,
            None => match Lmtp::connect(ctx.lmtp, ctx.timeout).await {
                Ok(lmtp) => connection.insert(lmtp),
                Err(e) => {
                    tally.error(&e);
                    back_off().await;
                    continue;
                }
            },
        };
        let message = &messages[turn % messages.len()];
        turn += 1;
        match lmtp.deliver(&user.login, message).await {
            Ok(()) => tally.message(&ctx.window, user.size as u64, Some(began)),
            Err(e) => {
                tally.error(&e);
                connection = None;
                back_off().await;
            }
        }
    }
    if let Some(lmtp) = connection
        && let Err(e) = lmtp.quit().await
    {
        tally.error(&e);
    }
    tally
}
