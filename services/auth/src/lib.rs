//! Authentication for cloudpop.
//!
//! The POP3 and LMTP front-ends see only the [`Authenticator`] seam: they forward what the
//! client sent (and the challenge they issued) and get back a [`Principal`] or a typed
//! [`AuthFailure`]. They never see a stored secret.
//!
//! This crate holds the seam, the request and result types, and the user directory: a TOML
//! file of tenants, domains and users with argon2id password hashes, optional APOP and
//! CRAM-MD5 secrets, and per-tenant trust in bearer tokens (JWTs) from an identity provider
//! (see [`directory`]), reloaded when it changes; and the gRPC server, front-end client and
//! admin client (see [`grpc`]).
//!
//! It does not speak SASL: the front-end decodes PLAIN, LOGIN, CRAM-MD5, OAUTHBEARER and
//! XOAUTH2 exchanges and forwards the credential as a [`Credential`]. It does not fetch
//! JWKS over the network: keys come from the directory file or a file it names.

mod authenticator;
pub mod directory;
pub mod grpc;
mod login;
mod secret;

pub use authenticator::{
    AuthFailure, AuthRequest, Authenticator, BearerScheme, Credential, LookupError, Policy,
    Principal,
};
pub use directory::{
    Directory, DirectoryAuthenticator, DirectoryError, FileEdit, PasswordCheckSettings,
    RemovalLimit, TenantInfo, UserId, UserInfo,
};
pub use login::{Login, LoginError};
pub use secret::Secret;
