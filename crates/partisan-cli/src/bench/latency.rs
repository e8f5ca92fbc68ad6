//! Latency recording: an HDR histogram of nanoseconds (3 significant digits, up to 60 s).

use std::time::Duration;

use hdrhistogram::Histogram;

/// Recorded latencies of one or more callers.
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"),
        }
    }
}

impl Latencies {
    /// Records one round trip.
    pub fn record(&mut self, d: Duration) {
        let ns = (d.as_nanos() as u64).clamp(1, 60_000_000_000);
        self.hist.saturating_record(ns);
    }

    /// Adds another caller's recordings.
    pub fn merge(&mut self, other: &Latencies) {
        self.hist
            .add(&other.hist)
            .expect("histograms with the same bounds merge");
    }

    /// Round trips recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The latency at quantile `q` (0..=1), in microseconds; 0 when nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// The largest latency, in microseconds.
    pub fn max_us(&self) -> f64 {
        self.hist.max() as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_merged_recordings() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        for us in 1..=90 {
            a.record(Duration::from_micros(us));
        }
        for us in 91..=100 {
            b.record(Duration::from_micros(us));
        }
        a.merge(&b);
        assert_eq!(a.count(), 100);
        let p50 = a.quantile_us(0.5);
        assert!((49.9..=50.1).contains(&p50), "{p50}");
        assert!((98.9..=99.1).contains(&a.quantile_us(0.99)));
        assert!(a.quantile_us(0.5) <= a.quantile_us(0.99));
        assert!((99.9..=100.1).contains(&a.max_us()));
        assert_eq!(Latencies::default().quantile_us(0.99), 0.0);
    }
}
