//! `cloudpop admin …`: tenants, domains and users, in the users file or on the auth service.
//!
//! File writes are atomic (temporary file and rename), and a running server picks them up
//! within `users.reload_interval`; the auth service applies its changes at once. Secrets are
//! read from standard input, never from arguments, which would show in `ps` and shell
//! history.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use anyhow::{Context, bail};
use cloudpop_auth::grpc::AdminClient;
use cloudpop_auth::{Directory, Login, Policy, Secret, TenantInfo, UserId, UserInfo};
use cloudpop_maildrop::TenantId;

use crate::backends;
use crate::cli::{AdminArgs, AdminCommand, DomainCommand, TenantCommand, UserCommand};
use crate::config::{AuthBackend, Config};
use crate::demo_user::{DEFAULT_TENANT, ensure_domain};
use crate::pop_url::pop_url;

/// `println!` that returns the write error instead of panicking, so that `cloudpop admin
/// … | head -1` ends quietly when the reader goes away.
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}

/// Where the changes go.
enum Target {
    /// The users file of the embedded default (`users.file`).
    File(PathBuf),
    /// The auth service at `auth.endpoint` (boxed: a client is much larger than a path).
    Remote(Box<AdminClient>),
}

/// Runs one admin command.
pub async fn run(config: &Config, args: AdminArgs) -> anyhow::Result<()> {
    let target = if args.remote || config.auth.backend == AuthBackend::Grpc {
        let client = AdminClient::connect(&config.auth.endpoint, config.auth.timeout).await?;
        match backends::admin_token(config)? {
            Some(token) => Target::Remote(Box::new(client.with_token(&token)?)),
            None => Target::Remote(Box::new(client)),
        }
    } else {
        let path = config.users_file();
        if let Some(parent) = path.parent() {
            // Mode 0700, as the server makes data_dir: the users file holds password hashes.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        Target::File(path)
    };
    match args.command {
        AdminCommand::User(command) => user(config, &target, command).await,
        AdminCommand::Tenant(command) => tenant(&target, command).await,
        AdminCommand::Domain(DomainCommand::Add { tenant, domain }) => {
            let tenant = TenantId::new(tenant).context("invalid tenant id")?;
            let info = target.add_domain(&tenant, &domain).await?;
            say!("tenant {} now owns: {}", info.id, info.domains.join(", "));
            Ok(())
        }
    }
}

async fn user(config: &Config, target: &Target, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::List => {
            print_users(&target.list_users().await?)?;
        }
        UserCommand::Add { login } => {
            let login = parse(&login)?;
            let password = read_secret("Password")?;
            if password.expose().is_empty() {
                bail!("the password must not be empty");
            }
            let id = target.add_user(&login, &password).await?;
            say!("added {login} (user id {id})");
            say!(
                "  connect: {}",
                pop_url(&login.to_string(), config.pop3.listen)
            );
        }
        UserCommand::Passwd { login } => {
            let login = parse(&login)?;
            let password = read_secret("New password")?;
            if password.expose().is_empty() {
                bail!("the password must not be empty");
            }
            target.edit_user(&login, Edit::Password(password)).await?;
            say!("password of {login} changed");
        }
        UserCommand::Apop { login } => {
            let login = parse(&login)?;
            let secret = read_secret("APOP secret (empty removes it)")?;
            let secret = (!secret.expose().is_empty()).then_some(secret);
            let removed = secret.is_none();
            target.edit_user(&login, Edit::Apop(secret)).await?;
            say!(
                "APOP secret of {login} {}",
                if removed { "removed" } else { "set" }
            );
        }
        UserCommand::Cram { login } => {
            let login = parse(&login)?;
            let secret = read_secret("CRAM-MD5 secret (empty removes it)")?;
            let secret = (!secret.expose().is_empty()).then_some(secret);
            let removed = secret.is_none();
            target.edit_user(&login, Edit::Cram(secret)).await?;
            say!(
                "CRAM-MD5 secret of {login} {}",
                if removed { "removed" } else { "set" }
            );
        }
        UserCommand::Disable { login } => {
            let login = parse(&login)?;
            target.edit_user(&login, Edit::Disabled(true)).await?;
            say!("{login} disabled");
        }
        UserCommand::Enable { login } => {
            let login = parse(&login)?;
            target.edit_user(&login, Edit::Disabled(false)).await?;
            say!("{login} enabled");
        }
        UserCommand::Del { login } => {
            let login = parse(&login)?;
            let id = target.delete_user(&login).await?;
            say!("removed {login}; its stored mail (mailbox {id}) was left in place");
        }
        UserCommand::ApproveRemovals => {
            let Target::File(path) = target else {
                bail!(
                    "approve-removals works on the local users file: run it where the file is, \
                     without --remote"
                );
            };
            let directory = Directory::approve_removals(path)
                .with_context(|| format!("cannot approve users file {}", path.display()))?;
            println!(
                "approved {} as it is now ({} users); a running server takes it at its next reload",
                path.display(),
                directory.users().len()
            );
        }
    }
    Ok(())
}

async fn tenant(target: &Target, command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Add { id, domains } => {
            let id = TenantId::new(id).context("invalid tenant id")?;
            let info = target.add_tenant(&id, &domains).await?;
            say!(
                "tenant {} created; domains: {}",
                info.id,
                info.domains.join(", ")
            );
        }
        TenantCommand::Set {
            id,
            cleartext_allowed,
            login_delay,
            expire,
        } => {
            let id = TenantId::new(id).context("invalid tenant id")?;
            let current = target
                .list_tenants()
                .await?
                .into_iter()
                .find(|t| t.id == id);
            let mut policy = current.with_context(|| format!("no tenant {id}"))?.policy;
            if let Some(allowed) = cleartext_allowed {
                policy.cleartext_allowed = allowed;
            }
            if let Some(delay) = login_delay {
                policy.login_delay =
                    crate::config::duration::parse(&delay).map_err(anyhow::Error::msg)?;
            }
            if let Some(expire) = expire {
                policy.expire_days = match expire.as_str() {
                    "never" => None,
                    days => Some(
                        days.parse()
                            .context("--expire takes `never` or a number of days")?,
                    ),
                };
            }
            let info = target.set_policy(&id, policy).await?;
            say!("tenant {}: {}", info.id, describe(&info.policy));
        }
        TenantCommand::List => {
            say!("{:<24} {:<40} policy", "tenant", "domains");
            for tenant in target.list_tenants().await? {
                let domains = tenant.domains.join(", ");
                say!(
                    "{:<24} {domains:<40} {}",
                    tenant.id.to_string(),
                    describe(&tenant.policy)
                );
            }
        }
    }
    Ok(())
}

fn describe(policy: &Policy) -> String {
    let expire = policy
        .expire_days
        .map_or("never".to_owned(), |d| format!("{d} days"));
    format!(
        "cleartext_allowed={} login_delay={} expire={expire}",
        policy.cleartext_allowed,
        crate::config::duration::format(policy.login_delay)
    )
}

/// One change to an existing user.
enum Edit {
    Password(Secret),
    Apop(Option<Secret>),
    Cram(Option<Secret>),
    Disabled(bool),
}

impl Target {
    /// Loads the users file, applies `change`, and saves it atomically. A change that removes
    /// users is approved (see `Directory::load_for_edit`), so a running server takes it
    /// whatever its removal limit.
    fn with_file<T>(
        path: &PathBuf,
        change: impl FnOnce(&mut Directory) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let (mut directory, edit) = Directory::load_for_edit(path)?;
        let result = change(&mut directory)?;
        edit.save(&directory)
            .with_context(|| format!("cannot write users file {}", path.display()))?;
        Ok(result)
    }

    async fn add_user(&self, login: &Login, password: &Secret) -> anyhow::Result<UserId> {
        match self {
            Target::File(path) => Self::with_file(path, |directory| {
                if directory.user(login).is_some() {
                    bail!("user {login} already exists; use `cloudpop admin user passwd {login}`");
                }
                // The embedded default owns every domain it is asked about.
                if ensure_domain(directory, login)? {
                    eprintln!("domain {} added to tenant default", login.domain());
                }
                Ok(directory.add_user(login, password)?)
            }),
            Target::Remote(client) => {
                if ensure_remote_domain(client, login).await? {
                    eprintln!("domain {} added to tenant default", login.domain());
                }
                Ok(client.add_user(login, password).await?)
            }
        }
    }

    async fn edit_user(&self, login: &Login, edit: Edit) -> anyhow::Result<()> {
        match self {
            Target::File(path) => Self::with_file(path, |directory| {
                match &edit {
                    Edit::Password(password) => directory.set_password(login, password)?,
                    Edit::Apop(secret) => directory.set_apop_secret(login, secret.as_ref())?,
                    Edit::Cram(secret) => directory.set_cram_secret(login, secret.as_ref())?,
                    Edit::Disabled(disabled) => directory.set_disabled(login, *disabled)?,
                }
                Ok(())
            }),
            Target::Remote(client) => {
                match &edit {
                    Edit::Password(password) => client.set_password(login, password).await?,
                    Edit::Apop(secret) => client.set_apop_secret(login, secret.as_ref()).await?,
                    Edit::Cram(secret) => client.set_cram_secret(login, secret.as_ref()).await?,
                    Edit::Disabled(disabled) => client.set_disabled(login, *disabled).await?,
                }
                Ok(())
            }
        }
    }

    async fn delete_user(&self, login: &Login) -> anyhow::Result<UserId> {
        match self {
            Target::File(path) => {
                Self::with_file(path, |directory| Ok(directory.remove_user(login)?))
            }
            Target::Remote(client) => Ok(client.delete_user(login).await?),
        }
    }

    async fn list_users(&self) -> anyhow::Result<Vec<UserInfo>> {
        match self {
            Target::File(path) => Ok(Directory::load(path)?.users()),
            Target::Remote(client) => Ok(client.list_users(None).await?),
        }
    }

    async fn add_tenant(&self, id: &TenantId, domains: &[String]) -> anyhow::Result<TenantInfo> {
        match self {
            Target::File(path) => Self::with_file(path, |directory| {
                directory.add_tenant(id.clone(), domains)?;
                tenant_info(directory, id)
            }),
            Target::Remote(client) => Ok(client.create_tenant(id, domains).await?),
        }
    }

    async fn add_domain(&self, tenant: &TenantId, domain: &str) -> anyhow::Result<TenantInfo> {
        match self {
            Target::File(path) => Self::with_file(path, |directory| {
                directory.add_domain(tenant, domain)?;
                tenant_info(directory, tenant)
            }),
            Target::Remote(client) => Ok(client.add_domain(tenant, domain).await?),
        }
    }

    async fn set_policy(&self, tenant: &TenantId, policy: Policy) -> anyhow::Result<TenantInfo> {
        match self {
            Target::File(path) => Self::with_file(path, |directory| {
                directory.set_policy(tenant, policy)?;
                tenant_info(directory, tenant)
            }),
            Target::Remote(client) => Ok(client.set_policy(tenant, &policy).await?),
        }
    }

    async fn list_tenants(&self) -> anyhow::Result<Vec<TenantInfo>> {
        match self {
            Target::File(path) => Ok(Directory::load(path)?.tenants()),
            Target::Remote(client) => Ok(client.list_tenants().await?),
        }
    }
}

/// As [`ensure_domain`] for the users file: a domain that no tenant of the auth service
/// owns joins tenant `default`, which is created if needed.
async fn ensure_remote_domain(client: &AdminClient, login: &Login) -> anyhow::Result<bool> {
    let tenants = client.list_tenants().await?;
    let domain = login.domain();
    if tenants
        .iter()
        .any(|t| t.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)))
    {
        return Ok(false);
    }
    let default = TenantId::new(DEFAULT_TENANT)?;
    if tenants.iter().any(|t| t.id == default) {
        client.add_domain(&default, domain).await?;
    } else {
        client.create_tenant(&default, &[domain.to_owned()]).await?;
    }
    Ok(true)
}

fn tenant_info(directory: &Directory, id: &TenantId) -> anyhow::Result<TenantInfo> {
    directory
        .tenants()
        .into_iter()
        .find(|t| &t.id == id)
        .context("tenant vanished after saving")
}

fn parse(login: &str) -> anyhow::Result<Login> {
    Login::parse(login).with_context(|| format!("invalid login {login:?}"))
}

fn print_users(users: &[UserInfo]) -> anyhow::Result<()> {
    say!(
        "{:<40} {:<20} {:<12} {:<8} apop",
        "login",
        "id",
        "tenant",
        "state"
    );
    for user in users {
        let state = if user.disabled { "disabled" } else { "active" };
        let apop = if user.has_apop_secret { "yes" } else { "no" };
        say!(
            "{:<40} {:<20} {:<12} {:<8} {apop}",
            user.login.to_string(),
            user.id.to_string(),
            user.tenant.to_string(),
            state
        );
    }
    Ok(())
}

/// Reads one line from standard input, without its line end. Prompts on a terminal.
fn read_secret(prompt: &str) -> anyhow::Result<Secret> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{prompt}: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read from standard input")?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    Ok(Secret::new(line.as_bytes()))
}
