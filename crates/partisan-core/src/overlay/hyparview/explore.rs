//! Finding the rest of the cluster again after mass failure or a long partition.
//!
//! A HyParView node only learns about nodes through its active neighbours. When most of the
//! cluster fails at once, or a partition lasts long enough, the survivors' views end up naming
//! only their own island, and two islands never hear of each other again. So each node keeps a
//! small random sample of every node it has heard of (a reservoir, not evicted by shuffles nor
//! by failures) and, while it is below `active_min` or sees peers fail, sends a shuffle
//! straight to a few of them each period (those in neither of its views): one that answers
//! brings a sample of its own island into this node's passive view, and the usual promotion
//! then makes the bridge. A node with enough neighbours that sees no failure backs off to one
//! shuffle every [`MAX_EVERY`] periods, so a healthy cluster pays almost nothing.

use std::collections::BTreeMap;

use rand::{Rng, RngCore};

use crate::id::NodeName;
use crate::overlay::PeerInfo;

/// Nodes remembered.
pub(super) const REMEMBERED: usize = 64;
/// Most periods between explorations (and between two tries of one remembered node).
pub(super) const MAX_EVERY: u64 = 64;
/// Remembered nodes tried per exploration while in trouble, or recently.
const FANOUT_TROUBLED: usize = 8;
/// Explorations stay wide while they come at most this many periods apart.
const RECENTLY: u64 = 8;

#[derive(Debug)]
struct Remembered {
    peer: PeerInfo,
    /// Periods to wait after the next failure.
    backoff: u64,
    /// Not tried before this period.
    retry_at: u64,
    /// Tried since the last trouble began.
    swept: bool,
}

/// The remembered sample and the exploration schedule of one node.
#[derive(Debug, Default)]
pub(super) struct Explorer {
    known: BTreeMap<NodeName, Remembered>,
    /// Distinct nodes offered to the reservoir so far (its sampling probability).
    offered: u64,
    /// Shuffle periods elapsed.
    period: u64,
    /// Peers found unreachable since the last period, exploration targets aside.
    losses: u32,
    /// The nodes explored in the current period.
    probing: std::collections::BTreeSet<NodeName>,
    /// Periods between explorations (1 while failures are seen, doubling up to MAX_EVERY).
    every: u64,
    next_at: u64,
    /// Some remembered nodes are still to be tried since the last trouble began.
    sweeping: bool,
}

impl Explorer {
    /// Offers a node heard of to the sample: kept if there is room, else in place of a random
    /// one with probability REMEMBERED / offered (reservoir sampling). A known node's info is
    /// refreshed if newer.
    pub(super) fn remember(&mut self, peer: &PeerInfo, rng: &mut dyn RngCore) {
        if let Some(r) = self.known.get_mut(peer.name()) {
            if peer.creation > r.peer.creation {
                r.peer = peer.clone();
            }
            return;
        }
        self.offered += 1;
        if self.known.len() >= REMEMBERED {
            if rng.gen_range(0..self.offered) >= REMEMBERED as u64 {
                return;
            }
            let victim = rng.gen_range(0..self.known.len());
            let name = self.known.keys().nth(victim).cloned().expect("in range");
            self.known.remove(&name);
        }
        self.known.insert(
            peer.name().clone(),
            Remembered {
                peer: peer.clone(),
                backoff: 1,
                retry_at: 0,
                // Joins a sweep under way; a healthy node does not go after every node it
                // hears of.
                swept: !self.sweeping,
            },
        );
    }

    /// Drops a node that left or was removed for good.
    pub(super) fn forget(&mut self, node: &NodeName) {
        self.known.remove(node);
    }

    /// A peer could not be reached: exploration speeds up (unless the peer was one it
    /// explored), and a remembered node that failed is tried again only after its backoff
    /// (doubled, up to MAX_EVERY periods).
    pub(super) fn failed(&mut self, node: &NodeName) {
        if !self.probing.contains(node) {
            self.losses = self.losses.saturating_add(1);
        }
        if let Some(r) = self.known.get_mut(node) {
            r.retry_at = self.period + r.backoff;
            r.backoff = (r.backoff * 2).min(MAX_EVERY);
        }
    }

    /// A node answered a shuffle: its backoff starts over. Returns whether it was explored
    /// this period (it may then belong to another island).
    pub(super) fn answered(&mut self, node: &NodeName) -> bool {
        if let Some(r) = self.known.get_mut(node) {
            r.backoff = 1;
        }
        self.probing.contains(node)
    }

    /// One shuffle period passed: the nodes to send an exploring shuffle to now (none most
    /// periods of a healthy node). `short` says the node is below `active_min`; `skip`
    /// tells nodes not worth a try (those in its views).
    pub(super) fn tick(
        &mut self,
        short: bool,
        skip: impl Fn(&NodeName) -> bool,
        rng: &mut dyn RngCore,
    ) -> Vec<PeerInfo> {
        self.period += 1;
        let troubled = short || self.losses > 0;
        self.losses = 0;
        self.probing.clear();
        if troubled {
            self.every = 1;
            self.next_at = self.next_at.min(self.period);
            // A new trouble: every remembered node is to be tried once more. After a mass
            // failure, the isolated nodes that only a few survivors remember are found only
            // if each survivor goes through all it remembers, not just until its own views
            // are full again.
            if !self.sweeping {
                for r in self.known.values_mut() {
                    r.swept = false;
                }
                self.sweeping = true;
            }
        }
        let period = self.period;
        let unswept = self
            .known
            .iter()
            .any(|(n, r)| !r.swept && r.retry_at <= period && !skip(n));
        self.sweeping = unswept;
        if self.period < self.next_at && !unswept {
            return Vec::new();
        }
        self.every = if troubled || unswept {
            1
        } else {
            (self.every * 2).clamp(1, MAX_EVERY)
        };
        self.next_at = self.period + self.every;
        // While a sweep lasts and soon after trouble the exploration stays wide.
        let fanout = if unswept || self.every <= RECENTLY {
            FANOUT_TROUBLED
        } else {
            1
        };
        // Nodes not tried since the trouble began first.
        let due: Vec<(bool, NodeName)> = self
            .known
            .iter()
            .filter(|(n, r)| r.retry_at <= period && !skip(n))
            .map(|(n, r)| (!r.swept, n.clone()))
            .collect();
        let mut fresh: Vec<NodeName> = due.iter().filter(|d| d.0).map(|d| d.1.clone()).collect();
        let mut tried: Vec<NodeName> = due.into_iter().filter(|d| !d.0).map(|d| d.1).collect();
        let mut picked = Vec::new();
        while picked.len() < fanout && !(fresh.is_empty() && tried.is_empty()) {
            let pool = if fresh.is_empty() {
                &mut tried
            } else {
                &mut fresh
            };
            let i = rng.gen_range(0..pool.len());
            let name = pool.swap_remove(i);
            let r = self.known.get_mut(&name).expect("candidate is known");
            // Not tried again before its backoff, answer or not.
            r.retry_at = period + r.backoff;
            r.swept = true;
            picked.push(r.peer.clone());
            self.probing.insert(name);
        }
        picked
    }

    /// Nodes remembered (for tests and reports).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.known.len()
    }
}
