//! Wiring of the serving roles: build the backends from configuration, bind, serve, drain.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use cloudpop_auth::{Authenticator, DirectoryAuthenticator};
use cloudpop_maildrop::{FsStore, InProcessLock, MaildropLock, MessageStore};
use cloudpop_telemetry::{Readiness, ReadinessCheck};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::demo_user;

/// Which listeners this process runs.
#[derive(Debug, Clone, Copy)]
pub struct Listeners {
    pub pop3: bool,
    pub lmtp: bool,
}

/// Runs the serving roles until SIGTERM or SIGINT, then drains within the grace period.
pub async fn serve(config: Config, listeners: Listeners) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let users_file = config.users_file();
    if config.users.create_demo_user {
        demo_user::ensure(&users_file, config.pop3.listen)?;
    }
    let shutdown = CancellationToken::new();
    let directory = DirectoryAuthenticator::open(&users_file)
        .with_context(|| format!("cannot load users file {}", users_file.display()))?;
    directory.spawn_reloader(config.users.reload_interval, shutdown.clone());
    let authenticator: Arc<dyn Authenticator> = Arc::new(directory);
    let store: Arc<dyn MessageStore> = Arc::new(FsStore::new(config.store_path()));
    let lock: Arc<dyn MaildropLock> = Arc::new(InProcessLock::default());

    let mut tasks = JoinSet::new();
    if listeners.pop3 {
        let listener = bind("POP3", config.pop3.listen).await?;
        let deps = Arc::new(cloudpop_pop3::Pop3Deps {
            authenticator: authenticator.clone(),
            store: store.clone(),
            lock,
            config: config.pop3_config(),
        });
        tasks.spawn(cloudpop_pop3::run(listener, deps, shutdown.clone()));
    }
    if listeners.lmtp {
        let listener = bind("LMTP", config.lmtp.listen).await?;
        let deps = cloudpop_lmtp::LmtpDeps {
            authenticator: authenticator.clone(),
            store: store.clone(),
            config: config.lmtp_config(),
        };
        tasks.spawn(cloudpop_lmtp::run(listener, deps, shutdown.clone()));
    }
    let admin = bind("admin HTTP", config.admin.listen).await?;
    let readiness = Readiness::new(shutdown.clone()).with_check("store", store_check(store));
    tasks.spawn(cloudpop_telemetry::serve_admin(
        admin,
        readiness,
        shutdown.clone(),
    ));
    info!("cloudpop ready");

    wait_for_signal().await;
    info!(grace_period = ?config.shutdown.grace_period, "shutting down: draining sessions");
    shutdown.cancel();
    let drained = tokio::time::timeout(config.shutdown.grace_period, async {
        while let Some(result) = tasks.join_next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!(error = %e, "listener failed"),
                Err(e) => error!(error = %e, "listener task panicked"),
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

fn store_check(store: Arc<dyn MessageStore>) -> ReadinessCheck {
    Arc::new(move || {
        let store = store.clone();
        Box::pin(async move { store.check().await.map_err(|e| e.to_string()) })
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
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
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
