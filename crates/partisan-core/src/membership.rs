//! Cluster membership as an add-wins (observed-remove) CRDT map, delta-state style.
//!
//! The map goes from a node name to the node's [`Entry`] (its spec and creation). Every write
//! is tagged with a [`Dot`], a counter of the writing [`Actor`]; a [`CausalContext`] records
//! every dot a replica has seen. An entry whose dot is in the context but no longer in the store
//! has been removed, so a delayed copy of it can never come back.
//!
//! # Who writes what
//!
//! Entries are written only by their owners: the dot of a node's entry is always minted by that
//! node's own actor, `(name, creation)`. A node restarted with a new creation is a new actor, so
//! its fresh counters are never mistaken for old ones. Every node may *remove* any entry.
//!
//! # Supersession
//!
//! An owner's later dot always supersedes its earlier ones, and a higher creation supersedes a
//! lower one. Hence the invariant kept after every operation:
//!
//! > the store holds at most one entry per name, and only the one whose dot is the greatest dot
//! > of that name in the context (greatest by creation, then counter).
//!
//! A merge that brings a newer dot of a name (an entry or only knowledge of it) deletes the older
//! entry of that name; an incoming entry older than a dot already seen is not added but its dot
//! joins the context. This is how a node that comes back with a new creation (and maybe a new
//! address) replaces its old entry everywhere, deterministically. Because supersession depends
//! only on the (monotonically growing) context, the merge stays a join of a semilattice:
//! commutative, associative and idempotent.
//!
//! # Deltas
//!
//! A [`Delta`] carries entries, explicit removals and a context that covers exactly the dots
//! the delta is authoritative for. Applying one never loses information and never resurrects a
//! removed entry; see [`Delta`] for the rules and [`Delta::validate`] for what a well-formed one
//! looks like.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::id::{Creation, NodeName, NodeSpec};

/// Most items (entries + removed dots + context actors + context cloud dots) a [`Delta`] may
/// carry, and most items (actors + cloud dots) a received [`CausalContext`] may hold. A sanity
/// bound on top of the frame limit: processing a delta is O(items · log items).
pub const MAX_DELTA_ITEMS: usize = 1 << 20;

/// An incarnation of a node: its name and creation. A restarted node is a new actor.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The node's name.
    pub name: NodeName,
    /// The incarnation's creation.
    pub creation: Creation,
}

impl Actor {
    /// The actor `(name, creation)`.
    pub fn new(name: NodeName, creation: Creation) -> Actor {
        Actor { name, creation }
    }

    /// The lowest actor of `name` in the actor order.
    fn lowest(name: &NodeName) -> Actor {
        Actor::new(name.clone(), 0)
    }

    /// The highest actor of `name` in the actor order.
    fn highest(name: &NodeName) -> Actor {
        Actor::new(name.clone(), Creation::MAX)
    }
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name, self.creation)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One write event: the `counter`-th write of `actor` (counters start at 1). Dots order by
/// name, then creation, then counter.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// Who wrote.
    pub actor: Actor,
    /// Which of its writes, from 1.
    pub counter: u64,
}

impl Dot {
    /// The dot `(actor, counter)`.
    pub fn new(actor: Actor, counter: u64) -> Dot {
        Dot { actor, counter }
    }

    /// Name of the node the dot belongs to.
    pub fn name(&self) -> &NodeName {
        &self.actor.name
    }
}

impl fmt::Debug for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}:{}", self.actor, self.counter)
    }
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The set of dots a replica has seen: a version vector (every counter up to `vv[actor]`) plus
/// a cloud of dots beyond it.
///
/// Always compact: no zero counter in the vector, and no cloud dot at or right after its
/// actor's vector counter (such dots fold into the vector). Two contexts holding the same dots
/// are therefore equal and serialize identically. Decoding compacts whatever it is given.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RawContext")]
pub struct CausalContext {
    vv: BTreeMap<Actor, u64>,
    cloud: BTreeSet<Dot>,
}

/// The wire shape of a [`CausalContext`], normalised on decode.
#[derive(Deserialize)]
struct RawContext {
    vv: BTreeMap<Actor, u64>,
    cloud: BTreeSet<Dot>,
}

impl From<RawContext> for CausalContext {
    fn from(raw: RawContext) -> CausalContext {
        let mut ctx = CausalContext {
            vv: raw.vv,
            cloud: raw.cloud,
        };
        ctx.cloud.retain(|d| d.counter > 0);
        ctx.compact();
        ctx
    }
}

impl fmt::Debug for CausalContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CausalContext")
            .field("vv", &self.vv)
            .field("cloud", &self.cloud)
            .finish()
    }
}

impl CausalContext {
    /// The empty context (nothing seen).
    pub fn new() -> CausalContext {
        CausalContext::default()
    }

    /// Whether `dot` has been seen. A zero counter is never a real dot and counts as seen.
    pub fn contains(&self, dot: &Dot) -> bool {
        dot.counter <= self.vv.get(&dot.actor).copied().unwrap_or(0) || self.cloud.contains(dot)
    }

    /// Records `dot` as seen; returns whether it was new. Keeps the context compact.
    pub fn insert(&mut self, dot: &Dot) -> bool {
        if self.contains(dot) {
            return false;
        }
        let v = self.vv.get(&dot.actor).copied().unwrap_or(0);
        if dot.counter == v + 1 {
            // Extends the vector; following cloud dots of the actor may now fold in too.
            let mut v = dot.counter;
            while v < u64::MAX && self.cloud.remove(&Dot::new(dot.actor.clone(), v + 1)) {
                v += 1;
            }
            self.vv.insert(dot.actor.clone(), v);
        } else {
            self.cloud.insert(dot.clone());
        }
        true
    }

    /// Adds every dot of `other` (set union). Keeps the context compact.
    pub fn merge(&mut self, other: &CausalContext) {
        for (actor, &c) in &other.vv {
            let v = self.vv.entry(actor.clone()).or_insert(0);
            *v = (*v).max(c);
        }
        self.cloud.extend(other.cloud.iter().cloned());
        self.compact();
    }

    /// Folds cloud dots that extend the vector contiguously into it and drops covered ones.
    pub fn compact(&mut self) {
        let cloud = std::mem::take(&mut self.cloud);
        for dot in cloud {
            let v = self.vv.get(&dot.actor).copied().unwrap_or(0);
            if dot.counter <= v {
                continue;
            }
            if dot.counter == v + 1 {
                self.vv.insert(dot.actor, dot.counter);
            } else {
                self.cloud.insert(dot);
            }
        }
        self.vv.retain(|_, c| *c > 0);
    }

    /// Whether every dot of `other` is in this context.
    pub fn includes(&self, other: &CausalContext) -> bool {
        other
            .vv
            .iter()
            .all(|(actor, &c)| self.covers_range(actor, c))
            && other.cloud.iter().all(|d| self.contains(d))
    }

    /// Whether every dot `(actor, 1..=upto)` is in this context. O(cloud dots of the actor).
    fn covers_range(&self, actor: &Actor, upto: u64) -> bool {
        let v = self.vv.get(actor).copied().unwrap_or(0);
        if upto <= v {
            return true;
        }
        let present = self
            .cloud
            .range(Dot::new(actor.clone(), v + 1)..=Dot::new(actor.clone(), upto))
            .count() as u64;
        present == upto - v
    }

    /// Names of the actors of which `other` holds a dot this context lacks.
    pub fn names_with_news(&self, other: &CausalContext) -> BTreeSet<NodeName> {
        let mut names = BTreeSet::new();
        for (actor, &c) in &other.vv {
            if !names.contains(&actor.name) && !self.covers_range(actor, c) {
                names.insert(actor.name.clone());
            }
        }
        for d in &other.cloud {
            if !names.contains(d.name()) && !self.contains(d) {
                names.insert(d.name().clone());
            }
        }
        names
    }

    /// The greatest dot of `name` seen (by creation, then counter).
    pub fn max_dot_for(&self, name: &NodeName) -> Option<Dot> {
        let from_vv = self
            .vv
            .range(Actor::lowest(name)..=Actor::highest(name))
            .next_back()
            .map(|(a, &c)| Dot::new(a.clone(), c));
        let from_cloud = self
            .cloud
            .range(Dot::new(Actor::lowest(name), 0)..=Dot::new(Actor::highest(name), u64::MAX))
            .next_back()
            .cloned();
        from_vv.max(from_cloud)
    }

    /// The highest counter of `actor` seen, 0 if none.
    pub fn max_counter(&self, actor: &Actor) -> u64 {
        let v = self.vv.get(actor).copied().unwrap_or(0);
        let c = self
            .cloud
            .range(Dot::new(actor.clone(), 0)..=Dot::new(actor.clone(), u64::MAX))
            .next_back()
            .map_or(0, |d| d.counter);
        v.max(c)
    }

    /// Every actor of `name` the context mentions, with its highest counter seen.
    pub fn actors_of(&self, name: &NodeName) -> BTreeMap<Actor, u64> {
        let mut out: BTreeMap<Actor, u64> = self
            .vv
            .range(Actor::lowest(name)..=Actor::highest(name))
            .map(|(a, &c)| (a.clone(), c))
            .collect();
        for d in self
            .cloud
            .range(Dot::new(Actor::lowest(name), 0)..=Dot::new(Actor::highest(name), u64::MAX))
        {
            let c = out.entry(d.actor.clone()).or_insert(0);
            *c = (*c).max(d.counter);
        }
        out
    }

    /// Every node name the context mentions, sorted.
    pub fn names(&self) -> BTreeSet<NodeName> {
        self.vv
            .keys()
            .map(|a| a.name.clone())
            .chain(self.cloud.iter().map(|d| d.name().clone()))
            .collect()
    }

    /// The version vector: every counter up to the value has been seen.
    pub fn vv(&self) -> &BTreeMap<Actor, u64> {
        &self.vv
    }

    /// Dots seen beyond the version vector.
    pub fn cloud(&self) -> &BTreeSet<Dot> {
        &self.cloud
    }

    /// Number of items (vector actors + cloud dots): the context's size on the wire, roughly.
    pub fn len(&self) -> usize {
        self.vv.len() + self.cloud.len()
    }

    /// Whether nothing has been seen.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty()
    }

    /// Keeps only the dots of the node `name` (every creation).
    fn retain_name(&mut self, name: &NodeName) {
        self.vv.retain(|a, _| a.name == *name);
        self.cloud.retain(|d| d.name() == name);
    }
}

/// A member's value in the map: how to reach it and which incarnation wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The node's spec (its name is the entry's key).
    pub spec: NodeSpec,
    /// The incarnation that wrote the entry; equals its dot's actor creation.
    pub creation: Creation,
}

impl Entry {
    /// The member's name.
    pub fn name(&self) -> &NodeName {
        self.spec.name()
    }
}

/// A piece of membership state to merge into a replica.
///
/// Semantics of [`Membership::merge_delta`]: an entry is added if its dot has not been seen;
/// every dot in `removed` is deleted from the store; `context` joins the receiver's context
/// (so a removed dot the receiver had never seen is still recorded, and an in-flight copy of the
/// entry can never be added later); then older entries of every name the delta taught something
/// about are superseded. `context` covers exactly the dots the delta is authoritative for: the
/// dots of `entries` and `removed` for a push, the sender's whole context for
/// [`Membership::delta_for`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Entries with their dots; at most one per name.
    pub entries: Vec<(Dot, Entry)>,
    /// Dots removed from the store.
    pub removed: Vec<Dot>,
    /// Dots the delta is authoritative for; covers every dot of `entries` and `removed`.
    pub context: CausalContext,
}

/// Why a [`Delta`] or [`CausalContext`] is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// More items than [`MAX_DELTA_ITEMS`].
    #[error("{items} items, more than the limit of {max}")]
    TooLarge {
        /// Items carried.
        items: usize,
        /// The limit.
        max: usize,
    },
    /// A dot with counter 0.
    #[error("dot {0} has counter 0")]
    ZeroCounter(Dot),
    /// An entry not written by its owner's actor.
    #[error("entry of {name} (creation {creation}) carries the dot {dot} of another actor")]
    ForeignDot {
        /// The entry's name.
        name: NodeName,
        /// The entry's creation.
        creation: Creation,
        /// Its dot.
        dot: Dot,
    },
    /// Two entries for the same name.
    #[error("two entries for {0}")]
    DuplicateName(NodeName),
    /// A dot listed twice, or both as an entry and as removed.
    #[error("dot {0} listed twice")]
    DuplicateDot(Dot),
    /// An entry or removed dot outside the delta's context.
    #[error("dot {0} is not covered by the delta's context")]
    NotCovered(Dot),
}

impl Delta {
    /// Whether applying the delta can change nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.removed.is_empty() && self.context.is_empty()
    }

    /// Number of items (entries, removed dots, context items).
    pub fn items(&self) -> usize {
        self.entries.len() + self.removed.len() + self.context.len()
    }

    /// Checks the delta is well formed: at most [`MAX_DELTA_ITEMS`] items, no zero counter,
    /// every entry carries a dot of its own actor (same name and creation), at most one entry
    /// per name, no dot listed twice, and `context` covers every listed dot. A delta that
    /// passes cannot break a replica's invariants; one that fails should be dropped whole.
    pub fn validate(&self) -> Result<(), MembershipError> {
        let items = self.items();
        if items > MAX_DELTA_ITEMS {
            return Err(MembershipError::TooLarge {
                items,
                max: MAX_DELTA_ITEMS,
            });
        }
        let mut names = BTreeSet::new();
        let mut dots = BTreeSet::new();
        for (dot, entry) in &self.entries {
            if dot.actor.name != *entry.name() || dot.actor.creation != entry.creation {
                return Err(MembershipError::ForeignDot {
                    name: entry.name().clone(),
                    creation: entry.creation,
                    dot: dot.clone(),
                });
            }
            if !names.insert(entry.name()) {
                return Err(MembershipError::DuplicateName(entry.name().clone()));
            }
        }
        for dot in self.entries.iter().map(|(d, _)| d).chain(&self.removed) {
            if dot.counter == 0 {
                return Err(MembershipError::ZeroCounter(dot.clone()));
            }
            if !dots.insert(dot) {
                return Err(MembershipError::DuplicateDot(dot.clone()));
            }
            if !self.context.contains(dot) {
                return Err(MembershipError::NotCovered(dot.clone()));
            }
        }
        Ok(())
    }
}

/// What a merge changed, for the overlay to act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Names that appeared or whose live entry changed, with the new entry; sorted by name.
    pub added: Vec<Entry>,
    /// Names that are no longer members; sorted.
    pub removed: Vec<NodeName>,
    /// Names about which the replica learned any new dot (even one that changed no entry);
    /// empty when the merge taught nothing.
    pub learned: BTreeSet<NodeName>,
}

impl Changes {
    /// Whether the merge taught nothing at all.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.learned.is_empty()
    }
}

/// A replica of the membership map. See the module documentation for the invariants.
///
/// Two replicas that have merged the same information are equal, whatever the order, grouping
/// or repetition of the merges, and then have the same [`Membership::hash`].
#[derive(Clone, Default)]
pub struct Membership {
    store: BTreeMap<NodeName, BTreeMap<Dot, Entry>>,
    context: CausalContext,
    /// Cached [`Membership::hash`]; cleared by every mutation.
    digest: Cell<Option<[u8; 16]>>,
}

impl PartialEq for Membership {
    fn eq(&self, other: &Membership) -> bool {
        self.store == other.store && self.context == other.context
    }
}

impl Eq for Membership {}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("store", &self.store)
            .field("context", &self.context)
            .finish()
    }
}

impl Membership {
    /// An empty replica.
    pub fn new() -> Membership {
        Membership::default()
    }

    /// Adds (or re-adds) the entry of the node `spec.name()` written by its own actor
    /// `(spec.name(), creation)`, with that actor's next counter. Older entries of the name are
    /// deleted (their dots stay in the context). If a newer dot of the name is already known
    /// (a higher creation), the new entry is superseded at once and the name stays as it was.
    /// Returns the delta to push: the new entry and the deleted dots, with exactly those dots
    /// as context.
    pub fn add(&mut self, spec: NodeSpec, creation: Creation) -> Delta {
        let name = spec.name().clone();
        let actor = Actor::new(name.clone(), creation);
        let counter = self.context.max_counter(&actor).saturating_add(1);
        let dot = Dot::new(actor, counter);
        let entry = Entry { spec, creation };
        let old: Vec<Dot> = self
            .store
            .remove(&name)
            .map(|m| m.into_keys().collect())
            .unwrap_or_default();
        self.store
            .entry(name.clone())
            .or_default()
            .insert(dot.clone(), entry.clone());
        let mut context = CausalContext::new();
        for d in old.iter().chain(std::iter::once(&dot)) {
            self.context.insert(d);
            context.insert(d);
        }
        self.supersede(&name);
        self.digest.set(None);
        Delta {
            entries: vec![(dot, entry)],
            removed: old,
            context,
        }
    }

    /// Observed remove: deletes the entry of `name` (its dots stay in the context, so no copy
    /// of it can come back). Returns the delta to push, empty if `name` was not a member. A
    /// concurrent re-add by the owner (a dot this replica has not seen) wins.
    pub fn remove(&mut self, name: &NodeName) -> Delta {
        let Some(old) = self.store.remove(name) else {
            return Delta::default();
        };
        self.digest.set(None);
        let removed: Vec<Dot> = old.into_keys().collect();
        let mut context = CausalContext::new();
        for d in &removed {
            context.insert(d);
        }
        Delta {
            entries: Vec::new(),
            removed,
            context,
        }
    }

    /// Merges a delta (see [`Delta`] for the semantics) and reports what changed. Never fails
    /// and never breaks the invariants, even on a delta [`Delta::validate`] would refuse
    /// (entries of a foreign actor are then simply never live); validate first to drop such a
    /// delta whole.
    pub fn merge_delta(&mut self, delta: &Delta) -> Changes {
        // Names the delta says something new about.
        let mut learned = self.context.names_with_news(&delta.context);
        for dot in delta.entries.iter().map(|(d, _)| d).chain(&delta.removed) {
            if !self.context.contains(dot) {
                learned.insert(dot.name().clone());
            }
        }
        let mut affected: BTreeSet<NodeName> = learned.clone();
        affected.extend(delta.entries.iter().map(|(_, e)| e.name().clone()));
        affected.extend(delta.removed.iter().map(|d| d.name().clone()));
        let before: BTreeMap<NodeName, Option<(Dot, Entry)>> = affected
            .iter()
            .map(|n| (n.clone(), self.live(n).map(|(d, e)| (d.clone(), e.clone()))))
            .collect();

        for (dot, entry) in &delta.entries {
            if !self.context.contains(dot) {
                self.store
                    .entry(entry.name().clone())
                    .or_default()
                    .insert(dot.clone(), entry.clone());
            }
        }
        for dot in &delta.removed {
            if let Some(m) = self.store.get_mut(dot.name()) {
                m.remove(dot);
                if m.is_empty() {
                    self.store.remove(dot.name());
                }
            }
        }
        for dot in delta.entries.iter().map(|(d, _)| d).chain(&delta.removed) {
            self.context.insert(dot);
        }
        self.context.merge(&delta.context);
        for name in &affected {
            self.supersede(name);
        }
        self.digest.set(None);

        let mut changes = Changes {
            learned,
            ..Changes::default()
        };
        for (name, old) in before {
            let new = self.live(&name);
            match (old, new) {
                (Some(_), None) => changes.removed.push(name),
                (None, Some((_, e))) => changes.added.push(e.clone()),
                (Some((od, _)), Some((nd, e))) if od != *nd => changes.added.push(e.clone()),
                _ => {}
            }
        }
        changes
    }

    /// Everything the holder of `their` lacks: the entries whose dots it has not seen, every
    /// tombstone (the newest dot of each name that is no longer live here), and this replica's
    /// whole context. `delta_for(&CausalContext::new())` is the whole state.
    ///
    /// Merging it is a full join for any replica whose context includes `their` (its context
    /// only grows, so the holder can merge it however late it arrives). An entry left out
    /// because `their` had seen it would look removed to a replica that has not:
    /// [`Membership::can_merge`] detects that case, and such a delta must then be dropped.
    pub fn delta_for(&self, their: &CausalContext) -> Delta {
        let entries = self
            .store
            .values()
            .flat_map(|m| m.iter())
            .filter(|(d, _)| !their.contains(d))
            .map(|(d, e)| (d.clone(), e.clone()))
            .collect();
        Delta {
            entries,
            removed: self.tombstones(),
            context: self.context.clone(),
        }
    }

    /// The newest dot of every name seen that is not live: the record of its removal (or of the
    /// removal of its newest incarnation).
    pub fn tombstones(&self) -> Vec<Dot> {
        self.context
            .names()
            .into_iter()
            .filter_map(|name| {
                let newest = self.context.max_dot_for(&name)?;
                let live = self.live(&name).is_some_and(|(d, _)| *d == newest);
                (!live).then_some(newest)
            })
            .collect()
    }

    /// Whether merging `delta` is a true join for this replica: for every name, the delta's
    /// newest dot is an entry of the delta, one of its removed dots, or already seen here.
    /// Otherwise the delta was trimmed for a replica that had seen more (a late answer meant
    /// for an earlier incarnation, or for this node before it forgot the cluster) and merging
    /// it would take a live entry for a removed one. Always true for [`Membership::add`],
    /// [`Membership::remove`], [`Membership::delta_of`] and whole-state deltas.
    pub fn can_merge(&self, delta: &Delta) -> bool {
        let listed: BTreeSet<&Dot> = delta
            .entries
            .iter()
            .map(|(d, _)| d)
            .chain(&delta.removed)
            .collect();
        delta.context.names().iter().all(|name| {
            delta
                .context
                .max_dot_for(name)
                .is_none_or(|m| self.context.contains(&m) || listed.contains(&m))
        })
    }

    /// What this replica knows about `names`, as a delta: for each name, its newest dot, as an
    /// entry if live or as a removal otherwise, with exactly those dots as context. Used to push
    /// fresh news without knowing the receivers' state. Names never seen are skipped.
    pub fn delta_of<'a>(&self, names: impl IntoIterator<Item = &'a NodeName>) -> Delta {
        let mut delta = Delta::default();
        for name in names {
            let Some(newest) = self.context.max_dot_for(name) else {
                continue;
            };
            match self.live(name) {
                Some((d, e)) if *d == newest => delta.entries.push((d.clone(), e.clone())),
                _ => delta.removed.push(newest.clone()),
            }
            delta.context.insert(&newest);
        }
        delta
    }

    /// A digest of the whole state (store and context): equal states give equal digests on
    /// every platform. The first 16 bytes of a SHA-256 over the canonical encoding; cached
    /// until the next mutation.
    pub fn hash(&self) -> [u8; 16] {
        if let Some(h) = self.digest.get() {
            return h;
        }
        let mut hasher = Sha256::new();
        hasher.update(b"partisan/membership/v1\0");
        // Serializing ordered maps of plain data into a hasher cannot fail.
        let _ = postcard::to_io(&(&self.store, &self.context), &mut hasher);
        let full = hasher.finalize();
        let mut h = [0u8; 16];
        h.copy_from_slice(&full[..16]);
        self.digest.set(Some(h));
        h
    }

    /// Member names, sorted.
    pub fn members(&self) -> Vec<NodeName> {
        self.store.keys().cloned().collect()
    }

    /// Whether `name` is a member.
    pub fn contains(&self, name: &NodeName) -> bool {
        self.store.contains_key(name)
    }

    /// The live entry of `name`.
    pub fn get(&self, name: &NodeName) -> Option<&Entry> {
        self.live(name).map(|(_, e)| e)
    }

    /// The live entry of `name` with its dot.
    pub fn live(&self, name: &NodeName) -> Option<(&Dot, &Entry)> {
        self.store.get(name).and_then(|m| m.iter().next_back())
    }

    /// Specs of every member, sorted by name.
    pub fn specs(&self) -> Vec<NodeSpec> {
        self.store
            .keys()
            .filter_map(|n| self.get(n))
            .map(|e| e.spec.clone())
            .collect()
    }

    /// Live entries with their dots, sorted by name.
    pub fn entries(&self) -> impl Iterator<Item = (&Dot, &Entry)> + '_ {
        self.store.values().flat_map(|m| m.iter())
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether there is no member.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// The causal context: every dot seen.
    pub fn context(&self) -> &CausalContext {
        &self.context
    }

    /// Local reset, *not* a CRDT operation: forgets everything except what concerns the node
    /// `name` (its entry if live and every dot of its actors, so its counters keep growing and
    /// its removed dots stay removed). Used when a node leaves or learns it was removed: it
    /// then knows nothing it could wrongly claim as removed to a cluster it joins later.
    pub fn forget_all_but(&mut self, name: &NodeName) {
        self.store.retain(|n, _| n == name);
        self.context.retain_name(name);
        self.digest.set(None);
    }

    /// Keeps only the entry of `name` whose dot is the newest dot of `name` in the context.
    fn supersede(&mut self, name: &NodeName) {
        let Some(m) = self.store.get_mut(name) else {
            return;
        };
        let newest = self.context.max_dot_for(name);
        m.retain(|d, _| Some(d) == newest.as_ref());
        if m.is_empty() {
            self.store.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn name(s: &str) -> NodeName {
        NodeName::new(&format!("{s}@h")).unwrap()
    }

    fn spec(s: &str, port: u16) -> NodeSpec {
        NodeSpec::new(
            name(s),
            vec![SocketAddr::from(([127, 0, 0, 1], port))],
            Default::default(),
        )
        .unwrap()
    }

    fn replica(s: &str, creation: Creation) -> (Membership, Delta) {
        let mut m = Membership::new();
        let d = m.add(spec(s, 1000), creation);
        (m, d)
    }

    fn sync(a: &mut Membership, b: &mut Membership) {
        let to_b = a.delta_for(b.context());
        let to_a = b.delta_for(a.context());
        b.merge_delta(&to_b);
        a.merge_delta(&to_a);
    }

    #[test]
    fn context_compacts_and_merges() {
        let a = Actor::new(name("a"), 1);
        let mut c = CausalContext::new();
        assert!(c.insert(&Dot::new(a.clone(), 3)));
        assert!(c.insert(&Dot::new(a.clone(), 2)));
        assert_eq!(c.vv().len(), 0);
        assert_eq!(c.cloud().len(), 2);
        assert!(c.insert(&Dot::new(a.clone(), 1)));
        assert_eq!(c.vv().get(&a), Some(&3));
        assert!(c.cloud().is_empty());
        assert!(!c.insert(&Dot::new(a.clone(), 2)));

        let mut d = CausalContext::new();
        d.insert(&Dot::new(a.clone(), 5));
        let mut e = c.clone();
        e.merge(&d);
        assert!(!e.includes(&CausalContext {
            vv: [(a.clone(), 6)].into(),
            cloud: BTreeSet::new()
        }));
        e.insert(&Dot::new(a.clone(), 4));
        assert_eq!(e.vv().get(&a), Some(&5));
        assert!(e.cloud().is_empty());
        assert!(e.includes(&c) && e.includes(&d) && !c.includes(&e));
        assert_eq!(e.max_dot_for(&name("a")), Some(Dot::new(a.clone(), 5)));
        assert_eq!(e.names_with_news(&c), BTreeSet::new());
        assert_eq!(c.names_with_news(&e), [name("a")].into());
    }

    #[test]
    fn decoded_context_is_compacted() {
        let a = Actor::new(name("a"), 1);
        let raw = CausalContext {
            vv: [(a.clone(), 1), (Actor::new(name("b"), 1), 0)].into(),
            cloud: [Dot::new(a.clone(), 2), Dot::new(a.clone(), 4)].into(),
        };
        let bytes = postcard::to_stdvec(&raw).unwrap();
        let c: CausalContext = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(c.vv(), &BTreeMap::from([(a.clone(), 2)]));
        assert_eq!(c.cloud(), &BTreeSet::from([Dot::new(a, 4)]));
    }

    #[test]
    fn add_remove_merge_commute_and_are_idempotent() {
        let (mut a, da) = replica("a", 1);
        let (mut b, db) = replica("b", 1);
        let rb = b.remove(&name("b"));
        let (_c, dc) = replica("c", 7);
        let deltas = [da, db, rb, dc];
        // Every order of application gives the same state.
        let orders: [[usize; 4]; 4] = [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]];
        let states: Vec<Membership> = orders
            .iter()
            .map(|o| {
                let mut m = Membership::new();
                for &i in o {
                    m.merge_delta(&deltas[i]);
                }
                m
            })
            .collect();
        for s in &states {
            assert_eq!(s, &states[0]);
            assert_eq!(s.hash(), states[0].hash());
        }
        assert_eq!(states[0].members(), vec![name("a"), name("c")]);
        // Idempotent: merging again changes nothing and teaches nothing.
        let mut again = states[0].clone();
        for d in &deltas {
            assert!(again.merge_delta(d).is_empty());
        }
        assert_eq!(again, states[0]);
        // Merging a whole state in either direction converges.
        sync(&mut a, &mut b);
        let mut full = Membership::new();
        full.merge_delta(&states[0].delta_for(&CausalContext::new()));
        a.merge_delta(&full.delta_for(a.context()));
        assert_eq!(a, full);
    }

    #[test]
    fn concurrent_add_and_remove_add_wins() {
        let (mut x, dx) = replica("x", 1);
        let mut r = Membership::new();
        r.merge_delta(&dx);
        // r removes x while x, concurrently, re-adds itself (e.g. with a new spec).
        let removal = r.remove(&name("x"));
        let readd = x.add(spec("x", 2000), 1);
        let mut p = Membership::new();
        p.merge_delta(&dx);
        p.merge_delta(&removal);
        p.merge_delta(&readd);
        let mut q = Membership::new();
        q.merge_delta(&readd);
        q.merge_delta(&removal);
        q.merge_delta(&dx);
        assert_eq!(p, q);
        assert_eq!(p.get(&name("x")).unwrap().spec, spec("x", 2000));
        // The removal also reaches x itself: its newer entry survives.
        let ch = x.merge_delta(&removal);
        assert!(ch.removed.is_empty());
        assert!(x.contains(&name("x")));
    }

    #[test]
    fn a_removed_entry_is_not_readded_by_a_stale_delta() {
        let (mut l, dl) = replica("l", 1);
        let mut a = Membership::new();
        a.merge_delta(&dl);
        let stale = a.delta_for(&CausalContext::new());
        // l leaves; b has never seen l's entry but gets the removal first.
        let leave = l.remove(&name("l"));
        let mut b = Membership::new();
        let ch = b.merge_delta(&leave);
        assert!(ch.removed.is_empty() && ch.learned.contains(&name("l")));
        // A delta sent before the leave arrives late: l must not come back, anywhere.
        assert!(b.merge_delta(&stale).added.is_empty());
        assert!(!b.contains(&name("l")));
        a.merge_delta(&leave);
        assert!(!a.contains(&name("l")));
        assert!(a.merge_delta(&stale).is_empty());
        assert!(!a.contains(&name("l")));
        sync(&mut a, &mut b);
        assert!(a.is_empty() && b.is_empty());
        assert_eq!(a.hash(), b.hash());
    }

    #[test]
    fn a_new_creation_replaces_the_old_entry() {
        let (_old, d_old) = replica("n", 5);
        let mut d_new_state = Membership::new();
        let d_new = d_new_state.add(spec("n", 2222), 9);
        let mut a = Membership::new();
        a.merge_delta(&d_old);
        let ch = a.merge_delta(&d_new);
        assert_eq!(ch.added.len(), 1);
        assert_eq!(a.get(&name("n")).unwrap().creation, 9);
        assert_eq!(a.len(), 1);
        // The old incarnation's entry arriving late is not added.
        let mut b = Membership::new();
        b.merge_delta(&d_new);
        let ch = b.merge_delta(&d_old);
        assert!(ch.added.is_empty() && ch.learned.contains(&name("n")));
        assert_eq!(b.get(&name("n")).unwrap().spec, spec("n", 2222));
        assert_eq!(a, b);
        // Knowing only of the newer incarnation's dot (no entry) supersedes the old entry too.
        let mut c = Membership::new();
        c.merge_delta(&d_old);
        let only_ctx = Delta {
            context: d_new.context.clone(),
            ..Delta::default()
        };
        let ch = c.merge_delta(&only_ctx);
        assert_eq!(ch.removed, vec![name("n")]);
    }

    #[test]
    fn re_adding_supersedes_the_older_dot_even_when_a_delta_was_missed() {
        let mut x = Membership::new();
        let d1 = x.add(spec("x", 1), 1);
        let _d2 = x.add(spec("x", 2), 1);
        let d3 = x.add(spec("x", 3), 1);
        let mut a = Membership::new();
        a.merge_delta(&d1);
        a.merge_delta(&d3); // d2 was lost
        assert_eq!(a.len(), 1);
        assert_eq!(a.get(&name("x")).unwrap().spec, spec("x", 3));
    }

    #[test]
    fn delta_for_converges_two_replicas() {
        let (mut a, _) = replica("a", 1);
        let (mut b, _) = replica("b", 1);
        let (_, dc) = replica("c", 1);
        let (_, dd) = replica("d", 1);
        a.merge_delta(&dc);
        b.merge_delta(&dc);
        b.merge_delta(&dd);
        a.remove(&name("c"));
        b.add(spec("b", 4444), 1);
        sync(&mut a, &mut b);
        assert_eq!(a, b);
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.members(), vec![name("a"), name("b"), name("d")]);
        assert_eq!(a.get(&name("b")).unwrap().spec, spec("b", 4444));
        // Nothing left to exchange: no entry, only the (already applied) removal of c.
        let d = a.delta_for(b.context());
        assert!(b.can_merge(&d));
        assert!(d.entries.is_empty());
        assert_eq!(d.removed.len(), 1);
        assert!(b.merge_delta(&d).is_empty());
        assert_eq!(a, b);
    }

    #[test]
    fn a_delta_trimmed_for_a_bigger_context_cannot_be_merged() {
        let (mut a, _) = replica("a", 1);
        let (mut b, _) = replica("b", 1);
        let (_, dx) = replica("x", 1);
        a.merge_delta(&dx);
        b.merge_delta(&dx);
        // b asks a; the answer leaves out x, which b has.
        let answer = a.delta_for(b.context());
        assert!(answer.entries.iter().all(|(d, _)| d.name() != &name("x")));
        assert!(b.can_merge(&answer));
        // A replica that never saw x (b forgot, or restarted) must not merge it: x would look
        // removed to it.
        let (fresh, _) = replica("b", 2);
        assert!(!fresh.can_merge(&answer));
        // Whole states, pushes and news always merge.
        assert!(fresh.can_merge(&a.delta_for(&CausalContext::new())));
        assert!(fresh.can_merge(&dx));
        assert!(fresh.can_merge(&a.delta_of([&name("x"), &name("a")])));
        let mut gone = a.clone();
        let removal = gone.remove(&name("x"));
        assert!(fresh.can_merge(&removal));
        assert!(fresh.can_merge(&gone.delta_for(b.context())));
    }

    #[test]
    fn delta_of_carries_news_without_knowing_the_receiver() {
        let (mut a, _) = replica("a", 1);
        let (_, dx) = replica("x", 1);
        let (_, dy) = replica("y", 1);
        a.merge_delta(&dx);
        a.merge_delta(&dy);
        a.remove(&name("y"));
        let push = a.delta_of([&name("x"), &name("y"), &name("never")]);
        push.validate().unwrap();
        assert_eq!(push.entries.len(), 1);
        assert_eq!(push.removed.len(), 1);
        let mut b = Membership::new();
        b.merge_delta(&dy);
        let ch = b.merge_delta(&push);
        assert_eq!(ch.removed, vec![name("y")]);
        assert_eq!(b.members(), vec![name("x")]);
    }

    #[test]
    fn validate_refuses_malformed_deltas() {
        let (_, good) = replica("a", 3);
        good.validate().unwrap();
        let mut foreign = good.clone();
        foreign.entries[0].1.spec = spec("b", 1);
        assert!(matches!(
            foreign.validate(),
            Err(MembershipError::ForeignDot { .. })
        ));
        let mut wrong_creation = good.clone();
        wrong_creation.entries[0].1.creation = 4;
        assert!(wrong_creation.validate().is_err());
        let mut uncovered = good.clone();
        uncovered.context = CausalContext::new();
        assert!(matches!(
            uncovered.validate(),
            Err(MembershipError::NotCovered(_))
        ));
        let mut twice = good.clone();
        twice.removed.push(twice.entries[0].0.clone());
        assert!(matches!(
            twice.validate(),
            Err(MembershipError::DuplicateDot(_))
        ));
        let mut two = good.clone();
        let mut d2 = two.entries[0].clone();
        d2.0.counter = 2;
        two.context.insert(&d2.0);
        two.entries.push(d2);
        assert!(matches!(
            two.validate(),
            Err(MembershipError::DuplicateName(_))
        ));
        let mut zero = good;
        zero.removed.push(Dot::new(Actor::new(name("z"), 1), 0));
        assert!(matches!(
            zero.validate(),
            Err(MembershipError::ZeroCounter(_))
        ));
    }

    #[test]
    fn forget_keeps_own_counters() {
        let (mut a, _) = replica("a", 1);
        let (_, dx) = replica("x", 1);
        a.merge_delta(&dx);
        a.remove(&name("a"));
        a.forget_all_but(&name("a"));
        assert!(a.is_empty());
        assert_eq!(a.context().names(), [name("a")].into());
        let d = a.add(spec("a", 1000), 1);
        assert_eq!(d.entries[0].0.counter, 2);
    }
}
