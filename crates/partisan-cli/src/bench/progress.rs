//! Progress of long runs, shown on stderr when it is a terminal (never on stdout).

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// One line on stderr, rewritten in place.
pub struct Progress {
    label: String,
    started: Instant,
    total_secs: f64,
    shown: bool,
    enabled: bool,
}

impl Progress {
    /// Progress of a step called `label` lasting about `total_secs`.
    pub fn new(label: String, total_secs: f64) -> Self {
        Progress {
            label,
            started: Instant::now(),
            total_secs,
            shown: false,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    /// Redraws the line.
    pub fn tick(&mut self) {
        if !self.enabled {
            return;
        }
        let t = self.started.elapsed().as_secs_f64().min(self.total_secs);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{}: {:.1}/{:.1} s",
            self.label, t, self.total_secs
        );
        let _ = err.flush();
        self.shown = true;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
