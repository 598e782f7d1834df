//! Wiring of the serving roles: build the backends from configuration, bind, serve, drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use cloudpop_telemetry::Readiness;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backends;
use crate::config::{AuthBackend, Config};
use crate::demo_user;

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

type Task = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Runs `role` until SIGTERM or SIGINT, then drains within the grace period.
pub async fn serve(config: Config, role: ServingRole) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mut readiness = Readiness::new(shutdown.clone());
    let mut tasks: Vec<Task> = Vec::new();
    let uses_users_file = role == ServingRole::Auth || config.auth.backend == AuthBackend::File;
    if uses_users_file {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    }
    if role == ServingRole::All
        && config.auth.backend == AuthBackend::File
        && config.users.create_demo_user
    {
        demo_user::ensure(&config.users_file(), config.pop3.listen)?;
    }

    if role == ServingRole::Auth {
        let directory = backends::users_directory(&config, &shutdown)?;
        let listener = bind("auth gRPC", config.auth.listen).await?;
        let token = shutdown.clone();
        tasks.push(Box::pin(async move {
            cloudpop_auth::grpc::serve(listener, directory, token)
                .await
                .context("auth gRPC server")
        }));
    } else {
        let (authenticator, auth_check) = backends::authenticator(&config, &shutdown).await?;
        let (store, store_check) = backends::store(&config)?;
        readiness = readiness.with_check("store", store_check);
        if let Some(check) = auth_check {
            readiness = readiness.with_check("auth", check);
        }
        if matches!(role, ServingRole::All | ServingRole::Pop3) {
            let (lock, lock_check) = backends::lock(&config).await?;
            if let Some(check) = lock_check {
                readiness = readiness.with_check("lock", check);
            }
            let (limits, limits_check) = backends::limits(&config).await?;
            if let Some(check) = limits_check {
                readiness = readiness.with_check("limits", check);
            }
            let tls = backends::tls(&config, role == ServingRole::All, &shutdown)?;
            let listeners = cloudpop_pop3::Pop3Listeners {
                plain: Some(bind("POP3", config.pop3.listen).await?),
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
            };
            let token = shutdown.clone();
            tasks.push(Box::pin(async move {
                cloudpop_lmtp::run(listener, deps, token)
                    .await
                    .context("LMTP listener")
            }));
        }
    }
    let admin = bind("admin HTTP", config.admin.listen).await?;
    let token = shutdown.clone();
    tasks.push(Box::pin(async move {
        cloudpop_telemetry::serve_admin(admin, readiness, token)
            .await
            .context("admin HTTP")
    }));
    run_until_signal(tasks, shutdown, config.shutdown.grace_period).await
}

async fn run_until_signal(
    tasks: Vec<Task>,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) -> anyhow::Result<()> {
    let mut running = JoinSet::new();
    for task in tasks {
        running.spawn(task);
    }
    info!("cloudpop ready");
    tokio::select! {
        () = wait_for_signal() => {}
        Some(result) = running.join_next() => {
            // A listener ended on its own: that is a failure, and the process should exit.
            shutdown.cancel();
            return match result {
                Ok(Ok(())) => Err(anyhow::anyhow!("a listener stopped unexpectedly")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("a listener task failed: {e}")),
            };
        }
    }
    info!(grace_period = ?grace, "shutting down: draining sessions");
    shutdown.cancel();
    let drained = tokio::time::timeout(grace, async {
        while let Some(result) = running.join_next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!(error = %format!("{e:#}"), "listener failed while draining"),
                Err(e) => error!(error = %e, "listener task failed while draining"),
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!("grace period over; closing the remaining sessions without UPDATE");
    }
    Ok(())
}

/// Binds a listener and announces its real address on stdout (port 0 picks a free port).
async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))?;
    let local = listener.local_addr()?;
    println!("cloudpop: {what} listening on {local}");
    Ok(listener)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
