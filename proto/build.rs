//! Compiles the `.proto` files with protox (pure Rust: no system `protoc`) and generates the
//! prost messages and tonic clients and servers, plus the descriptor set for reflection.

use std::path::PathBuf;

use prost::Message as _;

const PROTOS: &[&str] = &[
    "cloudpop/auth/v1/auth.proto",
    "cloudpop/admin/v1/admin.proto",
];

/// Messages that carry a password or a credential: their `Debug` is written by hand in
/// `src/lib.rs` so that printing one never prints the secret.
const SECRET_MESSAGES: &[&str] = &[
    ".cloudpop.auth.v1.AuthenticateRequest",
    ".cloudpop.admin.v1.AddUserRequest",
    ".cloudpop.admin.v1.SetPasswordRequest",
    ".cloudpop.admin.v1.SetApopSecretRequest",
    ".cloudpop.admin.v1.SetCramSecretRequest",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=cloudpop");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["."])?;
    let descriptor_path = out_dir.join("descriptor.bin");
    // `file_descriptor_set_path` is honoured only when protoc runs; with `compile_fds` the
    // set is written here, from the same descriptors the code is generated from.
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .skip_debug(SECRET_MESSAGES)
        .compile_fds(fds)?;
    Ok(())
}
