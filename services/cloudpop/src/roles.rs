//! Wiring of the serving roles: build the backends and metrics from configuration, bind,
//! serve, drain.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cloudpop_telemetry::{ProcessMetrics, Readiness, Telemetry};
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backends;
use crate::config::{AuthBackend, Config};
use crate::demo_user;
use cloudpop_auth::grpc::AdminAccess;

/// A serving role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingRole {
    /// POP3 and LMTP in one process (the embedded default).
    All,
    Pop3,
    Lmtp,
    /// The auth service (gRPC).
    Auth,
}

impl ServingRole {
    /// The role's name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ServingRole::All => "all",
            ServingRole::Pop3 => "pop3",
            ServingRole::Lmtp => "lmtp",
            ServingRole::Auth => "auth",
        }
    }
}

type Task = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// The phases of a shutdown, each a token: readiness fails, then the listeners stop and
/// sessions drain, and last the admin port (probes and scrapes work throughout the drain).
#[derive(Debug, Clone, Default)]
struct Phases {
    /// Cancelled first: `/readyz` answers 503.
    draining: CancellationToken,
    /// Cancelled after `shutdown.ready_delay`: listeners close, sessions finish and close.
    stop: CancellationToken,
    /// Cancelled when sessions have drained (or the deadline came): the admin port closes.
    admin: CancellationToken,
}

/// Runs `role` until SIGTERM or SIGINT, then drains within the grace period. Metrics are
/// registered on `registry`; `telemetry` is flushed before returning.
pub async fn serve(
    config: Config,
    role: ServingRole,
    registry: Registry,
    telemetry: Telemetry,
) -> anyhow::Result<()> {
    // Watched before anything starts, so an early SIGTERM also drains.
    let signals = Signals::watch();
    let phases = Phases::default();
    let shutdown = &phases.stop;
    ProcessMetrics::new(&registry, env!("CARGO_PKG_VERSION"))?;
    let mut readiness = Readiness::new(phases.draining.clone());
    let mut tasks: Vec<Task> = Vec::new();
    let uses_users_file = role == ServingRole::Auth || config.auth.backend == AuthBackend::File;
    if uses_users_file {
        // Mode 0700: it holds the users file, the development key and (by default) mail.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    }
    // Bound first, so that the demo user's POP URL names the port really listened on.
    let plain_pop3 = match role {
        ServingRole::All | ServingRole::Pop3 => Some(bind("POP3", config.pop3.listen).await?),
        ServingRole::Lmtp | ServingRole::Auth => None,
    };
    if role == ServingRole::All
        && config.auth.backend == AuthBackend::File
        && config.users.create_demo_user
    {
        let pop3 = match &plain_pop3 {
            Some(listener) => listener.local_addr()?,
            None => config.pop3.listen,
        };
        demo_user::ensure(&config.users_file(), pop3)?;
    }

    if role == ServingRole::Auth {
        let directory = backends::users_directory(&config, shutdown, &registry)?;
        let metrics = cloudpop_auth::grpc::AuthServerMetrics::new(&registry)?;
        let admin = match backends::admin_token(&config)? {
            Some(token) => AdminAccess::token(token),
            None => {
                tracing::warn!(
                    "auth.admin_token_file is not set: admin calls need no token, so keep the \
                     auth service's port private"
                );
                AdminAccess::open()
            }
        };
        let listener = bind("auth gRPC", config.auth.listen).await?;
        let token = shutdown.clone();
        tasks.push(Box::pin(async move {
            cloudpop_auth::grpc::serve(listener, directory, Some(metrics), admin, token)
                .await
                .context("auth gRPC server")
        }));
    } else {
        let (authenticator, auth_check) =
            backends::authenticator(&config, shutdown, &registry).await?;
        let storage = cloudpop_maildrop::StorageMetrics::new(&registry)?;
        let (store, store_check) = backends::store(&config, &storage).await?;
        readiness = readiness.with_check("store", store_check);
        if let Some(check) = auth_check {
            readiness = readiness.with_check("auth", check);
        }
        if matches!(role, ServingRole::All | ServingRole::Pop3) {
            let metrics = cloudpop_pop3::Pop3Metrics::new(&registry)?;
            let (lock, lock_check) = backends::lock(&config, &storage).await?;
            if let Some(check) = lock_check {
                readiness = readiness.with_check("lock", check);
            }
            let (limits, limits_check) = backends::limits(&config, &registry).await?;
            if let Some(check) = limits_check {
                readiness = readiness.with_check("limits", check);
            }
            let tls = backends::tls(&config, role == ServingRole::All, shutdown, &metrics)?;
            let listeners = cloudpop_pop3::Pop3Listeners {
                plain: plain_pop3,
                implicit_tls: match &tls {
                    Some(_) => Some(bind("POP3S", config.pop3.listen_tls).await?),
                    None => None,
                },
            };
            let deps = Arc::new(cloudpop_pop3::Pop3Deps {
                authenticator: authenticator.clone(),
                store: store.clone(),
                lock,
                config: config.pop3_config().map_err(anyhow::Error::msg)?,
                tls,
                limits,
                local_limits: Arc::new(cloudpop_limits::InProcessLimits::new()),
                metrics,
            });
            let token = shutdown.clone();
            tasks.push(Box::pin(async move {
                cloudpop_pop3::run(listeners, deps, token)
                    .await
                    .context("POP3 listener")
            }));
        }
        if matches!(role, ServingRole::All | ServingRole::Lmtp) {
            let listener = bind("LMTP", config.lmtp.listen).await?;
            let deps = cloudpop_lmtp::LmtpDeps {
                authenticator,
                store,
                config: config.lmtp_config(),
                metrics: cloudpop_lmtp::LmtpMetrics::new(&registry)?,
            };
            let token = shutdown.clone();
            tasks.push(Box::pin(async move {
                cloudpop_lmtp::run(listener, deps, token)
                    .await
                    .context("LMTP listener")
            }));
        }
    }
    let admin_listener = bind("admin HTTP", config.admin.listen).await?;
    let token = phases.admin.clone();
    let admin = tokio::spawn(async move {
        cloudpop_telemetry::serve_admin(admin_listener, readiness, registry, token)
            .await
            .context("admin HTTP")
    });
    let result = run_until_signal(tasks, signals, &phases, &config.shutdown, &telemetry).await;
    phases.admin.cancel();
    // The admin server stops at once (no session depends on it); don't wait on a scrape.
    let _ = tokio::time::timeout(Duration::from_millis(100), admin).await;
    let budget = flush_budget(&telemetry, config.shutdown.grace_period);
    telemetry.shutdown(budget).await;
    result
}

/// Time kept at the end of the grace period to export the last spans.
fn flush_budget(telemetry: &Telemetry, grace: Duration) -> Duration {
    if telemetry.exports_traces() {
        (grace / 5).min(Duration::from_secs(1))
    } else {
        Duration::ZERO
    }
}

/// Time kept at the end of the grace period for the rest of the exit: closing the admin
/// port (100 ms at most), the exporter's shutdown margin (100 ms) and stopping the runtime
/// (100 ms in `main`), with room to spare.
const EXIT_RESERVE: Duration = Duration::from_millis(500);

async fn run_until_signal(
    tasks: Vec<Task>,
    mut signals: Signals,
    phases: &Phases,
    shutdown: &crate::config::ShutdownSection,
    telemetry: &Telemetry,
) -> anyhow::Result<()> {
    let mut running = JoinSet::new();
    for task in tasks {
        running.spawn(task);
    }
    info!("cloudpop ready");
    tokio::select! {
        () = signals.next() => {}
        Some(result) = running.join_next() => {
            // A listener ended on its own: that is a failure, and the process should exit.
            phases.draining.cancel();
            phases.stop.cancel();
            return match result {
                Ok(Ok(())) => Err(anyhow::anyhow!("a listener stopped unexpectedly")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("a listener task failed: {e}")),
            };
        }
    }
    let grace = shutdown.grace_period;
    let deadline = Instant::now() + grace;
    let drain_deadline = deadline
        .checked_sub(flush_budget(telemetry, grace) + EXIT_RESERVE)
        .unwrap_or(deadline);
    // Readiness first, so load balancers stop sending new connections before accept stops.
    phases.draining.cancel();
    info!(
        grace_period = ?grace,
        ready_delay = ?shutdown.ready_delay,
        "shutting down: readiness fails now; listeners close after the ready delay"
    );
    if !shutdown.ready_delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(shutdown.ready_delay) => {}
            () = signals.next() => warn!("second signal: closing the listeners now"),
        }
    }
    phases.stop.cancel();
    info!(
        sessions_may_take = ?drain_deadline.saturating_duration_since(Instant::now()),
        "listeners closed; draining sessions"
    );
    let drained = async {
        while let Some(result) = running.join_next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!(error = %format!("{e:#}"), "listener failed while draining"),
                Err(e) => error!(error = %e, "listener task failed while draining"),
            }
        }
    };
    tokio::select! {
        () = drained => info!("all sessions ended"),
        () = tokio::time::sleep_until(drain_deadline) => {
            warn!("grace period over; closing the remaining sessions without UPDATE");
        }
        () = signals.next() => {
            warn!("second signal; closing the remaining sessions without UPDATE");
        }
    }
    Ok(())
}

/// Binds a listener and announces its real address on stdout (port 0 picks a free port).
async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))?;
    let local = listener.local_addr()?;
    // Nobody reading stdout is no reason to stop serving.
    let _ = writeln!(std::io::stdout(), "cloudpop: {what} listening on {local}");
    Ok(listener)
}

/// SIGTERM and SIGINT, watched from start-up on (a signal before the first wait counts).
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn watch() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let watch = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(e) => {
                warn!(error = %e, "cannot watch {name}");
                None
            }
        };
        Self {
            term: watch(SignalKind::terminate(), "SIGTERM"),
            int: watch(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Waits for the next SIGTERM or SIGINT.
    async fn next(&mut self) {
        async fn one(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = one(&mut self.term) => {}
            () = one(&mut self.int) => {}
        }
    }
}
