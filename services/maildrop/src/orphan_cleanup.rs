//! Undoing writes whose outcome is unknown: the lock lease of an `acquire` and the object of
//! a `put` that failed after the request may have been sent.
//!
//! A request that timed out may still be applied later: it can sit in the server's socket
//! buffer while the server is frozen, in a connection the client already gave up on, or in
//! an SDK retry. The caller was told "failed", so what it left behind is an orphan: a lease
//! nobody renews (the maildrop reads `[IN-USE]` until it expires) or a message the sender
//! will deliver again (a duplicate). Both carry a name only the failed call knew (a fresh
//! lease token, a fresh uid), so removing exactly that name can never touch anything a
//! caller was told it holds.
//!
//! [`OrphanCleanup`] removes them in the background. A write is guarded before it is sent
//! ([`OrphanCleanup::guard`]); only a definite success disarms the guard, so an error *and* a
//! cancelled call (a caller's deadline dropping the future) both schedule a cleanup. One
//! worker task per store or lock then:
//!
//! - retries the removal with exponential backoff while the backend does not answer, one
//!   call at a time for all pending orphans (a recovering backend sees no burst of retries);
//! - after the first answered removal, removes once more `settle` later: the first removal
//!   may be served before the late write it is meant to undo (the backend resuming serves
//!   the old connection after the new one);
//! - gives up `window` after the failure, when the orphan has either been removed or could
//!   only still appear from a write delayed past any reasonable bound.
//!
//! It does not make a write atomic: between the late write landing and its removal, a
//! reader may see the orphan.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::IntCounterVec;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// First wait after the backend failed to answer a removal.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between two removal attempts while the backend does not answer.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Removes one orphan by the name only its failed write knew.
pub(crate) trait Undo: Send + Sync + 'static {
    /// What names an orphan; its `Display` is what logs show (never a secret).
    type Target: fmt::Display + Send + Sync + 'static;

    /// Removes `target` if it exists: `Ok(true)` if something was removed, `Ok(false)` if
    /// nothing was there, `Err` (a short description) if the backend did not answer.
    fn undo(&self, target: &Self::Target) -> impl Future<Output = Result<bool, String>> + Send;
}

/// How long to keep trying, and when to try again after the first answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// How long after the failure removal attempts may go on.
    pub window: Duration,
    /// Delay between the first answered removal and the second one.
    pub settle: Duration,
}

/// How many orphan cleanups one store or lock scheduled, and how they ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OrphanCleanupCounts {
    /// Writes whose outcome was unknown, each scheduled for cleanup.
    pub scheduled: u64,
    /// Cleanups that found and removed an orphan (the late write did land).
    pub removed: u64,
    /// Cleanups that found nothing, twice (the write never landed).
    pub absent: u64,
    /// Cleanups given up because the backend did not answer within the window.
    pub abandoned: u64,
}

impl OrphanCleanupCounts {
    /// Cleanups scheduled and not yet ended.
    pub fn pending(&self) -> u64 {
        self.scheduled
            .saturating_sub(self.removed + self.absent + self.abandoned)
    }
}

#[derive(Debug, Default)]
struct Counters {
    scheduled: AtomicU64,
    removed: AtomicU64,
    absent: AtomicU64,
    abandoned: AtomicU64,
    /// `cloudpop_orphan_cleanups_total{kind, outcome}`, once metrics are attached.
    metric: OnceLock<IntCounterVec>,
}

/// What became of one guarded write; the `outcome` label of the metric.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Scheduled,
    Removed,
    Absent,
    Abandoned,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Scheduled => "scheduled",
            Outcome::Removed => "removed",
            Outcome::Absent => "absent",
            Outcome::Abandoned => "abandoned",
        }
    }
}

impl Counters {
    fn count(&self, kind: &'static str, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Scheduled => &self.scheduled,
            Outcome::Removed => &self.removed,
            Outcome::Absent => &self.absent,
            Outcome::Abandoned => &self.abandoned,
        };
        // Independent counters: Relaxed is enough, nothing is ordered by them.
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(metric) = self.metric.get() {
            metric.with_label_values(&[kind, outcome.label()]).inc();
        }
    }

    fn snapshot(&self) -> OrphanCleanupCounts {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        // `scheduled` is read last so that `pending` never underflows.
        let (removed, absent, abandoned) = (
            load(&self.removed),
            load(&self.absent),
            load(&self.abandoned),
        );
        OrphanCleanupCounts {
            scheduled: load(&self.scheduled),
            removed,
            absent,
            abandoned,
        }
    }
}

/// One orphan being removed.
struct Pending<T> {
    target: T,
    give_up_at: Instant,
    due: Instant,
    /// Delay from the first answered removal to the second.
    settle: Duration,
    answered_once: bool,
    removed: bool,
}

/// Background removal of orphans of one kind (`kind` labels logs and metrics: `lock_lease`,
/// `message`). The worker starts with the first guard and ends once every clone of the
/// owner is dropped and nothing is pending.
pub(crate) struct OrphanCleanup<U: Undo> {
    undo: Arc<U>,
    kind: &'static str,
    counters: Arc<Counters>,
    queue: OnceLock<mpsc::UnboundedSender<Pending<U::Target>>>,
}

impl<U: Undo> fmt::Debug for OrphanCleanup<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrphanCleanup")
            .field("kind", &self.kind)
            .field("counts", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl<U: Undo> OrphanCleanup<U> {
    /// Cleanups of `kind` done by `undo`; starts nothing yet.
    pub(crate) fn new(undo: Arc<U>, kind: &'static str) -> Self {
        Self {
            undo,
            kind,
            counters: Arc::default(),
            queue: OnceLock::new(),
        }
    }

    /// Counts every cleanup from now on in `metric` too (labels `kind`, `outcome`).
    pub(crate) fn count_in(&self, metric: IntCounterVec) {
        let _ = self.counters.metric.set(metric);
    }

    /// The counts so far.
    pub(crate) fn counts(&self) -> OrphanCleanupCounts {
        self.counters.snapshot()
    }

    /// Guards a write of `target` about to be sent: unless [`Guard::disarm`] is called (on
    /// a definite success), dropping the guard schedules the cleanup of `target`. Must be
    /// called inside a Tokio runtime (the worker is spawned on first use).
    pub(crate) fn guard(&self, target: U::Target, timing: Timing) -> Guard<U::Target> {
        Guard {
            armed: Some((target, timing)),
            queue: self.sender(),
            counters: self.counters.clone(),
            kind: self.kind,
        }
    }

    fn sender(&self) -> mpsc::UnboundedSender<Pending<U::Target>> {
        self.queue
            .get_or_init(|| {
                let (sender, receiver) = mpsc::unbounded_channel();
                let worker = Worker {
                    undo: self.undo.clone(),
                    kind: self.kind,
                    counters: self.counters.clone(),
                    pending: Vec::new(),
                    backoff: FIRST_BACKOFF,
                };
                tokio::spawn(worker.run(receiver));
                sender
            })
            .clone()
    }
}

/// Schedules the cleanup of one write when dropped armed; see [`OrphanCleanup::guard`].
pub(crate) struct Guard<T: fmt::Display + Send + Sync + 'static> {
    armed: Option<(T, Timing)>,
    queue: mpsc::UnboundedSender<Pending<T>>,
    counters: Arc<Counters>,
    kind: &'static str,
}

impl<T: fmt::Display + Send + Sync + 'static> Guard<T> {
    /// The write definitely succeeded (or was definitely refused with nothing written):
    /// nothing to clean up.
    pub(crate) fn disarm(mut self) {
        self.armed = None;
    }
}

impl<T: fmt::Display + Send + Sync + 'static> Drop for Guard<T> {
    fn drop(&mut self) {
        let Some((target, timing)) = self.armed.take() else {
            return;
        };
        let now = Instant::now();
        tracing::debug!(kind = self.kind, target = %target, "outcome unknown: cleanup scheduled");
        self.counters.count(self.kind, Outcome::Scheduled);
        let pending = Pending {
            target,
            give_up_at: now + timing.window,
            due: now,
            settle: timing.settle,
            answered_once: false,
            removed: false,
        };
        if let Err(mpsc::error::SendError(lost)) = self.queue.send(pending) {
            // Only when the runtime is shutting down; the orphan then expires or stays.
            tracing::warn!(kind = self.kind, target = %lost.target, "orphan cleanup not possible: shutting down");
            self.counters.count(self.kind, Outcome::Abandoned);
        }
    }
}

struct Worker<U: Undo> {
    undo: Arc<U>,
    kind: &'static str,
    counters: Arc<Counters>,
    pending: Vec<Pending<U::Target>>,
    backoff: Duration,
}

impl<U: Undo> Worker<U> {
    async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Pending<U::Target>>) {
        let mut open = true;
        loop {
            while let Ok(next) = queue.try_recv() {
                self.pending.push(next);
            }
            let Some(next_due) = self.pending.iter().map(|p| p.due).min() else {
                if !open {
                    return;
                }
                match queue.recv().await {
                    Some(next) => self.pending.push(next),
                    None => return,
                }
                continue;
            };
            if open {
                tokio::select! {
                    received = queue.recv() => {
                        match received {
                            Some(next) => self.pending.push(next),
                            // Owner gone: finish what is pending, then stop.
                            None => open = false,
                        }
                        continue;
                    }
                    () = tokio::time::sleep_until(next_due) => {}
                }
            } else {
                tokio::time::sleep_until(next_due).await;
            }
            self.pass().await;
        }
    }

    /// Tries every due orphan once, until the backend fails to answer.
    async fn pass(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].due > Instant::now() {
                i += 1;
                continue;
            }
            match self.undo.undo(&self.pending[i].target).await {
                Ok(removed) => {
                    self.backoff = FIRST_BACKOFF;
                    let pending = &mut self.pending[i];
                    pending.removed |= removed;
                    if pending.answered_once {
                        let done = self.pending.swap_remove(i);
                        self.finish(done);
                        continue;
                    }
                    pending.answered_once = true;
                    pending.due = Instant::now() + pending.settle;
                    i += 1;
                }
                Err(error) => {
                    self.back_off(&error);
                    return;
                }
            }
        }
    }

    /// The backend did not answer: every orphan waits `backoff` (doubling up to
    /// [`MAX_BACKOFF`]); those past their window are given up.
    fn back_off(&mut self, error: &str) {
        let now = Instant::now();
        let retry_at = now + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].give_up_at <= now {
                let done = self.pending.swap_remove(i);
                if !done.answered_once {
                    tracing::warn!(
                        kind = self.kind, target = %done.target, %error,
                        "orphan cleanup given up: the backend did not answer within the window"
                    );
                }
                self.finish(done);
                continue;
            }
            let pending = &mut self.pending[i];
            pending.due = pending.due.max(retry_at);
            i += 1;
        }
    }

    fn finish(&self, done: Pending<U::Target>) {
        let outcome = if done.removed {
            tracing::warn!(
                kind = self.kind, target = %done.target,
                "removed an orphan left by a write whose outcome was unknown"
            );
            Outcome::Removed
        } else if done.answered_once {
            tracing::debug!(kind = self.kind, target = %done.target, "no orphan to remove");
            Outcome::Absent
        } else {
            Outcome::Abandoned
        };
        self.counters.count(self.kind, outcome);
    }
}
