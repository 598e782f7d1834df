//! The machine a run measured, for the report: results mean little without it.

use serde::Serialize;

/// CPU, memory and kernel of this machine.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    pub(crate) nproc: usize,
    pub(crate) cpu_model: String,
    pub(crate) mem_total_kib: u64,
    pub(crate) kernel: String,
}

impl Machine {
    /// Reads `/proc`; unknown fields are left empty.
    pub(crate) fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |text: &str, name: &str| -> Option<String> {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        };
        Self {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_default(),
            mem_total_kib: field(&meminfo, "MemTotal")
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }

    /// One line for people.
    pub(crate) fn line(&self) -> String {
        format!(
            "{} CPU(s), {}, {:.1} GiB memory, Linux {}",
            self.nproc,
            self.cpu_model,
            self.mem_total_kib as f64 / (1024.0 * 1024.0),
            self.kernel
        )
    }
}
