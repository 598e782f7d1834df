//! The auth service over gRPC: the server, the front-ends' client and the admin client.
//!
//! - [`serve`] runs `cloudpop.auth.v1.AuthService` and `cloudpop.admin.v1.AdminService` (plus
//!   gRPC health and reflection) over a [`DirectoryAuthenticator`](crate::DirectoryAuthenticator).
//! - [`GrpcAuthenticator`] is the [`Authenticator`](crate::Authenticator) seam over the
//!   network, for POP3 and LMTP front-ends that do not hold the directory themselves. Any
//!   failure to get an answer is [`AuthFailure::Temporary`](crate::AuthFailure::Temporary):
//!   a dependency being down is never reported as bad credentials.
//! - [`AdminClient`] is the typed client `cloudpop admin` uses to edit the directory remotely.
//!
//! Both sides are measured ([`GrpcClientMetrics`], [`AuthServerMetrics`]) and traced: the
//! client puts the W3C trace context of its span into the request metadata and the server
//! continues that trace, so a login's spans on both sides form one trace.
//!
//! The wire contracts are in the `cloudpop-proto` crate. Conversions validate everything
//! received: ids, logins and enums from the other side are parsed, never trusted. No message
//! in either direction carries a stored secret; the only secrets on the wire are what a client
//! sent to prove itself (a password, digest or bearer token) and new passwords and APOP or
//! CRAM-MD5 secrets sent by an administrator.
//!
//! Admin callers are admitted by [`AdminAccess`]: with an admin token configured, each admin
//! call must carry it; without one, whoever reaches the port can edit the directory, so keep
//! it private (loopback or a NetworkPolicy). Not here: TLS on the gRPC port.

mod admin_access;
mod admin_client;
mod admin_service;
mod auth_service;
mod client;
mod convert;
mod metrics;
mod server;
mod trace_context;

pub use admin_access::AdminAccess;
pub use admin_client::{AdminClient, AdminError};
pub use client::{GrpcAuthenticator, GrpcClientConfig, GrpcClientError};
pub use metrics::{AuthServerMetrics, GrpcClientMetrics, attempt_outcome};
pub use server::{ServeError, serve};
