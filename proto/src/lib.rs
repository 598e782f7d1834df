//! cloudpop's gRPC contracts and the Rust code generated from them.
//!
//! The `.proto` files under `cloudpop/` are the source of truth; `build.rs` compiles them
//! with protox (no system `protoc`) into prost messages and tonic clients and servers:
//!
//! - [`auth::v1`]: `AuthService`, what the POP3 and LMTP front-ends call to authenticate a
//!   client and resolve a recipient.
//! - [`admin::v1`]: `AdminService`, what `cloudpop admin` calls to edit the user directory.
//!
//! This crate holds no logic: conversions to and from cloudpop's own types, the server and
//! the clients live in `cloudpop-auth`. The `Debug` output of the messages that carry a
//! password, token, secret or other credential shows only its length.

use std::fmt;

/// The auth service's contract (`cloudpop.auth.v1`).
pub mod auth {
    /// Version 1 of `cloudpop.auth.v1`.
    pub mod v1 {
        #![allow(
            unreachable_pub,
            missing_docs,
            missing_debug_implementations,
            clippy::all,
            clippy::pedantic
        )]
        tonic::include_proto!("cloudpop.auth.v1");
    }
}

/// The admin service's contract (`cloudpop.admin.v1`).
pub mod admin {
    /// Version 1 of `cloudpop.admin.v1`.
    pub mod v1 {
        #![allow(
            unreachable_pub,
            missing_docs,
            missing_debug_implementations,
            clippy::all,
            clippy::pedantic
        )]
        tonic::include_proto!("cloudpop.admin.v1");
    }
}

/// The encoded `FileDescriptorSet` of every `.proto` file here (and their imports), for gRPC
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");

/// Formats secret bytes as their length only.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes redacted>", self.0)
    }
}

impl fmt::Debug for auth::v1::AuthenticateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticateRequest")
            .field("mechanism", &self.mechanism())
            .field("login", &self.login)
            .field("credential", &Redacted(self.credential.len()))
            .field("challenge", &self.challenge)
            .field("client_address", &self.client_address)
            .field("local_address", &self.local_address)
            .field("tls", &self.tls)
            .finish()
    }
}

impl fmt::Debug for admin::v1::AddUserRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddUserRequest")
            .field("login", &self.login)
            .field("password", &Redacted(self.password.len()))
            .finish()
    }
}

impl fmt::Debug for admin::v1::SetPasswordRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetPasswordRequest")
            .field("login", &self.login)
            .field("password", &Redacted(self.password.len()))
            .finish()
    }
}

impl fmt::Debug for admin::v1::SetApopSecretRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetApopSecretRequest")
            .field("login", &self.login)
            .field("secret", &self.secret.as_ref().map(|s| Redacted(s.len())))
            .finish()
    }
}

impl fmt::Debug for admin::v1::SetCramSecretRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetCramSecretRequest")
            .field("login", &self.login)
            .field("secret", &self.secret.as_ref().map(|s| Redacted(s.len())))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::admin::v1::{
        AddUserRequest, SetApopSecretRequest, SetCramSecretRequest, SetPasswordRequest,
    };
    use super::auth::v1::{AuthenticateRequest, FailureReason, Mechanism};

    #[test]
    fn debug_never_prints_secrets() {
        let auth = AuthenticateRequest {
            mechanism: Mechanism::Password.into(),
            login: "alice@example.com".into(),
            credential: b"hunter2".to_vec(),
            ..Default::default()
        };
        let add = AddUserRequest {
            login: "alice@example.com".into(),
            password: b"hunter2".to_vec(),
        };
        let set = SetPasswordRequest {
            login: "alice@example.com".into(),
            password: b"hunter2".to_vec(),
        };
        let apop = SetApopSecretRequest {
            login: "alice@example.com".into(),
            secret: Some(b"hunter2".to_vec()),
        };
        let cram = SetCramSecretRequest {
            login: "alice@example.com".into(),
            secret: Some(b"hunter2".to_vec()),
        };
        let bearer = AuthenticateRequest {
            mechanism: Mechanism::Oauthbearer.into(),
            credential: b"hunter2".to_vec(),
            login: "alice@example.com".into(),
            ..Default::default()
        };
        for printed in [
            format!("{auth:?}"),
            format!("{add:?}"),
            format!("{set:?}"),
            format!("{apop:?}"),
            format!("{cram:?}"),
            format!("{bearer:?}"),
        ] {
            assert!(!printed.contains("hunter2"), "{printed}");
            assert!(printed.contains("alice@example.com"), "{printed}");
            assert!(printed.contains("7 bytes redacted"), "{printed}");
        }
        assert!(format!("{auth:?}").contains("Password"));
        assert!(format!("{bearer:?}").contains("Oauthbearer"));
    }

    #[test]
    fn new_mechanisms_keep_their_reserved_numbers() {
        // Fixed on the wire: the numbers were reserved for these mechanisms before they existed.
        assert_eq!(i32::from(Mechanism::CramMd5), 5);
        assert_eq!(i32::from(Mechanism::Oauthbearer), 6);
        assert_eq!(i32::from(Mechanism::Xoauth2), 7);
        assert!(Mechanism::try_from(3).is_err() && Mechanism::try_from(4).is_err());
        assert_eq!(i32::from(FailureReason::EncryptionRequired), 5);
    }

    #[test]
    fn descriptor_set_holds_both_files() {
        // The file names are stored verbatim in the encoded descriptors.
        let set = String::from_utf8_lossy(super::FILE_DESCRIPTOR_SET);
        assert!(set.contains("cloudpop/auth/v1/auth.proto"));
        assert!(set.contains("cloudpop/admin/v1/admin.proto"));
    }
}
