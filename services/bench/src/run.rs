//! A whole run: build the corpus, start and seed the servers, run every mode against every
//! target round after round (rotating which target goes first), stop the servers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::corpus::Corpus;
use crate::machine::Machine;
use crate::plan::Plan;
use crate::report::{self, ModeResult, Skipped, Summary};
use crate::seed;
use crate::servers::{Kind, Server, backing, cloud, cloudpop, dovecot};
use crate::verify::Registry;
use crate::workload;

/// Pause between two measurements, so that one server's tail does not overlap the next.
const SETTLE: Duration = Duration::from_millis(500);

/// Everything a run produced.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) command: String,
    pub(crate) machine: Machine,
    pub(crate) dovecot_version: Option<String>,
    /// The S3 and Redis servers of `cloudpop-cloud`, when it ran.
    pub(crate) cloud_backends: Option<String>,
    pub(crate) cloudpop_bin: String,
    pub(crate) plan: Plan,
    pub(crate) results: Vec<ModeResult>,
    pub(crate) skipped: Vec<Skipped>,
    pub(crate) summary: Vec<Summary>,
    pub(crate) passed: usize,
    pub(crate) failed: usize,
}

pub(crate) async fn run(plan: &Plan) -> anyhow::Result<Report> {
    let kinds = plan.targets();
    let dovecot_version = if kinds.contains(&Kind::Dovecot) {
        Some(dovecot::check_installed(&plan.dovecot_bin).await?)
    } else {
        None
    };
    let cloud_backends = if kinds.contains(&Kind::CloudpopCloud) {
        Some(format!(
            "{}; {}",
            backing::version(&plan.s3s_fs_bin).await,
            backing::version(&plan.redis_server_bin).await
        ))
    } else {
        None
    };
    let machine = Machine::describe();
    eprintln!("bench: machine: {}", machine.line());
    let corpus = {
        let plan = plan.clone();
        Arc::new(tokio::task::spawn_blocking(move || Corpus::build(&plan)).await??)
    };
    let mut servers = Vec::new();
    let work = async {
        start_servers(plan, &kinds, &corpus, &mut servers).await?;
        for server in &servers {
            seed::seed(&corpus, server.lmtp(), plan.timeout, server.kind().name()).await?;
        }
        measure(plan, &corpus, &mut servers).await
    };
    // On Ctrl-C, stop the servers before exiting rather than leave them running.
    let outcome = tokio::select! {
        outcome = work => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if !servers.is_empty() {
        eprintln!("bench: stopping the servers and removing their temporary directories");
    }
    let mut stop_error = None;
    for server in servers {
        if let Err(e) = server.stop(plan.keep).await {
            stop_error = Some(e);
        }
    }
    let (results, skipped) = outcome?;
    if let Some(e) = stop_error {
        return Err(e.context("stopping a server"));
    }
    let passed = results.iter().filter(|r| r.passed()).count();
    Ok(Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        dovecot_version,
        cloud_backends,
        cloudpop_bin: plan.cloudpop_bin.display().to_string(),
        plan: plan.clone(),
        summary: report::summarize(&results),
        failed: results.len() - passed,
        passed,
        results,
        skipped,
    })
}

async fn start_servers(
    plan: &Plan,
    kinds: &[Kind],
    corpus: &Arc<Corpus>,
    servers: &mut Vec<Server>,
) -> anyhow::Result<()> {
    let mut hashes: Option<HashMap<String, String>> = None;
    for kind in kinds {
        match kind {
            Kind::Cloudpop => {
                let (server, made) = cloudpop::setup(&plan.cloudpop_bin, corpus).await?;
                eprintln!(
                    "bench: cloudpop {} running: POP3 {}, LMTP {}",
                    plan.cloudpop_bin.display(),
                    server.pop3,
                    server.lmtp
                );
                hashes = Some(made);
                servers.push(Server::Cloudpop(server));
            }
            Kind::CloudpopCloud => {
                // The embedded target's users file, when it runs too: the same hashes.
                let users_file = servers.iter().find_map(|s| match s {
                    Server::Cloudpop(c) => Some(c.users_file()),
                    _ => None,
                });
                let (server, made) = cloud::setup(plan, corpus, users_file.as_deref()).await?;
                eprintln!(
                    "bench: cloudpop-cloud running: POP3 {}, LMTP {}, auth gRPC {}; {}",
                    server.pop3(),
                    server.lmtp(),
                    server.grpc,
                    server.backends()
                );
                hashes.get_or_insert(made);
                servers.push(Server::CloudpopCloud(Box::new(server)));
            }
            Kind::Dovecot => {
                // The very hashes cloudpop stored, or ones made with the same parameters.
                let hashes = match &hashes {
                    Some(h) => h.clone(),
                    None => {
                        let corpus = corpus.clone();
                        tokio::task::spawn_blocking(move || dovecot::hash_passwords(&corpus))
                            .await??
                    }
                };
                let server =
                    dovecot::setup(&plan.dovecot_bin, corpus, &hashes, plan.idle_conns).await?;
                eprintln!(
                    "bench: dovecot running: POP3 {}, LMTP {} (configuration {})",
                    server.pop3,
                    server.lmtp,
                    server.dir.path().join("dovecot.conf").display()
                );
                servers.push(Server::Dovecot(server));
            }
        }
    }
    Ok(())
}

async fn measure(
    plan: &Plan,
    corpus: &Arc<Corpus>,
    servers: &mut [Server],
) -> anyhow::Result<(Vec<ModeResult>, Vec<Skipped>)> {
    let registries: Vec<Arc<Registry>> = servers
        .iter()
        .map(|_| Arc::new(Registry::new(corpus.users.len())))
        .collect();
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    println!("{}", report::row_header());
    for round in 0..plan.rounds {
        for &mode in &plan.modes {
            // Rotate which target goes first, so that drift on a noisy machine does not
            // always favour the same one.
            let n = servers.len();
            for k in 0..n {
                let i = (k + round as usize) % n;
                let server = &mut servers[i];
                if let Some(reason) = workload::skip_reason(mode, server.kind()) {
                    if round == 0 {
                        let skip = Skipped {
                            target: server.kind(),
                            mode,
                            reason,
                        };
                        println!("{}", skip.row());
                        skipped.push(skip);
                    }
                    continue;
                }
                let mut result = workload::run_mode(mode, plan, server, corpus, &registries[i])
                    .await
                    .with_context(|| format!("{} against {}", mode.name(), server.kind().name()))?;
                result.round = round;
                println!("{}", report::row(&result));
                results.push(result);
                tokio::time::sleep(SETTLE).await;
            }
        }
    }
    Ok((results, skipped))
}
