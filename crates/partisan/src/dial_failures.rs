//! Failed dials per target, so that a peer that cannot be reached is reported at WARN when it
//! first fails and then every tenfold more failures (1, 10, 100, ...), not on every redial.

use std::collections::BTreeMap;

/// Most targets followed; past that the counts start over (a warning may then come again).
const MAX_TARGETS: usize = 4096;

/// Consecutive failed dials per target (a `Debug` rendering of it), since it was last reached.
#[derive(Debug, Default)]
pub(crate) struct DialFailures {
    streaks: parking_lot::Mutex<BTreeMap<String, u64>>,
}

impl DialFailures {
    /// A dial of `target` failed: returns the failures in a row so far and whether this one
    /// should be reported (the 1st, 10th, 100th, ...).
    pub(crate) fn failed(&self, target: &str) -> (u64, bool) {
        let mut s = self.streaks.lock();
        if s.len() >= MAX_TARGETS && !s.contains_key(target) {
            s.clear();
        }
        let n = s.entry(target.to_string()).or_insert(0);
        *n += 1;
        (*n, power_of_ten(*n))
    }

    /// `target` was reached: its count starts over.
    pub(crate) fn reached(&self, target: &str) {
        self.streaks.lock().remove(target);
    }
}

/// Whether `n` is 1, 10, 100, ...
fn power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n % 10 == 0 {
        n /= 10;
    }
    n == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_first_failure_then_every_tenfold() {
        let f = DialFailures::default();
        let reported: Vec<u64> = (0..1000)
            .filter_map(|_| match f.failed("a") {
                (n, true) => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(reported, vec![1, 10, 100, 1000]);
        assert!(!power_of_ten(110) && !power_of_ten(0) && power_of_ten(10_000));
        f.reached("a");
        assert_eq!(f.failed("a"), (1, true));
        assert_eq!(f.failed("b"), (1, true), "targets are counted apart");
    }
}
