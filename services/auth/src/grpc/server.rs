//! The gRPC server of the `auth` role: auth, admin, health and reflection on one listener.

use std::sync::Arc;

use cloudpop_proto::admin::v1::admin_service_server::AdminServiceServer;
use cloudpop_proto::auth::v1::auth_service_server::AuthServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use super::admin_access::AdminAccess;
use super::admin_service::AdminServiceImpl;
use super::auth_service::AuthServiceImpl;
use super::metrics::AuthServerMetrics;
use crate::directory::DirectoryAuthenticator;

/// Largest request accepted, in bytes. Most requests are a few hundred bytes, but a bearer
/// token may be up to 64 KiB (identity providers put groups and roles in them), so there is
/// room for that and the rest of the request. The default (4 MiB) would let a caller make the
/// server hash megabyte-long "passwords".
const MAX_REQUEST_SIZE: usize = 256 * 1024;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptor sets (a build defect).
    #[error("cannot build the gRPC reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The HTTP/2 server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves, on `listener`, until `shutdown` is cancelled:
///
/// - `cloudpop.auth.v1.AuthService`, delegating to `directory`'s
///   [`Authenticator`](crate::Authenticator) implementation;
/// - `cloudpop.admin.v1.AdminService`, editing `directory`'s file and reloading it;
/// - `grpc.health.v1.Health`, reporting both services (and the server, `""`) as SERVING,
///   and NOT_SERVING once shutdown begins;
/// - `grpc.reflection.v1.ServerReflection`, describing all of the above.
///
/// On shutdown the listener stops accepting and in-flight calls finish before this returns.
/// Admin calls are admitted by `admin` (a token, or open: see [`AdminAccess`]).
///
/// AuthService calls are timed and counted into `metrics` when given, and each gets a span
/// that continues the caller's trace (W3C trace context in the request metadata).
pub async fn serve(
    listener: TcpListener,
    directory: DirectoryAuthenticator,
    metrics: Option<AuthServerMetrics>,
    admin: AdminAccess,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cloudpop_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let auth = AuthServiceServer::new(AuthServiceImpl::new(Arc::new(directory.clone()), metrics))
        .max_decoding_message_size(MAX_REQUEST_SIZE);
    let admin_service = AdminServiceServer::new(AdminServiceImpl::new(directory))
        .max_decoding_message_size(MAX_REQUEST_SIZE);
    let admin_service = InterceptedService::new(admin_service, admin);
    health_reporter
        .set_serving::<AuthServiceServer<AuthServiceImpl>>()
        .await;
    health_reporter
        .set_serving::<AdminServiceServer<AdminServiceImpl>>()
        .await;
    let stopping = async move {
        shutdown.cancelled().await;
        health_reporter
            .set_not_serving::<AuthServiceServer<AuthServiceImpl>>()
            .await;
        health_reporter
            .set_not_serving::<AdminServiceServer<AdminServiceImpl>>()
            .await;
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(auth)
        .add_service(admin_service)
        .serve_with_incoming_shutdown(incoming, stopping)
        .await?;
    Ok(())
}
