//! Metrics of the gRPC hop, on both sides.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tonic::Code;

use crate::authenticator::AuthFailure;

/// Latency buckets in seconds: 0.5 ms to ~16 s, doubling (argon2 checks take tens of ms).
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 16).unwrap_or_default()
}

/// The front-end side: `cloudpop_grpc_client_request_duration_seconds{method, outcome}`
/// (one observation per call, retries included) and `cloudpop_grpc_client_retries_total`.
#[derive(Debug, Clone)]
pub struct GrpcClientMetrics {
    pub(crate) duration: HistogramVec,
    pub(crate) retries: IntCounterVec,
}

impl GrpcClientMetrics {
    /// Creates the families and registers them on `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "cloudpop_grpc_client_request_duration_seconds",
                "Time taken by calls to the auth service, retries included, by method \
                 (Authenticate, LookupRecipient, Capabilities) and outcome (ok, or the gRPC \
                 status code in snake case).",
            )
            .buckets(latency_buckets()),
            &["method", "outcome"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "cloudpop_grpc_client_retries_total",
                "Calls to the auth service tried again after a transport failure or timeout, \
                 by method.",
            ),
            &["method"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        Ok(Self { duration, retries })
    }
}

/// The auth service side: `cloudpop_grpc_server_request_duration_seconds{method, outcome}`
/// and `cloudpop_auth_attempts_total{mechanism, outcome}` (the service's decisions).
#[derive(Debug, Clone)]
pub struct AuthServerMetrics {
    pub(crate) duration: HistogramVec,
    pub(crate) attempts: IntCounterVec,
}

impl AuthServerMetrics {
    /// Creates the families and registers them on `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "cloudpop_grpc_server_request_duration_seconds",
                "Time taken to answer AuthService calls, by method (Authenticate, \
                 LookupRecipient, Capabilities) and outcome (ok, or the gRPC status code in \
                 snake case).",
            )
            .buckets(latency_buckets()),
            &["method", "outcome"],
        )?;
        let attempts = IntCounterVec::new(
            Opts::new(
                "cloudpop_auth_attempts_total",
                "Credential checks answered by the auth service, by mechanism (PASS, APOP, \
                 CRAM-MD5, OAUTHBEARER, XOAUTH2) and outcome (success, bad_credentials, \
                 login_too_soon, temporary_failure, permanent_failure, encryption_required).",
            ),
            &["mechanism", "outcome"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        Ok(Self { duration, attempts })
    }
}

/// The outcome label of a call: `ok`, or the status code in snake case.
pub(crate) fn outcome<T>(result: &Result<T, tonic::Status>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(status) => code_label(status.code()),
    }
}

fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The outcome label of a credential check.
pub fn attempt_outcome<T>(result: &Result<T, AuthFailure>) -> &'static str {
    match result {
        Ok(_) => "success",
        Err(failure) => failure.kind(),
    }
}
