//! The engine's one timer table: keyed deadlines, each arming identified by a token.
//!
//! Arming a key again replaces its deadline; cancelling removes it. An expiry is handed out
//! only for the arming that is current when it comes due, with that arming's token, so a timer
//! re-armed or cancelled in the meantime can never fire late (the stale-timer rule of foca's
//! `TimerToken`, kept inside the core rather than left to each driver).

use std::collections::{BTreeMap, BTreeSet};

use crate::time::Instant;

/// Identifies one arming of a timer. Tokens are never reused within a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerToken(pub u64);

/// Deadlines by key, ordered by time (then arming order) for expiry.
#[derive(Debug)]
pub struct TimerTable<K: Ord + Clone> {
    by_key: BTreeMap<K, (Instant, TimerToken)>,
    by_time: BTreeSet<(Instant, TimerToken, K)>,
    next: u64,
}

impl<K: Ord + Clone> Default for TimerTable<K> {
    fn default() -> Self {
        TimerTable {
            by_key: BTreeMap::new(),
            by_time: BTreeSet::new(),
            next: 0,
        }
    }
}

impl<K: Ord + Clone> TimerTable<K> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms `key` to expire at `at`, replacing any earlier arming of it.
    pub fn arm(&mut self, key: K, at: Instant) -> TimerToken {
        self.cancel(&key);
        self.next += 1;
        let token = TimerToken(self.next);
        self.by_key.insert(key.clone(), (at, token));
        self.by_time.insert((at, token, key));
        token
    }

    /// Disarms `key`; returns whether it was armed.
    pub fn cancel(&mut self, key: &K) -> bool {
        match self.by_key.remove(key) {
            Some((at, token)) => {
                self.by_time.remove(&(at, token, key.clone()));
                true
            }
            None => false,
        }
    }

    /// When `key` expires, if armed.
    pub fn deadline(&self, key: &K) -> Option<Instant> {
        self.by_key.get(key).map(|(at, _)| *at)
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _, _)| *at)
    }

    /// Removes and returns the earliest arming due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<(K, TimerToken)> {
        let (at, _, _) = self.by_time.first()?;
        if *at > now {
            return None;
        }
        let (_, token, key) = self.by_time.pop_first()?;
        self.by_key.remove(&key);
        Some((key, token))
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rearming_replaces_and_a_cancelled_timer_never_fires() {
        let mut t: TimerTable<&str> = TimerTable::new();
        let first = t.arm("a", Instant(10));
        let second = t.arm("a", Instant(30));
        assert_ne!(first, second);
        t.arm("b", Instant(20));
        t.arm("c", Instant(5));
        assert!(t.cancel(&"c"));
        assert_eq!(t.next_deadline(), Some(Instant(20)));
        assert_eq!(t.pop_due(Instant(15)), None);
        assert_eq!(t.pop_due(Instant(25)).map(|(k, _)| k), Some("b"));
        assert_eq!(t.pop_due(Instant(25)), None);
        assert_eq!(t.pop_due(Instant(30)), Some(("a", second)));
        assert!(t.is_empty());
    }

    #[test]
    fn equal_deadlines_expire_in_arming_order() {
        let mut t: TimerTable<u32> = TimerTable::new();
        for k in [3, 1, 2] {
            t.arm(k, Instant(7));
        }
        let order: Vec<u32> =
            std::iter::from_fn(|| t.pop_due(Instant(7)).map(|(k, _)| k)).collect();
        assert_eq!(order, vec![3, 1, 2]);
    }
}
