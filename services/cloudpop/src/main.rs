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
mod instrumented_limits;
mod pop_url;
mod roles;

use std::io::Write;
use std::process::ExitCode;

use std::time::Duration;

use clap::Parser;
use cloudpop_telemetry::LogFormat;

use crate::cli::{Cli, Role};
use crate::config::{Config, LogFormatName};
use crate::roles::ServingRole;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let warn = |warning: &str| eprintln!("cloudpop: warning: {warning}");
    let config = match config::load_reporting(cli.config.as_deref(), std::env::vars(), warn) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cloudpop: {e}");
            return ExitCode::from(2);
        }
    };
    let role = cli.role.unwrap_or(Role::All);
    let prints_for_a_reader = matches!(role, Role::Admin(_) | Role::CheckConfig);
    match run(role, config) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`cloudpop admin user list | head -1`): what
        // it wanted it has, so end quietly, as `ls | head -1` does.
        Err(e) if prints_for_a_reader && is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloudpop: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `error` comes from writing to a closed pipe.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
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
            // Secrets are shown as "<redacted>": the output ends up in terminals and CI logs.
            writeln!(std::io::stdout(), "{}", config::redacted_toml(&config)?)?;
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        // Inside the runtime: the OTLP exporter's gRPC channel lives on it.
        let traces = config.telemetry.trace_settings(role.name());
        let telemetry = cloudpop_telemetry::init(&config.log.level, format, traces.as_ref())?;
        // Metrics are passed in, not global: one registry, handed to every layer.
        let registry = prometheus::Registry::new();
        roles::serve(config, role, registry, telemetry).await
    });
    // Sessions still running past the grace period are dropped here, without UPDATE; a
    // blocking task (a file write, a password hash) is not waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}
