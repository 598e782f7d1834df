//! The admin HTTP port: `/livez` and `/readyz`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One dependency check for `/readyz`: `Err` carries a short reason without secrets.
pub type ReadinessCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What `/readyz` consults: the drain flag and the dependency checks of the role.
#[derive(Clone, Default)]
pub struct Readiness {
    draining: CancellationToken,
    checks: Vec<(&'static str, ReadinessCheck)>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.checks.iter().map(|(n, _)| *n).collect();
        f.debug_struct("Readiness")
            .field("draining", &self.draining.is_cancelled())
            .field("checks", &names)
            .finish()
    }
}

impl Readiness {
    /// Readiness that fails once `draining` is cancelled.
    pub fn new(draining: CancellationToken) -> Self {
        Self {
            draining,
            checks: Vec::new(),
        }
    }

    /// Adds a named dependency check.
    pub fn with_check(mut self, name: &'static str, check: ReadinessCheck) -> Self {
        self.checks.push((name, check));
        self
    }

    async fn report(&self) -> (StatusCode, String) {
        if self.draining.is_cancelled() {
            return (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into());
        }
        let mut body = String::new();
        let mut ready = true;
        for (name, check) in &self.checks {
            match check().await {
                Ok(()) => body.push_str(&format!("{name}: ok\n")),
                Err(reason) => {
                    ready = false;
                    body.push_str(&format!("{name}: {reason}\n"));
                }
            }
        }
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, body)
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` is cancelled.
pub async fn serve_admin(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(readiness));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> (StatusCode, String) {
    readiness.report().await
}
