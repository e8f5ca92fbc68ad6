//! Progress reporting for long runs, and the process's peak memory.

use partisan_core::time::Instant;

/// Receives progress from a running experiment.
pub trait Progress {
    /// The run entered `phase`; `now` is virtual time, `events` processed so far.
    fn phase(&mut self, phase: &str, now: Instant, events: u64);
}

/// Discards progress.
pub struct Quiet;

impl Progress for Quiet {
    fn phase(&mut self, _phase: &str, _now: Instant, _events: u64) {}
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if the OS tells.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
