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

    /// Whether a join of this node has not been answered yet (its contact has not sent back
    /// its membership): until then the node may know only itself and its contacts.
    pub fn is_joining(&self) -> bool {
        self.unfinished().next().is_some()
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
mod tests;
