//! Command-line interface: one binary, roles as subcommands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// cloudpop: a multi-tenant POP3 service. Without a role it runs `all`, the embedded
/// single-machine default.
#[derive(Debug, Parser)]
#[command(name = "cloudpop", version, about)]
pub struct Cli {
    /// Configuration file (TOML). Default: `cloudpop.toml` in the working directory if it
    /// exists, else built-in defaults. Environment variables `CLOUDPOP_SECTION__KEY`
    /// override single options.
    #[arg(
        long,
        short,
        global = true,
        env = "CLOUDPOP_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub role: Option<Role>,
}

/// What this process does.
#[derive(Debug, Subcommand)]
pub enum Role {
    /// Everything on one machine: POP3, LMTP and admin HTTP, files under the data directory.
    All,
    /// Only the POP3 front-end (and the admin HTTP port).
    Pop3,
    /// Only the LMTP delivery endpoint (and the admin HTTP port).
    Lmtp,
    /// The auth service: gRPC for front-ends and `cloudpop admin --remote` (and admin HTTP).
    Auth,
    /// Manage tenants, domains and users: in the users file, or on a running auth service
    /// with `--remote` (implied by `auth.backend = "grpc"`).
    Admin(AdminArgs),
    /// Check the configuration and print it with defaults filled in; exit non-zero if invalid.
    CheckConfig,
}

/// `cloudpop admin [--remote] …`
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Talk to the auth service at `auth.endpoint` instead of editing the users file.
    #[arg(long)]
    pub remote: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// What to manage.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Users: add, change password, set APOP secret, disable, remove, list.
    #[command(subcommand)]
    User(UserCommand),
    /// Tenants: create, list.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Domains: add one to a tenant.
    #[command(subcommand)]
    Domain(DomainCommand),
}

/// `cloudpop admin tenant …`
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant owning the given domains.
    Add {
        /// Tenant id: `a-z`, `0-9` and `-`.
        id: String,
        /// A domain the tenant owns (repeatable).
        #[arg(long = "domain", value_name = "DOMAIN")]
        domains: Vec<String>,
    },
    /// Change a tenant's policy; options not given keep their value.
    Set {
        id: String,
        /// Accept USER/PASS, PLAIN, LOGIN and bearer tokens without TLS (e.g. on a private
        /// network). Default for new tenants: false.
        #[arg(long, value_name = "BOOL")]
        cleartext_allowed: Option<bool>,
        /// RFC 2449 LOGIN-DELAY: minimum time between two logins of a user, e.g. `15m`.
        #[arg(long, value_name = "DURATION")]
        login_delay: Option<String>,
        /// RFC 2449 EXPIRE: `never`, or days mail may stay after retrieval.
        #[arg(long, value_name = "never|DAYS")]
        expire: Option<String>,
    },
    /// List tenants, their domains and policies.
    List,
}

/// `cloudpop admin domain …`
#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Give a domain to a tenant; logins `…@DOMAIN` then belong to it.
    Add { tenant: String, domain: String },
}

/// `cloudpop admin user …`. Secrets are read from standard input, never from arguments.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; reads the password from standard input (one line).
    Add { login: String },
    /// Set a user's password; reads it from standard input (one line).
    Passwd { login: String },
    /// Set a user's APOP secret from standard input (an empty line removes it).
    Apop { login: String },
    /// Set a user's CRAM-MD5 secret from standard input (an empty line removes it).
    Cram { login: String },
    /// Disable a user: logins are refused with [SYS/PERM], delivery continues.
    Disable { login: String },
    /// Enable a disabled user.
    Enable { login: String },
    /// Remove a user from the users file (stored mail is left in place).
    Del { login: String },
    /// List users.
    List,
    /// Approve the users file as it is now, so that a running server takes it even if it
    /// removes more users than `users.max_removed_fraction` allows (once: for exactly these
    /// contents). Only for the local users file.
    ApproveRemovals,
}
