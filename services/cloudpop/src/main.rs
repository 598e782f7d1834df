//! The `cloudpop` binary: configuration → logging → role.
//!
//! `cloudpop` alone runs role `all`, the embedded single-machine default. See the README for
//! every role and option.

#![allow(
    unreachable_pub,
    reason = "a binary has no public API; `pub` marks what a module offers"
)]

mod admin;
mod cli;
mod config;
mod demo_user;
mod pop_url;
mod roles;

use std::process::ExitCode;

use clap::Parser;
use cloudpop_telemetry::{LogFormat, init_logging};

use crate::cli::{AdminCommand, Cli, Role};
use crate::config::{Config, LogFormatName};
use crate::roles::Listeners;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cloudpop: {e}");
            return ExitCode::from(2);
        }
    };
    match run(cli.role.unwrap_or(Role::All), config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloudpop: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(role: Role, config: Config) -> anyhow::Result<()> {
    let listeners = match role {
        Role::Admin(AdminCommand::User(command)) => return admin::user(&config, command),
        Role::CheckConfig => {
            println!("{}", toml::to_string_pretty(&config)?);
            return Ok(());
        }
        Role::All => Listeners {
            pop3: true,
            lmtp: true,
        },
        Role::Pop3 => Listeners {
            pop3: true,
            lmtp: false,
        },
        Role::Lmtp => Listeners {
            pop3: false,
            lmtp: true,
        },
    };
    let format = match config.log.format {
        LogFormatName::Text => LogFormat::Text,
        LogFormatName::Json => LogFormat::Json,
    };
    init_logging(&config.log.level, format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(roles::serve(config, listeners))
}
