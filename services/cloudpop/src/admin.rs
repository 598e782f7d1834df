//! `cloudpop admin user …` for the embedded default's users file.
//!
//! Writes are atomic (temporary file and rename), and a running server picks them up within
//! `users.reload_interval`. Secrets are read from standard input, never from arguments,
//! which would show in `ps` and shell history.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use cloudpop_auth::{Directory, Login, Secret};

use crate::cli::UserCommand;
use crate::config::Config;
use crate::demo_user::ensure_domain;
use crate::pop_url::pop_url;

/// Runs one user command against the users file named by the configuration.
pub fn user(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let path = config.users_file();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut directory = Directory::load(&path)?;
    match command {
        UserCommand::List => {
            list(&directory);
            return Ok(());
        }
        UserCommand::Add { login } => {
            let login = parse(&login)?;
            if directory.user(&login).is_some() {
                bail!(
                    "user {login} already exists; use `cloudpop admin user passwd {login}` to change its password"
                );
            }
            if ensure_domain(&mut directory, &login)? {
                eprintln!("domain {} added to tenant default", login.domain());
            }
            let password = read_secret("Password")?;
            if password.expose().is_empty() {
                bail!("the password must not be empty");
            }
            directory.add_user(&login, &password)?;
            save(&directory, &path)?;
            println!("added {login}");
            println!(
                "  connect: {}",
                pop_url(&login.to_string(), config.pop3.listen)
            );
        }
        UserCommand::Passwd { login } => {
            let login = parse(&login)?;
            let password = read_secret("New password")?;
            directory.set_password(&login, &password)?;
            save(&directory, &path)?;
            println!("password of {login} changed");
        }
        UserCommand::Apop { login } => {
            let login = parse(&login)?;
            let secret = read_secret("APOP secret (empty removes it)")?;
            let secret = (!secret.expose().is_empty()).then_some(secret);
            let removed = secret.is_none();
            directory.set_apop_secret(&login, secret.as_ref())?;
            save(&directory, &path)?;
            println!(
                "APOP secret of {login} {}",
                if removed { "removed" } else { "set" }
            );
        }
        UserCommand::Disable { login } => {
            let login = parse(&login)?;
            directory.set_disabled(&login, true)?;
            save(&directory, &path)?;
            println!("{login} disabled");
        }
        UserCommand::Enable { login } => {
            let login = parse(&login)?;
            directory.set_disabled(&login, false)?;
            save(&directory, &path)?;
            println!("{login} enabled");
        }
        UserCommand::Del { login } => {
            let login = parse(&login)?;
            let id = directory.remove_user(&login)?;
            save(&directory, &path)?;
            println!("removed {login}; its stored mail (mailbox {id}) was left in place");
        }
    }
    Ok(())
}

fn parse(login: &str) -> anyhow::Result<Login> {
    Login::parse(login).with_context(|| format!("invalid login {login:?}"))
}

fn save(directory: &Directory, path: &std::path::Path) -> anyhow::Result<()> {
    directory
        .save(path)
        .with_context(|| format!("cannot write users file {}", path.display()))
}

fn list(directory: &Directory) {
    println!(
        "{:<40} {:<20} {:<12} {:<8} apop",
        "login", "id", "tenant", "state"
    );
    for user in directory.users() {
        let state = if user.disabled { "disabled" } else { "active" };
        let apop = if user.has_apop_secret { "yes" } else { "no" };
        println!(
            "{:<40} {:<20} {:<12} {:<8} {apop}",
            user.login.to_string(),
            user.id.to_string(),
            user.tenant.to_string(),
            state
        );
    }
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
