//! Command-line interface.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Serialize;

/// cloudpop-bench: seeds maildrops over LMTP, drives POP3 with many concurrent sessions that
/// verify every byte, and compares cloudpop with Dovecot side by side.
#[derive(Debug, Parser)]
#[command(name = "cloudpop-bench", version, about)]
pub(crate) struct Args {
    /// Server(s) to benchmark: `cloudpop` (embedded: fs store, in-process lock, users file),
    /// `cloudpop-cloud` (S3 store, Redis lock, gRPC auth service, each its own process),
    /// `dovecot`, `both` (cloudpop and Dovecot) or `all` (all three). Several targets run
    /// every mode against each, interleaved, per round. Default: `both`, or `cloudpop` with
    /// --smoke.
    #[arg(long, value_enum)]
    pub(crate) target: Option<Target>,

    /// Modes to run, comma-separated. Default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) modes: Vec<Mode>,

    /// Rounds: each runs every mode against every target (default 3; 1 with --smoke).
    #[arg(long)]
    pub(crate) rounds: Option<u32>,

    /// Measured time per mode, e.g. `10s`, `500ms` (default 10s; 1s with --smoke).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,

    /// Unmeasured time before each measurement (default 2s; 0s with --smoke).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) warmup: Option<Duration>,

    /// Stop each mode after this many operations (sessions; RETRs for big modes; deliveries
    /// for lmtp) instead of after --duration.
    #[arg(long)]
    pub(crate) ops: Option<u64>,

    /// Concurrent sessions of a mode, e.g. `--sessions retr-all=64` (repeatable). Defaults:
    /// retr-all 32, login-only 8, top 32, big 1, big-rss 1, stat-large 1, lmtp 4; idle uses
    /// --idle-conns.
    #[arg(long = "sessions", value_name = "MODE=N", value_parser = parse_sessions)]
    pub(crate) sessions: Vec<(Mode, usize)>,

    /// Users with seeded maildrops for retr-all, login-only and top (default 64; 4 with
    /// --smoke). Each concurrent session owns users of its own.
    #[arg(long)]
    pub(crate) users: Option<usize>,

    /// Messages per user (default 50; 5 with --smoke).
    #[arg(long)]
    pub(crate) messages: Option<usize>,

    /// Size of each message in octets; suffixes K and M are KiB and MiB (default 8K).
    #[arg(long, value_parser = parse_size)]
    pub(crate) size: Option<usize>,

    /// Idle connections opened by `idle`; half of them log in (default 400; 8 with --smoke).
    #[arg(long)]
    pub(crate) idle_conns: Option<usize>,

    /// Messages in each idle user's maildrop (default 10; 2 with --smoke).
    #[arg(long)]
    pub(crate) idle_messages: Option<usize>,

    /// Size of the message of `big` (default 5M; 256K with --smoke).
    #[arg(long, value_parser = parse_size)]
    pub(crate) big_size: Option<usize>,

    /// Size of the message of `big-rss` (default 50M; 1M with --smoke).
    #[arg(long, value_parser = parse_size)]
    pub(crate) huge_size: Option<usize>,

    /// Messages in the maildrop of `stat-large` (default 10000; 200 with --smoke).
    #[arg(long)]
    pub(crate) large_count: Option<usize>,

    /// Size of each message of `stat-large` (default 2K).
    #[arg(long, value_parser = parse_size)]
    pub(crate) large_size: Option<usize>,

    /// Seed of the generated content and passwords.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,

    /// The cloudpop binary to benchmark (build it with `cargo build --release -p cloudpop`).
    #[arg(long, default_value = "target/release/cloudpop")]
    pub(crate) cloudpop_bin: PathBuf,

    /// The S3 server of `cloudpop-cloud` (`cargo install s3s-fs --version 0.14.1 --features
    /// binary --locked`).
    #[arg(long, default_value = "s3s-fs")]
    pub(crate) s3s_fs_bin: PathBuf,

    /// The Redis server of `cloudpop-cloud` (Debian package redis-server).
    #[arg(long, default_value = "redis-server")]
    pub(crate) redis_server_bin: PathBuf,

    /// Where `cloudpop-cloud` keeps its abuse-protection counters (connection and session
    /// caps, login penalties): in Redis as a cloud deployment does, or in the POP3 process.
    #[arg(long, value_enum, default_value = "redis")]
    pub(crate) cloud_limits: CloudLimits,

    /// The Dovecot master binary (Debian packages dovecot-pop3d and dovecot-lmtpd).
    #[arg(long, default_value = "/usr/sbin/dovecot")]
    pub(crate) dovecot_bin: PathBuf,

    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,

    /// Measure the memory of this process (and its children) in `idle` and `big-rss`
    /// instead of the server the bench started.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,

    /// A short correctness-only run: small maildrops, 1 s per mode, cloudpop only unless
    /// --target is given. Exits non-zero on any verification error.
    #[arg(long)]
    pub(crate) smoke: bool,

    /// Longest wait for any one server reply.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub(crate) timeout: Duration,

    /// Worker threads of the client's runtime. The client shares the machine with the
    /// server; one thread keeps its share small and equal for both targets.
    #[arg(long, default_value_t = 1)]
    pub(crate) client_threads: usize,

    /// Keep the servers' temporary directories (data, configuration, logs) after the run.
    #[arg(long)]
    pub(crate) keep: bool,
}

/// The server(s) benchmarked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Target {
    Cloudpop,
    CloudpopCloud,
    Dovecot,
    /// cloudpop (embedded) and Dovecot.
    Both,
    /// cloudpop, cloudpop-cloud and Dovecot.
    All,
}

/// Where the cloud target keeps its abuse-protection counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum CloudLimits {
    Redis,
    InProcess,
}

/// A workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    /// STAT, UIDL, LIST, RETR of every message, QUIT without DELE.
    RetrAll,
    /// USER, PASS, QUIT.
    LoginOnly,
    /// LIST, then TOP n 0 of every message.
    Top,
    /// One big message retrieved again and again in one session (MB/s).
    Big,
    /// A huge message retrieved while the server's memory is sampled.
    BigRss,
    /// Many idle connections, half logged in: memory per connection.
    Idle,
    /// Login and STAT on a maildrop of many messages.
    StatLarge,
    /// LMTP deliveries.
    Lmtp,
}

impl Mode {
    /// Every mode, in the order a run takes them.
    pub(crate) const ALL: [Mode; 8] = [
        Mode::RetrAll,
        Mode::LoginOnly,
        Mode::Top,
        Mode::Big,
        Mode::StatLarge,
        Mode::Lmtp,
        Mode::Idle,
        Mode::BigRss,
    ];

    /// The name used on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::RetrAll => "retr-all",
            Mode::LoginOnly => "login-only",
            Mode::Top => "top",
            Mode::Big => "big",
            Mode::BigRss => "big-rss",
            Mode::Idle => "idle",
            Mode::StatLarge => "stat-large",
            Mode::Lmtp => "lmtp",
        }
    }
}

/// `10s`, `500ms`, `2m`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 10s or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("`{text}`: the unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// Octets, with an optional K (KiB) or M (MiB) suffix.
fn parse_size(text: &str) -> Result<usize, String> {
    let upper = text.to_ascii_uppercase();
    let (number, factor) = if let Some(n) = upper.strip_suffix('K') {
        (n, 1024)
    } else if let Some(n) = upper.strip_suffix('M') {
        (n, 1024 * 1024)
    } else {
        (upper.as_str(), 1)
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("`{text}` is not a size such as 8192, 8K or 5M"))
}

/// `MODE=N`.
fn parse_sessions(text: &str) -> Result<(Mode, usize), String> {
    let (mode, n) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected MODE=N, e.g. retr-all=32"))?;
    let mode = Mode::from_str(mode, true)?;
    let n: usize = n
        .parse()
        .map_err(|_| format!("`{text}`: N must be a positive number"))?;
    if n == 0 {
        return Err(format!("`{text}`: N must be at least 1"));
    }
    Ok((mode, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("2h").is_err());
        assert_eq!(parse_size("8K"), Ok(8192));
        assert_eq!(parse_size("5m"), Ok(5 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("x").is_err());
        assert_eq!(parse_sessions("retr-all=64"), Ok((Mode::RetrAll, 64)));
        assert!(parse_sessions("retr-all=0").is_err());
    }
}
