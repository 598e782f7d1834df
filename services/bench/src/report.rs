//! Results: one row per (round, target, mode), a summary with the ratio of each cloudpop
//! setup (embedded, cloud) to Dovecot per mode against the targets of the performance issue,
//! on stdout and as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::calls::Calls;
use crate::cli::Mode;
use crate::cpu::CpuUse;
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
    /// What cloudpop's processes asked of their backends (see [`crate::calls`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) backend_calls: Option<Vec<Calls>>,
    /// CPU time of the target's processes (see [`crate::cpu`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cpu: Option<Vec<CpuUse>>,
    pub(crate) error_samples: Vec<String>,
}

/// A mode not run against a target, and why.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Skipped {
    pub(crate) target: Kind,
    pub(crate) mode: Mode,
    pub(crate) reason: &'static str,
}

impl Skipped {
    /// Its line in the per-run table.
    pub(crate) fn row(&self) -> String {
        format!(
            "{:>5} {:<14} {:<11} skipped: {}",
            "-",
            self.target.name(),
            self.mode.name(),
            self.reason
        )
    }
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
            backend_calls: None,
            cpu: None,
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
        "{:>5} {:<14} {:<11} {:>5} {:>11} {:>10} {:>10} {:>9} {:>8} {:>8} {:>8} {:>6}",
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
        "{:>5} {:<14} {:<11} {:>5} {:>11.1} {:>10.1} {:>10.1} {:>9.1} {:>8} {:>8} {:>8} {:>6}",
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
    let per = match r.mode {
        Mode::Big | Mode::Lmtp => "message",
        _ => "session",
    };
    if let Some(cpu) = r.cpu.as_ref().filter(|c| !c.is_empty()) {
        let list: Vec<String> = cpu
            .iter()
            .map(|c| format!("{} {:.2} ms ({:.1} s)", c.process, c.ms_per_op, c.seconds))
            .collect();
        let _ = write!(
            line,
            "\n{:>5} CPU per {per} (total over the mode): {}",
            "",
            list.join(", ")
        );
    }
    if let Some(calls) = r.backend_calls.as_ref().filter(|c| !c.is_empty()) {
        let list: Vec<String> = calls
            .iter()
            .map(|c| format!("{} {:.2} ({:.2} ms)", c.name, c.per_op, c.mean_ms))
            .collect();
        let _ = write!(
            line,
            "\n{:>5} backend calls per {per} (mean time): {}",
            "",
            list.join(", ")
        );
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
    /// The target for the embedded cloudpop.
    goal: Option<Goal>,
    note: &'static str,
    /// The target for cloudpop in cloud mode (S3, Redis lock, gRPC auth).
    cloud_goal: Option<Goal>,
    cloud_note: &'static str,
}

impl Metric {
    /// The target and its note for `kind`.
    fn goal_for(&self, kind: Kind) -> (Option<Goal>, &'static str) {
        match kind {
            Kind::CloudpopCloud => (self.cloud_goal, self.cloud_note),
            _ => (self.goal, self.note),
        }
    }
}

const METRICS: &[Metric] = &[
    Metric {
        mode: Mode::RetrAll,
        name: "messages/s",
        get: |r| Some(r.messages_per_s),
        goal: Some(Goal::RatioAtLeast(1.5)),
        note: "",
        cloud_goal: Some(Goal::RatioAtLeast(1.0)),
        cloud_note: "",
    },
    Metric {
        mode: Mode::LoginOnly,
        name: "logins/s",
        get: |r| Some(r.logins_per_s),
        goal: Some(Goal::RatioAtLeast(3.0)),
        note: "",
        cloud_goal: None,
        cloud_note: "",
    },
    Metric {
        mode: Mode::Top,
        name: "messages/s",
        get: |r| Some(r.messages_per_s),
        goal: None,
        note: "",
        cloud_goal: None,
        cloud_note: "",
    },
    Metric {
        mode: Mode::Big,
        name: "MB/s",
        get: |r| Some(r.mb_per_s),
        goal: Some(Goal::RatioAtLeast(2.0)),
        note: "",
        cloud_goal: None,
        cloud_note: "",
    },
    Metric {
        mode: Mode::BigRss,
        name: "growth KiB",
        get: |r| r.memory.as_ref()?.growth_kib.map(|k| k.pss),
        goal: Some(Goal::AtMost(2048.0)),
        note: "issue: at most 2 MB for a 50 MB message",
        cloud_goal: None,
        cloud_note: "",
    },
    Metric {
        mode: Mode::Idle,
        name: "KiB/logged-in",
        get: |r| r.memory.as_ref()?.logged_in_kib_per_conn.map(|k| k.pss),
        goal: Some(Goal::RatioAtMost(0.05)),
        note: "PSS",
        cloud_goal: None,
        cloud_note: "",
    },
    Metric {
        mode: Mode::Idle,
        name: "KiB/pre-login",
        get: |r| r.memory.as_ref()?.pre_login_kib_per_conn.map(|k| k.pss),
        goal: Some(Goal::RatioAtMost(1.0)),
        note: "PSS",
        cloud_goal: None,
        cloud_note: "",
    },
    Metric {
        mode: Mode::StatLarge,
        name: "sessions/s",
        get: |r| Some(r.sessions_per_s),
        goal: Some(Goal::RatioAtLeast(1.0)),
        note: "",
        cloud_goal: Some(Goal::RatioAtLeast(0.5)),
        cloud_note: "issue: at most 2× slower",
    },
    Metric {
        mode: Mode::Lmtp,
        name: "deliveries/s",
        get: |r| Some(r.messages_per_s),
        goal: Some(Goal::RatioAtLeast(1.0)),
        note: "",
        cloud_goal: None,
        cloud_note: "",
    },
];

/// The summary of one metric across rounds, for one cloudpop setup against Dovecot.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) mode: Mode,
    pub(crate) metric: &'static str,
    /// The cloudpop setup compared (`cloudpop` or `cloudpop-cloud`).
    pub(crate) target: Kind,
    /// The median of `target`'s values.
    pub(crate) cloudpop_median: Option<f64>,
    pub(crate) dovecot_median: Option<f64>,
    /// `target`/Dovecot, paired by round.
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

/// The summary rows for the modes that ran: one per metric and cloudpop setup that ran
/// (one for the embedded cloudpop when only Dovecot ran).
pub(crate) fn summarize(results: &[ModeResult]) -> Vec<Summary> {
    let mut variants: Vec<Kind> = [Kind::Cloudpop, Kind::CloudpopCloud]
        .into_iter()
        .filter(|&kind| results.iter().any(|r| r.target == kind))
        .collect();
    if variants.is_empty() {
        variants.push(Kind::Cloudpop);
    }
    let mut out = Vec::new();
    for metric in METRICS {
        let of = |kind: Kind| -> Vec<(u32, f64)> {
            results
                .iter()
                .filter(|r| r.mode == metric.mode && r.target == kind && r.errors == 0)
                .filter_map(|r| Some((r.round, (metric.get)(r)?)))
                .collect()
        };
        let dovecot = of(Kind::Dovecot);
        for &kind in &variants {
            let cloudpop = of(kind);
            let ran = results
                .iter()
                .any(|r| r.mode == metric.mode && r.target == kind);
            if !ran && (dovecot.is_empty() || results.iter().any(|r| r.target == kind)) {
                // The mode did not run against this setup (not selected, or skipped).
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
            let (goal, note) = metric.goal_for(kind);
            let verdict = verdict(goal, cloudpop_median, ratio_median, note);
            out.push(Summary {
                mode: metric.mode,
                metric: metric.name,
                target: kind,
                cloudpop_median,
                dovecot_median: values(&dovecot),
                ratio_min: ratios.iter().copied().reduce(f64::min),
                ratio_median,
                ratio_max: ratios.iter().copied().reduce(f64::max),
                goal,
                verdict,
            });
        }
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
        "{:<11} {:<15} {:<14} {:>12} {:>12} {:>9} {:>9} {:>9}  {}\n",
        "mode", "metric", "cloudpop as", "value", "dovecot", "ratio min", "median", "max", "target"
    );
    for s in rows {
        let _ = writeln!(
            out,
            "{:<11} {:<15} {:<14} {:>12} {:>12} {:>9} {:>9} {:>9}  {}",
            s.mode.name(),
            s.metric,
            s.target.name(),
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

    fn result(round: u32, target: Kind, mode: Mode, rate: f64) -> ModeResult {
        let mut r = ModeResult::new(mode, target, 1, 1.0, Tally::default(), None);
        r.round = round;
        r.messages_per_s = rate;
        r.sessions_per_s = rate;
        r
    }

    #[test]
    fn each_cloudpop_setup_is_compared_with_dovecot_in_its_round() {
        let results = vec![
            result(0, Kind::Cloudpop, Mode::RetrAll, 300.0),
            result(0, Kind::CloudpopCloud, Mode::RetrAll, 150.0),
            result(0, Kind::Dovecot, Mode::RetrAll, 200.0),
            result(1, Kind::CloudpopCloud, Mode::RetrAll, 250.0),
            result(1, Kind::Dovecot, Mode::RetrAll, 100.0),
            result(0, Kind::CloudpopCloud, Mode::StatLarge, 12.0),
            result(0, Kind::Dovecot, Mode::StatLarge, 20.0),
            result(0, Kind::Cloudpop, Mode::StatLarge, 18.0),
            // idle was skipped for cloudpop-cloud: no row for it.
            result(0, Kind::Dovecot, Mode::Idle, 1.0),
            result(0, Kind::Cloudpop, Mode::Idle, 1.0),
        ];
        let rows = summarize(&results);
        let find = |mode: Mode, target: Kind| {
            rows.iter()
                .find(|s| s.mode == mode && s.target == target)
                .cloned()
        };
        let cloud = find(Mode::RetrAll, Kind::CloudpopCloud).unwrap();
        assert_eq!(cloud.ratio_min, Some(0.75));
        assert_eq!(cloud.ratio_max, Some(2.5));
        assert!(matches!(cloud.goal, Some(Goal::RatioAtLeast(t)) if t == 1.0));
        let embedded = find(Mode::RetrAll, Kind::Cloudpop).unwrap();
        assert_eq!(embedded.ratio_median, Some(1.5));
        assert!(matches!(embedded.goal, Some(Goal::RatioAtLeast(t)) if t == 1.5));
        // At most 2× slower: a ratio of 0.6 meets it, while the embedded 0.9 misses ≥ 1×.
        let stat = find(Mode::StatLarge, Kind::CloudpopCloud).unwrap();
        assert!(stat.verdict.starts_with("met"), "{}", stat.verdict);
        let stat = find(Mode::StatLarge, Kind::Cloudpop).unwrap();
        assert!(stat.verdict.starts_with("MISSED"), "{}", stat.verdict);
        assert!(find(Mode::Idle, Kind::CloudpopCloud).is_none());
        assert!(find(Mode::Idle, Kind::Cloudpop).is_some());
    }

    #[test]
    fn verdicts() {
        assert!(verdict(Some(Goal::RatioAtLeast(1.5)), None, Some(2.0), "").starts_with("met"));
        assert!(verdict(Some(Goal::RatioAtLeast(1.5)), None, Some(1.0), "").starts_with("MISSED"));
        assert!(verdict(Some(Goal::RatioAtMost(0.05)), None, Some(0.01), "").starts_with("met"));
        assert!(verdict(Some(Goal::AtMost(2048.0)), Some(4096.0), None, "").starts_with("MISSED"));
    }
}
