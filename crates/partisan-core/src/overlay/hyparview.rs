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
            if name == self.me() || self.active.contains_key(name) {
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

    fn shuffle(&mut self, out: &mut Vec<OverlayOutput>) {
        let active: Vec<NodeName> = self.active.keys().cloned().collect();
        let Some(target) = self.pick(&active).cloned() else {
            return;
        };
        let ka = self.sample_of(
            active.iter().filter(|n| **n != target).cloned().collect(),
            self.cfg.shuffle_k_active,
        );
        let kp = self.sample_of(
            self.passive.keys().cloned().collect(),
            self.cfg.shuffle_k_passive,
        );
        let mut sample = vec![self.local.clone()];
        sample.extend(ka.iter().map(|n| self.active[n].clone()));
        sample.extend(kp.iter().map(|n| self.passive[n].clone()));
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
        if let Some(peer) = self.drop_active(node, false, out) {
            self.add_passive(&peer);
            // Not asked again before the next promotion tick: it just failed.
            self.refused.insert(node.clone());
            self.promote(out);
        }
    }

    fn on_unreachable(&mut self, node: &NodeName, _now: Instant, out: &mut Vec<OverlayOutput>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::test_net::{peer, Net};
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn node(name: &str, port: u16, cfg: HyParViewConfig) -> HyParView {
        HyParView::new(
            peer(name, port),
            cfg,
            Box::new(ChaCha8Rng::seed_from_u64(port as u64)),
        )
    }

    fn sends(out: &[OverlayOutput]) -> Vec<(String, HvMsg)> {
        out.iter()
            .filter_map(|o| match o {
                OverlayOutput::Send {
                    to,
                    msg: OverlayMsg::HyParView(m),
                } => Some((to.name().short_name().to_string(), m.clone())),
                _ => None,
            })
            .collect()
    }

    fn names(v: Vec<NodeName>) -> Vec<String> {
        v.iter().map(|n| n.short_name().to_string()).collect()
    }

    fn msg(h: &mut HyParView, from: &PeerInfo, m: HvMsg) -> Vec<OverlayOutput> {
        let mut out = vec![];
        h.on_message(from, OverlayMsg::HyParView(m), Instant::ZERO, &mut out)
            .unwrap();
        out
    }

    /// A node whose active view holds `active` and passive view `passive` (by port).
    fn with_views(active: &[u16], passive: &[u16], cfg: HyParViewConfig) -> HyParView {
        let mut h = node("me", 1, cfg);
        let mut out = vec![];
        for &p in active {
            h.add_active(&peer(&format!("a{p}"), p), &mut out);
        }
        for &p in passive {
            h.add_passive(&peer(&format!("p{p}"), p));
        }
        h
    }

    #[test]
    fn rule_4_1_join_contact_adds_joiner_and_forwards_join_to_other_active_peers() {
        let mut h = with_views(&[10, 11], &[], HyParViewConfig::default());
        let j = peer("joiner", 50);
        let out = msg(&mut h, &j, HvMsg::Join { peer: j.clone() });
        assert!(h.active.contains_key(j.name()));
        assert!(out.contains(&OverlayOutput::Connect(j.spec.clone())));
        let fj: Vec<_> = sends(&out)
            .into_iter()
            .filter(|(_, m)| matches!(m, HvMsg::ForwardJoin { ttl: 6, .. }))
            .map(|(to, _)| to)
            .collect();
        assert_eq!(fj, vec!["a10", "a11"]);
    }

    #[test]
    fn rule_4_1_joiner_adds_its_contact_at_once() {
        let mut h = node("me", 1, HyParViewConfig::default());
        let c = peer("contact", 2);
        let mut out = vec![];
        h.join(&c, Instant::ZERO, &mut out);
        assert_eq!(names(h.active_view()), vec!["contact"]);
        assert!(matches!(sends(&out)[0].1, HvMsg::Join { .. }));
    }

    #[test]
    fn rule_4_1_forward_join_with_ttl_zero_joins_the_active_view_and_tells_the_joiner() {
        let mut h = with_views(&[10, 11, 12], &[], HyParViewConfig::default());
        let j = peer("joiner", 50);
        let out = msg(
            &mut h,
            &peer("a10", 10),
            HvMsg::ForwardJoin {
                peer: j.clone(),
                ttl: 0,
            },
        );
        assert!(h.active.contains_key(j.name()));
        assert_eq!(
            sends(&out),
            vec![("joiner".into(), HvMsg::ForwardJoinAccepted)]
        );
    }

    #[test]
    fn rule_4_1_forward_join_with_a_single_active_peer_is_accepted() {
        let mut h = with_views(&[10], &[], HyParViewConfig::default());
        let j = peer("joiner", 50);
        msg(
            &mut h,
            &peer("a10", 10),
            HvMsg::ForwardJoin {
                peer: j.clone(),
                ttl: 4,
            },
        );
        assert!(h.active.contains_key(j.name()));
    }

    #[test]
    fn rule_4_1_forward_join_at_prwl_goes_to_passive_and_walks_on_excluding_the_sender() {
        let mut h = with_views(&[10, 11], &[], HyParViewConfig::default());
        let j = peer("joiner", 50);
        let out = msg(
            &mut h,
            &peer("a10", 10),
            HvMsg::ForwardJoin {
                peer: j.clone(),
                ttl: 6,
            },
        );
        assert!(h.passive.contains_key(j.name()));
        assert!(!h.active.contains_key(j.name()));
        assert_eq!(
            sends(&out),
            vec![(
                "a11".into(),
                HvMsg::ForwardJoin {
                    peer: j.clone(),
                    ttl: 5
                }
            )]
        );
        // Below PRWL it only walks.
        let j2 = peer("joiner2", 51);
        msg(
            &mut h,
            &peer("a10", 10),
            HvMsg::ForwardJoin {
                peer: j2.clone(),
                ttl: 3,
            },
        );
        assert!(!h.passive.contains_key(j2.name()));
    }

    #[test]
    fn rule_4_1_full_active_view_evicts_a_random_peer_with_a_disconnect() {
        let cfg = HyParViewConfig {
            active_max: 3,
            ..Default::default()
        };
        let mut h = with_views(&[10, 11, 12], &[], cfg);
        let j = peer("joiner", 50);
        let out = msg(&mut h, &j, HvMsg::Join { peer: j.clone() });
        assert_eq!(h.active.len(), 3);
        assert!(h.active.contains_key(j.name()));
        let evicted: Vec<_> = sends(&out)
            .into_iter()
            .filter(|(_, m)| *m == HvMsg::Disconnect)
            .collect();
        assert_eq!(evicted.len(), 1);
        let victim = NodeName::new(&format!("{}@h", evicted[0].0)).unwrap();
        assert!(
            h.passive.contains_key(&victim),
            "evicted peer is kept as passive"
        );
        assert!(out.contains(&OverlayOutput::Disconnect(victim)));
    }

    #[test]
    fn rule_4_1_disconnect_moves_the_sender_to_the_passive_view() {
        let mut h = with_views(&[10, 11], &[], HyParViewConfig::default());
        let a10 = peer("a10", 10);
        let out = msg(&mut h, &a10, HvMsg::Disconnect);
        assert!(!h.active.contains_key(a10.name()));
        assert!(h.passive.contains_key(a10.name()));
        assert!(out.contains(&OverlayOutput::Disconnect(a10.name().clone())));
    }

    #[test]
    fn rule_4_2_failed_active_peer_is_replaced_from_the_passive_view() {
        let mut h = with_views(&[10, 11], &[20, 21, 22], HyParViewConfig::default());
        let mut out = vec![];
        h.on_peer_down(peer("a10", 10).name(), Instant::ZERO, &mut out);
        assert!(!h.active.contains_key(peer("a10", 10).name()));
        assert!(
            h.passive.contains_key(peer("a10", 10).name()),
            "a lost neighbor stays a candidate (a partition may end) until found unreachable"
        );
        let reqs: Vec<_> = sends(&out)
            .into_iter()
            .filter(|(_, m)| *m == HvMsg::NeighborRequest { high: false })
            .collect();
        // One active peer left, min 3: two low-priority requests out.
        assert_eq!(reqs.len(), 2);
        assert!(reqs.iter().all(|(to, _)| to.starts_with('p')));
    }

    #[test]
    fn rule_4_2_an_empty_active_view_asks_with_high_priority() {
        let mut h = with_views(&[10], &[20], HyParViewConfig::default());
        let mut out = vec![];
        h.on_peer_down(peer("a10", 10).name(), Instant::ZERO, &mut out);
        assert_eq!(
            sends(&out),
            vec![("p20".into(), HvMsg::NeighborRequest { high: true })]
        );
    }

    #[test]
    fn rule_4_2_low_priority_requests_need_room_high_ones_always_succeed() {
        let cfg = HyParViewConfig {
            active_max: 2,
            ..Default::default()
        };
        let mut h = with_views(&[10, 11], &[], cfg);
        let r = peer("req", 30);
        let out = msg(&mut h, &r, HvMsg::NeighborRequest { high: false });
        assert_eq!(
            sends(&out),
            vec![("req".into(), HvMsg::NeighborReply { accepted: false })]
        );
        assert!(!h.active.contains_key(r.name()));
        let out = msg(&mut h, &r, HvMsg::NeighborRequest { high: true });
        assert!(sends(&out).contains(&("req".into(), HvMsg::NeighborReply { accepted: true })));
        assert!(h.active.contains_key(r.name()));
        assert_eq!(h.active.len(), 2);
    }

    #[test]
    fn rule_4_2_a_rejected_or_unreachable_candidate_makes_room_for_the_next_one() {
        let mut h = with_views(&[10, 11], &[20, 21], HyParViewConfig::default());
        let mut out = vec![];
        h.promote(&mut out);
        let first = sends(&out)[0].0.clone();
        let first_peer = peer(&first, first[1..].parse().unwrap());
        let out = msg(
            &mut h,
            &first_peer,
            HvMsg::NeighborReply { accepted: false },
        );
        let next = sends(&out);
        assert_eq!(next.len(), 1);
        assert_ne!(next[0].0, first);
        // The other candidate is unreachable: it leaves the passive view, nothing left to try.
        let other = peer(&next[0].0, next[0].0[1..].parse().unwrap());
        let mut out = vec![];
        h.on_unreachable(other.name(), Instant::ZERO, &mut out);
        assert!(!h.passive.contains_key(other.name()));
        // An accepted reply makes the candidate active.
        let out = msg(&mut h, &first_peer, HvMsg::NeighborRequest { high: false });
        assert!(sends(&out).contains(&(first.clone(), HvMsg::NeighborReply { accepted: true })));
        assert_eq!(h.active.len(), 3);
    }

    #[test]
    fn rule_4_3_shuffle_sample_is_self_k_active_and_k_passive() {
        let mut h = with_views(
            &[10, 11, 12, 13, 14],
            &[20, 21, 22, 23, 24, 25],
            HyParViewConfig::default(),
        );
        let mut out = vec![];
        h.on_timer(OverlayTimer::Shuffle, Instant::ZERO, &mut out);
        let shuffles: Vec<_> = sends(&out)
            .into_iter()
            .filter_map(|(to, m)| match m {
                HvMsg::Shuffle {
                    origin,
                    ttl,
                    sample,
                } => Some((to, origin, ttl, sample)),
                _ => None,
            })
            .collect();
        assert_eq!(shuffles.len(), 1);
        let (to, origin, ttl, sample) = &shuffles[0];
        assert!(to.starts_with('a'));
        assert_eq!(origin.name(), h.me());
        assert_eq!(*ttl, 6);
        assert_eq!(sample.len(), 1 + 3 + 4);
        assert_eq!(sample[0].name(), h.me());
        let a = sample
            .iter()
            .filter(|p| p.name().short_name().starts_with('a'))
            .count();
        assert_eq!(a, 3);
        // Every active peer also gets a KeepActive.
        assert_eq!(
            sends(&out)
                .iter()
                .filter(|(_, m)| *m == HvMsg::KeepActive)
                .count(),
            5
        );
    }

    #[test]
    fn rule_4_3_shuffle_walks_while_ttl_and_active_peers_remain() {
        let mut h = with_views(&[10, 11], &[], HyParViewConfig::default());
        let o = peer("origin", 40);
        let out = msg(
            &mut h,
            &peer("a10", 10),
            HvMsg::Shuffle {
                origin: o.clone(),
                ttl: 3,
                sample: vec![o.clone()],
            },
        );
        assert!(matches!(&sends(&out)[..], [(to, HvMsg::Shuffle { ttl: 2, .. })] if to == "a11"));
        assert!(h.passive.is_empty());
    }

    #[test]
    fn rule_4_3_accepted_shuffle_replies_to_the_origin_and_evicts_sent_entries_first() {
        let cfg = HyParViewConfig {
            passive_max: 3,
            ..Default::default()
        };
        let mut h = with_views(&[10], &[20, 21, 22], cfg);
        let o = peer("origin", 40);
        let s1 = peer("s1", 41);
        let out = msg(
            &mut h,
            &peer("a10", 10),
            HvMsg::Shuffle {
                origin: o.clone(),
                ttl: 1,
                sample: vec![o.clone(), s1.clone()],
            },
        );
        let reply = sends(&out);
        let HvMsg::ShuffleReply { sample } = &reply[0].1 else {
            panic!("expected a shuffle reply, got {reply:?}")
        };
        assert_eq!(reply[0].0, "origin");
        assert_eq!(sample.len(), 2);
        // The two passive peers sent away made room for the two received.
        assert!(h.passive.contains_key(o.name()) && h.passive.contains_key(s1.name()));
        for p in sample {
            assert!(
                !h.passive.contains_key(p.name()),
                "{} was sent and should be evicted",
                p.name()
            );
        }
        assert_eq!(h.passive.len(), 3);
    }

    #[test]
    fn rule_4_3_passive_view_never_holds_self_or_active_peers() {
        let mut h = with_views(&[10], &[], HyParViewConfig::default());
        let me = h.local.clone();
        h.integrate(
            &[me.clone(), peer("a10", 10), peer("x", 60)],
            &BTreeSet::new(),
        );
        assert_eq!(names(h.passive_view()), vec!["x"]);
    }

    #[test]
    fn explicit_leave_drops_the_leaver_everywhere_and_promotes() {
        let mut h = with_views(&[10, 11], &[20], HyParViewConfig::default());
        let leave = HvMsg::Leave { handover: vec![] };
        let out = msg(&mut h, &peer("a10", 10), leave);
        assert!(!h.active.contains_key(peer("a10", 10).name()));
        assert!(!h.passive.contains_key(peer("a10", 10).name()));
        assert!(sends(&out)
            .iter()
            .any(|(_, m)| matches!(m, HvMsg::NeighborRequest { .. })));
        // The leaving side tells its active peers and empties its views.
        let mut out = vec![];
        h.leave(Instant::ZERO, &mut out);
        let sent = sends(&out);
        assert!(!sent.is_empty());
        assert!(sent.iter().all(|(_, m)| matches!(m, HvMsg::Leave { .. })));
        assert!(h.active.is_empty() && h.passive.is_empty());
        assert!(h.members().is_empty());
    }

    #[test]
    fn a_leaver_hands_each_neighbor_its_other_peers() {
        let mut h = with_views(&[10, 11, 12], &[20, 21], HyParViewConfig::default());
        let mut out = vec![];
        h.leave(Instant::ZERO, &mut out);
        let sent = sends(&out);
        assert_eq!(sent.len(), 3);
        for (to, m) in sent {
            let HvMsg::Leave { handover } = m else {
                panic!("{m:?}")
            };
            let mut got: Vec<String> = handover
                .iter()
                .map(|p| p.name().short_name().to_string())
                .collect();
            got.sort();
            let mut want: Vec<String> = ["a10", "a11", "a12", "p20", "p21"]
                .iter()
                .filter(|n| **n != to)
                .map(|n| n.to_string())
                .collect();
            want.sort();
            assert_eq!(got, want, "handover to {to}");
        }
    }

    #[test]
    fn a_neighbor_left_with_nobody_else_takes_the_handover_and_asks_it() {
        // A joiner whose only link was its contact: the contact leaves before any walk landed.
        let mut h = with_views(&[10], &[], HyParViewConfig::default());
        let handover = vec![peer("x", 30), peer("me", 1), peer("a10", 10)];
        let out = msg(&mut h, &peer("a10", 10), HvMsg::Leave { handover });
        // Neither itself nor the leaver became candidates; the handed-over peer is asked with
        // high priority at once (the active view is empty).
        assert_eq!(names(h.passive_view()), vec!["x"]);
        assert_eq!(
            sends(&out),
            vec![("x".into(), HvMsg::NeighborRequest { high: true })]
        );
        // An oversized handover is refused whole.
        let mut h = with_views(&[10], &[], HyParViewConfig::default());
        let huge = vec![peer("z", 70); MAX_SAMPLE + 1];
        let mut out = vec![];
        let r = h.on_message(
            &peer("a10", 10),
            OverlayMsg::HyParView(HvMsg::Leave { handover: huge }),
            Instant::ZERO,
            &mut out,
        );
        assert!(r.is_err() && out.is_empty());
        assert_eq!(names(h.active_view()), vec!["a10"]);
    }

    #[test]
    fn a_removed_neighbor_is_not_brought_back_as_a_last_resort() {
        // a10 was an active neighbour (so among the recent ones kept for isolation).
        let mut h = with_views(&[10], &[], HyParViewConfig::default());
        let mut out = vec![];
        h.remove(peer("a10", 10).name(), Instant::ZERO, &mut out);
        let mut out = vec![];
        h.on_timer(OverlayTimer::Promotion, Instant::ZERO, &mut out);
        assert!(h.passive_view().is_empty(), "{:?}", h.passive_view());
        assert!(
            !sends(&out).iter().any(|(to, _)| to == "a10"),
            "{:?}",
            sends(&out)
        );
    }

    #[test]
    fn a_node_that_left_takes_no_handover() {
        let mut h = with_views(&[10], &[], HyParViewConfig::default());
        let mut out = vec![];
        h.leave(Instant::ZERO, &mut out);
        let handover = vec![peer("x", 30)];
        let out = msg(&mut h, &peer("a11", 11), HvMsg::Leave { handover });
        assert!(h.passive_view().is_empty() && h.active_view().is_empty());
        assert!(sends(&out).is_empty());
    }

    #[test]
    fn keep_active_repairs_an_asymmetric_view() {
        let cfg = HyParViewConfig {
            active_max: 2,
            ..Default::default()
        };
        let mut room = with_views(&[10], &[], cfg.clone());
        let x = peer("x", 60);
        msg(&mut room, &x, HvMsg::KeepActive);
        assert!(
            room.active.contains_key(x.name()),
            "added back when there is room"
        );
        let mut full = with_views(&[10, 11], &[], cfg);
        let out = msg(&mut full, &x, HvMsg::KeepActive);
        assert_eq!(sends(&out), vec![("x".into(), HvMsg::Disconnect)]);
    }

    #[test]
    fn an_isolated_node_rejoins_through_its_contact() {
        let mut h = node("me", 1, HyParViewConfig::default());
        let c = peer("contact", 2);
        let mut out = vec![];
        h.join(&c, Instant::ZERO, &mut out);
        out.clear();
        h.on_peer_down(c.name(), Instant::ZERO, &mut out);
        assert!(h.active.is_empty());
        // The lost contact is a passive candidate: asked with high priority at the next tick.
        out.clear();
        h.on_timer(OverlayTimer::Promotion, Instant::ZERO, &mut out);
        assert_eq!(
            sends(&out),
            vec![("contact".into(), HvMsg::NeighborRequest { high: true })]
        );
        // Found unreachable, it leaves the passive view but, being the only contact, comes
        // back as the last-resort candidate, tried again at the next tick (not in a loop).
        out.clear();
        h.on_unreachable(c.name(), Instant::ZERO, &mut out);
        assert!(sends(&out).is_empty(), "no immediate retry: {out:?}");
        h.on_timer(OverlayTimer::Promotion, Instant::ZERO, &mut out);
        assert_eq!(
            sends(&out),
            vec![("contact".into(), HvMsg::NeighborRequest { high: true })]
        );
    }

    #[test]
    fn an_opportunistic_acceptance_arriving_on_a_full_view_is_undone_not_evicting() {
        let cfg = HyParViewConfig {
            active_max: 2,
            active_min: 1,
            ..Default::default()
        };
        let mut h = with_views(&[10], &[20], cfg);
        let mut out = vec![];
        h.on_timer(OverlayTimer::Promotion, Instant::ZERO, &mut out);
        assert_eq!(
            sends(&out),
            vec![("p20".into(), HvMsg::NeighborRequest { high: false })]
        );
        // Meanwhile another peer takes the last slot.
        msg(
            &mut h,
            &peer("x", 30),
            HvMsg::NeighborRequest { high: false },
        );
        assert_eq!(h.active.len(), 2);
        let out = msg(
            &mut h,
            &peer("p20", 20),
            HvMsg::NeighborReply { accepted: true },
        );
        assert_eq!(sends(&out), vec![("p20".into(), HvMsg::Disconnect)]);
        assert_eq!(names(h.active_view()), vec!["a10", "x"], "nobody evicted");
        assert!(h.passive.contains_key(peer("p20", 20).name()));
    }

    #[test]
    fn a_node_that_lost_everything_falls_back_on_its_former_neighbors() {
        let mut h = with_views(&[10], &[], HyParViewConfig::default());
        let mut out = vec![];
        let a10 = peer("a10", 10);
        h.on_unreachable(a10.name(), Instant::ZERO, &mut out);
        assert!(h.active.is_empty() && h.contacts.is_empty());
        assert!(sends(&out).is_empty(), "not retried in the same tick");
        out.clear();
        h.on_timer(OverlayTimer::Promotion, Instant::ZERO, &mut out);
        assert_eq!(
            sends(&out),
            vec![("a10".into(), HvMsg::NeighborRequest { high: true })]
        );
    }

    #[test]
    fn reserved_slots_are_kept_for_their_tag_and_never_evicted() {
        let cfg = HyParViewConfig {
            active_max: 2,
            reservations: vec![Tag::new("db").unwrap()],
            ..Default::default()
        };
        let mut h = with_views(&[10], &[], cfg);
        // One slot used, one reserved: full for untagged peers.
        let out = msg(
            &mut h,
            &peer("x", 60),
            HvMsg::NeighborRequest { high: false },
        );
        assert_eq!(
            sends(&out),
            vec![("x".into(), HvMsg::NeighborReply { accepted: false })]
        );
        let mut db = peer("db1", 61);
        db.tag = Some(Tag::new("db").unwrap());
        let out = msg(&mut h, &db, HvMsg::NeighborRequest { high: false });
        assert!(sends(&out).contains(&("db1".into(), HvMsg::NeighborReply { accepted: true })));
        // A high-priority request evicts the unreserved peer, never the reserved one.
        let out = msg(
            &mut h,
            &peer("y", 62),
            HvMsg::NeighborRequest { high: true },
        );
        assert!(h.active.contains_key(db.name()));
        assert!(sends(&out)
            .iter()
            .any(|(to, m)| to == "a10" && *m == HvMsg::Disconnect));
        let mut limited = node(
            "l",
            3,
            HyParViewConfig {
                active_max: 1,
                ..Default::default()
            },
        );
        limited.reserve(Tag::new("a").unwrap()).unwrap();
        assert!(limited.reserve(Tag::new("b").unwrap()).is_err());
    }

    #[test]
    fn bad_messages_are_rejected_without_changing_state() {
        let mut h = with_views(&[10], &[20], HyParViewConfig::default());
        let before = (h.active_view(), h.passive_view());
        let mut out = vec![];
        let huge = vec![peer("z", 70); MAX_SAMPLE + 1];
        assert!(h
            .on_message(
                &peer("a10", 10),
                OverlayMsg::HyParView(HvMsg::ShuffleReply { sample: huge }),
                Instant::ZERO,
                &mut out
            )
            .is_err());
        let spoof = HvMsg::Join {
            peer: peer("victim", 71),
        };
        assert!(h
            .on_message(
                &peer("a10", 10),
                OverlayMsg::HyParView(spoof),
                Instant::ZERO,
                &mut out
            )
            .is_err());
        assert!(h
            .on_message(
                &peer("a10", 10),
                OverlayMsg::Static(crate::overlay::StaticMsg::Leaving),
                Instant::ZERO,
                &mut out
            )
            .is_err());
        assert_eq!((h.active_view(), h.passive_view()), before);
        assert!(out.is_empty());
    }

    // ---- property test: random joins, leaves, crashes, shuffles and timers ----

    #[derive(Debug, Clone)]
    enum Op {
        Join(usize, usize),
        Leave(usize),
        Crash(usize),
        Deliver(usize),
        Drop,
        Advance(u64),
    }

    fn op(n: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..n, 0..n).prop_map(|(a, b)| Op::Join(a, b)),
            1 => (0..n).prop_map(Op::Leave),
            1 => (0..n).prop_map(Op::Crash),
            6 => (1..40usize).prop_map(Op::Deliver),
            1 => Just(Op::Drop),
            3 => (100..12_000u64).prop_map(Op::Advance),
        ]
    }

    fn check_views(net: &Net, cfg: &HyParViewConfig) -> Result<(), TestCaseError> {
        for (i, n) in net.nodes.iter().enumerate() {
            if !net.alive[i] {
                continue;
            }
            let me = net.infos[i].name();
            let active = n.active_view();
            let passive = n.passive_view();
            prop_assert!(active.len() <= cfg.active_max, "active view over max");
            prop_assert!(passive.len() <= cfg.passive_max, "passive view over max");
            prop_assert!(
                !active.contains(me) && !passive.contains(me),
                "self in a view"
            );
            prop_assert!(
                active.iter().all(|a| !passive.contains(a)),
                "active and passive overlap"
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
        #[test]
        fn random_histories_keep_the_view_invariants_and_heal_symmetric(
            seed in any::<u64>(),
            n in 4usize..9,
            ops in proptest::collection::vec(op(8), 1..120),
        ) {
            let cfg = HyParViewConfig { active_max: 3, active_min: 2, passive_max: 5, ..Default::default() };
            let nodes = (0..n)
                .map(|i| {
                    let info = peer(&format!("n{i}"), i as u16 + 1);
                    let rng = ChaCha8Rng::seed_from_u64(seed ^ i as u64);
                    let node: Box<dyn Overlay> = Box::new(HyParView::new(info.clone(), cfg.clone(), Box::new(rng)));
                    (info, node)
                })
                .collect();
            let mut net = Net::new(nodes, seed);
            for op in ops {
                match op {
                    Op::Join(a, b) if a < n && b < n && a != b && net.alive[a] && net.alive[b] => net.join(a, b),
                    Op::Leave(a) if a < n && net.alive[a] => net.leave(a),
                    Op::Crash(a) if a < n && net.alive.iter().filter(|x| **x).count() > 2 => net.crash(a),
                    Op::Deliver(k) => { for _ in 0..k { net.step(true); } }
                    Op::Drop => net.drop_one(),
                    Op::Advance(ms) => net.advance(Duration::from_millis(ms)),
                    _ => {}
                }
                check_views(&net, &cfg)?;
            }
            // Heal: no more faults; deliver everything in order and let several shuffle
            // periods pass (KeepActive repairs asymmetry, promotion refills views).
            net.run();
            for _ in 0..8 {
                net.advance(Duration::from_secs(11));
                check_views(&net, &cfg)?;
            }
            net.run();
            for i in 0..n {
                if !net.alive[i] { continue; }
                for b in net.nodes[i].active_view() {
                    let j = net.index_of(&b);
                    prop_assert!(net.alive[j], "{} keeps crashed {} active", net.infos[i].name(), b);
                    prop_assert!(
                        net.nodes[j].active_view().contains(net.infos[i].name()),
                        "asymmetric: {} has {} but not the reverse", net.infos[i].name(), b
                    );
                    prop_assert!(net.is_linked(i, j));
                }
            }
        }
    }
}
