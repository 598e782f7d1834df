//! The `cloudpop` binary: configuration → logging → role.
//!
//! `cloudpop` alone runs role `all`, the embedded single-machine default. See the README for
//! every role and option.

#![allow(
    unreachable_pub,
    reason = "a binary has no public API; `pub` marks what a module offers"
)]

mod admin;
mod backends;
mod cli;
mod config;
mod demo_user;
mod pop_url;
mod roles;

use std::process::ExitCode;

use clap::Parser;
use cloudpop_telemetry::{LogFormat, init_logging};

use crate::cli::{Cli, Role};
use crate::config::{Config, LogFormatName};
use crate::roles::ServingRole;

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
    let role = match role {
        Role::Admin(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            return runtime.block_on(admin::run(&config, args));
        }
        Role::CheckConfig => {
            println!("{}", toml::to_string_pretty(&config)?);
            return Ok(());
        }
        Role::All => ServingRole::All,
        Role::Pop3 => ServingRole::Pop3,
        Role::Lmtp => ServingRole::Lmtp,
        Role::Auth => ServingRole::Auth,
    };
    let format = match config.log.format {
        LogFormatName::Text => LogFormat::Text,
        LogFormatName::Json => LogFormat::Json,
    };
    init_logging(&config.log.level, format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(roles::serve(config, role))
}
