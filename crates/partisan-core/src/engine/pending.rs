//! Overlay messages held for peers that have no open lane yet, while a temporary connection is
//! being made. Bounded per peer: when a peer's queue is full the oldest message is dropped
//! (overlay protocols are periodic and tolerate loss; the newest state is worth more).

use std::collections::{BTreeMap, VecDeque};

use crate::id::NodeName;
use crate::overlay::OverlayMsg;

#[derive(Debug)]
pub(crate) struct Pending {
    per_peer: usize,
    queues: BTreeMap<NodeName, VecDeque<OverlayMsg>>,
}

impl Pending {
    pub(crate) fn new(per_peer: usize) -> Self {
        Pending {
            per_peer: per_peer.max(1),
            queues: BTreeMap::new(),
        }
    }

    /// Holds `msg` for `peer`; returns how many older messages were dropped to make room.
    pub(crate) fn push(&mut self, peer: &NodeName, msg: OverlayMsg) -> u64 {
        let q = self.queues.entry(peer.clone()).or_default();
        let mut dropped = 0;
        while q.len() >= self.per_peer {
            q.pop_front();
            dropped += 1;
        }
        q.push_back(msg);
        dropped
    }

    /// Takes everything held for `peer`, oldest first.
    pub(crate) fn take(&mut self, peer: &NodeName) -> VecDeque<OverlayMsg> {
        self.queues.remove(peer).unwrap_or_default()
    }

    /// Messages held for `peer`.
    pub(crate) fn len_for(&self, peer: &NodeName) -> usize {
        self.queues.get(peer).map_or(0, VecDeque::len)
    }

    /// Peers with messages held, sorted.
    pub(crate) fn peers(&self) -> impl Iterator<Item = &NodeName> {
        self.queues.keys()
    }

    /// Messages held in all.
    pub(crate) fn total(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }
}
