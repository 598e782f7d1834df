//! The admin HTTP port: `/livez`, `/readyz` and `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::Registry;
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

struct Admin {
    readiness: Readiness,
    registry: Registry,
}

/// Serves the admin endpoints on `listener` until `shutdown` is cancelled:
///
/// - `/livez`: 200 whenever the process answers; it checks nothing else, so a dependency
///   outage never gets a pod restarted;
/// - `/readyz`: 200 when every check of `readiness` passes and the process is not draining,
///   503 with the reasons otherwise;
/// - `/metrics`: the Prometheus text exposition of `registry`.
///
/// The caller keeps this running while sessions drain, so probes and scrapes keep working
/// until the process exits.
pub async fn serve_admin(
    listener: TcpListener,
    readiness: Readiness,
    registry: Registry,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(Admin {
            readiness,
            registry,
        }));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn readyz(State(admin): State<Arc<Admin>>) -> (StatusCode, String) {
    admin.readiness.report().await
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    match crate::metrics::encode(&admin.registry) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    }

    #[tokio::test]
    async fn readiness_fails_while_draining_and_liveness_does_not() {
        let draining = CancellationToken::new();
        let failing: ReadinessCheck =
            Arc::new(|| Box::pin(async { Err("redis: connection refused".to_owned()) }));
        let ok: ReadinessCheck = Arc::new(|| Box::pin(async { Ok(()) }));
        let registry = Registry::new();
        crate::ProcessMetrics::new(&registry, "1.2.3").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let readiness = Readiness::new(draining.clone()).with_check("store", ok);
        let server = tokio::spawn(serve_admin(listener, readiness, registry, stop.clone()));

        assert_eq!(get(addr, "/livez").await.0, 200);
        assert_eq!(get(addr, "/readyz").await, (200, "store: ok\n".to_owned()));
        let (status, metrics) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            metrics.contains("cloudpop_build_info{version=\"1.2.3\"} 1"),
            "{metrics}"
        );

        draining.cancel();
        assert_eq!(get(addr, "/readyz").await, (503, "draining\n".to_owned()));
        assert_eq!(get(addr, "/livez").await.0, 200, "draining is not dying");
        stop.cancel();
        server.await.unwrap().unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let readiness = Readiness::new(CancellationToken::new()).with_check("lock", failing);
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_admin(
            listener,
            readiness,
            Registry::new(),
            stop.clone(),
        ));
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (503, "lock: redis: connection refused\n")
        );
        assert_eq!(
            get(addr, "/livez").await.0,
            200,
            "a dependency is not the process"
        );
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
