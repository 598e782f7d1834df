//! Memory of a server process and its descendants, from `/proc` (Linux).
//!
//! RSS counts a shared page in every process that maps it, so for a server made of many
//! processes (Dovecot: one per logged-in session) the sum of RSS overstates its memory. PSS
//! divides each shared page among the processes sharing it; the bench reports both and
//! compares PSS. For one process the two grow alike.

use std::collections::HashMap;
use std::fs;

use serde::Serialize;

/// Memory of a process tree, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Usage {
    pub(crate) rss_kib: u64,
    pub(crate) pss_kib: u64,
    pub(crate) processes: u64,
}

/// Sums RSS (`/proc/PID/status` VmRSS) and PSS (`/proc/PID/smaps_rollup`) over `root` and
/// every descendant. Processes that end meanwhile are skipped.
pub(crate) fn usage(root: u32) -> std::io::Result<Usage> {
    let mut total = Usage::default();
    for pid in tree(root)? {
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let pss = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|rollup| field_kib(&rollup, "Pss:"))
            .unwrap_or(0);
        total.rss_kib += field_kib(&status, "VmRSS:").unwrap_or(0);
        total.pss_kib += pss;
        total.processes += 1;
    }
    if total.processes == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("process {root} does not exist"),
        ));
    }
    Ok(total)
}

/// `root` and its descendants.
pub(crate) fn tree(root: u32) -> std::io::Result<Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(ppid) = parent(&stat) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids);
        }
        i += 1;
    }
    Ok(out)
}

/// The parent pid from `/proc/PID/stat`: the second field after the command name, which is
/// in parentheses and may itself contain spaces or parentheses.
fn parent(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// A `Name:   1234 kB` field.
fn field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_fields() {
        assert_eq!(parent("12 (a b) c) S 7 12 12 0"), Some(7));
        assert_eq!(
            field_kib("Name: x\nVmRSS:\t  2048 kB\n", "VmRSS:"),
            Some(2048)
        );
    }

    #[test]
    fn measures_this_process() {
        let usage = usage(std::process::id()).unwrap();
        assert!(usage.rss_kib > 0);
        assert!(usage.processes >= 1);
    }
}
