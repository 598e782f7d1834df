//! Seeding: every message of the corpus delivered over LMTP, the way mail arrives in
//! production, by a few connections in parallel.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::content;
use crate::corpus::Corpus;
use crate::lmtp::Lmtp;

/// LMTP connections used for seeding.
const CONNECTIONS: usize = 4;
/// Messages per job: a big maildrop is split so that all connections share it.
const CHUNK: u32 = 250;

/// Delivers the corpus to the server at `lmtp`; any refused delivery fails the run.
pub(crate) async fn seed(
    corpus: &Arc<Corpus>,
    lmtp: SocketAddr,
    timeout: Duration,
    server: &str,
) -> anyhow::Result<()> {
    let mut jobs = VecDeque::new();
    for (u, user) in corpus.users.iter().enumerate() {
        let mut first = 0;
        while first < user.count() {
            let last = (first + CHUNK).min(user.count());
            jobs.push_back((u, first..last));
            first = last;
        }
    }
    let jobs = Arc::new(Mutex::new(jobs));
    let began = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let (jobs, corpus) = (jobs.clone(), corpus.clone());
        workers.spawn(async move {
            let mut lmtp = Lmtp::connect(lmtp, timeout).await?;
            loop {
                let job = jobs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .pop_front();
                let Some((u, range)) = job else { break };
                let user = &corpus.users[u];
                for index in range {
                    let message = content::stuff(&user.message(corpus.seed, index));
                    lmtp.deliver(&user.login, &message)
                        .await
                        .with_context(|| format!("delivering message {index} to {}", user.login))?;
                }
            }
            lmtp.quit().await?;
            anyhow::Ok(())
        });
    }
    while let Some(result) = workers.join_next().await {
        result
            .context("a seeding task failed")?
            .context("seeding")?;
    }
    let (messages, octets) = corpus.seeded();
    let seconds = began.elapsed().as_secs_f64();
    eprintln!(
        "bench: {server}: seeded {messages} messages ({:.1} MB) over LMTP in {seconds:.1} s",
        octets as f64 / 1e6
    );
    Ok(())
}
