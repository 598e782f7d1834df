//! Hot reload: noticing changed certificate files and swapping them in for new handshakes.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::resolver::CertSet;
use super::{TlsError, TlsTerminator, stamp_files};

impl TlsTerminator {
    /// Reloads every certificate and key if any of their files changed (modification time,
    /// length or, on Unix, inode) since the last successful load.
    ///
    /// Returns `Ok(true)` after a reload, `Ok(false)` when nothing changed. On `Err` the
    /// certificates in use stay in use, and the next call tries again (so the error repeats
    /// until the files are fixed). The new certificates serve new handshakes only;
    /// established connections keep theirs. This does blocking file I/O. Both outcomes are
    /// counted once [`TlsTerminator::count_reloads`] was called.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let result = self.load_if_changed();
        if let Some((success, failure)) = self.inner.reload_counters.get() {
            match &result {
                Ok(true) => success.inc(),
                Ok(false) => {}
                Err(_) => failure.inc(),
            }
        }
        result
    }

    fn load_if_changed(&self) -> Result<bool, TlsError> {
        let inner = &self.inner;
        // One reload at a time; a poisoned lock still holds a whole, consistent Vec.
        let mut loaded = inner.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let stamps = stamp_files(&inner.settings)?;
        if stamps == *loaded {
            return Ok(false);
        }
        // All files or none: a key that no longer matches its certificate (say, the
        // certificate was replaced and the key not yet) fails here and keeps the old pair.
        let set = CertSet::load(&inner.settings, &inner.provider)?;
        inner.resolver.replace(set);
        // A resumed session would skip the new certificate (RFC 8446 §2.2); see `sessions`.
        inner.sessions.clear();
        *loaded = stamps;
        inner.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Checks the files every `reload_interval` until `shutdown` is cancelled; see
    /// [`TlsTerminator::reload_if_changed`].
    ///
    /// A reload is logged at `info`, a failure at `warn` (naming the file, never its
    /// content). With a zero interval the task only waits for `shutdown`. Must be called
    /// within a Tokio runtime.
    pub fn spawn_reloader(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let terminator = self.clone();
        let period = self.inner.settings.reload_interval;
        tokio::spawn(async move {
            if period.is_zero() {
                shutdown.cancelled().await;
                return;
            }
            let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                terminator.check_once().await;
            }
        })
    }

    async fn check_once(&self) {
        let terminator = self.clone();
        match tokio::task::spawn_blocking(move || terminator.reload_if_changed()).await {
            Ok(Ok(true)) => info!(reloads = self.reloads(), "TLS certificates reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => warn!(
                error = %error,
                "TLS certificate reload failed; the certificates in use stay in use"
            ),
            Err(error) => warn!(error = %error, "TLS certificate reload task failed"),
        }
    }
}
