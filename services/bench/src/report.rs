//! Results: one row per (round, target, mode), a summary with the ratio cloudpop/Dovecot
//! per mode against the targets of the performance issue, on stdout and as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::Mode;
use crate::memory::Usage;
use crate::servers::Kind;
use crate::workload::Tally;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Latency {
    fn of(mut micros: Vec<u64>) -> Option<Self> {
        if micros.is_empty() {
            return None;
        }
        micros.sort_unstable();
        let at = |q: f64| {
            // Nearest rank: the smallest value with at least q of the samples at or below.
            let rank = ((q * micros.len() as f64).ceil() as usize).clamp(1, micros.len());
            micros[rank - 1] as f64 / 1000.0
        };
        Some(Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

/// KiB, by RSS and by PSS (see [`crate::memory`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Kib {
    pub(crate) rss: f64,
    pub(crate) pss: f64,
}

impl Kib {
    fn per(before: Usage, after: Usage, n: usize) -> Option<Self> {
        (n > 0).then(|| Self {
            rss: (after.rss_kib as f64 - before.rss_kib as f64) / n as f64,
            pss: (after.pss_kib as f64 - before.pss_kib as f64) / n as f64,
        })
    }
}

/// Memory measured by `idle` or `big-rss`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MemoryResult {
    pub(crate) baseline: Usage,
    /// Growth from the warm-up login bursts, before `baseline`: what a server keeps after
    /// logging users in, whatever the number of sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) login_warm_up_kib: Option<Kib>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pre_login_conns: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) logged_in_conns: Option<usize>,
    /// Per idle connection before login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pre_login_kib_per_conn: Option<Kib>,
    /// Per idle logged-in session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) logged_in_kib_per_conn: Option<Kib>,
    /// Highest level sampled while a big message was retrieved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) peak: Option<Usage>,
    /// `peak` minus `baseline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) growth_kib: Option<Kib>,
}

impl MemoryResult {
    pub(crate) fn idle(
        fresh: Usage,
        baseline: Usage,
        after_pre_login: Usage,
        after_login: Usage,
        pre_login: usize,
        logged_in: usize,
    ) -> Self {
        Self {
            baseline,
            login_warm_up_kib: Kib::per(fresh, baseline, 1),
            pre_login_conns: Some(pre_login),
            logged_in_conns: Some(logged_in),
            pre_login_kib_per_conn: Kib::per(baseline, after_pre_login, pre_login),
            logged_in_kib_per_conn: Kib::per(after_pre_login, after_login, logged_in),
            peak: None,
            growth_kib: None,
        }
    }

    pub(crate) fn growth(baseline: Usage, peak: Usage) -> Self {
        Self {
            baseline,
            login_warm_up_kib: None,
            pre_login_conns: None,
            logged_in_conns: None,
            pre_login_kib_per_conn: None,
            logged_in_kib_per_conn: None,
            peak: Some(peak),
            growth_kib: Kib::per(baseline, peak, 1),
        }
    }
}

/// One mode run against one target.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ModeResult {
    pub(crate) round: u32,
    pub(crate) target: Kind,
    pub(crate) mode: Mode,
    pub(crate) concurrency: usize,
    pub(crate) seconds: f64,
    pub(crate) sessions: u64,
    pub(crate) logins: u64,
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    pub(crate) errors: u64,
    pub(crate) sessions_per_s: f64,
    pub(crate) logins_per_s: f64,
    pub(crate) messages_per_s: f64,
    /// Megabytes (10^6 octets) per second of message content.
    pub(crate) mb_per_s: f64,
    pub(crate) latency_ms: Option<Latency>,
    pub(crate) memory: Option<MemoryResult>,
    pub(crate) error_samples: Vec<String>,
}

impl ModeResult {
    pub(crate) fn new(
        mode: Mode,
        target: Kind,
        concurrency: usize,
        seconds: f64,
        tally: Tally,
        memory: Option<MemoryResult>,
    ) -> Self {
        let rate = |n: f64| if seconds > 0.0 { n / seconds } else { 0.0 };
        Self {
            round: 0,
            target,
            mode,
            concurrency,
            seconds,
            sessions: tally.sessions,
            logins: tally.logins,
            messages: tally.messages,
            bytes: tally.bytes,
            errors: tally.errors,
            sessions_per_s: rate(tally.sessions as f64),
            logins_per_s: rate(tally.logins as f64),
            messages_per_s: rate(tally.messages as f64),
            mb_per_s: rate(tally.bytes as f64 / 1e6),
            latency_ms: Latency::of(tally.latencies_us),
            memory,
            error_samples: tally.error_samples,
        }
    }

    /// Whether the run did work and every check passed.
    pub(crate) fn passed(&self) -> bool {
        let did_work = match self.mode {
            Mode::Idle => self.memory.is_some() && self.logins > 0,
            Mode::BigRss => self.memory.is_some() && self.messages > 0,
            Mode::LoginOnly | Mode::StatLarge => self.sessions > 0,
            _ => self.messages > 0,
        };
        did_work && self.errors == 0
    }
}

/// Header of the per-run table.
pub(crate) fn row_header() -> String {
    format!(
        "{:>5} {:<9} {:<11} {:>5} {:>11} {:>10} {:>10} {:>9} {:>8} {:>8} {:>8} {:>6}",
        "round",
        "target",
        "mode",
        "conc",
        "sessions/s",
        "logins/s",
        "msgs/s",
        "MB/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "errors"
    )
}

/// One line (two with memory) of the per-run table.
pub(crate) fn row(r: &ModeResult) -> String {
    let lat = |f: fn(&Latency) -> f64| {
        r.latency_ms
            .as_ref()
            .map_or("-".into(), |l| format!("{:.2}", f(l)))
    };
    let mut line = format!(
        "{:>5} {:<9} {:<11} {:>5} {:>11.1} {:>10.1} {:>10.1} {:>9.1} {:>8} {:>8} {:>8} {:>6}",
        r.round + 1,
        r.target.name(),
        r.mode.name(),
        r.concurrency,
        r.sessions_per_s,
        r.logins_per_s,
        r.messages_per_s,
        r.mb_per_s,
        lat(|l| l.p50),
        lat(|l| l.p90),
        lat(|l| l.p99),
        r.errors
    );
    if let Some(m) = &r.memory {
        if let (Some(pre), Some(logged)) = (m.pre_login_kib_per_conn, m.logged_in_kib_per_conn) {
            let _ = write!(
                line,
                "\n{:>5} memory per idle connection: before login {:.1} KiB PSS ({:.1} RSS), \
                 logged in {:.1} KiB PSS ({:.1} RSS); baseline {} KiB PSS in {} process(es)",
                "",
                pre.pss,
                pre.rss,
                logged.pss,
                logged.rss,
                m.baseline.pss_kib,
                m.baseline.processes
            );
        }
        if let Some(w) = m.login_warm_up_kib {
            let _ = write!(
                line,
                "\n{:>5} kept after the warm-up login bursts (not per session): {:.0} KiB PSS \
                 ({:.0} RSS)",
                "", w.pss, w.rss
            );
        }
        if let Some(g) = m.growth_kib {
            let _ = write!(
                line,
                "\n{:>5} memory growth while retrieving: {:.0} KiB PSS ({:.0} RSS) over {} KiB PSS",
                "", g.pss, g.rss, m.baseline.pss_kib
            );
        }
    }
    for e in &r.error_samples {
        let _ = write!(line, "\n{:>5} error: {e}", "");
    }
    line
}

/// What the issue asks of a metric.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Goal {
    /// cloudpop / Dovecot at least this.
    RatioAtLeast(f64),
    /// cloudpop / Dovecot at most this.
    RatioAtMost(f64),
    /// cloudpop's own value at most this.
    AtMost(f64),
}

/// A compared metric of a mode.
#[derive(Debug, Clone, Copy)]
struct Metric {
    mode: Mode,
    name: &'static str,
    get: fn(&ModeResult) -> Option<f64>,
    goal: Option<Goal>,
    note: &'static str,
}

const METRICS: &[Metric] = &[
    Metric {
        mode: Mode::RetrAll,
        name: "messages/s",
        get: |r| Some(r.messages_per_s),
        goal: Some(Goal::RatioAtLeast(1.5)),
        note: "",
    },
    Metric {
        mode: Mode::LoginOnly,
        name: "logins/s",
        get: |r| Some(r.logins_per_s),
        goal: Some(Goal::RatioAtLeast(3.0)),
        note: "",
    },
    Metric {
        mode: Mode::Top,
        name: "messages/s",
        get: |r| Some(r.messages_per_s),
        goal: None,
        note: "",
    },
    Metric {
        mode: Mode::Big,
        name: "MB/s",
        get: |r| Some(r.mb_per_s),
        goal: Some(Goal::RatioAtLeast(2.0)),
        note: "",
    },
    Metric {
        mode: Mode::BigRss,
        name: "growth KiB",
        get: |r| r.memory.as_ref()?.growth_kib.map(|k| k.pss),
        goal: Some(Goal::AtMost(2048.0)),
        note: "issue: at most 2 MB for a 50 MB message",
    },
    Metric {
        mode: Mode::Idle,
        name: "KiB/logged-in",
        get: |r| r.memory.as_ref()?.logged_in_kib_per_conn.map(|k| k.pss),
        goal: Some(Goal::RatioAtMost(0.05)),
        note: "PSS",
    },
    Metric {
        mode: Mode::Idle,
        name: "KiB/pre-login",
        get: |r| r.memory.as_ref()?.pre_login_kib_per_conn.map(|k| k.pss),
        goal: Some(Goal::RatioAtMost(1.0)),
        note: "PSS",
    },
    Metric {
        mode: Mode::StatLarge,
        name: "sessions/s",
        get: |r| Some(r.sessions_per_s),
        goal: Some(Goal::RatioAtLeast(1.0)),
        note: "",
    },
    Metric {
        mode: Mode::Lmtp,
        name: "deliveries/s",
        get: |r| Some(r.messages_per_s),
        goal: Some(Goal::RatioAtLeast(1.0)),
        note: "",
    },
];

/// The summary of one metric across rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) mode: Mode,
    pub(crate) metric: &'static str,
    pub(crate) cloudpop_median: Option<f64>,
    pub(crate) dovecot_median: Option<f64>,
    /// cloudpop/Dovecot, paired by round.
    pub(crate) ratio_min: Option<f64>,
    pub(crate) ratio_median: Option<f64>,
    pub(crate) ratio_max: Option<f64>,
    pub(crate) goal: Option<Goal>,
    pub(crate) verdict: String,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// The summary rows for the modes that ran.
pub(crate) fn summarize(results: &[ModeResult]) -> Vec<Summary> {
    let mut out = Vec::new();
    for metric in METRICS {
        let of = |kind: Kind| -> Vec<(u32, f64)> {
            results
                .iter()
                .filter(|r| r.mode == metric.mode && r.target == kind && r.errors == 0)
                .filter_map(|r| Some((r.round, (metric.get)(r)?)))
                .collect()
        };
        let (cloudpop, dovecot) = (of(Kind::Cloudpop), of(Kind::Dovecot));
        if cloudpop.is_empty() && dovecot.is_empty() {
            continue;
        }
        let ratios: Vec<f64> = cloudpop
            .iter()
            .filter_map(|(round, c)| {
                let (_, d) = dovecot.iter().find(|(r, _)| r == round)?;
                (*d != 0.0).then(|| c / d)
            })
            .collect();
        let values = |v: &[(u32, f64)]| median(v.iter().map(|(_, x)| *x).collect());
        let cloudpop_median = values(&cloudpop);
        let ratio_median = median(ratios.clone());
        let verdict = verdict(metric.goal, cloudpop_median, ratio_median, metric.note);
        out.push(Summary {
            mode: metric.mode,
            metric: metric.name,
            cloudpop_median,
            dovecot_median: values(&dovecot),
            ratio_min: ratios.iter().copied().reduce(f64::min),
            ratio_median,
            ratio_max: ratios.iter().copied().reduce(f64::max),
            goal: metric.goal,
            verdict,
        });
    }
    out
}

fn verdict(goal: Option<Goal>, cloudpop: Option<f64>, ratio: Option<f64>, note: &str) -> String {
    let text = match (goal, cloudpop, ratio) {
        (None, _, _) => "no target".to_owned(),
        (Some(Goal::RatioAtLeast(t)), _, Some(r)) if r >= t => format!("met (≥ {t}×)"),
        (Some(Goal::RatioAtLeast(t)), _, Some(r)) => {
            format!("MISSED: {r:.2}× < {t}× (needs {:.2}× more)", t / r)
        }
        (Some(Goal::RatioAtMost(t)), _, Some(r)) if r <= t => format!("met (≤ {t}×)"),
        (Some(Goal::RatioAtMost(t)), _, Some(r)) => {
            format!("MISSED: {r:.3}× > {t}× ({:.1}× too much)", r / t)
        }
        (Some(Goal::AtMost(limit)), Some(c), _) if c <= limit => {
            format!("met (cloudpop ≤ {limit:.0})")
        }
        (Some(Goal::AtMost(limit)), Some(c), _) => {
            format!("MISSED: cloudpop {c:.0} > {limit:.0}")
        }
        _ => "no comparison".to_owned(),
    };
    if note.is_empty() {
        text
    } else {
        format!("{text}; {note}")
    }
}

/// The summary as a text table.
pub(crate) fn summary_table(rows: &[Summary]) -> String {
    let num = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    let mut out = format!(
        "{:<11} {:<18} {:>12} {:>12} {:>9} {:>9} {:>9}  {}\n",
        "mode", "metric", "cloudpop", "dovecot", "ratio min", "median", "max", "target"
    );
    for s in rows {
        let _ = writeln!(
            out,
            "{:<11} {:<18} {:>12} {:>12} {:>9} {:>9} {:>9}  {}",
            s.mode.name(),
            s.metric,
            num(s.cloudpop_median),
            num(s.dovecot_median),
            num(s.ratio_min),
            num(s.ratio_median),
            num(s.ratio_max),
            s.verdict
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let l = Latency::of((1..=100).map(|v| v * 1000).collect()).unwrap();
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        let l = Latency::of(vec![5000]).unwrap();
        assert_eq!(l.p50, 5.0);
        assert!(Latency::of(Vec::new()).is_none());
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn verdicts() {
        assert!(verdict(Some(Goal::RatioAtLeast(1.5)), None, Some(2.0), "").starts_with("met"));
        assert!(verdict(Some(Goal::RatioAtLeast(1.5)), None, Some(1.0), "").starts_with("MISSED"));
        assert!(verdict(Some(Goal::RatioAtMost(0.05)), None, Some(0.01), "").starts_with("met"));
        assert!(verdict(Some(Goal::AtMost(2048.0)), Some(4096.0), None, "").starts_with("MISSED"));
    }
}
