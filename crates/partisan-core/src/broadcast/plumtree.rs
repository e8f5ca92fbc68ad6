//! The Plumtree state machine of one handler.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use super::{
    Announcement, BroadcastBody, BroadcastError, BroadcastHandler, ExchangeSelector, ExchangeStep,
    GraftReply, Receipt,
};
use crate::id::NodeName;
use crate::time::Instant;

/// Settings of one handler's Plumtree (Partisan's names in parentheses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlumtreeConfig {
    /// How often announcements queued for lazy peers go out, batched per peer
    /// (`lazy_tick_period`, 1 s).
    pub lazy_tick: Duration,
    /// How often an anti-entropy exchange with one neighbour starts (`exchange_tick_period`,
    /// 10 s).
    pub exchange_tick: Duration,
    /// Exchanges running at once, at most (`broadcast_start_exchange_limit`, 1).
    pub max_exchanges: usize,
    /// An exchange not finished after this is given up.
    pub exchange_timeout: Duration,
    /// How long after the first announcement of a missing message it is grafted (the paper's
    /// timer; Partisan grafts at once, which grafts what the eager path is about to bring).
    pub graft_timeout: Duration,
    /// How long after a graft the next announcer is asked, if the payload has not come.
    pub graft_retry: Duration,
    /// Announcements queued per lazy peer between two lazy ticks; beyond it the oldest are
    /// dropped and counted (anti-entropy repairs what they would have).
    pub max_outstanding_per_peer: usize,
    /// Missing messages tracked at once; announcements of more are dropped and counted.
    pub max_missing: usize,
    /// Announcers remembered per missing message.
    pub max_announcers: usize,
    /// Roots with a tree of their own kept, at most; beyond, the least recently used root
    /// goes back to the shared tree.
    pub max_trees: usize,
    /// The paper's optimisation: when a message announced through a lazy link had taken this
    /// many fewer hops than the copy received by eager push, the lazy link replaces the eager
    /// one in that root's own links. 0 (the default) turns it off: it pays only for roots
    /// that broadcast again and again; with many broadcasters each root's shortcuts come after
    /// its message is delivered and only add duplicates (see `partisan sim plumtree
    /// --optimize-threshold`).
    pub optimize_threshold: u32,
    /// Receipts (id, hops, sender) remembered, at most: for the optimisation, and to announce
    /// recent messages to a new neighbour. Each is kept for two lazy ticks and a graft timeout
    /// (while announcements of it can still come).
    pub receipts: usize,
}

impl Default for PlumtreeConfig {
    fn default() -> Self {
        PlumtreeConfig {
            lazy_tick: Duration::from_secs(1),
            exchange_tick: Duration::from_secs(10),
            max_exchanges: 1,
            exchange_timeout: Duration::from_secs(60),
            graft_timeout: Duration::from_secs(1),
            graft_retry: Duration::from_millis(500),
            max_outstanding_per_peer: 4096,
            max_missing: 16_384,
            max_announcers: 8,
            max_trees: 1024,
            optimize_threshold: 0,
            receipts: 4096,
        }
    }
}

/// A timer of one handler's Plumtree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlumtreeTimer {
    /// Send queued announcements.
    Lazy,
    /// Start an anti-entropy exchange.
    Exchange,
    /// A missing message's graft is due.
    Graft,
}

/// What a Plumtree asks its engine to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlumtreeOutput {
    /// Send a message to a neighbour.
    Send {
        /// The neighbour.
        to: NodeName,
        /// The message.
        body: BroadcastBody,
    },
    /// Call [`Plumtree::on_timer`] with `timer` at `at` (replaces an earlier deadline).
    SetTimer {
        /// Which timer.
        timer: PlumtreeTimer,
        /// When.
        at: Instant,
    },
}

/// Counters of one handler's Plumtree (monotonic for the engine's life).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BroadcastStats {
    /// Broadcasts started on this node.
    pub broadcasts: u64,
    /// Messages delivered (merged as new), local broadcasts included.
    pub delivered: u64,
    /// Payload copies received from neighbours (eager pushes and graft answers).
    pub gossip_received: u64,
    /// Payload copies received that were already known.
    pub duplicates: u64,
    /// Payload copies sent.
    pub gossip_sent: u64,
    /// Prunes sent (a duplicate arrived on that link).
    pub prunes_sent: u64,
    /// Prunes received.
    pub prunes_received: u64,
    /// Grafts sent (a missing message's timer expired).
    pub grafts_sent: u64,
    /// Grafts received.
    pub grafts_received: u64,
    /// Grafts received for a message the handler no longer has or that is stale.
    pub grafts_unanswered: u64,
    /// Announcements sent (ids, not messages).
    pub ihaves_sent: u64,
    /// Announcements received.
    pub ihaves_received: u64,
    /// Announcements dropped from a full per-peer queue.
    pub ihaves_dropped: u64,
    /// Announcements of a missing message dropped because the missing table was full.
    pub missing_dropped: u64,
    /// Missing messages given up after every announcer was asked.
    pub missing_expired: u64,
    /// Lazy links promoted by the optimisation (fewer hops than the eager path).
    pub optimizations: u64,
    /// Anti-entropy exchanges started here.
    pub exchanges: u64,
    /// Exchanges started here that finished.
    pub exchanges_completed: u64,
    /// Exchanges started here and given up (timeout or neighbour lost).
    pub exchanges_failed: u64,
    /// Exchanges cancelled by the user.
    pub exchanges_cancelled: u64,
    /// Exchange messages received, either side.
    pub exchange_messages: u64,
    /// Trees forgotten because more than `max_trees` roots broadcast.
    pub trees_evicted: u64,
    /// Messages from nodes that are not broadcast neighbours, still processed but not used to
    /// shape trees.
    pub from_non_neighbours: u64,
    /// Handler callbacks that panicked (caught; the callback counted as not new, stale,
    /// nothing to graft or no exchange).
    pub handler_panics: u64,
    /// Broadcast neighbours gained.
    pub neighbours_up: u64,
    /// Broadcast neighbours lost.
    pub neighbours_down: u64,
}

/// A running anti-entropy exchange this node started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeInfo {
    /// The session number.
    pub session: u64,
    /// The neighbour.
    pub peer: NodeName,
    /// When it started.
    pub started: Instant,
}

/// A root's own links: where its tree differs from the shared tree (`true`: eager), set by
/// the paper's optimisation (a shortcut from this root only).
#[derive(Debug, Default)]
struct Tree {
    own: BTreeMap<NodeName, bool>,
    used: u64,
}

/// The shared tree: every neighbour is in exactly one of the two sets.
#[derive(Debug, Default)]
struct Shared {
    eager: BTreeSet<NodeName>,
    lazy: BTreeSet<NodeName>,
}

#[derive(Debug)]
struct Missing {
    due: Instant,
    announcers: VecDeque<(NodeName, NodeName, u32)>,
}

/// One handler's Plumtree: its trees, queued announcements, missing messages and exchanges.
pub struct Plumtree {
    local: NodeName,
    cfg: PlumtreeConfig,
    handler: Box<dyn BroadcastHandler>,
    neighbours: BTreeSet<NodeName>,
    trees: BTreeMap<NodeName, Tree>,
    /// The tree of every root without its own: shaped by their prunes and grafts.
    common: Shared,
    use_clock: u64,
    outstanding: BTreeMap<NodeName, VecDeque<Announcement>>,
    lazy_armed: bool,
    missing: BTreeMap<Vec<u8>, Missing>,
    schedule: BTreeSet<(Instant, Vec<u8>)>,
    graft_armed: Option<Instant>,
    receipts: BTreeMap<Vec<u8>, (u32, NodeName, NodeName)>,
    receipt_order: VecDeque<(Instant, Vec<u8>)>,
    exchanges: BTreeMap<u64, ExchangeInfo>,
    next_session: u64,
    stats: BroadcastStats,
    /// Graft jitter, the first exchange tick and exchange peers.
    rng: rand::rngs::StdRng,
}

impl std::fmt::Debug for Plumtree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plumtree")
            .field("handler", &self.handler.name())
            .field("neighbours", &self.neighbours.len())
            .field("trees", &self.trees.len())
            .finish_non_exhaustive()
    }
}

impl Plumtree {
    /// A Plumtree for `handler` on node `local`, with no neighbours yet. Call
    /// [`Plumtree::start`] before anything else.
    /// `seed` drives its random choices (graft jitter, exchange peers).
    pub fn new(
        local: NodeName,
        handler: Box<dyn BroadcastHandler>,
        cfg: PlumtreeConfig,
        seed: u64,
    ) -> Self {
        Plumtree {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            local,
            cfg,
            handler,
            neighbours: BTreeSet::new(),
            trees: BTreeMap::new(),
            common: Shared::default(),
            use_clock: 0,
            outstanding: BTreeMap::new(),
            lazy_armed: false,
            missing: BTreeMap::new(),
            schedule: BTreeSet::new(),
            graft_armed: None,
            receipts: BTreeMap::new(),
            receipt_order: VecDeque::new(),
            exchanges: BTreeMap::new(),
            next_session: 0,
            stats: BroadcastStats::default(),
        }
    }

    /// Arms the exchange tick (the first one a random fraction of a period after `now`, so
    /// nodes started together do not exchange in step).
    pub fn start(&mut self, now: Instant, out: &mut Vec<PlumtreeOutput>) {
        let period = self.cfg.exchange_tick.as_micros() as u64;
        if period > 0 {
            let first = self.rng.gen_range(0..period.max(1)) + period / 2;
            out.push(PlumtreeOutput::SetTimer {
                timer: PlumtreeTimer::Exchange,
                at: now + Duration::from_micros(first),
            });
        }
    }

    // ----- reads -----

    /// The handler's name.
    pub fn name(&self) -> &str {
        self.handler.name()
    }

    /// The handler.
    pub fn handler(&self) -> &dyn BroadcastHandler {
        self.handler.as_ref()
    }

    /// The handler, mutably (changes made here are not broadcast).
    pub fn handler_mut(&mut self) -> &mut dyn BroadcastHandler {
        self.handler.as_mut()
    }

    /// The settings.
    pub fn config(&self) -> &PlumtreeConfig {
        &self.cfg
    }

    /// Broadcast neighbours: the overlay's broadcast members that are up.
    pub fn neighbours(&self) -> &BTreeSet<NodeName> {
        &self.neighbours
    }

    /// Eager and lazy peers of the tree rooted at `root`: its own tree if it has one (see
    /// [`Plumtree::own_roots`]), else the shared tree.
    pub fn tree(&self, root: &NodeName) -> (BTreeSet<NodeName>, BTreeSet<NodeName>) {
        let (mut eager, mut lazy) = (BTreeSet::new(), BTreeSet::new());
        for p in &self.neighbours {
            if self.is_eager(root, p) {
                eager.insert(p.clone());
            } else {
                lazy.insert(p.clone());
            }
        }
        (eager, lazy)
    }

    fn is_eager(&self, root: &NodeName, p: &NodeName) -> bool {
        self.trees
            .get(root)
            .and_then(|t| t.own.get(p).copied())
            .unwrap_or_else(|| self.common.eager.contains(p))
    }

    /// Eager and lazy peers of the shared tree, which every root without its own uses.
    pub fn shared_tree(&self) -> (&BTreeSet<NodeName>, &BTreeSet<NodeName>) {
        (&self.common.eager, &self.common.lazy)
    }

    /// Roots with a tree of their own (given by the paper's optimisation: a shortcut that
    /// is one from that root only), sorted.
    pub fn own_roots(&self) -> impl Iterator<Item = &NodeName> {
        self.trees.keys()
    }

    /// Running exchanges this node started, by session.
    pub fn exchanges(&self) -> impl Iterator<Item = &ExchangeInfo> {
        self.exchanges.values()
    }

    /// Messages announced and not received yet.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    /// Announcements queued for lazy peers.
    pub fn outstanding(&self) -> usize {
        self.outstanding.values().map(VecDeque::len).sum()
    }

    /// Counters.
    pub fn stats(&self) -> &BroadcastStats {
        &self.stats
    }

    // ----- inputs -----

    /// Broadcasts `msg` from this node: the handler turns it into an id and payload, merges it
    /// here, and it is pushed to the eager peers of this node's tree and announced to the lazy
    /// ones.
    pub fn broadcast(
        &mut self,
        msg: &[u8],
        now: Instant,
        out: &mut Vec<PlumtreeOutput>,
    ) -> Result<(), BroadcastError> {
        let refused = Err("the handler panicked".to_string());
        let (id, payload) = self
            .guarded(refused, |h| h.broadcast_data(msg))
            .map_err(|reason| BroadcastError::Refused {
                handler: self.handler.name().to_string(),
                reason,
            })?;
        self.stats.broadcasts += 1;
        let local = self.local.clone();
        let receipt = Receipt {
            from: &local,
            root: &local,
            round: 0,
        };
        if !self.guarded(false, |h| h.merge(&id, &payload, receipt)) {
            return Ok(());
        }
        self.stats.delivered += 1;
        self.remember_receipt(&id, 0, &local, &local, now);
        self.push(&id, &payload, &local, 1, None, now, out);
        Ok(())
    }

    /// The broadcast neighbours are now `members` (this node excluded): new ones are eager in
    /// every tree and are announced the messages received in the last few seconds (a message
    /// pushed only to neighbours that then vanished still spreads through the new ones); lost
    /// ones leave every tree, with their queued announcements and exchanges.
    pub fn set_neighbours(
        &mut self,
        mut members: BTreeSet<NodeName>,
        now: Instant,
        out: &mut Vec<PlumtreeOutput>,
    ) {
        members.remove(&self.local);
        let added: Vec<NodeName> = members.difference(&self.neighbours).cloned().collect();
        let removed: Vec<NodeName> = self.neighbours.difference(&members).cloned().collect();
        self.stats.neighbours_up += added.len() as u64;
        self.stats.neighbours_down += removed.len() as u64;
        for p in &removed {
            self.common.eager.remove(p);
            self.common.lazy.remove(p);
            for t in self.trees.values_mut() {
                t.own.remove(p);
            }
            self.outstanding.remove(p);
            for m in self.missing.values_mut() {
                m.announcers.retain(|(a, _, _)| a != p);
            }
            let lost: Vec<u64> = self
                .exchanges
                .iter()
                .filter(|(_, e)| &e.peer == p)
                .map(|(s, _)| *s)
                .collect();
            for s in lost {
                self.exchanges.remove(&s);
                self.stats.exchanges_failed += 1;
            }
        }
        for p in &added {
            // A new neighbour is eager in every tree (the paper's NeighborUp).
            self.common.lazy.remove(p);
            self.common.eager.insert(p.clone());
            for t in self.trees.values_mut() {
                t.own.remove(p);
            }
        }
        self.neighbours = members;
        self.expire_receipts(now);
        if added.is_empty() || self.receipt_order.is_empty() {
            return;
        }
        let recent: Vec<Announcement> = self
            .receipt_order
            .iter()
            .filter_map(|(_, id)| {
                let (round, _, root) = self.receipts.get(id)?;
                Some(Announcement {
                    id: id.clone(),
                    root: root.clone(),
                    round: round.saturating_add(1),
                })
            })
            .collect();
        for p in added {
            self.queue_announcements(p, recent.iter().cloned(), now, out);
        }
    }

    /// A message from `from`.
    pub fn on_message(
        &mut self,
        from: &NodeName,
        body: BroadcastBody,
        now: Instant,
        out: &mut Vec<PlumtreeOutput>,
    ) {
        let neighbour = self.neighbours.contains(from);
        if !neighbour && !matches!(body, BroadcastBody::Exchange { .. }) {
            self.stats.from_non_neighbours += 1;
        }
        match body {
            BroadcastBody::Gossip {
                id,
                payload,
                root,
                round,
            } => self.on_gossip(from, neighbour, id, payload, root, round, now, out),
            BroadcastBody::IHave(list) => {
                for a in list {
                    self.on_ihave(from, neighbour, a, now, out);
                }
                self.arm_graft(out);
            }
            BroadcastBody::Prune { root, shortcut } => {
                self.stats.prunes_received += 1;
                if neighbour && shortcut {
                    self.own_tree(&root).own.insert(from.clone(), false);
                } else if neighbour {
                    self.mark(&root, from, false);
                }
            }
            BroadcastBody::Graft { id, root, round } => {
                self.stats.grafts_received += 1;
                if neighbour && id.is_empty() {
                    self.own_tree(&root).own.insert(from.clone(), true);
                } else if neighbour {
                    self.mark(&root, from, true);
                }
                if id.is_empty() {
                    return;
                }
                match self.guarded(GraftReply::Missing, |h| h.graft(&id)) {
                    GraftReply::Payload(payload) => {
                        self.stats.gossip_sent += 1;
                        out.push(PlumtreeOutput::Send {
                            to: from.clone(),
                            body: BroadcastBody::Gossip {
                                id,
                                payload,
                                root,
                                round,
                            },
                        });
                    }
                    GraftReply::Stale | GraftReply::Missing => self.stats.grafts_unanswered += 1,
                }
            }
            BroadcastBody::Exchange {
                session,
                from_initiator,
                data,
            } => self.on_exchange(from, session, from_initiator, data, out),
        }
    }

    /// A timer armed with [`PlumtreeOutput::SetTimer`] fired.
    pub fn on_timer(&mut self, timer: PlumtreeTimer, now: Instant, out: &mut Vec<PlumtreeOutput>) {
        match timer {
            PlumtreeTimer::Lazy => {
                self.lazy_armed = false;
                for (peer, queue) in std::mem::take(&mut self.outstanding) {
                    if !self.neighbours.contains(&peer) || queue.is_empty() {
                        continue;
                    }
                    self.stats.ihaves_sent += queue.len() as u64;
                    out.push(PlumtreeOutput::Send {
                        to: peer,
                        body: BroadcastBody::IHave(queue.into()),
                    });
                }
            }
            PlumtreeTimer::Graft => {
                self.graft_armed = None;
                self.graft_due(now, out);
                self.arm_graft(out);
            }
            PlumtreeTimer::Exchange => {
                self.exchange_tick(now, out);
                out.push(PlumtreeOutput::SetTimer {
                    timer: PlumtreeTimer::Exchange,
                    at: now + self.cfg.exchange_tick,
                });
            }
        }
    }

    /// Cancels running exchanges this node started; returns how many.
    pub fn cancel_exchanges(&mut self, which: &ExchangeSelector) -> usize {
        let before = self.exchanges.len();
        self.exchanges.retain(|_, e| match which {
            ExchangeSelector::All => false,
            ExchangeSelector::Peer(p) => &e.peer != p,
        });
        let n = before - self.exchanges.len();
        self.stats.exchanges_cancelled += n as u64;
        n
    }

    // ----- internals -----

    /// Runs a handler callback. A panic in it is caught and counted, and `fallback` stands for
    /// its answer (not new, stale, nothing to graft, no exchange): a broken handler costs its
    /// own deliveries, never the node's control plane (as Partisan wraps its callbacks).
    fn guarded<R>(&mut self, fallback: R, f: impl FnOnce(&mut dyn BroadcastHandler) -> R) -> R {
        let h = self.handler.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(h))) {
            Ok(r) => r,
            Err(_) => {
                self.stats.handler_panics += 1;
                fallback
            }
        }
    }

    /// Makes `peer` eager (or lazy) in the shared tree, and in `root`'s own links if it has
    /// one to `peer`.
    fn mark(&mut self, root: &NodeName, peer: &NodeName, eager: bool) {
        if let Some(t) = self.trees.get_mut(root) {
            if let Some(e) = t.own.get_mut(peer) {
                *e = eager;
            }
        }
        let c = &mut self.common;
        if eager {
            c.lazy.remove(peer);
            c.eager.insert(peer.clone());
        } else {
            c.eager.remove(peer);
            c.lazy.insert(peer.clone());
        }
    }

    /// `root`'s own links, empty if it had none (beyond `max_trees` roots, the least recently
    /// used root's are forgotten: it uses the shared tree alone again).
    fn own_tree(&mut self, root: &NodeName) -> &mut Tree {
        self.use_clock += 1;
        let used = self.use_clock;
        if !self.trees.contains_key(root) {
            if self.trees.len() >= self.cfg.max_trees.max(1) {
                if let Some(oldest) = self
                    .trees
                    .iter()
                    .min_by_key(|(_, t)| t.used)
                    .map(|(r, _)| r.clone())
                {
                    self.trees.remove(&oldest);
                    self.stats.trees_evicted += 1;
                }
            }
            self.trees.insert(
                root.clone(),
                Tree {
                    own: BTreeMap::new(),
                    used,
                },
            );
        }
        let t = self.trees.get_mut(root).expect("inserted above");
        t.used = used;
        t
    }

    #[allow(clippy::too_many_arguments)]
    fn on_gossip(
        &mut self,
        from: &NodeName,
        neighbour: bool,
        id: Vec<u8>,
        payload: Vec<u8>,
        root: NodeName,
        round: u32,
        now: Instant,
        out: &mut Vec<PlumtreeOutput>,
    ) {
        self.stats.gossip_received += 1;
        let receipt = Receipt {
            from,
            root: &root,
            round,
        };
        if self.guarded(false, |h| h.merge(&id, &payload, receipt)) {
            self.stats.delivered += 1;
            self.forget_missing(&id);
            self.remember_receipt(&id, round, from, &root, now);
            if neighbour {
                self.mark(&root, from, true);
            }
            self.push(
                &id,
                &payload,
                &root,
                round.saturating_add(1),
                Some(from),
                now,
                out,
            );
        } else {
            self.stats.duplicates += 1;
            self.forget_missing(&id);
            if neighbour {
                self.mark(&root, from, false);
                self.stats.prunes_sent += 1;
                out.push(PlumtreeOutput::Send {
                    to: from.clone(),
                    body: BroadcastBody::Prune {
                        root,
                        shortcut: false,
                    },
                });
            }
        }
    }

    fn on_ihave(
        &mut self,
        from: &NodeName,
        neighbour: bool,
        a: Announcement,
        now: Instant,
        out: &mut Vec<PlumtreeOutput>,
    ) {
        self.stats.ihaves_received += 1;
        if self.guarded(true, |h| h.is_stale(&a.id)) {
            self.forget_missing(&a.id);
            self.maybe_optimize(from, neighbour, &a, out);
            return;
        }
        if !neighbour {
            return;
        }
        let max_announcers = self.cfg.max_announcers.max(1);
        if let Some(m) = self.missing.get_mut(&a.id) {
            if m.announcers.len() < max_announcers && !m.announcers.iter().any(|x| &x.0 == from) {
                m.announcers.push_back((from.clone(), a.root, a.round));
            }
            return;
        }
        if self.missing.len() >= self.cfg.max_missing {
            self.stats.missing_dropped += 1;
            return;
        }
        // Jittered by up to half the timeout: the nodes cut off from a tree hear of the
        // message at about the same lazy tick, and the first graft's push should reach the
        // others before they graft too (each graft adds a link; several make cycles).
        let due = now + self.cfg.graft_timeout + self.jittered(self.cfg.graft_timeout / 2);
        self.schedule.insert((due, a.id.clone()));
        self.missing.insert(
            a.id,
            Missing {
                due,
                announcers: VecDeque::from([(from.clone(), a.root, a.round)]),
            },
        );
    }

    /// The paper's optimisation: a lazy link that brought the announcement in fewer hops (by
    /// the threshold) than the eager copy took replaces the eager link in that tree.
    fn maybe_optimize(
        &mut self,
        from: &NodeName,
        neighbour: bool,
        a: &Announcement,
        out: &mut Vec<PlumtreeOutput>,
    ) {
        let threshold = self.cfg.optimize_threshold;
        if threshold == 0 || !neighbour {
            return;
        }
        let Some((round, eager_from, root)) = self.receipts.get(&a.id).cloned() else {
            return;
        };
        if eager_from == *from
            || eager_from == self.local
            || root != a.root
            || a.round.saturating_add(threshold) > round
        {
            return;
        }
        // Once per message: the receipt now records the shorter path.
        self.receipts
            .insert(a.id.clone(), (a.round, from.clone(), root.clone()));
        self.stats.optimizations += 1;
        // In this root's own tree: the shortcut is one from this root only.
        let neighbour_eager = self.neighbours.contains(&eager_from);
        let t = self.own_tree(&root);
        t.own.insert(from.clone(), true);
        if neighbour_eager {
            t.own.insert(eager_from.clone(), false);
        }
        self.stats.grafts_sent += 1;
        out.push(PlumtreeOutput::Send {
            to: from.clone(),
            body: BroadcastBody::Graft {
                id: Vec::new(),
                root: root.clone(),
                round: a.round,
            },
        });
        if self.neighbours.contains(&eager_from) {
            self.stats.prunes_sent += 1;
            out.push(PlumtreeOutput::Send {
                to: eager_from,
                body: BroadcastBody::Prune {
                    root,
                    shortcut: true,
                },
            });
        }
    }

    /// Eager push to the tree's eager peers and lazy announcements to its lazy ones, but to
    /// `except`.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        id: &[u8],
        payload: &[u8],
        root: &NodeName,
        round: u32,
        except: Option<&NodeName>,
        now: Instant,
        out: &mut Vec<PlumtreeOutput>,
    ) {
        let (mut eager, mut lazy) = (Vec::new(), Vec::new());
        for p in &self.neighbours {
            if Some(p) == except || p == root {
                continue;
            }
            if self.is_eager(root, p) {
                eager.push(p.clone());
            } else {
                lazy.push(p.clone());
            }
        }
        for p in eager {
            self.stats.gossip_sent += 1;
            out.push(PlumtreeOutput::Send {
                to: p,
                body: BroadcastBody::Gossip {
                    id: id.to_vec(),
                    payload: payload.to_vec(),
                    root: root.clone(),
                    round,
                },
            });
        }
        for p in lazy {
            let a = Announcement {
                id: id.to_vec(),
                root: root.clone(),
                round,
            };
            self.queue_announcements(p, std::iter::once(a), now, out);
        }
    }

    /// Queues announcements for `peer`'s next lazy tick (bounded; the oldest go).
    fn queue_announcements(
        &mut self,
        peer: NodeName,
        list: impl Iterator<Item = Announcement>,
        now: Instant,
        out: &mut Vec<PlumtreeOutput>,
    ) {
        let max = self.cfg.max_outstanding_per_peer.max(1);
        let q = self.outstanding.entry(peer).or_default();
        for a in list {
            if q.len() >= max {
                q.pop_front();
                self.stats.ihaves_dropped += 1;
            }
            q.push_back(a);
        }
        if !self.lazy_armed {
            self.lazy_armed = true;
            out.push(PlumtreeOutput::SetTimer {
                timer: PlumtreeTimer::Lazy,
                at: now + self.cfg.lazy_tick,
            });
        }
    }

    fn remember_receipt(
        &mut self,
        id: &[u8],
        round: u32,
        from: &NodeName,
        root: &NodeName,
        now: Instant,
    ) {
        if self.cfg.receipts == 0 {
            return;
        }
        self.expire_receipts(now);
        while self.receipt_order.len() >= self.cfg.receipts {
            if let Some((_, old)) = self.receipt_order.pop_front() {
                self.receipts.remove(&old);
            }
        }
        if self
            .receipts
            .insert(id.to_vec(), (round, from.clone(), root.clone()))
            .is_none()
        {
            self.receipt_order.push_back((now, id.to_vec()));
        }
    }

    /// Forgets receipts older than two lazy ticks and a graft timeout.
    fn expire_receipts(&mut self, now: Instant) {
        let keep = self.cfg.lazy_tick * 2 + self.cfg.graft_timeout;
        while let Some((at, old)) = self.receipt_order.front() {
            if now.saturating_since(*at) < keep {
                break;
            }
            self.receipts.remove(old);
            self.receipt_order.pop_front();
        }
    }

    fn forget_missing(&mut self, id: &[u8]) {
        if let Some(m) = self.missing.remove(id) {
            self.schedule.remove(&(m.due, id.to_vec()));
        }
    }

    fn jittered(&mut self, max: Duration) -> Duration {
        let m = max.as_micros() as u64;
        if m == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.rng.gen_range(0..=m))
    }

    fn arm_graft(&mut self, out: &mut Vec<PlumtreeOutput>) {
        let Some((due, _)) = self.schedule.first() else {
            return;
        };
        if self.graft_armed.is_none_or(|at| at > *due) {
            self.graft_armed = Some(*due);
            out.push(PlumtreeOutput::SetTimer {
                timer: PlumtreeTimer::Graft,
                at: *due,
            });
        }
    }

    fn graft_due(&mut self, now: Instant, out: &mut Vec<PlumtreeOutput>) {
        while let Some((due, id)) = self.schedule.first().cloned() {
            if due > now {
                break;
            }
            self.schedule.pop_first();
            let stale = self.guarded(true, |h| h.is_stale(&id));
            let Some(m) = self.missing.get_mut(&id) else {
                continue;
            };
            // The announcer closest to the root (fewest hops; the first such) is asked: the
            // part a cut left out joins the tree as high up as it can, keeping it shallow.
            let best = m
                .announcers
                .iter()
                .enumerate()
                .min_by_key(|(k, a)| (a.2, *k))
                .map(|(k, _)| k);
            let next = if stale {
                None
            } else {
                best.and_then(|k| m.announcers.remove(k))
            };
            let Some((peer, root, round)) = next else {
                self.missing.remove(&id);
                if !stale {
                    self.stats.missing_expired += 1;
                }
                continue;
            };
            let again = now + self.cfg.graft_retry;
            m.due = again;
            self.schedule.insert((again, id.clone()));
            if self.neighbours.contains(&peer) {
                self.mark(&root, &peer, true);
            }
            self.stats.grafts_sent += 1;
            out.push(PlumtreeOutput::Send {
                to: peer,
                body: BroadcastBody::Graft { id, root, round },
            });
        }
    }

    fn exchange_tick(&mut self, now: Instant, out: &mut Vec<PlumtreeOutput>) {
        let timeout = self.cfg.exchange_timeout;
        let before = self.exchanges.len();
        self.exchanges
            .retain(|_, e| now.saturating_since(e.started) < timeout);
        self.stats.exchanges_failed += (before - self.exchanges.len()) as u64;
        if self.exchanges.len() >= self.cfg.max_exchanges {
            return;
        }
        let busy: BTreeSet<&NodeName> = self.exchanges.values().map(|e| &e.peer).collect();
        let free: Vec<&NodeName> = self
            .neighbours
            .iter()
            .filter(|p| !busy.contains(p))
            .collect();
        if free.is_empty() {
            return;
        }
        let pick = self.rng.gen_range(0..free.len());
        let peer = free[pick].clone();
        let Some(data) = self.guarded(None, |h| h.exchange_start(&peer)) else {
            return;
        };
        self.next_session += 1;
        let session = self.next_session;
        self.stats.exchanges += 1;
        self.exchanges.insert(
            session,
            ExchangeInfo {
                session,
                peer: peer.clone(),
                started: now,
            },
        );
        out.push(PlumtreeOutput::Send {
            to: peer,
            body: BroadcastBody::Exchange {
                session,
                from_initiator: true,
                data,
            },
        });
    }

    fn on_exchange(
        &mut self,
        from: &NodeName,
        session: u64,
        from_initiator: bool,
        data: Vec<u8>,
        out: &mut Vec<PlumtreeOutput>,
    ) {
        self.stats.exchange_messages += 1;
        if !from_initiator {
            // An answer to a session this node started, unless it was given up.
            if self.exchanges.get(&session).is_none_or(|e| &e.peer != from) {
                return;
            }
        }
        let step = self.guarded(ExchangeStep::Finish(None), |h| {
            h.exchange_step(from, &data, !from_initiator)
        });
        let reply = match step {
            ExchangeStep::Continue(r) => Some(r),
            ExchangeStep::Finish(r) => {
                if !from_initiator && self.exchanges.remove(&session).is_some() {
                    self.stats.exchanges_completed += 1;
                }
                r
            }
        };
        if let Some(data) = reply {
            out.push(PlumtreeOutput::Send {
                to: from.clone(),
                body: BroadcastBody::Exchange {
                    session,
                    from_initiator: !from_initiator,
                    data,
                },
            });
        }
    }
}
