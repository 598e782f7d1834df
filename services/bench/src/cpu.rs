//! CPU time of a target's processes during a mode, from `/proc/PID/stat`, so that a target
//! made of several processes (the cloud setup: pop3, lmtp, auth, s3s-fs, redis-server) shows
//! where its share of the machine went, and all targets can be compared per session.
//!
//! Each named process counts with its descendants: the user and system time of every live
//! process of the tree, plus the time of the children each has reaped (cutime, cstime). A
//! Dovecot session process that ended is thus counted once, in its parent's. Linux only,
//! like the memory figures.

use std::fs;
use std::time::Duration;

use serde::Serialize;

use crate::memory;

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ, 100 on every Linux architecture the
/// bench runs on; the workspace has no libc to ask `sysconf`).
const TICKS_PER_SECOND: f64 = 100.0;

/// Time given to the parents of processes that just ended to reap them, before the second
/// snapshot.
pub(crate) const REAP_DELAY: Duration = Duration::from_millis(250);

/// Ticks used so far by each named process (`None` when it cannot be read).
pub(crate) type Snapshot = Vec<(&'static str, Option<u64>)>;

/// CPU used by one process during a mode.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CpuUse {
    pub(crate) process: &'static str,
    pub(crate) seconds: f64,
    /// Milliseconds per completed session (or message, for the modes counted in messages).
    pub(crate) ms_per_op: f64,
}

/// Reads the CPU time of every process in `processes`.
pub(crate) fn snapshot(processes: &[(&'static str, u32)]) -> Snapshot {
    processes
        .iter()
        .map(|&(name, pid)| (name, ticks(pid)))
        .collect()
}

/// What each process used between two snapshots, per completed operation (`ops`).
pub(crate) fn delta(before: &Snapshot, after: &Snapshot, ops: u64) -> Vec<CpuUse> {
    before
        .iter()
        .zip(after)
        .filter_map(|(&(process, t0), &(_, t1))| {
            let seconds = t1?.checked_sub(t0?)? as f64 / TICKS_PER_SECOND;
            Some(CpuUse {
                process,
                seconds,
                ms_per_op: if ops > 0 {
                    seconds * 1000.0 / ops as f64
                } else {
                    0.0
                },
            })
        })
        .collect()
}

/// The CPU time of `root`'s tree, in clock ticks; `None` when `root` is gone.
fn ticks(root: u32) -> Option<u64> {
    let own = parse(&fs::read_to_string(format!("/proc/{root}/stat")).ok()?)?;
    let descendants: u64 = memory::tree(root)
        .ok()?
        .into_iter()
        .skip(1)
        .filter_map(|pid| parse(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?))
        .sum();
    Some(own + descendants)
}

/// utime + stime + cutime + cstime: fields 14 to 17 of `/proc/PID/stat`, counted after the
/// command name, which is in parentheses and may itself contain spaces or parentheses.
fn parse(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    after
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|field| field.parse::<i64>().ok().map(|t| t.max(0).unsigned_abs()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_time() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 7 3 20 0 4 0";
        assert_eq!(parse(stat), Some(290));
        assert!(ticks(std::process::id()).is_some());
        let before = vec![("a", Some(100)), ("b", None)];
        let after = vec![("a", Some(150)), ("b", Some(7))];
        let used = delta(&before, &after, 10);
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].seconds, 0.5);
        assert_eq!(used[0].ms_per_op, 50.0);
    }
}
