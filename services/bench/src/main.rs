//! cloudpop-bench: the performance benchmark of cloudpop, side by side with Dovecot.
//!
//! It starts the servers itself on loopback: cloudpop role `all` with the filesystem store;
//! cloudpop in cloud mode (its own `redis-server` and `s3s-fs`, and the roles `auth`, `lmtp`
//! and `pop3` as separate processes with the S3 store, the Redis lock and the gRPC auth
//! service); Dovecot with its own configuration in a temporary directory. It creates the
//! same users with the same argon2id hashes on all of them, seeds the same mail over LMTP,
//! then drives POP3 with many concurrent sessions per mode. Every retrieved byte is checked
//! against what was seeded: a fast wrong answer is an error, and any error fails the run.
//!
//! It measures memory from `/proc`, so it runs on Linux only; the memory modes are skipped
//! for the cloud setup, whose memory is spread over several processes.

mod calls;
mod cli;
mod content;
mod corpus;
mod cpu;
mod lmtp;
mod machine;
mod memory;
mod plan;
mod pop3;
mod report;
mod run;
mod seed;
mod servers;
mod verify;
mod wire;
mod workload;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

fn main() -> ExitCode {
    match bench(cli::Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cloudpop-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the plan; `Ok(false)` when a check failed or a mode did no work.
fn bench(args: cli::Args) -> anyhow::Result<bool> {
    let plan = plan::Plan::from_args(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.client_threads)
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let report = runtime.block_on(run::run(&plan))?;
    println!();
    println!("machine: {}", report.machine.line());
    if let Some(version) = &report.dovecot_version {
        println!("dovecot: {version}");
    }
    if let Some(backends) = &report.cloud_backends {
        println!("cloudpop-cloud backends: {backends}");
    }
    for skip in &report.skipped {
        println!(
            "skipped: {} against {}",
            skip.mode.name(),
            skip.target.name()
        );
    }
    if plan.rounds > 1 || report.summary.iter().any(|s| s.ratio_median.is_some()) {
        println!();
        print!("{}", report::summary_table(&report.summary));
    }
    if let Some(path) = &plan.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("results written to {}", path.display());
    }
    let what = if plan.smoke { "bench smoke" } else { "bench" };
    println!("{what}: {} passed, {} failed", report.passed, report.failed);
    Ok(report.failed == 0)
}
