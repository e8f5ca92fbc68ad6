//! The network's event queue: events by (due time, sequence), cheap to push and pop however
//! large an event is (the order is kept on small keys; events stay put in a map).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::time::Instant;

/// When an event is due, and its sequence number (unique, increasing: ties keep push order).
pub(crate) type Key = (Instant, u64);

pub(crate) struct EventQueue<E> {
    order: BinaryHeap<Reverse<Key>>,
    events: HashMap<u64, (Instant, E)>,
}

impl<E> EventQueue<E> {
    pub(crate) fn new() -> Self {
        EventQueue {
            order: BinaryHeap::new(),
            events: HashMap::new(),
        }
    }

    pub(crate) fn push(&mut self, key: Key, ev: E) {
        self.order.push(Reverse(key));
        self.events.insert(key.1, (key.0, ev));
    }

    /// Drops heap entries of events removed out of turn.
    fn skip_removed(&mut self) {
        while let Some(Reverse((_, seq))) = self.order.peek() {
            if self.events.contains_key(seq) {
                return;
            }
            self.order.pop();
        }
    }

    /// The earliest event, removed.
    pub(crate) fn pop(&mut self) -> Option<(Key, E)> {
        self.skip_removed();
        let Reverse(key) = self.order.pop()?;
        let (_, ev) = self.events.remove(&key.1)?;
        Some((key, ev))
    }

    /// When the earliest event is due.
    pub(crate) fn next_time(&mut self) -> Option<Instant> {
        self.skip_removed();
        self.order.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes one event out of turn.
    pub(crate) fn remove(&mut self, key: Key) -> Option<E> {
        self.events.remove(&key.1).map(|(_, e)| e)
    }

    pub(crate) fn get(&self, key: Key) -> Option<&E> {
        self.events.get(&key.1).map(|(_, e)| e)
    }

    /// Every event in due order (for tests driving the network by hand).
    pub(crate) fn sorted(&self) -> Vec<(Key, &E)> {
        let mut v: Vec<(Key, &E)> = self
            .events
            .iter()
            .map(|(seq, (at, e))| ((*at, *seq), e))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}
