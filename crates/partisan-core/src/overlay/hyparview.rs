//! HyParView (Leitão, Pereira, Rodrigues, DSN 2007): a small symmetric active view kept
//! connected, a larger passive view of backups, random walks for joins and shuffles.
//!
//! Rules as built (section numbers of the paper):
//! - Join (4.1): the contact adds the joiner to its active view (evicting a random
//!   non-reserved peer with a Disconnect when full) and sends ForwardJoin(ARWL) to every other
//!   active peer. The joiner adds the contact at once.
//! - ForwardJoin (4.1): with TTL 0 or an active view of one, add the joiner to the active view
//!   and tell it (ForwardJoinAccepted, so it adds us back: views stay symmetric); otherwise add
//!   it to the passive view when TTL == PRWL, and forward to a random active peer other than
//!   the sender with TTL-1.
//! - Disconnect (4.1): the sender is moved from the active to the passive view.
//! - Failure (4.2): an active peer whose connection drops (or whose keepalive fails, both
//!   reported by the transport) is removed; a random passive peer is asked to become a
//!   neighbor, with high priority when the active view is empty, low otherwise. A high
//!   priority request is always accepted; a low one only when there is room. A rejected or
//!   unreachable candidate is dropped/kept and the next one tried at once.
//! - Shuffle (4.3): every shuffle period, a sample (self, `k_active` active, `k_passive`
//!   passive peers) walks ARWL hops; the node where it stops answers with as many of its
//!   passive peers and both integrate the sample into their passive views, evicting first the
//!   entries they sent.
//! - Explicit leave (open in the paper and in Partisan #7): Leave to every active peer, which
//!   drops the leaver from both views and promotes a replacement. The Leave hands over the
//!   leaver's other active peers and `k_passive` passive ones, so a neighbor that knew only the
//!   leaver (a joiner whose forward-join walks had not landed yet) is not left isolated.
//! - Symmetry (Partisan #13): neighbor requests are answered (accepted/rejected), and every
//!   shuffle period each node sends KeepActive to its active peers; a peer that does not have
//!   the sender in its active view adds it if it has room, else answers Disconnect.
//! - Isolation: a node whose passive view is empty takes the contacts it joined through and
//!   its last 8 active neighbors as passive candidates again (tried once per promotion tick).
//! - Opportunistic requests (to fill a view that has room) never evict: if the view filled up
//!   meanwhile, the acceptance is undone with a Disconnect, so fills cannot cascade into churn.
//! - Lost connections (not in the paper): a neighbor whose connection drops stays a passive
//!   candidate (it may have been cut off by a partition), dropped when found unreachable.
//! - Filling and rewiring (not in the paper): between `active_min` and a full view, one
//!   low-priority neighbor request per promotion tick; a full node, on average once per
//!   `rewire_interval`, asks a random passive peer with high priority. Together they merge
//!   two overlays after a partition heals, which plain HyParView never does.
//! - Reservations (Partisan): `reserve(tag)` keeps an active slot for a peer with that tag;
//!   open slots count as taken, reserved peers are never evicted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::{
    Overlay, OverlayError, OverlayKind, OverlayMsg, OverlayOutput, OverlayTimer, PeerInfo, Tag,
};
use crate::id::{NodeName, NodeSpec};
use crate::time::Instant;

/// Most peers a shuffle sample may carry.
pub const MAX_SAMPLE: usize = 256;

/// Former active neighbors remembered as last-resort candidates.
const RECENT_PEERS: usize = 8;

/// HyParView parameters; defaults are Partisan's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HyParViewConfig {
    /// Largest active view (`active_max_size`, 6).
    pub active_max: usize,
    /// Below this the node promotes passive peers (`active_min_size`, 3).
    pub active_min: usize,
    /// Largest passive view (`passive_max_size`, 30).
    pub passive_max: usize,
    /// Active random walk length (`active_rwl`, 6).
    pub arwl: u8,
    /// Passive random walk length (`passive_rwl`, 6).
    pub prwl: u8,
    /// Shuffle period (`shuffle_interval`, 10 s).
    pub shuffle_interval: Duration,
    /// Active peers in a shuffle sample (`shuffle_k_active`, 3).
    pub shuffle_k_active: usize,
    /// Passive peers in a shuffle sample (`shuffle_k_passive`, 4).
    pub shuffle_k_passive: usize,
    /// Whether to promote passive peers periodically while below `active_min`.
    pub random_promotion: bool,
    /// Promotion period (`random_promotion_interval`, 5 s).
    pub random_promotion_interval: Duration,
    /// Reserved active slots (`reservations`).
    pub reservations: Vec<Tag>,
    /// Mean time between rewirings of a node whose active view is full: it asks a random
    /// passive peer to become a neighbor with high priority (both sides evict a random peer
    /// if needed). This is what merges two overlays after a partition heals; zero disables it.
    pub rewire_interval: Duration,
}

impl Default for HyParViewConfig {
    fn default() -> Self {
        HyParViewConfig {
            active_max: 6,
            active_min: 3,
            passive_max: 30,
            arwl: 6,
            prwl: 6,
            shuffle_interval: Duration::from_secs(10),
            shuffle_k_active: 3,
            shuffle_k_passive: 4,
            random_promotion: true,
            random_promotion_interval: Duration::from_secs(5),
            reservations: Vec::new(),
            rewire_interval: Duration::from_secs(60),
        }
    }
}

impl HyParViewConfig {
    /// Checks the parameters; the error names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.active_max == 0 {
            return Err("active_max_size must be at least 1".into());
        }
        if self.active_min > self.active_max {
            return Err("active_min_size must not exceed active_max_size".into());
        }
        if self.reservations.len() > self.active_max {
            return Err("reservations: more reservations than active_max_size".into());
        }
        if self.shuffle_interval.is_zero() || self.random_promotion_interval.is_zero() {
            return Err("shuffle_interval and random_promotion_interval must be positive".into());
        }
        Ok(())
    }
}

/// HyParView messages. The sender is known from the transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HvMsg {
    /// A new node joins through the receiver.
    Join {
        /// The joiner.
        peer: PeerInfo,
    },
    /// Random walk announcing a joiner.
    ForwardJoin {
        /// The joiner.
        peer: PeerInfo,
        /// Remaining hops.
        ttl: u8,
    },
    /// The sender added the receiver (a joiner) to its active view at the end of a walk.
    ForwardJoinAccepted,
    /// The sender asks to become an active neighbor.
    NeighborRequest {
        /// High priority (the sender's active view is empty): always accepted.
        high: bool,
    },
    /// Answer to a neighbor request.
    NeighborReply {
        /// Whether the receiver is now in the sender's active view.
        accepted: bool,
    },
    /// The sender dropped the receiver from its active view.
    Disconnect,
    /// The sender leaves the cluster, handing over peers it knows (its other active peers and
    /// a few passive ones) so a neighbor that knew nobody else is not left isolated.
    Leave {
        /// Peers the receiver may take as passive candidates (at most [`MAX_SAMPLE`]).
        handover: Vec<PeerInfo>,
    },
    /// Shuffle random walk.
    Shuffle {
        /// Node that started the shuffle.
        origin: PeerInfo,
        /// Remaining hops.
        ttl: u8,
        /// Peers offered.
        sample: Vec<PeerInfo>,
    },
    /// Answer to a shuffle, sent to its origin.
    ShuffleReply {
        /// Peers offered back.
        sample: Vec<PeerInfo>,
    },
    /// "You are in my active view": repairs asymmetric views.
    KeepActive,
}

fn hv(m: HvMsg) -> OverlayMsg {
    OverlayMsg::HyParView(m)
}

/// The HyParView overlay of one node.
pub struct HyParView {
    cfg: HyParViewConfig,
    local: PeerInfo,
    rng: Box<dyn RngCore + Send>,
    active: BTreeMap<NodeName, PeerInfo>,
    passive: BTreeMap<NodeName, PeerInfo>,
    /// Reserved slots: tag -> holder.
    reserved: BTreeMap<Tag, Option<NodeName>>,
    /// Nodes we joined through, for rejoining when isolated.
    contacts: BTreeMap<NodeName, PeerInfo>,
    /// The last few peers that were active neighbors (most recent last): with the contacts,
    /// the last resort of a node that lost every other trace of the cluster.
    recent: std::collections::VecDeque<PeerInfo>,
    /// Outstanding neighbor requests.
    pending: BTreeSet<NodeName>,
    /// The subset of `pending` sent to fill a view that had room: if the view is full when
    /// the acceptance arrives, it is undone rather than evicting anyone (no churn cascades).
    opportunistic: BTreeSet<NodeName>,
    /// Candidates that rejected us since the last promotion tick (not asked again before it).
    refused: BTreeSet<NodeName>,
    /// Names in the last shuffle sample we sent (evicted first from the passive view).
    last_sample: BTreeSet<NodeName>,
    /// A sample of every node heard of, explored while peers fail (islands finding each other).
    explore: explore::Explorer,
    left: bool,
}

impl HyParView {
    /// A HyParView node. `rng` drives every random choice (seed it for reproducible runs).
    pub fn new(local: PeerInfo, cfg: HyParViewConfig, rng: Box<dyn RngCore + Send>) -> Self {
        let reserved = cfg.reservations.iter().map(|t| (t.clone(), None)).collect();
        HyParView {
            cfg,
            local,
            rng,
            active: BTreeMap::new(),
            passive: BTreeMap::new(),
            reserved,
            contacts: BTreeMap::new(),
            recent: std::collections::VecDeque::new(),
            pending: BTreeSet::new(),
            opportunistic: BTreeSet::new(),
            refused: BTreeSet::new(),
            last_sample: BTreeSet::new(),
            explore: explore::Explorer::default(),
            left: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HyParViewConfig {
        &self.cfg
    }

    fn me(&self) -> &NodeName {
        self.local.name()
    }

    fn open_reserved(&self) -> usize {
        self.reserved.values().filter(|h| h.is_none()).count()
    }

    fn is_full(&self) -> bool {
        self.active.len() + self.open_reserved() >= self.cfg.active_max
    }

    fn reserved_slot_for(&self, peer: &PeerInfo) -> Option<Tag> {
        let tag = peer.tag.as_ref()?;
        matches!(self.reserved.get(tag), Some(None)).then(|| tag.clone())
    }

    fn holds_reservation(&self, node: &NodeName) -> bool {
        self.reserved.values().any(|h| h.as_ref() == Some(node))
    }

    fn pick<'a>(&mut self, names: &'a [NodeName]) -> Option<&'a NodeName> {
        if names.is_empty() {
            None
        } else {
            Some(&names[self.rng.gen_range(0..names.len())])
        }
    }

    fn sample_of(&mut self, mut names: Vec<NodeName>, k: usize) -> Vec<NodeName> {
        // Partial Fisher-Yates: k distinct random names.
        let k = k.min(names.len());
        for i in 0..k {
            let j = self.rng.gen_range(i..names.len());
            names.swap(i, j);
        }
        names.truncate(k);
        names
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        // ±10 %, so nodes started together do not shuffle in lockstep.
        let micros = d.as_micros() as u64;
        let spread = micros / 10;
        Duration::from_micros(micros - spread + self.rng.gen_range(0..=2 * spread))
    }

    fn send(&self, to: &PeerInfo, msg: HvMsg, out: &mut Vec<OverlayOutput>) {
        out.push(OverlayOutput::Send {
            to: to.spec.clone(),
            msg: hv(msg),
        });
    }

    /// Adds `peer` to the active view, evicting a random non-reserved peer when full.
    fn add_active(&mut self, peer: &PeerInfo, out: &mut Vec<OverlayOutput>) {
        let name = peer.name().clone();
        if &name == self.me() {
            return;
        }
        self.explore.remember(peer, &mut *self.rng);
        if let Some(known) = self.active.get_mut(&name) {
            if peer.creation > known.creation {
                *known = peer.clone();
                out.push(OverlayOutput::Connect(peer.spec.clone()));
            }
            return;
        }
        self.passive.remove(&name);
        if let Some(tag) = self.reserved_slot_for(peer) {
            self.reserved.insert(tag, Some(name.clone()));
        } else if self.is_full() {
            let candidates: Vec<NodeName> = self
                .active
                .keys()
                .filter(|n| !self.holds_reservation(n))
                .cloned()
                .collect();
            if let Some(victim) = self.pick(&candidates).cloned() {
                self.drop_active(&victim, true, out);
            } else {
                // Every slot is reserved for others: cannot take this peer.
                self.send(peer, HvMsg::Disconnect, out);
                self.add_passive(peer);
                return;
            }
        }
        self.active.insert(name, peer.clone());
        self.recent.retain(|p| p.name() != peer.name());
        if self.recent.len() == RECENT_PEERS {
            self.recent.pop_front();
        }
        self.recent.push_back(peer.clone());
        out.push(OverlayOutput::Connect(peer.spec.clone()));
        out.push(OverlayOutput::MembersChanged);
    }

    /// Removes `node` from the active view; with `tell`, sends it a Disconnect and keeps it as
    /// a passive peer.
    fn drop_active(
        &mut self,
        node: &NodeName,
        tell: bool,
        out: &mut Vec<OverlayOutput>,
    ) -> Option<PeerInfo> {
        let peer = self.active.remove(node)?;
        for holder in self.reserved.values_mut() {
            if holder.as_ref() == Some(node) {
                *holder = None;
            }
        }
        if tell {
            self.send(&peer, HvMsg::Disconnect, out);
            self.add_passive(&peer);
        }
        out.push(OverlayOutput::Disconnect(node.clone()));
        out.push(OverlayOutput::MembersChanged);
        Some(peer)
    }

    fn add_passive(&mut self, peer: &PeerInfo) {
        self.integrate(std::slice::from_ref(peer), &BTreeSet::new());
    }

    /// Adds peers to the passive view (never self or active peers), evicting first the names
    /// in `prefer_evict`, then random ones, when full.
    fn integrate(&mut self, peers: &[PeerInfo], prefer_evict: &BTreeSet<NodeName>) {
        if self.cfg.passive_max == 0 {
            return;
        }
        for p in peers {
            let name = p.name();
            if name == self.me() {
                continue;
            }
            self.explore.remember(p, &mut *self.rng);
            if self.active.contains_key(name) {
                continue;
            }
            if let Some(known) = self.passive.get_mut(name) {
                if p.creation > known.creation {
                    *known = p.clone();
                }
                continue;
            }
            if self.passive.len() >= self.cfg.passive_max {
                let preferred: Vec<NodeName> = self
                    .passive
                    .keys()
                    .filter(|n| prefer_evict.contains(*n))
                    .cloned()
                    .collect();
                let victim = if preferred.is_empty() {
                    let all: Vec<NodeName> = self.passive.keys().cloned().collect();
                    self.pick(&all).cloned()
                } else {
                    self.pick(&preferred).cloned()
                };
                if let Some(v) = victim {
                    self.passive.remove(&v);
                }
            }
            self.passive.insert(name.clone(), p.clone());
        }
    }

    /// Drops every trace of a node that left or was removed, so no fallback (contacts, recent
    /// neighbours) brings it back; its active slot, if any, is the caller's to drop.
    fn forget(&mut self, node: &NodeName) {
        self.explore.forget(node);
        self.passive.remove(node);
        self.contacts.remove(node);
        self.recent.retain(|p| p.name() != node);
        self.pending.remove(node);
        self.opportunistic.remove(node);
    }

    /// Asks passive peers to become neighbors until enough requests are out to reach
    /// `active_min` (at least one when the active view is empty). A candidate that refused is
    /// not asked again before the next promotion tick, so two nodes never ping-pong.
    fn promote(&mut self, out: &mut Vec<OverlayOutput>) {
        if self.left {
            return;
        }
        let want = self.cfg.active_min.max(1);
        let high = self.active.is_empty();
        self.refill_from_contacts();
        while self.active.len() + self.pending.len() < want {
            let candidates: Vec<NodeName> = self
                .passive
                .keys()
                .filter(|n| !self.pending.contains(*n) && !self.refused.contains(*n))
                .cloned()
                .collect();
            let Some(c) = self.pick(&candidates).cloned() else {
                break;
            };
            let peer = self.passive[&c].clone();
            self.pending.insert(c);
            self.send(&peer, HvMsg::NeighborRequest { high }, out);
        }
    }

    /// When the passive view is empty, the contacts this node joined through and its last
    /// few active neighbors become passive candidates again: the only knowledge left of the
    /// rest of the cluster (after long partitions or many failures).
    fn refill_from_contacts(&mut self) {
        if self.passive.is_empty() {
            let contacts: Vec<PeerInfo> = self
                .contacts
                .values()
                .chain(self.recent.iter())
                .filter(|c| !self.active.contains_key(c.name()))
                .cloned()
                .collect();
            self.integrate(&contacts, &BTreeSet::new());
        }
    }

    /// Between `active_min` and a full view, one low-priority request per promotion tick to a
    /// random passive peer: peers with room accept, full ones decline. Views thus fill up over
    /// time (more paths, more resilience) and two overlays whose nodes have room find each
    /// other once a partition heals.
    fn fill(&mut self, out: &mut Vec<OverlayOutput>) {
        self.refill_from_contacts();
        let candidates: Vec<NodeName> = self
            .passive
            .keys()
            .filter(|n| !self.pending.contains(*n) && !self.refused.contains(*n))
            .cloned()
            .collect();
        if let Some(c) = self.pick(&candidates).cloned() {
            let peer = self.passive[&c].clone();
            self.pending.insert(c.clone());
            self.opportunistic.insert(c);
            self.send(&peer, HvMsg::NeighborRequest { high: false }, out);
        }
    }

    /// With probability shuffle_interval / rewire_interval per shuffle, a node whose active
    /// view is full asks a random passive peer to become a neighbor with high priority.
    fn maybe_rewire(&mut self, out: &mut Vec<OverlayOutput>) {
        if self.cfg.rewire_interval.is_zero() || !self.is_full() || !self.pending.is_empty() {
            return;
        }
        let p = self.cfg.shuffle_interval.as_secs_f64() / self.cfg.rewire_interval.as_secs_f64();
        if !self.rng.gen_bool(p.clamp(0.0, 1.0)) {
            return;
        }
        self.refill_from_contacts();
        let candidates: Vec<NodeName> = self.passive.keys().cloned().collect();
        if let Some(c) = self.pick(&candidates).cloned() {
            let peer = self.passive[&c].clone();
            self.pending.insert(c);
            self.send(&peer, HvMsg::NeighborRequest { high: true }, out);
        }
    }

    /// This node, `shuffle_k_active` active peers other than `to` and `shuffle_k_passive`
    /// passive peers.
    fn shuffle_sample(&mut self, to: &NodeName) -> Vec<PeerInfo> {
        let ka = self.sample_of(
            self.active.keys().filter(|n| *n != to).cloned().collect(),
            self.cfg.shuffle_k_active,
        );
        let kp = self.sample_of(
            self.passive.keys().cloned().collect(),
            self.cfg.shuffle_k_passive,
        );
        let mut sample = vec![self.local.clone()];
        sample.extend(ka.iter().map(|n| self.active[n].clone()));
        sample.extend(kp.iter().map(|n| self.passive[n].clone()));
        sample
    }

    /// Sends a shuffle straight to each remembered node the explorer picks this period (see
    /// `explore`): it answers with a sample of its own part of the cluster.
    fn explore(&mut self, out: &mut Vec<OverlayOutput>) {
        let short = self.active.len() < self.cfg.active_min.max(1);
        let (active, passive) = (&self.active, &self.passive);
        let targets = self.explore.tick(
            short,
            |n| active.contains_key(n) || passive.contains_key(n),
            &mut *self.rng,
        );
        for to in targets {
            let sample = self.shuffle_sample(to.name());
            self.send(
                &to,
                HvMsg::Shuffle {
                    origin: self.local.clone(),
                    ttl: 1,
                    sample,
                },
                out,
            );
        }
    }

    fn shuffle(&mut self, out: &mut Vec<OverlayOutput>) {
        let active: Vec<NodeName> = self.active.keys().cloned().collect();
        let Some(target) = self.pick(&active).cloned() else {
            return;
        };
        let sample = self.shuffle_sample(&target);
        self.last_sample = sample.iter().map(|p| p.name().clone()).collect();
        let to = self.active[&target].clone();
        self.send(
            &to,
            HvMsg::Shuffle {
                origin: self.local.clone(),
                ttl: self.cfg.arwl,
                sample,
            },
            out,
        );
    }

    fn on_hv(
        &mut self,
        from: &PeerInfo,
        msg: HvMsg,
        out: &mut Vec<OverlayOutput>,
    ) -> Result<(), OverlayError> {
        let me = self.me().clone();
        match msg {
            HvMsg::Join { peer } => {
                if peer.name() != from.name() {
                    return Err(OverlayError::rejected(
                        "join",
                        format!("{} sent a join for {}", from.name(), peer.name()),
                    ));
                }
                if self.left {
                    self.send(from, HvMsg::Disconnect, out);
                    return Ok(());
                }
                self.add_active(&peer, out);
                let others: Vec<PeerInfo> = self
                    .active
                    .values()
                    .filter(|p| p.name() != peer.name())
                    .cloned()
                    .collect();
                for p in others {
                    self.send(
                        &p,
                        HvMsg::ForwardJoin {
                            peer: peer.clone(),
                            ttl: self.cfg.arwl,
                        },
                        out,
                    );
                }
            }
            HvMsg::ForwardJoin { peer, ttl } => {
                if peer.name() == &me || self.left || self.active.contains_key(peer.name()) {
                    return Ok(());
                }
                let next: Vec<NodeName> = self
                    .active
                    .keys()
                    .filter(|n| *n != from.name() && *n != peer.name())
                    .cloned()
                    .collect();
                if ttl == 0 || self.active.len() <= 1 || next.is_empty() {
                    self.add_active(&peer, out);
                    if self.active.contains_key(peer.name()) {
                        self.send(&peer, HvMsg::ForwardJoinAccepted, out);
                    }
                } else {
                    if ttl == self.cfg.prwl {
                        self.add_passive(&peer);
                    }
                    let n = self.pick(&next).cloned().expect("next is not empty");
                    let to = self.active[&n].clone();
                    self.send(&to, HvMsg::ForwardJoin { peer, ttl: ttl - 1 }, out);
                }
            }
            HvMsg::ForwardJoinAccepted => {
                if self.left {
                    self.send(from, HvMsg::Disconnect, out);
                } else {
                    self.add_active(from, out);
                }
            }
            HvMsg::NeighborRequest { high } => {
                let accept = !self.left
                    && (self.active.contains_key(from.name())
                        || high
                        || !self.is_full()
                        || self.reserved_slot_for(from).is_some());
                if accept {
                    self.add_active(from, out);
                    self.pending.remove(from.name());
                }
                let accepted = self.active.contains_key(from.name());
                self.send(from, HvMsg::NeighborReply { accepted }, out);
            }
            HvMsg::NeighborReply { accepted } => {
                let asked = self.pending.remove(from.name());
                let opportunistic = self.opportunistic.remove(from.name());
                if accepted {
                    let known = self.active.contains_key(from.name());
                    if asked && !self.left && !(opportunistic && self.is_full() && !known) {
                        self.add_active(from, out);
                    } else if !known {
                        // An answer we no longer want: undo it on the other side.
                        self.send(from, HvMsg::Disconnect, out);
                    }
                } else if asked {
                    self.refused.insert(from.name().clone());
                    self.promote(out);
                }
            }
            HvMsg::Disconnect => {
                if self.drop_active(from.name(), false, out).is_some() {
                    self.add_passive(from);
                    if self.active.is_empty() {
                        self.promote(out);
                    }
                }
            }
            HvMsg::Leave { handover } => {
                if handover.len() > MAX_SAMPLE {
                    return Err(OverlayError::rejected("leave", "handover too large"));
                }
                if !self.left {
                    let handover: Vec<PeerInfo> = handover
                        .into_iter()
                        .filter(|p| p.name() != from.name())
                        .collect();
                    self.integrate(&handover, &BTreeSet::new());
                }
                self.forget(from.name());
                if self.drop_active(from.name(), false, out).is_some() {
                    self.promote(out);
                }
            }
            HvMsg::Shuffle {
                origin,
                ttl,
                sample,
            } => {
                if sample.len() > MAX_SAMPLE {
                    return Err(OverlayError::rejected("shuffle", "sample too large"));
                }
                if origin.name() == &me || self.left {
                    return Ok(());
                }
                let ttl = ttl.saturating_sub(1);
                let next: Vec<NodeName> = self
                    .active
                    .keys()
                    .filter(|n| *n != from.name() && *n != origin.name())
                    .cloned()
                    .collect();
                if ttl > 0 && self.active.len() > 1 && !next.is_empty() {
                    let n = self.pick(&next).cloned().expect("next is not empty");
                    let to = self.active[&n].clone();
                    self.send(
                        &to,
                        HvMsg::Shuffle {
                            origin,
                            ttl,
                            sample,
                        },
                        out,
                    );
                } else {
                    let offered: BTreeSet<&NodeName> = sample.iter().map(|p| p.name()).collect();
                    let mine: Vec<NodeName> = self
                        .passive
                        .keys()
                        .filter(|n| !offered.contains(n))
                        .cloned()
                        .collect();
                    let reply_names = self.sample_of(mine, sample.len());
                    let reply: Vec<PeerInfo> = reply_names
                        .iter()
                        .map(|n| self.passive[n].clone())
                        .collect();
                    let sent: BTreeSet<NodeName> = reply_names.into_iter().collect();
                    self.send(&origin, HvMsg::ShuffleReply { sample: reply }, out);
                    self.integrate(&sample, &sent);
                }
            }
            HvMsg::ShuffleReply { sample } => {
                if sample.len() > MAX_SAMPLE {
                    return Err(OverlayError::rejected("shuffle reply", "sample too large"));
                }
                let sent = std::mem::take(&mut self.last_sample);
                self.integrate(&sample, &sent);
                // A node this node explored answered: it is alive, a candidate too, and may be
                // in another island: while below `active_min`, this node asks it to be
                // a neighbour at once (the bridge between the islands), with priority when
                // this node has no neighbour at all, as a promotion would.
                let explored = self.explore.answered(from.name());
                if explored {
                    self.integrate(std::slice::from_ref(from), &sent);
                }
                let short = self.active.len() < self.cfg.active_min.max(1);
                if explored
                    && short
                    && !self.left
                    && !self.active.contains_key(from.name())
                    && self.pending.insert(from.name().clone())
                {
                    let high = self.active.is_empty();
                    self.send(from, HvMsg::NeighborRequest { high }, out);
                }
            }
            HvMsg::KeepActive => {
                if self.left {
                    self.send(from, HvMsg::Disconnect, out);
                } else if !self.active.contains_key(from.name()) {
                    if self.is_full() && self.reserved_slot_for(from).is_none() {
                        self.send(from, HvMsg::Disconnect, out);
                    } else {
                        self.add_active(from, out);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Overlay for HyParView {
    fn kind(&self) -> OverlayKind {
        OverlayKind::HyParView
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn start(&mut self, now: Instant, out: &mut Vec<OverlayOutput>) {
        let s = self.jitter(self.cfg.shuffle_interval);
        out.push(OverlayOutput::SetTimer {
            timer: OverlayTimer::Shuffle,
            at: now + s,
        });
        let p = self.jitter(self.cfg.random_promotion_interval);
        out.push(OverlayOutput::SetTimer {
            timer: OverlayTimer::Promotion,
            at: now + p,
        });
        out.push(OverlayOutput::MembersChanged);
    }

    fn join(&mut self, contact: &PeerInfo, _now: Instant, out: &mut Vec<OverlayOutput>) {
        if contact.name() == self.me() {
            return;
        }
        if self.left {
            self.left = false;
            out.push(OverlayOutput::MembersChanged);
        }
        self.contacts
            .insert(contact.name().clone(), contact.clone());
        self.add_active(contact, out);
        let me = self.local.clone();
        self.send(contact, HvMsg::Join { peer: me }, out);
    }

    fn leave(&mut self, _now: Instant, out: &mut Vec<OverlayOutput>) {
        let active: Vec<PeerInfo> = self.active.values().cloned().collect();
        // Each neighbor gets the other neighbors and a few passive peers: the leaver may have
        // been its only link to the cluster (a joiner whose walks had not landed yet).
        let passive: Vec<NodeName> = self.passive.keys().cloned().collect();
        let spare: Vec<PeerInfo> = self
            .sample_of(passive, self.cfg.shuffle_k_passive)
            .iter()
            .map(|n| self.passive[n].clone())
            .collect();
        for p in &active {
            let handover: Vec<PeerInfo> = active
                .iter()
                .filter(|o| o.name() != p.name())
                .chain(spare.iter())
                .take(MAX_SAMPLE)
                .cloned()
                .collect();
            self.send(p, HvMsg::Leave { handover }, out);
        }
        for p in &active {
            self.drop_active(p.name(), false, out);
        }
        self.passive.clear();
        self.pending.clear();
        self.opportunistic.clear();
        self.left = true;
        out.push(OverlayOutput::MembersChanged);
    }

    fn remove(&mut self, node: &NodeName, now: Instant, out: &mut Vec<OverlayOutput>) {
        if node == self.me() {
            return self.leave(now, out);
        }
        self.forget(node);
        if self.drop_active(node, true, out).is_some() {
            self.passive.remove(node);
            self.promote(out);
        }
    }

    fn update_members(&mut self, specs: &[PeerInfo], _now: Instant, out: &mut Vec<OverlayOutput>) {
        // As in Partisan: new candidates join the passive view; promotion does the rest.
        self.integrate(specs, &BTreeSet::new());
        if self.active.len() < self.cfg.active_min {
            self.promote(out);
        }
    }

    fn on_message(
        &mut self,
        from: &PeerInfo,
        msg: OverlayMsg,
        _now: Instant,
        out: &mut Vec<OverlayOutput>,
    ) -> Result<(), OverlayError> {
        match msg {
            OverlayMsg::HyParView(m) => self.on_hv(from, m, out),
            other => Err(OverlayError::rejected(
                "overlay message",
                format!("a {} message sent to a hyparview node", other.kind()),
            )),
        }
    }

    fn on_peer_up(&mut self, peer: &PeerInfo, _now: Instant, _out: &mut Vec<OverlayOutput>) {
        // Refresh what we know of the peer (its creation and tag come from the handshake).
        if let Some(p) = self.active.get_mut(peer.name()) {
            if peer.creation >= p.creation {
                *p = peer.clone();
            }
        }
    }

    fn on_peer_down(&mut self, node: &NodeName, _now: Instant, out: &mut Vec<OverlayOutput>) {
        // The paper forgets a failed neighbor. A lost connection may also be a partition, so
        // the neighbor stays a passive candidate: if it is dead, the first attempt to promote
        // it reports it unreachable and drops it; if it was cut off, it is how the two sides
        // find each other again once the partition heals.
        //
        // The peer is told (a Disconnect, sent once a lane is up again): its lanes may have
        // closed cleanly just after it became a neighbour again (its NeighborRequest arrived on
        // a lane that was closing), and it would otherwise keep this node in its active view
        // alone until its next KeepActive.
        if self.drop_active(node, true, out).is_some() {
            // Not asked again before the next promotion tick: it just failed.
            self.refused.insert(node.clone());
            self.promote(out);
        }
    }

    fn on_unreachable(&mut self, node: &NodeName, _now: Instant, out: &mut Vec<OverlayOutput>) {
        self.explore.failed(node);
        let was_pending = self.pending.remove(node);
        self.opportunistic.remove(node);
        self.passive.remove(node);
        // Not tried again before the next promotion tick (a contact may be re-added to the
        // passive view as a last resort; this keeps that from looping).
        self.refused.insert(node.clone());
        let was_active = self.drop_active(node, false, out).is_some();
        if was_pending || was_active {
            self.promote(out);
        }
    }

    fn on_timer(&mut self, timer: OverlayTimer, now: Instant, out: &mut Vec<OverlayOutput>) {
        match timer {
            OverlayTimer::Shuffle => {
                let d = self.jitter(self.cfg.shuffle_interval);
                out.push(OverlayOutput::SetTimer { timer, at: now + d });
                if self.left {
                    return;
                }
                self.shuffle(out);
                self.explore(out);
                self.maybe_rewire(out);
                let active: Vec<PeerInfo> = self.active.values().cloned().collect();
                for p in &active {
                    self.send(p, HvMsg::KeepActive, out);
                }
            }
            OverlayTimer::Promotion => {
                let d = self.jitter(self.cfg.random_promotion_interval);
                out.push(OverlayOutput::SetTimer { timer, at: now + d });
                // Requests unanswered for a whole period are forgotten (their answer, if it
                // ever comes, is undone by a Disconnect).
                self.pending.clear();
                self.opportunistic.clear();
                self.refused.clear();
                if self.cfg.random_promotion {
                    if self.active.len() < self.cfg.active_min {
                        self.promote(out);
                    } else if !self.is_full() {
                        self.fill(out);
                    }
                }
            }
            OverlayTimer::Periodic | OverlayTimer::Push => {}
        }
    }

    fn members(&self) -> Vec<NodeName> {
        let mut v: Vec<NodeName> = self.active.keys().cloned().collect();
        if !self.left {
            v.push(self.me().clone());
        }
        v.sort();
        v
    }

    fn member_specs(&self) -> Vec<NodeSpec> {
        self.active.values().map(|p| p.spec.clone()).collect()
    }

    fn active_view(&self) -> Vec<NodeName> {
        self.active.keys().cloned().collect()
    }

    fn passive_view(&self) -> Vec<NodeName> {
        self.passive.keys().cloned().collect()
    }

    fn reserve(&mut self, tag: Tag) -> Result<(), OverlayError> {
        if self.reserved.contains_key(&tag) {
            return Ok(());
        }
        if self.reserved.len() >= self.cfg.active_max {
            return Err(OverlayError::Refused(format!(
                "cannot reserve {tag}: already {} reservations (active_max_size)",
                self.reserved.len()
            )));
        }
        let holder = self
            .active
            .values()
            .find(|p| p.tag.as_ref() == Some(&tag) && !self.holds_reservation(p.name()))
            .map(|p| p.name().clone());
        self.reserved.insert(tag, holder);
        Ok(())
    }
}

mod explore;
#[cfg(test)]
mod tests;
