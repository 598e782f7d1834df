//! The users and maildrops a run seeds, and what each retrieval must give back.

use std::ops::Range;

use anyhow::bail;

use crate::cli::Mode;
use crate::content::{self, Digest};
use crate::plan::Plan;

/// The domain of every bench login.
pub(crate) const DOMAIN: &str = "example.com";

/// One bench user and the maildrop seeded for it.
#[derive(Debug)]
pub(crate) struct User {
    pub(crate) login: String,
    pub(crate) password: String,
    /// Size of each seeded message, in octets.
    pub(crate) size: usize,
    /// Digests of the seeded messages, by seed index.
    pub(crate) digests: Vec<Digest>,
}

impl User {
    /// Number of seeded messages.
    pub(crate) fn count(&self) -> u32 {
        u32::try_from(self.digests.len()).unwrap_or(u32::MAX)
    }

    /// Seeded message `index`, as delivered.
    pub(crate) fn message(&self, seed: u64, index: u32) -> Vec<u8> {
        content::message(seed, &self.login, index, self.size)
    }
}

/// Every user of a run, grouped by the workload that uses them.
#[derive(Debug)]
pub(crate) struct Corpus {
    pub(crate) seed: u64,
    pub(crate) users: Vec<User>,
    /// `retr-all`, `login-only`, `top`: N users with M messages of S octets.
    pub(crate) mail: Range<usize>,
    /// `idle`: one user per logged-in idle session.
    pub(crate) idle: Range<usize>,
    /// `big`: one message of `big_size`.
    pub(crate) big: Option<usize>,
    /// `big-rss`: one message of `huge_size`.
    pub(crate) huge: Option<usize>,
    /// `stat-large`: `large_count` messages.
    pub(crate) large: Option<usize>,
    /// `lmtp`: recipients of the delivery workload, nothing seeded.
    pub(crate) sinks: Range<usize>,
}

impl Corpus {
    /// The users the selected modes need, with the digests of their messages.
    pub(crate) fn build(plan: &Plan) -> anyhow::Result<Self> {
        let mut corpus = Self {
            seed: plan.seed,
            users: Vec::new(),
            mail: 0..0,
            idle: 0..0,
            big: None,
            huge: None,
            large: None,
            sinks: 0..0,
        };
        let wants = |modes: &[Mode]| modes.iter().any(|m| plan.modes.contains(m));
        if wants(&[Mode::RetrAll, Mode::LoginOnly, Mode::Top, Mode::Idle]) {
            corpus.mail = corpus.add_group("u", plan.users, plan.messages, plan.size)?;
        }
        if wants(&[Mode::Idle]) {
            let logged_in = plan.idle_conns / 2;
            corpus.idle = corpus.add_group("idle", logged_in, plan.idle_messages, plan.size)?;
        }
        if wants(&[Mode::Big]) {
            corpus.big = Some(corpus.add_group("big", 1, 1, plan.big_size)?.start);
        }
        if wants(&[Mode::BigRss]) {
            corpus.huge = Some(corpus.add_group("huge", 1, 1, plan.huge_size)?.start);
        }
        if wants(&[Mode::StatLarge]) {
            let range = corpus.add_group("large", 1, plan.large_count, plan.large_size)?;
            corpus.large = Some(range.start);
        }
        if wants(&[Mode::Lmtp]) {
            corpus.sinks = corpus.add_group("sink", plan.sessions(Mode::Lmtp), 0, plan.size)?;
        }
        Ok(corpus)
    }

    fn add_group(
        &mut self,
        prefix: &str,
        users: usize,
        messages: usize,
        size: usize,
    ) -> anyhow::Result<Range<usize>> {
        let start = self.users.len();
        for i in 0..users {
            let login = if users == 1 {
                format!("{prefix}@{DOMAIN}")
            } else {
                format!("{prefix}{i}@{DOMAIN}")
            };
            let mut user = User {
                password: format!("bench-{}-{prefix}{i}", self.seed),
                login,
                size,
                digests: Vec::with_capacity(messages),
            };
            for index in 0..u32::try_from(messages)? {
                let message = user.message(self.seed, index);
                if message.len() != size {
                    bail!(
                        "message size {size} is too small for the headers of {} (at least {})",
                        user.login,
                        content::min_size(&user.login, index)
                    );
                }
                user.digests
                    .push(content::digest(&message, &user.login, index));
            }
            self.users.push(user);
        }
        Ok(start..self.users.len())
    }

    /// Messages and octets seeded in all.
    pub(crate) fn seeded(&self) -> (u64, u64) {
        self.users.iter().fold((0, 0), |(n, bytes), u| {
            let count = u64::from(u.count());
            (n + count, bytes + count * u.size as u64)
        })
    }
}
