//! The settings of a run: the command line with the defaults of a full or a smoke run
//! filled in, checked once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use crate::cli::{Args, CloudLimits, Mode, Target};

/// Smallest message size accepted: the generated headers must fit.
const MIN_SIZE: usize = 512;

/// Settings of one run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Plan {
    #[serde(skip)]
    pub(crate) target: Target,
    pub(crate) modes: Vec<Mode>,
    pub(crate) rounds: u32,
    #[serde(serialize_with = "seconds")]
    pub(crate) duration: Duration,
    #[serde(serialize_with = "seconds")]
    pub(crate) warmup: Duration,
    pub(crate) ops: Option<u64>,
    pub(crate) sessions: Vec<(Mode, usize)>,
    pub(crate) users: usize,
    pub(crate) messages: usize,
    pub(crate) size: usize,
    pub(crate) idle_conns: usize,
    pub(crate) idle_messages: usize,
    pub(crate) big_size: usize,
    pub(crate) huge_size: usize,
    pub(crate) large_count: usize,
    pub(crate) large_size: usize,
    pub(crate) seed: u64,
    pub(crate) smoke: bool,
    #[serde(serialize_with = "seconds")]
    pub(crate) timeout: Duration,
    pub(crate) client_threads: usize,
    /// Only meaningful when `cloudpop-cloud` runs.
    pub(crate) cloud_limits: CloudLimits,
    #[serde(skip)]
    pub(crate) cloudpop_bin: PathBuf,
    #[serde(skip)]
    pub(crate) s3s_fs_bin: PathBuf,
    #[serde(skip)]
    pub(crate) redis_server_bin: PathBuf,
    #[serde(skip)]
    pub(crate) dovecot_bin: PathBuf,
    #[serde(skip)]
    pub(crate) json: Option<PathBuf>,
    #[serde(skip)]
    pub(crate) server_pid: Option<u32>,
    #[serde(skip)]
    pub(crate) keep: bool,
}

impl Plan {
    /// Fills in the defaults and checks the combination.
    pub(crate) fn from_args(args: Args) -> anyhow::Result<Self> {
        let smoke = args.smoke;
        let pick = |full: usize, small: usize| if smoke { small } else { full };
        let mut modes = if args.modes.is_empty() {
            Mode::ALL.to_vec()
        } else {
            args.modes
        };
        let mut seen = Vec::new();
        modes.retain(|m| {
            let first = !seen.contains(m);
            seen.push(*m);
            first
        });
        let mut sessions: Vec<(Mode, usize)> = Mode::ALL
            .iter()
            .map(|&m| (m, default_sessions(m)))
            .collect();
        for (mode, n) in args.sessions {
            if let Some(entry) = sessions.iter_mut().find(|(m, _)| *m == mode) {
                entry.1 = n;
            }
        }
        let users = args.users.unwrap_or(pick(64, 4));
        let idle_conns = args.idle_conns.unwrap_or(pick(400, 8));
        if let Some(entry) = sessions.iter_mut().find(|(m, _)| *m == Mode::Idle) {
            entry.1 = idle_conns;
        }
        if smoke && args.users.is_none() {
            // A smoke run has few users: no more sessions than users.
            for (mode, n) in &mut sessions {
                if uses_mail_users(*mode) {
                    *n = (*n).min(users);
                }
            }
        }
        let plan = Self {
            target: args.target.unwrap_or(if smoke {
                Target::Cloudpop
            } else {
                Target::Both
            }),
            modes,
            rounds: args.rounds.unwrap_or(if smoke { 1 } else { 3 }),
            duration: args
                .duration
                .unwrap_or(Duration::from_secs(pick(10, 1) as u64)),
            warmup: args
                .warmup
                .unwrap_or(Duration::from_secs(pick(2, 0) as u64)),
            ops: args.ops,
            sessions,
            users,
            messages: args.messages.unwrap_or(pick(50, 5)),
            size: args.size.unwrap_or(pick(8192, 4096)),
            idle_conns,
            idle_messages: args.idle_messages.unwrap_or(pick(10, 2)),
            big_size: args.big_size.unwrap_or(pick(5 << 20, 256 << 10)),
            huge_size: args.huge_size.unwrap_or(pick(50 << 20, 1 << 20)),
            large_count: args.large_count.unwrap_or(pick(10_000, 200)),
            large_size: args.large_size.unwrap_or(2048),
            seed: args.seed,
            smoke,
            timeout: args.timeout,
            client_threads: args.client_threads.max(1),
            cloud_limits: args.cloud_limits,
            cloudpop_bin: args.cloudpop_bin,
            s3s_fs_bin: args.s3s_fs_bin,
            redis_server_bin: args.redis_server_bin,
            dovecot_bin: args.dovecot_bin,
            json: args.json,
            server_pid: args.server_pid,
            keep: args.keep,
        };
        plan.check()?;
        Ok(plan)
    }

    fn check(&self) -> anyhow::Result<()> {
        for (what, size) in [
            ("--size", self.size),
            ("--big-size", self.big_size),
            ("--huge-size", self.huge_size),
            ("--large-size", self.large_size),
        ] {
            if size < MIN_SIZE {
                bail!("{what} must be at least {MIN_SIZE} octets");
            }
        }
        for &mode in &self.modes {
            let n = self.sessions(mode);
            // A POP3 server may lock a maildrop per session (cloudpop does: [IN-USE]), so
            // concurrent sessions need maildrops of their own.
            if uses_mail_users(mode) && n > self.users {
                bail!(
                    "{} with {n} sessions needs at least {n} users (--users)",
                    mode.name()
                );
            }
            if matches!(mode, Mode::Big | Mode::BigRss | Mode::StatLarge) && n != 1 {
                bail!("{} uses one maildrop, so it runs one session", mode.name());
            }
        }
        if self.modes.contains(&Mode::Idle) && self.idle_conns < 2 {
            bail!("--idle-conns must be at least 2");
        }
        if self.messages == 0 || self.large_count == 0 {
            bail!("--messages and --large-count must be at least 1");
        }
        if self.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        Ok(())
    }

    /// Concurrent sessions of `mode`.
    pub(crate) fn sessions(&self, mode: Mode) -> usize {
        if mode == Mode::Idle {
            return self.idle_conns;
        }
        self.sessions
            .iter()
            .find(|(m, _)| *m == mode)
            .map_or(1, |(_, n)| *n)
    }

    /// The targets, in the order of the first round.
    pub(crate) fn targets(&self) -> Vec<crate::servers::Kind> {
        use crate::servers::Kind;
        match self.target {
            Target::Cloudpop => vec![Kind::Cloudpop],
            Target::CloudpopCloud => vec![Kind::CloudpopCloud],
            Target::Dovecot => vec![Kind::Dovecot],
            Target::Both => vec![Kind::Cloudpop, Kind::Dovecot],
            Target::All => vec![Kind::Cloudpop, Kind::CloudpopCloud, Kind::Dovecot],
        }
    }
}

/// A duration as seconds, in the JSON report.
fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn default_sessions(mode: Mode) -> usize {
    match mode {
        Mode::RetrAll | Mode::Top => 32,
        Mode::LoginOnly => 8,
        Mode::Lmtp => 4,
        Mode::Big | Mode::BigRss | Mode::StatLarge | Mode::Idle => 1,
    }
}

fn uses_mail_users(mode: Mode) -> bool {
    matches!(mode, Mode::RetrAll | Mode::LoginOnly | Mode::Top)
}
