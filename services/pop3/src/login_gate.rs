//! What every login goes through before and around its credential check: the throttle of
//! login attempts, and one deadline for the calls to the backends.
//!
//! The throttle is asked *before* the credential is checked (see
//! [`cloudpop_limits::throttle`]): an attempt waits for its turn, or is refused unchecked, so
//! right and wrong passwords get the same answer after the same wait, and a client that hangs
//! up early learns nothing. While the shared limits backend is down, this process's own
//! count throttles instead: an outage never lifts the throttle.
//!
//! The deadline bounds the backend calls of one login together (throttle, credential check,
//! LOGIN-DELAY, session cap, maildrop lock, listing), so a frozen backend costs a client one
//! deadline, not one timeout per call. A session slot still being opened at the deadline is
//! left to finish in the background and closed then, so it leaves no orphan behind; the
//! maildrop lock does the same for an acquire cut off by the deadline (its own contract).

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use cloudpop_limits::{Admission, Limits};
use tokio::time::Instant;
use tracing::{Instrument, debug, warn};

use crate::server::Pop3Deps;

/// Which counts admitted an attempt, so that its success is reported to the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// The shared backend (`[limits]`), which answered.
    Shared,
    /// This process's own count, because the shared backend did not answer.
    Local,
}

/// The answer of the throttle to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// The attempt's turn has come, after `waited`: check the credential now.
    Go { counted: Counted, waited: Duration },
    /// Refused without checking the credential.
    Refused,
}

/// Asks the throttle for a turn for an attempt of `client` at `login_key`, and waits for it.
/// The shared backend gets until `deadline` to answer; past it, or when it fails, this
/// process's own count decides.
pub(crate) async fn wait_for_turn(
    deps: &Pop3Deps,
    client: IpAddr,
    login_key: &str,
    deadline: Instant,
) -> Turn {
    let throttle = &deps.config.login_throttle;
    let shared = tokio::time::timeout_at(
        deadline,
        deps.limits.admit_login(client, login_key, throttle),
    )
    .await;
    let (admission, counted) = match shared {
        Ok(Ok(admission)) => (admission, Counted::Shared),
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "no answer before the login deadline".to_owned(),
            };
            warn!(error = %why, "login throttle unavailable; this process's own count applies");
            let local = deps.local_limits.admit_login(client, login_key, throttle);
            // The in-process count has no failure mode of its own; if it had one, admitting
            // on the base spacing would still slow a guesser down.
            let admission = local.await.unwrap_or(Admission::Admitted {
                wait: throttle.per_login.base,
            });
            (admission, Counted::Local)
        }
    };
    match admission {
        Admission::Admitted { wait } => {
            if !wait.is_zero() {
                debug!(?wait, "login attempt waits for its turn");
                tokio::time::sleep(wait).await;
            }
            Turn::Go {
                counted,
                waited: wait,
            }
        }
        Admission::Throttled { retry_after } => {
            debug!(?retry_after, "login attempt refused by the throttle");
            Turn::Refused
        }
    }
}

/// Reports a right credential to the counts that admitted it, before the login goes on,
/// so that the owner's next login finds the count forgotten. A failure here only leaves the
/// count to its window; the login goes on.
pub(crate) async fn record_success(
    deps: &Pop3Deps,
    counted: Counted,
    client: IpAddr,
    login_key: &str,
    deadline: Instant,
) {
    let recorded = match counted {
        Counted::Shared => within(deadline, deps.limits.record_success(client, login_key)).await,
        Counted::Local => Some(deps.local_limits.record_success(client, login_key).await),
    };
    match recorded {
        Some(Ok(())) => {}
        Some(Err(e)) => debug!(error = %e, "could not reset the login attempt count"),
        None => debug!("resetting the login attempt count missed the login deadline"),
    }
}

/// Runs `step` until `deadline`. Past it, returns `None` at once and lets the step finish in
/// the background, handing what it produced to `undo`.
pub(crate) async fn within_or_undo<T, U, UF>(
    deadline: Instant,
    step: impl Future<Output = T> + Send + 'static,
    undo: U,
) -> Option<T>
where
    T: Send + 'static,
    U: FnOnce(T) -> UF + Send + 'static,
    UF: Future<Output = ()> + Send,
{
    // The step's calls belong to the login's span, in the background too.
    let mut task = tokio::spawn(step.in_current_span());
    match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(join_error)) => {
            warn!(error = %join_error, "login step failed");
            None
        }
        Err(_) => {
            let undone = async move {
                if let Ok(value) = task.await {
                    undo(value).await;
                }
            };
            tokio::spawn(undone.in_current_span());
            None
        }
    }
}

/// Runs a step that changes nothing until `deadline`; `None` past it.
pub(crate) async fn within<T>(deadline: Instant, step: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout_at(deadline, step).await.ok()
}

/// The deadline of a login that starts now.
pub(crate) fn deadline(limit: Duration) -> Instant {
    Instant::now() + limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_step_past_the_deadline_is_undone_when_it_finishes() {
        let (undone_tx, undone_rx) = tokio::sync::oneshot::channel();
        let deadline = deadline(Duration::from_secs(1));
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "lease"
        };
        let got = within_or_undo(deadline, slow, move |lease| async move {
            let _ = undone_tx.send(lease);
        })
        .await;
        assert_eq!(got, None);
        assert_eq!(Instant::now(), deadline, "answered at the deadline");
        assert_eq!(undone_rx.await.unwrap(), "lease");
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_in_time_is_kept() {
        let deadline = deadline(Duration::from_secs(1));
        let got = within_or_undo(deadline, async { 7 }, |_| async {
            panic!("a step in time must not be undone")
        })
        .await;
        assert_eq!(got, Some(7));
        assert_eq!(within(deadline, std::future::pending::<()>()).await, None);
    }
}
