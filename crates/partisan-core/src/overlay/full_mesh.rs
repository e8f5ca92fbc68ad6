//! Full mesh: every member keeps a connection to every other member; the member set is the
//! add-wins CRDT map of [`crate::membership`].
//!
//! # Protocol
//!
//! * **Push (rumor).** Whatever a node learns or changes (its join, a removal, news merged from
//!   a peer) is coalesced for [`FullMeshConfig::push_delay`] and then sent once, as a
//!   [`FullMeshMsg::Delta`] holding only the news, to [`FullMeshConfig::fanout`] random members
//!   (not back to the node it came from when it came from a single one). A node forwards only
//!   what was new to it, so a rumor reaches everyone in O(log n) hops and then dies out.
//! * **Anti-entropy.** Every [`FullMeshConfig::periodic_interval`] (±25 % jitter) a node sends
//!   a 16-byte [`FullMeshMsg::Digest`] of its state to *one* random member. On a mismatch the
//!   receiver answers [`FullMeshMsg::Sync`] (its causal context), the digest's sender answers
//!   with everything the other lacks plus its own context (`Delta { reply: true }`), and the
//!   other answers with what the first lacks (`Delta { reply: false }`, never answered). Quiet
//!   traffic is therefore one digest per node per period, whatever the cluster size.
//! * **Join.** [`FullMeshMsg::Join`] carries the joiner's whole state; the contact merges it and
//!   answers with everything the joiner lacks (`Delta { reply: true }`, so the joiner can still
//!   send what it learned meanwhile, e.g. from a second contact): both sides converge in one
//!   round trip, and the contact's push spreads the joiner. The join is retried every period
//!   until it goes through, i.e. until the contact is a member here (its answer carries its
//!   entry). Nothing else from the contact ends the join: a push or a removal record it sent
//!   before it knew of the join, or an answer computed for an earlier state of this node, says
//!   nothing about whether the join went through. A contact that answers with the record of its
//!   own removal has left: the join cannot go through it for now, and it is no longer kept
//!   connected nor retried; the join is *stalled* (contact state `Left`).
//! * **Alone.** A member without any other member that was not removed (its contact left
//!   before answering, or everyone it knew left) is known to nobody: nothing could ever bring
//!   it back into a cluster. So it keeps sending a `Join` every period, over a temporary
//!   connection, to every contact it joined through (or was handed, below). A left contact
//!   answers each with the record of its removal and merges nothing; once it is back in a
//!   cluster, the next retry joins this node to it. Each retry is one small message each way
//!   (the state of a lone node is its own entry).
//! * **Stalled joins in a cluster.** A node in a cluster may be the only link between that
//!   cluster and the one its stalled join aimed at (others joined through it meanwhile). So
//!   every 10 periods (`PROBE_PERIODS`, ±25 %) it sends an 18-byte [`FullMeshMsg::Digest`] to
//!   each stalled contact, over a temporary connection. A contact still away answers with the
//!   record of its removal, which changes nothing (or teaches a newer removal record once); a
//!   contact back in some cluster answers with a `Sync`, and the two clusters merge through the
//!   ordinary anti-entropy exchange; the contact is then a member and the join done. A left
//!   node merges nothing, so a probe never pulls it back in. Joins that went through are never
//!   probed: such a contact left this very cluster (or was removed) and may have joined another
//!   one since, which chasing it would merge into this one.
//! * **Contacts** are forgotten when this node leaves (after the handover below) or removes
//!   them (also through [`Overlay::update_members`]); when it is removed itself, all but its
//!   own joins still under way.
//! * **Leave.** The node deletes its own entry and sends that removal at once to every member
//!   (and to the contacts of its joins under way). If some of its joins have not gone through
//!   (pending, left, or handed to it), it then sends each member a [`FullMeshMsg::Handover`]
//!   of up to [`MAX_HANDOVER`] of those contacts (its own first): their joins may have been the
//!   only link to another cluster, and members that joined through it depend on them. A member
//!   that has seen the removed dot adopts the contacts it does not know as stalled (`Handed`,
//!   probed like `Left` but by about 4 members per round (`PROBERS`), since every member holds
//!   them), up to [`MAX_HANDOVER`] unfinished joins in all; a handover arriving after its
//!   receiver left that cluster, or reached another one, is ignored. Then the node disconnects
//!   from all of them and forgets the cluster; `members()` is empty until the next `join`,
//!   which re-adds the node with a new dot. Until then it answers every membership message
//!   (answers and handovers excepted) with the record of its removal, so a peer that missed
//!   the leave learns it from the first digest it sends, and a probe learns it is still away.
//! * **Removed by another node.** A node that merges the removal of its own live entry resets to
//!   a singleton (a new dot of its own, every connection dropped, like Partisan restarting its
//!   manager). Until an explicit `join` (its own, or a peer's `Join`) it merges nothing from
//!   non-members, so gossip still in flight cannot pull it back in, and answers them only with
//!   the record of its removal, so a peer that missed the removal drops the old entry. It
//!   neither probes nor adopts contacts.
//!
//! A failed member stays a member (failure is not leave, as in Partisan); the driver keeps
//! redialing it.
//!
//! # Costs (postcard, with n members, ~20-byte names, one IPv4 address, default channels)
//!
//! Digest: 18 bytes. Sync: ~33 bytes per actor in the context (n while nobody restarted).
//! `Delta { reply: true }`: the context (~33 n) plus ~95 bytes per entry the receiver lacks
//! and ~30 bytes per removed name. Join: the whole state, ~130 n. A push: ~125 bytes per
//! changed name (~65 for a removal), sent once by each node that learns it, to `fanout` peers.
//! Handover: ~30 bytes plus ~95 per contact, once per member when a node with unfinished joins
//! leaves.
//!
//! A quiet healthy cluster sends one digest per node per period: 18 bytes every 10 s, 1.8
//! bytes/node/s at the default period (plus framing), whatever n. Stalled contacts add, while
//! they stay away, one 18-byte probe every ~10 periods per contact and prober (0.18 bytes/s
//! each at the default period), answered by a ~65-byte removal record; a cluster without
//! stalled contacts sends no probe at all.
//!
//! # Validation
//!
//! A message is refused whole, with no state change, when it belongs to another overlay, claims
//! to come from this node's own name, carries a malformed delta ([`Delta::validate`]), claims a
//! newer incarnation of this node or a write of its current incarnation it never made, gives
//! this node's own live dot another value, or is a handover of more than [`MAX_HANDOVER`]
//! contacts or with a dot that is not the sender's. Stale messages are not errors: an answer
//! computed for a context this node no longer has (see [`Membership::can_merge`]) is dropped
//! silently, and so is a handover from a node this one was never in a cluster with.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::{
    Overlay, OverlayError, OverlayKind, OverlayMsg, OverlayOutput, OverlayTimer, PeerInfo,
};
use crate::id::{Creation, NodeName, NodeSpec};
use crate::membership::{Actor, CausalContext, Delta, Dot, Entry, Membership, MAX_DELTA_ITEMS};
use crate::time::Instant;

/// Settings of the full-mesh overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullMeshConfig {
    /// Anti-entropy period (Partisan's `periodic_interval`, 10 s); jittered by ±25 %.
    pub periodic_interval: Duration,
    /// How long news is coalesced before it is pushed (20 ms).
    pub push_delay: Duration,
    /// How many random members each push goes to (Partisan's `fanout`, 5). Zero disables
    /// pushes: news then spreads by anti-entropy only.
    pub fanout: usize,
}

impl Default for FullMeshConfig {
    fn default() -> Self {
        FullMeshConfig {
            periodic_interval: Duration::from_secs(10),
            push_delay: Duration::from_millis(20),
            fanout: 5,
        }
    }
}

/// Protocol messages of the full mesh. See the module documentation for the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FullMeshMsg {
    /// "My state hashes to this"; answered by [`FullMeshMsg::Sync`] on a mismatch.
    Digest {
        /// [`Membership::hash`] of the sender.
        hash: [u8; 16],
    },
    /// "Here is what I have seen; send me what I lack"; answered by `Delta { reply: true }`.
    Sync {
        /// The sender's whole causal context.
        context: CausalContext,
    },
    /// Membership news to merge.
    Delta {
        /// The news.
        delta: Delta,
        /// Whether `delta.context` is the sender's whole context and the receiver should
        /// answer with what the sender lacks (`Delta { reply: false }`, when non-empty).
        reply: bool,
    },
    /// "I join your cluster": the sender's whole state; always answered with
    /// `Delta { reply: true }` holding what the sender lacks (and the receiver's whole context,
    /// so the joiner can answer with what the receiver still lacks).
    Join {
        /// The sender's whole state (its context is the sender's whole context).
        delta: Delta,
    },
    /// "I have left; these joins of mine have not gone through, carry them on": sent by a
    /// leaving node to each member, after the record of its removal. Never answered. Appended
    /// last: postcard encodes a variant by its index.
    Handover {
        /// The dot of the sender's entry it removed by leaving. Only a member that has seen it
        /// adopts the contacts (a late handover reaching a node that has since left that
        /// cluster changes nothing).
        dot: Dot,
        /// At most [`MAX_HANDOVER`] contacts; a longer list is rejected.
        contacts: Vec<PeerInfo>,
    },
}

/// Most contacts a [`FullMeshMsg::Handover`] may carry, and most unfinished joins (pending,
/// left or handed over) a node adopts from handovers.
pub const MAX_HANDOVER: usize = 16;

/// A member of a cluster probes its stalled contacts (see [`Join::Left`], [`Join::Handed`])
/// every this many periods, ±25 %.
const PROBE_PERIODS: u32 = 10;

/// How many members of a cluster probe a handed-over contact per probe round, on average:
/// a handover reaches every member, so each probes it with probability
/// `PROBERS / members` (always when the cluster has at most `PROBERS` members).
const PROBERS: usize = 4;

/// Where a join through a contact stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Join {
    /// Not answered yet: the contact is kept connected and the join retried every period.
    Pending,
    /// The contact answered that it has left, so the join cannot go through it for now. Not
    /// connected. Stalled: while this node is alone the join is retried every period;
    /// while it is in a cluster, the contact is probed with a digest every
    /// [`PROBE_PERIODS`] periods, which merges the two clusters once the contact is back in one.
    Left,
    /// An unfinished join (pending, left or handed over) of a member that left, handed over in
    /// its [`FullMeshMsg::Handover`]. Stalled, like `Left` (probed by about [`PROBERS`] members
    /// per round rather than by each holder).
    Handed,
    /// The contact has been a member here since: tried again only while this node is alone,
    /// never probed (it left this cluster, or was removed, and may have joined another one
    /// since: chasing it would merge that cluster into this one).
    Done,
}

impl Join {
    /// Whether the join is unfinished but not retried by `Join` messages while in a cluster.
    fn stalled(self) -> bool {
        matches!(self, Join::Left | Join::Handed)
    }
}

/// A contact this node joined through.
#[derive(Debug, Clone)]
struct Contact {
    /// Its last known spec and creation (kept up to date from its entry while a member).
    info: PeerInfo,
    join: Join,
}

impl Contact {
    /// The contact is a member with this entry: its join went through.
    fn joined(&mut self, entry: &Entry) {
        self.join = Join::Done;
        if self.info.spec != entry.spec || self.info.creation != entry.creation {
            self.info.spec = entry.spec.clone();
            self.info.creation = entry.creation;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In a cluster (possibly alone).
    Member,
    /// Left; not a member of anything until the next join.
    Left,
}

/// Where the news waiting to be pushed came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// Nothing pending.
    Nothing,
    /// Everything pending came from this peer.
    Peer(NodeName),
    /// Several peers, or a local change.
    Mixed,
}

/// The full-mesh overlay. See the module documentation.
///
/// Guarantees: members other than this node are exactly the nodes it asks the driver to keep
/// connected (plus the contacts of joins not answered yet); `members()` is sorted and includes
/// this node unless it has left; a message that fails validation changes no state. Given the
/// same inputs and RNG seed, outputs are identical.
pub struct FullMesh {
    local: PeerInfo,
    cfg: FullMeshConfig,
    rng: Box<dyn RngCore + Send>,
    state: Membership,
    phase: Phase,
    /// Reset after being removed: messages from non-members are not merged.
    isolated: bool,
    /// While isolated: the removed dot, shown to non-members that still count this node in.
    dismissed: Option<Dot>,
    /// Every contact this node joined through (since it last left or was removed), with its
    /// last known spec and where its join stands.
    contacts: BTreeMap<NodeName, Contact>,
    /// What the driver was last told to keep connected.
    connected: BTreeMap<NodeName, (NodeSpec, Creation)>,
    /// Members as last reported by `MembersChanged`.
    reported: Vec<NodeName>,
    /// Names with news not pushed yet.
    pending: BTreeSet<NodeName>,
    source: Source,
    push_armed: bool,
    /// Members whose connection was lost; a digest goes to them when they come back.
    lost: BTreeSet<NodeName>,
    /// Periods to skip before the next probe of the stalled contacts.
    probe_in: u32,
}

impl FullMesh {
    /// A node that is a member of its own singleton cluster: its entry is written at once,
    /// with the actor `(local.name(), local.creation)`. `rng` drives every random choice
    /// (seed it for reproducible runs).
    pub fn new(local: PeerInfo, config: FullMeshConfig, rng: Box<dyn RngCore + Send>) -> Self {
        let mut state = Membership::new();
        state.add(local.spec.clone(), local.creation);
        let reported = state.members();
        FullMesh {
            local,
            cfg: config,
            rng,
            state,
            phase: Phase::Member,
            isolated: false,
            dismissed: None,
            contacts: BTreeMap::new(),
            connected: BTreeMap::new(),
            reported,
            pending: BTreeSet::new(),
            source: Source::Nothing,
            push_armed: false,
            lost: BTreeSet::new(),
            probe_in: 0,
        }
    }

    /// The replicated membership state (empty but for this node's own history once it left).
    pub fn membership(&self) -> &Membership {
        &self.state
    }

    /// The configuration.
    pub fn config(&self) -> &FullMeshConfig {
        &self.cfg
    }

    /// Whether the node has left and not joined again.
    pub fn has_left(&self) -> bool {
        self.phase == Phase::Left
    }

    /// Whether the node was removed by another node and, until it joins again, merges nothing
    /// from non-members (it answers them with the record of its removal).
    pub fn is_isolated(&self) -> bool {
        self.isolated
    }

    fn me(&self) -> &NodeName {
        self.local.name()
    }

    fn actor(&self) -> Actor {
        Actor::new(self.me().clone(), self.local.creation)
    }

    /// Live entries of the other members, sorted by name.
    fn others(&self) -> impl Iterator<Item = &Entry> + '_ {
        let me = self.me();
        self.state
            .entries()
            .map(|(_, e)| e)
            .filter(move |e| e.name() != me)
    }

    fn has_others(&self) -> bool {
        self.others().next().is_some()
    }

    fn send(out: &mut Vec<OverlayOutput>, to: &NodeSpec, msg: FullMeshMsg) {
        out.push(OverlayOutput::Send {
            to: to.clone(),
            msg: OverlayMsg::FullMesh(msg),
        });
    }

    /// `d` ± 25 %.
    fn jitter(&mut self, d: Duration) -> Duration {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2);
        let spread = micros / 4;
        Duration::from_micros(micros - spread + self.rng.gen_range(0..=2 * spread))
    }

    /// Up to `k` distinct random other members, `exclude` left out.
    fn pick(&mut self, k: usize, exclude: Option<&NodeName>) -> Vec<NodeSpec> {
        let mut cands: Vec<NodeSpec> = self
            .others()
            .filter(|e| Some(e.name()) != exclude)
            .map(|e| e.spec.clone())
            .collect();
        let k = k.min(cands.len());
        for i in 0..k {
            let j = self.rng.gen_range(i..cands.len());
            cands.swap(i, j);
        }
        cands.truncate(k);
        cands
    }

    /// The whole state as a delta (what a node with an empty context lacks).
    fn full_state(&self) -> Delta {
        self.state.delta_for(&CausalContext::new())
    }

    fn arm_periodic(&mut self, now: Instant, out: &mut Vec<OverlayOutput>) {
        let d = self.jitter(self.cfg.periodic_interval);
        out.push(OverlayOutput::SetTimer {
            timer: OverlayTimer::Periodic,
            at: now + d,
        });
    }

    /// Queues news about `names` for the next push.
    fn note(
        &mut self,
        names: BTreeSet<NodeName>,
        from: Option<&NodeName>,
        now: Instant,
        out: &mut Vec<OverlayOutput>,
    ) {
        if names.is_empty() {
            return;
        }
        self.source = match (&self.source, from) {
            (Source::Nothing, Some(f)) => Source::Peer(f.clone()),
            (Source::Peer(p), Some(f)) if p == f => Source::Peer(f.clone()),
            _ => Source::Mixed,
        };
        self.pending.extend(names);
        if !self.push_armed {
            self.push_armed = true;
            out.push(OverlayOutput::SetTimer {
                timer: OverlayTimer::Push,
                at: now + self.cfg.push_delay,
            });
        }
    }

    /// Brings the driver's connections and the reported members in line with the state.
    /// Whether the connection kept for a node already matches what is wanted. Creation 0 is
    /// "unknown" (a contact): only a known change is a restart.
    fn same_conn(kept: Option<&(NodeSpec, Creation)>, want: &(NodeSpec, Creation)) -> bool {
        kept.is_some_and(|(s0, c0)| s0 == &want.0 && (*c0 == want.1 || *c0 == 0 || want.1 == 0))
    }

    fn reconcile(&mut self, out: &mut Vec<OverlayOutput>) {
        // A lost member that left or was removed is no longer waited for.
        let state = &self.state;
        self.lost.retain(|n| state.contains(n));
        for (name, c) in self.contacts.iter_mut() {
            if let Some(e) = self.state.get(name) {
                c.joined(e);
            }
        }
        let mut desired: BTreeMap<NodeName, (NodeSpec, Creation)> = BTreeMap::new();
        if self.phase == Phase::Member {
            for c in self.contacts.values().filter(|c| c.join == Join::Pending) {
                desired.insert(
                    c.info.name().clone(),
                    (c.info.spec.clone(), c.info.creation),
                );
            }
            for e in self.others() {
                desired.insert(e.name().clone(), (e.spec.clone(), e.creation));
            }
        }
        for name in self.connected.keys() {
            if !desired.contains_key(name) {
                out.push(OverlayOutput::Disconnect(name.clone()));
            }
        }
        for (name, want) in &desired {
            if !Self::same_conn(self.connected.get(name), want) {
                out.push(OverlayOutput::Connect(want.0.clone()));
            }
        }
        self.connected = desired;
        let members = self.members();
        if members != self.reported {
            self.reported = members;
            out.push(OverlayOutput::MembersChanged);
        }
    }

    /// Whether this node is a member with no other member, and was not removed: then nobody
    /// else knows its current entry, and only the contacts it joined through can bring it back
    /// into a cluster.
    fn alone(&self) -> bool {
        self.phase == Phase::Member && !self.isolated && !self.has_others()
    }

    /// Back to a singleton after learning this node was removed by another.
    fn reset(&mut self, out: &mut Vec<OverlayOutput>) {
        let me = self.me().clone();
        self.dismissed = self.state.context().max_dot_for(&me);
        self.state.forget_all_but(&me);
        self.state.add(self.local.spec.clone(), self.local.creation);
        self.isolated = true;
        // Removed by the cluster: coming back takes a join, not a retry of those that went
        // through, nor of those the cluster handed over. This node's own joins still under
        // way stay so.
        self.contacts
            .retain(|_, c| matches!(c.join, Join::Pending | Join::Left));
        self.pending.clear();
        self.source = Source::Nothing;
        self.reconcile(out);
    }

    fn end_isolation(&mut self) {
        self.isolated = false;
        self.dismissed = None;
    }

    /// Checks what a context says about this node: no newer incarnation of it, and no write of
    /// its current incarnation that it never made.
    fn check_claims(
        &self,
        what: &'static str,
        context: &CausalContext,
        entries: &[(Dot, Entry)],
    ) -> Result<(), OverlayError> {
        let own_counter = self.state.context().max_counter(&self.actor());
        for (actor, counter) in context.actors_of(self.me()) {
            if actor.creation > self.local.creation {
                return Err(OverlayError::rejected(
                    what,
                    format!("claims {actor}, a newer incarnation of this node"),
                ));
            }
            if actor.creation == self.local.creation && counter > own_counter {
                return Err(OverlayError::rejected(
                    what,
                    format!("claims write {counter} of {actor}, which made only {own_counter}"),
                ));
            }
        }
        if let Some((dot, entry)) = self.state.live(self.me()) {
            if entries.iter().any(|(d, e)| d == dot && e != entry) {
                return Err(OverlayError::rejected(
                    what,
                    format!("contradicts this node's own entry {dot}"),
                ));
            }
        }
        Ok(())
    }

    fn check_context(
        &self,
        what: &'static str,
        context: &CausalContext,
    ) -> Result<(), OverlayError> {
        if context.len() > MAX_DELTA_ITEMS {
            return Err(OverlayError::rejected(
                what,
                format!("context of {} items", context.len()),
            ));
        }
        self.check_claims(what, context, &[])
    }

    fn check_delta(&self, what: &'static str, delta: &Delta) -> Result<(), OverlayError> {
        delta
            .validate()
            .map_err(|e| OverlayError::rejected(what, e.to_string()))?;
        self.check_claims(what, &delta.context, &delta.entries)
    }

    fn check(&self, from: &NodeName, msg: &FullMeshMsg) -> Result<(), OverlayError> {
        match msg {
            FullMeshMsg::Digest { .. } => Ok(()),
            FullMeshMsg::Sync { context } => self.check_context("full-mesh sync", context),
            FullMeshMsg::Delta { delta, .. } => self.check_delta("full-mesh delta", delta),
            FullMeshMsg::Join { delta } => self.check_delta("full-mesh join", delta),
            FullMeshMsg::Handover { dot, contacts } => {
                let what = "full-mesh handover";
                if contacts.len() > MAX_HANDOVER {
                    return Err(OverlayError::rejected(
                        what,
                        format!("{} contacts, more than {MAX_HANDOVER}", contacts.len()),
                    ));
                }
                if dot.name() != from || dot.counter == 0 {
                    return Err(OverlayError::rejected(
                        what,
                        format!("dot {dot} is not an entry of the sender"),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Unfinished joins (pending, left or handed over).
    fn unfinished(&self) -> impl Iterator<Item = &Contact> + '_ {
        self.contacts.values().filter(|c| c.join != Join::Done)
    }

    /// Takes over the unfinished joins a member that left handed over, if this node was in a
    /// cluster with it (it has seen the dot of the entry it removed). Contacts that are members
    /// here or already contacts are skipped; at most [`MAX_HANDOVER`] unfinished joins are
    /// kept. Handed contacts are probed, never connected: adopting changes no connection.
    fn adopt(&mut self, from: &NodeName, dot: &Dot, contacts: Vec<PeerInfo>) {
        if self.isolated || !self.state.context().contains(dot) {
            return;
        }
        let mut room = MAX_HANDOVER.saturating_sub(self.unfinished().count());
        for info in contacts {
            if room == 0 {
                break;
            }
            let name = info.name();
            if name == self.me()
                || name == from
                || self.contacts.contains_key(name)
                || self.state.contains(name)
            {
                continue;
            }
            self.contacts.insert(
                name.clone(),
                Contact {
                    info,
                    join: Join::Handed,
                },
            );
            room -= 1;
        }
    }

    /// Every [`PROBE_PERIODS`] periods (±25 %), while in a cluster, sends a digest to each
    /// stalled contact (about [`PROBERS`] members of the cluster probe a handed-over one). A
    /// contact still away answers with the record of its removal; one back in a cluster, with
    /// a `Sync`, and the two clusters merge through the usual digest/sync/delta exchange.
    fn probe(&mut self, out: &mut Vec<OverlayOutput>) {
        if self.isolated || !self.contacts.values().any(|c| c.join.stalled()) {
            return;
        }
        if self.probe_in > 0 {
            self.probe_in -= 1;
            return;
        }
        let k = PROBE_PERIODS;
        self.probe_in = self.rng.gen_range(k - k / 4..=k + k / 4) - 1;
        let members = self.state.len();
        let mut targets = Vec::new();
        for c in self.contacts.values() {
            let probe = match c.join {
                Join::Left => true,
                Join::Handed => members <= PROBERS || self.rng.gen_range(0..members) < PROBERS,
                Join::Pending | Join::Done => false,
            };
            if probe && !self.state.contains(c.info.name()) {
                targets.push(c.info.spec.clone());
            }
        }
        let hash = self.state.hash();
        for spec in &targets {
            Self::send(out, spec, FullMeshMsg::Digest { hash });
        }
    }

    /// The answer to `Delta { delta, reply: true }` once merged (`before`: our context before
    /// the merge): what its sender lacks, or `None` when that is nothing. Removals the sender
    /// certainly applied already are left out: those it listed itself, and those of dots we
    /// learned from its own context (had it held such an entry, it would have sent it).
    fn answer(&self, delta: &Delta, before: &CausalContext) -> Option<Delta> {
        let mut answer = self.state.delta_for(&delta.context);
        let told: BTreeSet<&Dot> = delta.removed.iter().collect();
        answer
            .removed
            .retain(|d| before.contains(d) && !told.contains(d));
        let news = !answer.entries.is_empty()
            || !answer.removed.is_empty()
            || !delta.context.includes(&answer.context);
        news.then_some(answer)
    }

    /// Whether a message from `from` is heeded (isolated nodes heed members and contacts only).
    fn heeds(&self, from: &NodeName) -> bool {
        !self.isolated || self.state.contains(from) || self.contacts.contains_key(from)
    }

    /// Merges news from `from`; returns whether this node found itself removed (and reset).
    fn absorb(
        &mut self,
        from: &NodeName,
        delta: &Delta,
        now: Instant,
        out: &mut Vec<OverlayOutput>,
    ) -> bool {
        let had_others = self.has_others();
        let changes = self.state.merge_delta(delta);
        if !self.state.contains(self.me()) {
            self.reset(out);
            return true;
        }
        if self.has_others() {
            self.end_isolation();
        }
        // A node that was alone learned everything from `from`, which spreads it itself.
        let changed: Vec<NodeName> = changes
            .added
            .iter()
            .map(|e| e.name().clone())
            .chain(changes.removed.iter().cloned())
            .collect();
        if had_others {
            self.note(changes.learned, Some(from), now, out);
        }
        // Only the names the merge touched can change connections or members: the full
        // reconcile is O(members) and deltas arrive by the thousand in a join storm.
        self.reconcile_names(&changed, out);
        false
    }

    /// [`FullMesh::reconcile`] restricted to `names` (a merge's changes), while a member.
    fn reconcile_names(&mut self, names: &[NodeName], out: &mut Vec<OverlayOutput>) {
        if self.phase != Phase::Member {
            return self.reconcile(out);
        }
        // Compared with the members last reported, not with the connections: the contact of a
        // join is connected before it is a member.
        let mut members_changed = false;
        for name in names {
            if name == self.me() {
                continue;
            }
            let was_reported = self.reported.binary_search(name).is_ok();
            if let (Some(e), Some(contact)) = (self.state.get(name), self.contacts.get_mut(name)) {
                contact.joined(e);
            }
            // Wanted exactly as `reconcile` would: a member, else the contact of a pending join.
            let want = self
                .state
                .get(name)
                .map(|e| (e.spec.clone(), e.creation))
                .or_else(|| {
                    self.contacts
                        .get(name)
                        .filter(|c| c.join == Join::Pending)
                        .map(|c| (c.info.spec.clone(), c.info.creation))
                });
            match want {
                Some(want) => {
                    if !Self::same_conn(self.connected.get(name), &want) {
                        out.push(OverlayOutput::Connect(want.0.clone()));
                    }
                    self.connected.insert(name.clone(), want);
                }
                None => {
                    if self.connected.remove(name).is_some() {
                        out.push(OverlayOutput::Disconnect(name.clone()));
                    }
                }
            }
            let member = self.state.contains(name);
            if !member {
                self.lost.remove(name);
            }
            members_changed |= was_reported != member;
        }
        if members_changed {
            let members = self.members();
            if members != self.reported {
                self.reported = members;
                out.push(OverlayOutput::MembersChanged);
            }
        }
    }

    fn on_fm_message(
        &mut self,
        from: &PeerInfo,
        msg: FullMeshMsg,
        now: Instant,
        out: &mut Vec<OverlayOutput>,
    ) {
        if self.phase == Phase::Left {
            // Tell whoever still counts this node as a member (or probes it) that it left;
            // never answer an answer, so two left nodes cannot ping-pong, nor a handover.
            let answer = !matches!(
                msg,
                FullMeshMsg::Delta { reply: false, .. } | FullMeshMsg::Handover { .. }
            );
            let tombstone = self.state.delta_of([self.me()]);
            if answer && !tombstone.is_empty() {
                let msg = FullMeshMsg::Delta {
                    delta: tombstone,
                    reply: false,
                };
                Self::send(out, &from.spec, msg);
            }
            return;
        }
        let sender = from.name();
        if !matches!(msg, FullMeshMsg::Join { .. }) && !self.heeds(sender) {
            // Removed and isolated: whoever still counts this node in learns the removal (a
            // peer that never got it would otherwise keep the old entry forever). Never answer
            // an answer.
            if let (Some(dot), false) = (
                &self.dismissed,
                matches!(
                    msg,
                    FullMeshMsg::Delta { reply: false, .. } | FullMeshMsg::Handover { .. }
                ),
            ) {
                let mut delta = Delta {
                    removed: vec![dot.clone()],
                    ..Delta::default()
                };
                delta.context.insert(dot);
                let msg = FullMeshMsg::Delta {
                    delta,
                    reply: false,
                };
                Self::send(out, &from.spec, msg);
            }
            return;
        }
        if let FullMeshMsg::Delta { delta, .. } | FullMeshMsg::Join { delta } = &msg {
            // An answer computed for what this node knew before it forgot the cluster (or for
            // an earlier incarnation): stale, and unsafe to merge.
            if !self.state.can_merge(delta) {
                return;
            }
        }
        match msg {
            FullMeshMsg::Digest { hash } => {
                if hash != self.state.hash() {
                    let context = self.state.context().clone();
                    Self::send(out, &from.spec, FullMeshMsg::Sync { context });
                }
            }
            FullMeshMsg::Sync { context } => {
                let delta = self.state.delta_for(&context);
                Self::send(out, &from.spec, FullMeshMsg::Delta { delta, reply: true });
            }
            FullMeshMsg::Delta { delta, reply } => {
                let before = reply.then(|| self.state.context().clone());
                // Merging a contact's answer makes it a member, which ends its join
                // (`reconcile_names` marks it done).
                let reset = self.absorb(sender, &delta, now, out);
                if let (Some(before), false) = (before, reset) {
                    if let Some(answer) = self.answer(&delta, &before) {
                        let msg = FullMeshMsg::Delta {
                            delta: answer,
                            reply: false,
                        };
                        Self::send(out, &from.spec, msg);
                    }
                }
                // A contact that answers with the record of its own removal has left: the join
                // cannot go through it now. It is no longer kept connected, and retried only
                // while this node is alone. Anything else from a contact (a push, a removal
                // record of another node, ...) does not answer the join, which stays pending.
                if let Some(c) = self.contacts.get_mut(sender) {
                    if c.join == Join::Pending
                        && !self.state.contains(sender)
                        && delta.removed.iter().any(|d| d.name() == sender)
                    {
                        c.join = Join::Left;
                        self.reconcile(out);
                    }
                }
            }
            FullMeshMsg::Join { delta } => {
                self.absorb(sender, &delta, now, out);
                // An explicit join ends isolation, even one caused by this very message.
                self.end_isolation();
                // With `reply`, the joiner answers with whatever it learned meanwhile (e.g. from
                // another contact) and we lack.
                let answer = self.state.delta_for(&delta.context);
                let msg = FullMeshMsg::Delta {
                    delta: answer,
                    reply: true,
                };
                Self::send(out, &from.spec, msg);
            }
            FullMeshMsg::Handover { dot, contacts } => self.adopt(sender, &dot, contacts),
        }
    }
}

impl Overlay for FullMesh {
    fn kind(&self) -> OverlayKind {
        OverlayKind::FullMesh
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn start(&mut self, now: Instant, out: &mut Vec<OverlayOutput>) {
        self.arm_periodic(now, out);
    }

    fn join(&mut self, contact: &PeerInfo, _now: Instant, out: &mut Vec<OverlayOutput>) {
        if contact.name() == self.me() {
            return;
        }
        if self.phase == Phase::Left {
            self.phase = Phase::Member;
            self.state.add(self.local.spec.clone(), self.local.creation);
        }
        self.end_isolation();
        let mut c = Contact {
            info: contact.clone(),
            join: Join::Pending,
        };
        if let Some(e) = self.state.get(contact.name()) {
            c.joined(e);
        }
        self.contacts.insert(contact.name().clone(), c);
        let delta = self.full_state();
        Self::send(out, &contact.spec, FullMeshMsg::Join { delta });
        self.reconcile(out);
    }

    fn leave(&mut self, _now: Instant, out: &mut Vec<OverlayOutput>) {
        if self.phase == Phase::Left {
            return;
        }
        let me = self.me().clone();
        // The joins of this node that have not gone through are the cluster's too (members
        // may have joined through this node meanwhile): its members carry them on. Its own
        // first, then those it was handed.
        let own = self.state.live(&me).map(|(d, _)| d.clone());
        let mut unfinished: Vec<&Contact> = self.unfinished().collect();
        unfinished.sort_by_key(|c| c.join == Join::Handed);
        let handover: Vec<PeerInfo> = unfinished
            .into_iter()
            .take(MAX_HANDOVER)
            .map(|c| c.info.clone())
            .collect();
        let mut names = std::mem::take(&mut self.pending);
        self.source = Source::Nothing;
        self.state.remove(&me);
        names.insert(me.clone());
        let delta = self.state.delta_of(&names);
        // Contacts of joins under way too: they may have merged a join whose answer was lost.
        let mut targets: BTreeMap<NodeName, NodeSpec> = self
            .contacts
            .values()
            .filter(|c| c.join != Join::Done)
            .map(|c| (c.info.name().clone(), c.info.spec.clone()))
            .collect();
        targets.extend(self.others().map(|e| (e.name().clone(), e.spec.clone())));
        for spec in targets.values() {
            let msg = FullMeshMsg::Delta {
                delta: delta.clone(),
                reply: false,
            };
            Self::send(out, spec, msg);
        }
        if let (Some(dot), false) = (own, handover.is_empty()) {
            let members: Vec<NodeSpec> = self.others().map(|e| e.spec.clone()).collect();
            for spec in &members {
                let msg = FullMeshMsg::Handover {
                    dot: dot.clone(),
                    contacts: handover.clone(),
                };
                Self::send(out, spec, msg);
            }
        }
        self.phase = Phase::Left;
        self.end_isolation();
        self.contacts.clear();
        self.state.forget_all_but(&me);
        self.reconcile(out);
    }

    fn remove(&mut self, node: &NodeName, now: Instant, out: &mut Vec<OverlayOutput>) {
        if node == self.me() {
            return self.leave(now, out);
        }
        if self.phase == Phase::Left {
            return;
        }
        self.contacts.remove(node);
        let Some(removed) = self.state.get(node).map(|e| e.spec.clone()) else {
            self.reconcile(out);
            return;
        };
        let delta = self.state.remove(node);
        let targets: Vec<NodeSpec> = self
            .others()
            .map(|e| e.spec.clone())
            .chain(std::iter::once(removed))
            .collect();
        for spec in &targets {
            let msg = FullMeshMsg::Delta {
                delta: delta.clone(),
                reply: false,
            };
            Self::send(out, spec, msg);
        }
        self.reconcile(out);
    }

    /// Full mesh entries are written only by their owners, so this cannot write entries for
    /// the wanted nodes: members not in `specs` are removed (as by [`Overlay::remove`]) and
    /// every wanted node that is not a member yet is joined (as by [`Overlay::join`]); it
    /// becomes a member when its answer arrives. This node stays a member whatever `specs`
    /// says (a left node joins again if `specs` names anyone).
    fn update_members(&mut self, specs: &[PeerInfo], now: Instant, out: &mut Vec<OverlayOutput>) {
        let me = self.me().clone();
        let wanted: BTreeMap<&NodeName, &PeerInfo> = specs
            .iter()
            .filter(|p| *p.name() != me)
            .map(|p| (p.name(), p))
            .collect();
        for name in self.members() {
            if name != me && !wanted.contains_key(&name) {
                self.remove(&name, now, out);
            }
        }
        // Nor is a node that is not wanted joined through any more.
        if self.contacts.keys().any(|n| !wanted.contains_key(n)) {
            self.contacts.retain(|n, _| wanted.contains_key(n));
            self.reconcile(out);
        }
        for (name, peer) in wanted {
            if self.phase == Phase::Left || !self.state.contains(name) {
                self.join(peer, now, out);
            }
        }
    }

    fn on_message(
        &mut self,
        from: &PeerInfo,
        msg: OverlayMsg,
        now: Instant,
        out: &mut Vec<OverlayOutput>,
    ) -> Result<(), OverlayError> {
        let OverlayMsg::FullMesh(msg) = msg else {
            return Err(OverlayError::rejected(
                "overlay message",
                format!("a {} message sent to a full-mesh node", msg.kind()),
            ));
        };
        if from.name() == self.me() {
            return Err(OverlayError::rejected(
                "full-mesh message",
                "sent by a node with this node's own name",
            ));
        }
        self.check(from.name(), &msg)?;
        self.on_fm_message(from, msg, now, out);
        Ok(())
    }

    fn on_peer_up(&mut self, peer: &PeerInfo, _now: Instant, out: &mut Vec<OverlayOutput>) {
        // A member reconnected after a loss (a partition healed, a restart): compare states at
        // once rather than at the next period. First connections are not compared: during a
        // join storm every link comes up and pushes already carry the news, so a digest per
        // link would only multiply traffic. One side is enough; the smaller name asks.
        let back = self.lost.remove(peer.name());
        if back
            && self.phase == Phase::Member
            && peer.name() != self.me()
            && self.me() < peer.name()
            && self.state.contains(peer.name())
        {
            let hash = self.state.hash();
            Self::send(out, &peer.spec, FullMeshMsg::Digest { hash });
        }
    }

    fn on_peer_down(&mut self, node: &NodeName, _now: Instant, _out: &mut Vec<OverlayOutput>) {
        // Failure is not leave: the member stays wanted and the driver redials it.
        if self.state.contains(node) {
            self.lost.insert(node.clone());
        }
    }

    fn on_unreachable(&mut self, _node: &NodeName, _now: Instant, _out: &mut Vec<OverlayOutput>) {
        // Nothing: the driver keeps redialing members; anti-entropy repairs lost messages.
    }

    fn on_timer(&mut self, timer: OverlayTimer, now: Instant, out: &mut Vec<OverlayOutput>) {
        match timer {
            OverlayTimer::Periodic => {
                self.arm_periodic(now, out);
                if self.phase == Phase::Left {
                    return;
                }
                // Joins not answered yet; alone, every contact this node joined through.
                let alone = self.alone();
                let targets: Vec<&NodeSpec> = self
                    .contacts
                    .values()
                    .filter(|c| alone || c.join == Join::Pending)
                    .map(|c| &c.info.spec)
                    .collect();
                if !targets.is_empty() {
                    let delta = self.full_state();
                    for spec in targets {
                        let msg = FullMeshMsg::Join {
                            delta: delta.clone(),
                        };
                        Self::send(out, spec, msg);
                    }
                }
                if !alone {
                    self.probe(out);
                }
                if let Some(peer) = self.pick(1, None).pop() {
                    let hash = self.state.hash();
                    Self::send(out, &peer, FullMeshMsg::Digest { hash });
                }
            }
            OverlayTimer::Push => {
                self.push_armed = false;
                let names = std::mem::take(&mut self.pending);
                let source = std::mem::replace(&mut self.source, Source::Nothing);
                if self.phase == Phase::Left || names.is_empty() {
                    return;
                }
                let delta = self.state.delta_of(&names);
                let exclude = match &source {
                    Source::Peer(p) => Some(p),
                    _ => None,
                };
                for spec in self.pick(self.cfg.fanout, exclude) {
                    let msg = FullMeshMsg::Delta {
                        delta: delta.clone(),
                        reply: false,
                    };
                    Self::send(out, &spec, msg);
                }
            }
            OverlayTimer::Shuffle | OverlayTimer::Promotion => {}
        }
    }

    fn members(&self) -> Vec<NodeName> {
        if self.phase == Phase::Left {
            return Vec::new();
        }
        self.state.members()
    }

    fn member_specs(&self) -> Vec<NodeSpec> {
        if self.phase == Phase::Left {
            return Vec::new();
        }
        self.others().map(|e| e.spec.clone()).collect()
    }

    fn active_view(&self) -> Vec<NodeName> {
        self.member_specs()
            .into_iter()
            .map(|s| s.name().clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::net::SocketAddr;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn info(i: usize, creation: Creation, port: u16) -> PeerInfo {
        PeerInfo {
            spec: NodeSpec::new(
                NodeName::new(&format!("n{i}@h")).unwrap(),
                vec![SocketAddr::from(([127, 0, 0, 1], port))],
                Default::default(),
            )
            .unwrap(),
            creation,
            tag: None,
        }
    }

    fn name(i: usize) -> NodeName {
        NodeName::new(&format!("n{i}@h")).unwrap()
    }

    fn names(is: &[usize]) -> Vec<NodeName> {
        is.iter().map(|&i| name(i)).collect()
    }

    fn kind_of(m: &FullMeshMsg) -> &'static str {
        match m {
            FullMeshMsg::Digest { .. } => "digest",
            FullMeshMsg::Sync { .. } => "sync",
            FullMeshMsg::Delta { reply: true, .. } => "delta-reply",
            FullMeshMsg::Delta { reply: false, .. } => "delta",
            FullMeshMsg::Join { .. } => "join",
            FullMeshMsg::Handover { .. } => "handover",
        }
    }

    /// A hand-driven network: messages queue until delivered, timers fire when asked.
    struct Sim {
        nodes: Vec<FullMesh>,
        infos: Vec<PeerInfo>,
        queue: VecDeque<(PeerInfo, usize, FullMeshMsg)>,
        timers: BTreeMap<(usize, OverlayTimer), Instant>,
        /// Per node: the peers it asks the driver to keep connected.
        wanted: Vec<BTreeMap<NodeName, NodeSpec>>,
        members_changed: Vec<usize>,
        /// Per node: `members()` as of its last `MembersChanged` (what a driver would show).
        reported: Vec<Vec<NodeName>>,
        sent: BTreeMap<&'static str, usize>,
        /// Messages sent, by kind and destination.
        sent_to: BTreeMap<(&'static str, usize), usize>,
        now: Instant,
    }

    impl Sim {
        fn new(n: usize) -> Sim {
            let mut sim = Sim {
                nodes: Vec::new(),
                infos: Vec::new(),
                queue: VecDeque::new(),
                timers: BTreeMap::new(),
                wanted: vec![BTreeMap::new(); n],
                members_changed: vec![0; n],
                reported: Vec::new(),
                sent: BTreeMap::new(),
                sent_to: BTreeMap::new(),
                now: Instant::ZERO,
            };
            for i in 0..n {
                let info = info(i, 1, 1000 + i as u16);
                let rng = ChaCha8Rng::seed_from_u64(i as u64);
                sim.nodes.push(FullMesh::new(
                    info.clone(),
                    FullMeshConfig::default(),
                    Box::new(rng),
                ));
                sim.infos.push(info);
                sim.reported.push(names(&[i]));
                let mut out = vec![];
                sim.nodes[i].start(sim.now, &mut out);
                sim.apply(i, out);
            }
            sim
        }

        fn apply(&mut self, i: usize, out: Vec<OverlayOutput>) {
            for o in out {
                match o {
                    OverlayOutput::Connect(spec) => {
                        self.wanted[i].insert(spec.name().clone(), spec);
                    }
                    OverlayOutput::Disconnect(n) => {
                        self.wanted[i].remove(&n);
                    }
                    OverlayOutput::Send { to, msg } => {
                        let OverlayMsg::FullMesh(msg) = msg else {
                            panic!("not a full-mesh message")
                        };
                        *self.sent.entry(kind_of(&msg)).or_default() += 1;
                        let j = self.infos.iter().position(|p| p.name() == to.name());
                        *self.sent_to.entry((kind_of(&msg), j.unwrap())).or_default() += 1;
                        self.queue
                            .push_back((self.infos[i].clone(), j.unwrap(), msg));
                    }
                    OverlayOutput::SetTimer { timer, at } => {
                        self.timers.insert((i, timer), at);
                    }
                    OverlayOutput::MembersChanged => {
                        self.members_changed[i] += 1;
                        self.reported[i] = self.nodes[i].members();
                    }
                }
            }
        }

        fn deliver(&mut self, from: PeerInfo, to: usize, msg: FullMeshMsg) {
            let mut out = vec![];
            self.nodes[to]
                .on_message(&from, OverlayMsg::FullMesh(msg), self.now, &mut out)
                .unwrap();
            self.apply(to, out);
        }

        /// Delivers everything queued, oldest first, firing push timers as they come due.
        fn run(&mut self) {
            for _ in 0..10_000 {
                if let Some((from, to, msg)) = self.queue.pop_front() {
                    self.deliver(from, to, msg);
                } else if !self.fire_due(OverlayTimer::Push) {
                    return;
                }
            }
            panic!("message storm");
        }

        /// Fires every armed timer of this kind; returns whether any was.
        fn fire_due(&mut self, timer: OverlayTimer) -> bool {
            let due: Vec<(usize, Instant)> = self
                .timers
                .iter()
                .filter(|((_, t), _)| *t == timer)
                .map(|((i, _), at)| (*i, *at))
                .collect();
            for &(i, at) in &due {
                self.timers.remove(&(i, timer));
                self.now = self.now.max(at);
                let mut out = vec![];
                self.nodes[i].on_timer(timer, self.now, &mut out);
                self.apply(i, out);
            }
            !due.is_empty()
        }

        /// Advances time, firing due timers in deadline order and delivering after each.
        fn advance(&mut self, d: Duration) -> usize {
            let end = self.now + d;
            let mut fired = 0;
            while let Some(((i, timer), at)) = self
                .timers
                .iter()
                .filter(|(_, at)| **at <= end)
                .min_by_key(|(k, at)| (**at, **k))
                .map(|(k, at)| (*k, *at))
            {
                self.timers.remove(&(i, timer));
                self.now = self.now.max(at);
                let mut out = vec![];
                self.nodes[i].on_timer(timer, self.now, &mut out);
                self.apply(i, out);
                self.run();
                fired += usize::from(timer == OverlayTimer::Periodic);
            }
            self.now = end;
            fired
        }

        fn join(&mut self, i: usize, j: usize) {
            let mut out = vec![];
            let contact = self.infos[j].clone();
            self.nodes[i].join(&contact, self.now, &mut out);
            self.apply(i, out);
        }

        fn leave(&mut self, i: usize) {
            let mut out = vec![];
            self.nodes[i].leave(self.now, &mut out);
            self.apply(i, out);
        }

        fn remove(&mut self, i: usize, j: usize) {
            let mut out = vec![];
            self.nodes[i].remove(&name(j), self.now, &mut out);
            self.apply(i, out);
        }

        /// Node `i` restarts with a new creation and a new port; its old state is gone.
        fn restart(&mut self, i: usize, port: u16) {
            let creation = self.infos[i].creation + 1;
            let info = info(i, creation, port);
            let rng = ChaCha8Rng::seed_from_u64(100 + i as u64);
            self.nodes[i] = FullMesh::new(info.clone(), FullMeshConfig::default(), Box::new(rng));
            self.infos[i] = info;
            self.wanted[i].clear();
            self.reported[i] = names(&[i]);
            self.timers.retain(|(n, _), _| *n != i);
            let mut out = vec![];
            self.nodes[i].start(self.now, &mut out);
            self.apply(i, out);
        }

        /// Everyone joins node 0 and all messages are delivered.
        fn cluster(n: usize) -> Sim {
            let mut sim = Sim::new(n);
            for i in 1..n {
                sim.join(i, 0);
                sim.run();
            }
            sim
        }

        fn assert_converged(&self, live: &[usize]) {
            let h = self.nodes[live[0]].membership().hash();
            for &i in live {
                assert_eq!(self.nodes[i].members(), names(live), "members of n{i}");
                assert_eq!(self.reported[i], names(live), "reported members of n{i}");
                assert_eq!(self.nodes[i].membership().hash(), h, "hash of n{i}");
                let others: Vec<NodeName> =
                    live.iter().filter(|&&j| j != i).map(|&j| name(j)).collect();
                assert_eq!(self.nodes[i].active_view(), others, "view of n{i}");
                let wanted: Vec<NodeName> = self.wanted[i].keys().cloned().collect();
                assert_eq!(wanted, others, "connections of n{i}");
            }
        }
    }

    #[test]
    fn joins_converge_and_connect_everyone() {
        let sim = Sim::cluster(4);
        sim.assert_converged(&[0, 1, 2, 3]);
        for i in 0..4 {
            assert!(sim.members_changed[i] >= 1);
            for (n, spec) in &sim.wanted[i] {
                assert_eq!(
                    spec,
                    &sim.infos[sim.infos.iter().position(|p| p.name() == n).unwrap()].spec
                );
            }
        }
    }

    #[test]
    fn a_join_is_retried_until_answered_and_anti_entropy_repairs_lost_pushes() {
        let mut sim = Sim::new(4);
        sim.join(1, 0);
        sim.queue.clear(); // the join is lost
        sim.advance(Duration::from_secs(13));
        assert_eq!(sim.nodes[1].members(), names(&[0, 1]));
        sim.join(2, 0);
        sim.join(3, 1);
        // Deliver the joins and their answers but lose every push.
        while let Some((from, to, msg)) = sim.queue.pop_front() {
            sim.deliver(from, to, msg);
        }
        sim.timers.retain(|(_, t), _| *t != OverlayTimer::Push);
        for n in &mut sim.nodes {
            n.push_armed = false;
        }
        sim.advance(Duration::from_secs(200));
        sim.assert_converged(&[0, 1, 2, 3]);
    }

    #[test]
    fn pushes_alone_spread_a_join() {
        let mut sim = Sim::cluster(5);
        // No periodic timer fires: only the push rumor spreads n5.
        sim.nodes.push(FullMesh::new(
            info(5, 1, 1005),
            FullMeshConfig::default(),
            Box::new(ChaCha8Rng::seed_from_u64(5)),
        ));
        sim.infos.push(info(5, 1, 1005));
        sim.wanted.push(BTreeMap::new());
        sim.members_changed.push(0);
        sim.reported.push(names(&[5]));
        sim.sent.clear();
        sim.join(5, 2);
        sim.run();
        sim.assert_converged(&[0, 1, 2, 3, 4, 5]);
        assert_eq!(sim.sent.get("digest"), None);
        assert_eq!(sim.sent.get("sync"), None);
    }

    #[test]
    fn a_left_node_is_not_readded_by_messages_in_flight() {
        let mut sim = Sim::cluster(3);
        // A full-state delta of n0 (knowing n2) and a digest are still in flight.
        let stale = FullMeshMsg::Delta {
            delta: sim.nodes[0].membership().delta_for(&CausalContext::new()),
            reply: false,
        };
        let stale_join = FullMeshMsg::Join {
            delta: sim.nodes[0].membership().delta_for(&CausalContext::new()),
        };
        sim.leave(2);
        assert!(sim.nodes[2].members().is_empty());
        assert!(sim.wanted[2].is_empty());
        sim.run();
        sim.assert_converged(&[0, 1]);
        // The stale messages arrive late, at a survivor and at the left node.
        sim.deliver(sim.infos[0].clone(), 1, stale.clone());
        sim.deliver(sim.infos[0].clone(), 2, stale);
        sim.deliver(sim.infos[0].clone(), 2, stale_join);
        sim.run();
        sim.advance(Duration::from_secs(60));
        sim.assert_converged(&[0, 1]);
        assert!(sim.nodes[2].members().is_empty());
        assert!(sim.nodes[2].has_left());
    }

    #[test]
    fn a_peer_that_missed_the_leave_learns_it_from_the_left_node() {
        let mut sim = Sim::cluster(3);
        sim.leave(2);
        sim.queue.clear(); // every leave message is lost
        assert!(sim.nodes[0].members().contains(&name(2)));
        sim.advance(Duration::from_secs(120));
        sim.assert_converged(&[0, 1]);
    }

    #[test]
    fn a_left_node_rejoins_with_a_new_dot() {
        let mut sim = Sim::cluster(3);
        let old = sim.nodes[1].membership().live(&name(1)).unwrap().0.clone();
        sim.leave(1);
        sim.run();
        sim.join(1, 2);
        sim.run();
        sim.assert_converged(&[0, 1, 2]);
        let new = sim.nodes[0].membership().live(&name(1)).unwrap().0.clone();
        assert_eq!(new.actor, old.actor);
        assert_eq!(new.counter, old.counter + 1);
    }

    #[test]
    fn a_rejoin_through_a_contact_that_left_meanwhile_is_retried_until_it_is_back() {
        // Swarm seed 189: n1 left and rejoins through n2, but the join is lost (a partition);
        // n2 then leaves. The retried join reaches n2, which answers with the record of its
        // own removal. That is no answer to the join: n1 must not end up alone for good.
        let mut sim = Sim::cluster(3);
        sim.leave(1);
        sim.run();
        sim.join(1, 2);
        sim.queue.clear();
        assert!(sim.wanted[1].contains_key(&name(2)));
        sim.leave(2);
        sim.run();
        sim.assert_converged(&[0]);
        sim.advance(Duration::from_secs(15));
        // The retry was answered by n2's removal record: n2 is no longer kept connected, but
        // the join stands and is retried.
        assert!(sim.nodes[1]
            .membership()
            .context()
            .max_dot_for(&name(2))
            .is_some());
        assert!(sim.wanted[1].is_empty());
        assert_eq!(sim.nodes[1].members(), names(&[1]));
        sim.join(2, 0);
        sim.run();
        sim.advance(Duration::from_secs(60));
        sim.assert_converged(&[0, 1, 2]);
    }

    #[test]
    fn a_stale_removal_record_from_the_contact_does_not_answer_the_join() {
        let mut sim = Sim::cluster(4);
        sim.remove(0, 3);
        sim.run();
        sim.assert_converged(&[0, 1, 2]);
        // A push of n3's removal, still in flight from n2 to n1 when n1 leaves and rejoins
        // through n2 (its join is lost).
        let stale = FullMeshMsg::Delta {
            delta: sim.nodes[2].membership().delta_of([&name(3)]),
            reply: false,
        };
        sim.leave(1);
        sim.run();
        sim.join(1, 2);
        sim.queue.clear();
        sim.deliver(sim.infos[2].clone(), 1, stale);
        assert!(sim.nodes[1]
            .membership()
            .context()
            .max_dot_for(&name(3))
            .is_some());
        // Still joining: n2 is kept connected and the join is retried.
        assert!(sim.wanted[1].contains_key(&name(2)));
        sim.advance(Duration::from_secs(60));
        sim.assert_converged(&[0, 1, 2]);
    }

    #[test]
    fn a_contact_that_left_is_probed_while_in_a_cluster() {
        // Swarm seeds 6644 and 9919: n2's join through n1 is lost; n3 joins n2, so n2 is not
        // alone. n1 leaves: n2's retry is answered with n1's removal record. n2's stalled join
        // is then the only link between {n2, n3} and the cluster n1 comes back to.
        let mut sim = Sim::new(4);
        sim.join(1, 0);
        sim.run();
        sim.join(2, 1);
        sim.queue.clear();
        sim.join(3, 2);
        sim.run();
        assert_eq!(sim.nodes[3].members(), names(&[2, 3]));
        assert!(sim.wanted[2].contains_key(&name(1)), "joining through n1");
        sim.leave(1);
        sim.run();
        sim.assert_converged(&[0]);
        sim.advance(Duration::from_secs(15));
        assert!(sim.nodes[2]
            .membership()
            .context()
            .max_dot_for(&name(1))
            .is_some());
        // In a cluster, n2 neither keeps n1 connected nor retries the join: it probes n1 with
        // a digest every ~10 periods, answered with n1's removal record, which changes nothing.
        sim.assert_converged(&[2, 3]);
        sim.sent.clear();
        sim.sent_to.clear();
        let hashes: Vec<[u8; 16]> = sim.nodes.iter().map(|n| n.membership().hash()).collect();
        sim.advance(Duration::from_secs(1000));
        assert_eq!(sim.sent.get("join"), None);
        let probes = sim.sent_to.get(&("digest", 1)).copied().unwrap_or(0);
        assert!(
            (6..=14).contains(&probes),
            "{probes} probes in ~100 periods"
        );
        // Besides the digests between n2 and n3, only the probes and their answers.
        let digests = sim.sent_to[&("digest", 2)] + sim.sent_to[&("digest", 3)];
        assert!((160..=240).contains(&digests), "{digests}");
        assert_eq!(sim.sent.get("digest"), Some(&(digests + probes)));
        assert_eq!(sim.sent_to.get(&("delta", 2)), Some(&probes));
        assert_eq!(sim.sent.values().sum::<usize>(), digests + 2 * probes);
        let after: Vec<[u8; 16]> = sim.nodes.iter().map(|n| n.membership().hash()).collect();
        assert_eq!(hashes, after);
        assert!(sim.nodes[1].has_left() && sim.nodes[1].members().is_empty());
        sim.assert_converged(&[2, 3]);
        // n1 is back in a cluster: the next probe merges the two clusters.
        sim.join(1, 0);
        sim.run();
        sim.assert_converged(&[0, 1]);
        sim.advance(Duration::from_secs(130));
        sim.assert_converged(&[0, 1, 2, 3]);
        // The join went through: no more probes, back to one digest per node per period.
        assert!(sim.nodes[2].contacts.values().all(|c| c.join == Join::Done));
        sim.sent.clear();
        let fired = sim.advance(Duration::from_secs(300));
        assert_eq!(sim.sent.get("digest"), Some(&fired));
        assert_eq!(sim.sent.values().sum::<usize>(), fired);
    }

    #[test]
    fn a_leaver_hands_its_stalled_join_over_to_its_members() {
        // Swarm seed 1958: n9's join through n3 is lost, and n3 leaves before the retry while
        // n21, n17 and n14 join through n9. n9 then leaves and rejoins through n21: the only
        // link between those nodes and the main cluster was n9's stalled join. Here n2, n1,
        // n3 and n4 play n9, n3, n21 and n14.
        let mut sim = Sim::new(5);
        sim.join(1, 0);
        sim.run();
        sim.join(2, 1);
        sim.queue.clear(); // the join is lost
        sim.join(3, 2);
        sim.run();
        sim.join(4, 2);
        sim.run();
        sim.leave(1);
        sim.run();
        sim.advance(Duration::from_secs(15));
        assert!(
            !sim.wanted[2].contains_key(&name(1)),
            "n1 answered that it left"
        );
        sim.assert_converged(&[2, 3, 4]);
        // n2 leaves: its members take its stalled join over; it rejoins through n3.
        sim.sent.clear();
        sim.leave(2);
        assert_eq!(sim.sent.get("handover"), Some(&2));
        sim.run();
        sim.join(2, 3);
        sim.run();
        sim.assert_converged(&[2, 3, 4]);
        // While n1 stays away, the probes change nothing and do not pull it back in.
        sim.sent_to.clear();
        sim.advance(Duration::from_secs(300));
        assert!(sim.sent_to.get(&("digest", 1)).is_some_and(|&p| p >= 2));
        assert!(sim.nodes[1].has_left() && sim.nodes[1].members().is_empty());
        assert!(sim.wanted[1].is_empty());
        sim.assert_converged(&[0]);
        sim.assert_converged(&[2, 3, 4]);
        // n1 comes back to the main cluster: the next probe merges the two clusters.
        sim.join(1, 0);
        sim.run();
        sim.advance(Duration::from_secs(130));
        sim.assert_converged(&[0, 1, 2, 3, 4]);
        for i in [3, 4] {
            assert!(sim.nodes[i].contacts.values().all(|c| c.join == Join::Done));
        }
    }

    #[test]
    fn a_handover_is_heeded_only_from_a_known_leaver() {
        let mut sim = Sim::cluster(3);
        let mut other = Sim::new(6);
        other.join(4, 3);
        other.run();
        let contacts = vec![sim.infos[0].clone(), info(5, 1, 1005)];
        // n4 of another cluster, which n1 never heard of, "leaves": nothing is adopted.
        let dot = other.nodes[4]
            .membership()
            .live(&name(4))
            .unwrap()
            .0
            .clone();
        let stale = FullMeshMsg::Handover {
            dot,
            contacts: contacts.clone(),
        };
        sim.deliver(other.infos[4].clone(), 1, stale);
        assert!(sim.queue.is_empty());
        assert_eq!(
            sim.nodes[1].contacts.keys().collect::<Vec<_>>(),
            vec![&name(0)]
        );
        // A left node ignores a handover and does not answer it.
        sim.leave(2);
        sim.run();
        let dot = sim.nodes[0].membership().live(&name(0)).unwrap().0.clone();
        let handover = FullMeshMsg::Handover { dot, contacts };
        sim.deliver(sim.infos[0].clone(), 2, handover.clone());
        assert!(sim.queue.is_empty());
        assert!(sim.nodes[2].contacts.is_empty() && sim.nodes[2].has_left());
        // A member that has seen the leaver's dot adopts the contacts it does not know: not
        // its members (n0), nor itself.
        sim.deliver(sim.infos[0].clone(), 1, handover);
        assert!(sim.queue.is_empty());
        let adopted: Vec<&NodeName> = sim.nodes[1].contacts.keys().collect();
        assert_eq!(adopted, vec![&name(0), &name(5)]);
        assert_eq!(sim.nodes[1].contacts[&name(5)].join, Join::Handed);
        assert_eq!(
            sim.wanted[1].keys().cloned().collect::<Vec<_>>(),
            names(&[0])
        );
        // At most MAX_HANDOVER unfinished joins are adopted in all.
        let many: Vec<PeerInfo> = (10..40).map(|i| info(i, 1, 2000 + i as u16)).collect();
        let dot = sim.nodes[0].membership().live(&name(0)).unwrap().0.clone();
        for chunk in many.chunks(MAX_HANDOVER) {
            let msg = FullMeshMsg::Handover {
                dot: dot.clone(),
                contacts: chunk.to_vec(),
            };
            sim.deliver(sim.infos[0].clone(), 1, msg);
        }
        assert_eq!(sim.nodes[1].unfinished().count(), MAX_HANDOVER);
        // Removed by another node, it forgets what it was handed (and its joins that went
        // through).
        sim.remove(0, 1);
        sim.run();
        assert!(sim.nodes[1].is_isolated());
        assert!(sim.nodes[1].contacts.is_empty());
    }

    #[test]
    fn a_node_left_alone_retries_the_contact_it_joined_through() {
        let mut sim = Sim::new(3);
        sim.join(1, 0);
        sim.run();
        sim.assert_converged(&[0, 1]);
        // n0 leaves: n1 is alone, nobody else knows it.
        sim.leave(0);
        sim.run();
        sim.advance(Duration::from_secs(30));
        assert_eq!(sim.nodes[1].members(), names(&[1]));
        assert!(sim.wanted[1].is_empty());
        assert!(sim.nodes[0].has_left());
        // n0 joins another cluster: n1's next retry brings it in.
        sim.join(0, 2);
        sim.run();
        sim.advance(Duration::from_secs(60));
        sim.assert_converged(&[0, 1, 2]);
        // A node removed by another is not alone by accident: it retries nobody.
        sim.remove(2, 1);
        sim.run();
        sim.leave(0);
        sim.run();
        sim.advance(Duration::from_secs(60));
        assert!(sim.nodes[1].is_isolated());
        assert_eq!(sim.nodes[1].members(), names(&[1]));
        assert_eq!(sim.nodes[2].members(), names(&[2]));
        sim.join(0, 2);
        sim.run();
        sim.advance(Duration::from_secs(60));
        sim.assert_converged(&[0, 2]);
        assert_eq!(sim.nodes[1].members(), names(&[1]));
    }

    #[test]
    fn a_restart_with_a_new_creation_and_address_replaces_the_old_entry() {
        let mut sim = Sim::cluster(4);
        sim.restart(3, 2003);
        sim.join(3, 1);
        sim.run();
        sim.assert_converged(&[0, 1, 2, 3]);
        for i in 0..3 {
            let e = sim.nodes[i].membership().get(&name(3)).unwrap();
            assert_eq!(e.creation, 2);
            assert_eq!(e.spec, sim.infos[3].spec);
            assert_eq!(sim.wanted[i][&name(3)], sim.infos[3].spec);
        }
    }

    #[test]
    fn a_restarted_node_is_found_again_without_a_join() {
        let mut sim = Sim::cluster(3);
        sim.restart(2, 2002);
        sim.advance(Duration::from_secs(120));
        sim.assert_converged(&[0, 1, 2]);
        assert_eq!(sim.nodes[0].membership().get(&name(2)).unwrap().creation, 2);
    }

    #[test]
    fn removing_another_node_resets_it_to_a_singleton() {
        let mut sim = Sim::cluster(3);
        // A digest of n1 is still in flight towards n2.
        let hash = sim.nodes[1].membership().hash();
        sim.remove(0, 2);
        assert!(!sim.wanted[0].contains_key(&name(2)));
        sim.run();
        sim.assert_converged(&[0, 1]);
        assert_eq!(sim.nodes[2].members(), names(&[2]));
        assert!(sim.nodes[2].is_isolated());
        assert!(sim.wanted[2].is_empty());
        // The stale digest (and a stale full state) do not pull it back in.
        let stale = FullMeshMsg::Delta {
            delta: sim.nodes[1].membership().delta_for(&CausalContext::new()),
            reply: true,
        };
        sim.deliver(sim.infos[1].clone(), 2, FullMeshMsg::Digest { hash });
        sim.deliver(sim.infos[1].clone(), 2, stale);
        // Each is answered with the record of the removal only.
        assert_eq!(sim.queue.len(), 2);
        for (_, to, msg) in &sim.queue {
            assert_eq!(*to, 1);
            let FullMeshMsg::Delta {
                delta,
                reply: false,
            } = msg
            else {
                panic!("{msg:?}")
            };
            assert!(delta.entries.is_empty() && delta.removed.len() == 1);
        }
        sim.run();
        sim.advance(Duration::from_secs(60));
        assert_eq!(sim.nodes[2].members(), names(&[2]));
        sim.assert_converged(&[0, 1]);
        // An explicit join brings it back.
        sim.join(2, 1);
        sim.run();
        sim.assert_converged(&[0, 1, 2]);
        assert!(!sim.nodes[2].is_isolated());
    }

    #[test]
    fn a_peer_that_missed_a_removal_learns_it_from_the_removed_node() {
        let mut sim = Sim::cluster(3);
        sim.remove(0, 2);
        // Only the message to n2 arrives; n0 then forgets everything (leaves).
        let to_n2 = sim.queue.iter().position(|(_, to, _)| *to == 2).unwrap();
        let (from, to, msg) = sim.queue.remove(to_n2).unwrap();
        sim.queue.clear();
        sim.deliver(from, to, msg);
        sim.leave(0);
        sim.queue.clear();
        assert!(sim.nodes[1].members().contains(&name(2)));
        assert!(sim.nodes[2].is_isolated());
        sim.advance(Duration::from_secs(120));
        assert_eq!(sim.nodes[1].members(), names(&[1]));
        assert_eq!(sim.nodes[2].members(), names(&[2]));
        assert!(sim.wanted[1].is_empty() && sim.wanted[2].is_empty());
    }

    #[test]
    fn update_members_joins_and_removes() {
        let mut sim = Sim::new(4);
        let wanted = vec![sim.infos[1].clone(), sim.infos[2].clone()];
        let mut out = vec![];
        sim.nodes[0].update_members(&wanted, sim.now, &mut out);
        sim.apply(0, out);
        sim.run();
        sim.assert_converged(&[0, 1, 2]);
        let mut out = vec![];
        sim.nodes[0].update_members(&[sim.infos[1].clone()], sim.now, &mut out);
        sim.apply(0, out);
        sim.run();
        sim.assert_converged(&[0, 1]);
        assert_eq!(sim.nodes[2].members(), names(&[2]));
    }

    #[test]
    fn quiet_traffic_is_one_digest_per_node_per_period() {
        let mut sim = Sim::cluster(5);
        sim.advance(Duration::from_secs(30));
        sim.sent.clear();
        let fired = sim.advance(Duration::from_secs(100));
        assert!((40..=60).contains(&fired), "{fired} periodic firings");
        assert_eq!(sim.sent.get("digest"), Some(&fired));
        assert_eq!(sim.sent.values().sum::<usize>(), fired);
        let digest = postcard::to_stdvec(&OverlayMsg::FullMesh(FullMeshMsg::Digest {
            hash: [0xff; 16],
        }))
        .unwrap();
        assert_eq!(digest.len(), 18);
    }

    #[test]
    fn handover_is_appended_after_the_older_variants() {
        // postcard encodes the variant index: the older messages keep their encoding.
        let sim = Sim::cluster(2);
        let dot = sim.nodes[0].membership().live(&name(0)).unwrap().0.clone();
        let msg = |contacts: Vec<PeerInfo>| {
            postcard::to_stdvec(&OverlayMsg::FullMesh(FullMeshMsg::Handover {
                dot: dot.clone(),
                contacts,
            }))
            .unwrap()
        };
        let none = msg(vec![]);
        assert_eq!(none[..2], [0, 4]);
        let one = msg(vec![sim.infos[1].clone()]);
        let two = msg(vec![sim.infos[1].clone(), sim.infos[0].clone()]);
        eprintln!(
            "handover: {} + {} per contact",
            none.len(),
            two.len() - one.len()
        );
        assert!(none.len() < 40 && two.len() - one.len() < 120);
    }

    #[test]
    fn peer_up_of_a_member_compares_digests_once() {
        let mut sim = Sim::cluster(3);
        let mut out = vec![];
        // A first connection is not compared (pushes carry the news during joins)...
        sim.nodes[0].on_peer_up(&sim.infos[1].clone(), sim.now, &mut out);
        assert!(out.is_empty());
        // ...a reconnection after a loss is.
        sim.nodes[0].on_peer_down(&name(1), sim.now, &mut out);
        sim.nodes[0].on_peer_up(&sim.infos[1].clone(), sim.now, &mut out);
        assert!(matches!(
            &out[..],
            [OverlayOutput::Send {
                msg: OverlayMsg::FullMesh(FullMeshMsg::Digest { .. }),
                ..
            }]
        ));
        let mut out = vec![];
        sim.nodes[1].on_peer_down(&name(0), sim.now, &mut out);
        sim.nodes[1].on_peer_up(&sim.infos[0].clone(), sim.now, &mut out);
        assert!(out.is_empty(), "only the smaller name asks");
        let mut out = vec![];
        sim.nodes[1].on_peer_down(&name(0), sim.now, &mut out);
        sim.nodes[1].on_unreachable(&name(0), sim.now, &mut out);
        assert!(out.is_empty());
        assert_eq!(sim.nodes[1].members(), names(&[0, 1, 2]));
    }

    #[test]
    fn invalid_messages_are_rejected_without_changing_state() {
        let mut sim = Sim::cluster(3);
        let before = sim.nodes[1].membership().clone();
        let from = sim.infos[0].clone();
        let reject = |sim: &mut Sim, msg: OverlayMsg| {
            let mut out = vec![];
            let r = sim.nodes[1].on_message(&from, msg, sim.now, &mut out);
            assert!(matches!(r, Err(OverlayError::Rejected { .. })), "{r:?}");
            assert!(out.is_empty());
            assert_eq!(sim.nodes[1].membership(), &before);
        };
        let good = sim.nodes[0].membership().delta_for(&CausalContext::new());
        let delta = |d: Delta| {
            OverlayMsg::FullMesh(FullMeshMsg::Delta {
                delta: d,
                reply: true,
            })
        };

        // Another overlay's message.
        reject(
            &mut sim,
            OverlayMsg::Static(super::super::StaticMsg::Leaving),
        );
        // An entry carrying another actor's dot.
        let mut d = good.clone();
        d.entries[0].1.spec = sim.infos[2].spec.clone();
        reject(&mut sim, delta(d));
        // A newer incarnation of the receiver.
        let mut d = good.clone();
        d.context.insert(&Dot::new(Actor::new(name(1), 2), 1));
        reject(&mut sim, delta(d));
        // A write of the receiver it never made.
        let mut d = good.clone();
        d.removed.push(Dot::new(Actor::new(name(1), 1), 9));
        d.context.insert(&Dot::new(Actor::new(name(1), 1), 9));
        reject(&mut sim, delta(d));
        // The receiver's own live dot with another spec.
        let mut d = good.clone();
        let own = d
            .entries
            .iter_mut()
            .find(|(dot, _)| dot.name() == &name(1))
            .unwrap();
        own.1.spec = info(1, 1, 4242).spec;
        reject(&mut sim, delta(d));
        // The same in a sync.
        let mut ctx = good.context.clone();
        ctx.insert(&Dot::new(Actor::new(name(1), 7), 1));
        reject(
            &mut sim,
            OverlayMsg::FullMesh(FullMeshMsg::Sync { context: ctx }),
        );
        // A handover of too many contacts, or with a dot that is not the sender's.
        let dot = sim.nodes[0].membership().live(&name(0)).unwrap().0.clone();
        let many: Vec<PeerInfo> = (10..=10 + MAX_HANDOVER)
            .map(|i| info(i, 1, 2000 + i as u16))
            .collect();
        reject(
            &mut sim,
            OverlayMsg::FullMesh(FullMeshMsg::Handover {
                dot: dot.clone(),
                contacts: many,
            }),
        );
        let foreign = sim.nodes[2].membership().live(&name(2)).unwrap().0.clone();
        reject(
            &mut sim,
            OverlayMsg::FullMesh(FullMeshMsg::Handover {
                dot: foreign,
                contacts: vec![info(7, 1, 1007)],
            }),
        );
        assert!(sim.nodes[1].unfinished().next().is_none());
        // A message claiming to come from the receiver's own name.
        let mut out = vec![];
        let own_info = sim.infos[1].clone();
        let r = sim.nodes[1].on_message(
            &own_info,
            OverlayMsg::FullMesh(FullMeshMsg::Digest { hash: [0; 16] }),
            sim.now,
            &mut out,
        );
        assert!(r.is_err());
        // Old incarnations of the receiver are harmless and accepted.
        let mut old = Membership::new();
        let d = old.add(info(1, 0, 999).spec, 0);
        let mut out = vec![];
        sim.nodes[1]
            .on_message(&from, delta(d), sim.now, &mut out)
            .unwrap();
        assert_eq!(sim.nodes[1].members(), names(&[0, 1, 2]));
    }
}
