//! The workloads: concurrent tasks, each running sessions in a loop within a measurement
//! window, counting only what completes inside it and verifying everything.

mod idle;
mod lmtp;
mod pop3;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cli::Mode;
use crate::corpus::Corpus;
use crate::plan::Plan;
use crate::report::ModeResult;
use crate::servers::{Kind, Server};
use crate::verify::Registry;
use crate::wire::SessionError;
use crate::{calls, cpu};

/// Error messages kept per run, for the report.
const ERROR_SAMPLES: usize = 5;

/// When work counts. Sessions start only while the window is open; whatever completes
/// after it closes is still verified but not counted.
#[derive(Debug)]
pub(crate) struct Window {
    start: Instant,
    from: Instant,
    until: Option<Instant>,
    ops: Option<u64>,
    started: AtomicU64,
}

impl Window {
    fn new(plan: &Plan, warmup: bool) -> Self {
        let start = Instant::now();
        match plan.ops {
            Some(ops) => Self {
                start,
                from: start,
                until: None,
                ops: Some(ops),
                started: AtomicU64::new(0),
            },
            None => {
                let from = if warmup { start + plan.warmup } else { start };
                Self {
                    start,
                    from,
                    until: Some(from + plan.duration),
                    ops: None,
                    started: AtomicU64::new(0),
                }
            }
        }
    }

    /// Whether another operation may start.
    pub(crate) fn may_start(&self) -> bool {
        match (self.ops, self.until) {
            (Some(ops), _) => self.started.fetch_add(1, Ordering::Relaxed) < ops,
            (None, Some(until)) => Instant::now() < until,
            (None, None) => false,
        }
    }

    /// Whether the window is still open, without taking an operation.
    pub(crate) fn is_open(&self) -> bool {
        match (self.ops, self.until) {
            (Some(ops), _) => self.started.load(Ordering::Relaxed) < ops,
            (None, Some(until)) => Instant::now() < until,
            (None, None) => false,
        }
    }

    /// Whether an operation completing now is counted.
    fn counts(&self, at: Instant) -> bool {
        at >= self.from && self.until.is_none_or(|until| at <= until)
    }

    /// Measured seconds.
    fn seconds(&self, last: Option<Instant>) -> f64 {
        match self.until {
            Some(until) => (until - self.from).as_secs_f64(),
            None => last.map_or(0.0, |l| (l - self.start).as_secs_f64()),
        }
    }
}

/// What one task did.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) sessions: u64,
    pub(crate) logins: u64,
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    pub(crate) latencies_us: Vec<u64>,
    pub(crate) errors: u64,
    pub(crate) error_samples: Vec<String>,
    /// Sessions and messages completed, in the window or not (for the calls per session).
    pub(crate) done_sessions: u64,
    pub(crate) done_messages: u64,
    last: Option<Instant>,
}

impl Tally {
    /// A session that began at `began` completed.
    pub(crate) fn session(&mut self, window: &Window, began: Instant) {
        self.done_sessions += 1;
        let now = Instant::now();
        if window.counts(now) {
            self.sessions += 1;
            self.latencies_us.push(micros(now - began));
            self.last = Some(now);
        }
    }

    /// A login succeeded.
    pub(crate) fn login(&mut self, window: &Window) {
        if window.counts(Instant::now()) {
            self.logins += 1;
        }
    }

    /// A message of `bytes` octets was retrieved (or delivered) and checked. With
    /// `began`, its latency is what the mode measures.
    pub(crate) fn message(&mut self, window: &Window, bytes: u64, began: Option<Instant>) {
        self.done_messages += 1;
        let now = Instant::now();
        if window.counts(now) {
            self.messages += 1;
            self.bytes += bytes;
            self.last = Some(now);
            if let Some(began) = began {
                self.latencies_us.push(micros(now - began));
            }
        }
    }

    /// A session failed; every failure counts, in the window or not.
    pub(crate) fn error(&mut self, error: &SessionError) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(error.to_string());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.sessions += other.sessions;
        self.logins += other.logins;
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.done_sessions += other.done_sessions;
        self.done_messages += other.done_messages;
        for e in other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES {
                self.error_samples.push(e);
            }
        }
        self.last = self.last.max(other.last);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What every task needs.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) corpus: Arc<Corpus>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) pop3: SocketAddr,
    pub(crate) lmtp: SocketAddr,
    pub(crate) timeout: Duration,
    pub(crate) window: Window,
}

/// Pause after a failed session, so that a broken server is not hammered.
pub(crate) async fn back_off() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Runs `mode` once against `server`.
pub(crate) async fn run_mode(
    mode: Mode,
    plan: &Plan,
    server: &mut Server,
    corpus: &Arc<Corpus>,
    registry: &Arc<Registry>,
) -> anyhow::Result<ModeResult> {
    let concurrency = plan.sessions(mode);
    let (mut calls, mut cpu_use) = (None, None);
    let (tally, memory, seconds) = match mode {
        Mode::Idle => {
            server.restart().await?;
            let ctx = context(plan, server, corpus, registry, false);
            let pid = plan.server_pid.or(server.pid());
            let (tally, memory) = idle::run(&ctx, plan.idle_conns, pid).await?;
            (tally, Some(memory), 0.0)
        }
        Mode::BigRss => {
            // A fresh process, so that memory freed by earlier modes cannot hide growth.
            server.restart().await?;
            let ctx = Arc::new(context(plan, server, corpus, registry, false));
            let pid = plan.server_pid.or(server.pid());
            let (tally, memory) = pop3::big_rss(ctx.clone(), pid).await;
            let seconds = ctx.window.seconds(tally.last);
            (tally, memory, seconds)
        }
        _ => {
            let (admins, processes) = (server.admins(), server.processes());
            let before = scrape(&admins).await;
            let cpu_before = cpu::snapshot(&processes);
            let ctx = Arc::new(context(plan, server, corpus, registry, true));
            let tally = spawn_tasks(mode, concurrency, &ctx).await?;
            let seconds = ctx.window.seconds(tally.last);
            let ops = match mode {
                Mode::Big | Mode::Lmtp => tally.done_messages,
                _ => tally.done_sessions,
            };
            if !processes.is_empty() {
                // A session process that just ended (Dovecot) counts once its parent has
                // reaped it; until then it is a zombie whose time shows nowhere.
                tokio::time::sleep(cpu::REAP_DELAY).await;
                cpu_use = Some(cpu::delta(&cpu_before, &cpu::snapshot(&processes), ops));
            }
            if let (Some(before), Some(after)) = (before, scrape(&admins).await) {
                calls = Some(calls::delta(&before, &after, ops));
            }
            (tally, None, seconds)
        }
    };
    let mut result = ModeResult::new(mode, server.kind(), concurrency, seconds, tally, memory);
    result.backend_calls = calls;
    result.cpu = cpu_use;
    Ok(result)
}

/// The backend calls counted so far by cloudpop's processes at `admins`; `None` for
/// Dovecot, or when they cannot be read (which only costs the report a line).
async fn scrape(admins: &[SocketAddr]) -> Option<calls::Snapshot> {
    if admins.is_empty() {
        return None;
    }
    match calls::snapshot(admins).await {
        Ok(snapshot) => Some(snapshot),
        Err(e) => {
            eprintln!("bench: cannot read the backend calls: {e:#}");
            None
        }
    }
}

fn context(
    plan: &Plan,
    server: &Server,
    corpus: &Arc<Corpus>,
    registry: &Arc<Registry>,
    warmup: bool,
) -> Ctx {
    Ctx {
        corpus: corpus.clone(),
        registry: registry.clone(),
        pop3: server.pop3(),
        lmtp: server.lmtp(),
        timeout: plan.timeout,
        window: Window::new(plan, warmup),
    }
}

async fn spawn_tasks(mode: Mode, concurrency: usize, ctx: &Arc<Ctx>) -> anyhow::Result<Tally> {
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..concurrency {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            match mode {
                Mode::RetrAll | Mode::LoginOnly | Mode::Top => {
                    pop3::mail_task(&ctx, mode, task, concurrency).await
                }
                Mode::Big => pop3::big_task(&ctx).await,
                Mode::StatLarge => pop3::stat_large_task(&ctx).await,
                Mode::Lmtp => lmtp::task(&ctx, task).await,
                Mode::Idle | Mode::BigRss => Tally::default(),
            }
        });
    }
    let mut total = Tally::default();
    while let Some(tally) = tasks.join_next().await {
        total.merge(tally?);
    }
    Ok(total)
}

/// Why `mode` does not run against `kind`, when it does not.
pub(crate) fn skip_reason(mode: Mode, kind: Kind) -> Option<&'static str> {
    match (mode, kind) {
        (Mode::Idle | Mode::BigRss, Kind::CloudpopCloud) => Some(
            "memory is not measured for cloudpop-cloud: it is spread over five processes \
             (pop3, lmtp, auth, s3s-fs, redis-server) sized separately in a deployment, and \
             their sum against Dovecot's process tree would mislead",
        ),
        _ => None,
    }
}
