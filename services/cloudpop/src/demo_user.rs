//! The first start of the embedded default: a demo user so that a newcomer can log in.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use cloudpop_auth::{Directory, Login, Secret};
use cloudpop_maildrop::TenantId;

use crate::pop_url::pop_url;

/// The login of the demo user.
pub const DEMO_LOGIN: &str = "demo@example.com";
/// The tenant that owns domains added by `cloudpop admin` in the embedded default.
pub const DEFAULT_TENANT: &str = "default";

/// Creates the demo user with a random password on the first start (there is no users file
/// yet), and prints how to log in. The password is shown only this once.
///
/// A users file that exists but has no users is left alone: it is more likely emptied by
/// accident, or being rewritten, than new, and a demo user would make its users' mail bounce.
pub fn ensure(users_file: &Path, pop3: SocketAddr) -> anyhow::Result<()> {
    let exists = users_file
        .try_exists()
        .with_context(|| format!("cannot examine users file {}", users_file.display()))?;
    if exists {
        return Ok(());
    }
    let mut directory = Directory::new();
    let login = Login::parse(DEMO_LOGIN)?;
    ensure_domain(&mut directory, &login)?;
    let password = random_password()?;
    directory.add_user(&login, &Secret::new(password.as_bytes()))?;
    directory
        .save(users_file)
        .with_context(|| format!("cannot write users file {}", users_file.display()))?;
    println!(
        "cloudpop: first start, so a demo user was created in {}",
        users_file.display()
    );
    println!("  login:    {DEMO_LOGIN}");
    println!("  password: {password}   (shown only this once)");
    println!("  connect:  {}", pop_url(DEMO_LOGIN, pop3));
    println!("  new password: cloudpop admin user passwd {DEMO_LOGIN}   (reads it from stdin)");
    Ok(())
}

/// In the embedded default, a login's domain that no tenant owns yet joins the default
/// tenant. Returns whether it was added.
pub fn ensure_domain(directory: &mut Directory, login: &Login) -> anyhow::Result<bool> {
    if directory.tenant_for_domain(login.domain()).is_some() {
        return Ok(false);
    }
    let tenant = TenantId::new(DEFAULT_TENANT)?;
    if directory.tenants().iter().any(|t| t.id == tenant) {
        directory.add_domain(&tenant, login.domain())?;
    } else {
        directory.add_tenant(tenant, [login.domain()])?;
    }
    Ok(true)
}

fn random_password() -> anyhow::Result<String> {
    // 15 random bytes → 20 characters of an unambiguous alphabet (~75 bits).
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut random = [0u8; 20];
    getrandom::fill(&mut random)
        .map_err(|e| anyhow::anyhow!("no randomness for the demo password: {e}"))?;
    Ok(random
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}
