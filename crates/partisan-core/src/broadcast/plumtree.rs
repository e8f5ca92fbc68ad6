//! The Plumtree state machine of one handler.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rand::{Rng, RngCore};

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
    /// Trees (one per broadcasting root) kept; the least recently used is forgotten beyond.
    pub max_trees: usize,
    /// The paper's optimisation: when a message announced through a lazy link had taken this
    /// many fewer hops than the copy received by eager push, the lazy link replaces the eager
    /// one. 0 turns it off.
    pub optimize_threshold: u32,
    /// Receipts (id, hops, sender) remembered for the optimisation.
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
            max_trees: 4096,
            optimize_threshold: 3,
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

/// Counters of one handler's Plumtree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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

#[derive(Debug, Default)]
struct Tree {
    eager: BTreeSet<NodeName>,
    lazy: BTreeSet<NodeName>,
    used: u64,
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
    /// The shared tree: every root's prunes and grafts, where new roots' trees start.
    common: Tree,
    use_clock: u64,
    outstanding: BTreeMap<NodeName, VecDeque<Announcement>>,
    lazy_armed: bool,
    missing: BTreeMap<Vec<u8>, Missing>,
    schedule: BTreeSet<(Instant, Vec<u8>)>,
    graft_armed: Option<Instant>,
    receipts: BTreeMap<Vec<u8>, (u32, NodeName, NodeName)>,
    receipt_order: VecDeque<Vec<u8>>,
    exchanges: BTreeMap<u64, ExchangeInfo>,
    next_session: u64,
    stats: BroadcastStats,
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
    pub fn new(local: NodeName, handler: Box<dyn BroadcastHandler>, cfg: PlumtreeConfig) -> Self {
        Plumtree {
            local,
            cfg,
            handler,
            neighbours: BTreeSet::new(),
            trees: BTreeMap::new(),
            common: Tree::default(),
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
    pub fn start(&mut self, now: Instant, rng: &mut dyn RngCore, out: &mut Vec<PlumtreeOutput>) {
        let period = self.cfg.exchange_tick.as_micros() as u64;
        if period > 0 {
            let first = rng.gen_range(0..period.max(1)) + period / 2;
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

    /// Eager and lazy peers of the tree rooted at `root`, if a broadcast from it was seen.
    pub fn tree(&self, root: &NodeName) -> Option<(&BTreeSet<NodeName>, &BTreeSet<NodeName>)> {
        self.trees.get(root).map(|t| (&t.eager, &t.lazy))
    }

    /// Eager and lazy peers of the shared tree, which a new root's tree starts from.
    pub fn shared_tree(&self) -> (&BTreeSet<NodeName>, &BTreeSet<NodeName>) {
        (&self.common.eager, &self.common.lazy)
    }

    /// Roots of the trees kept, sorted.
    pub fn roots(&self) -> impl Iterator<Item = &NodeName> {
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
        let (id, payload) =
            self.handler
                .broadcast_data(msg)
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
        if !self.handler.merge(&id, &payload, receipt) {
            return Ok(());
        }
        self.stats.delivered += 1;
        self.remember_receipt(&id, 0, &local, &local);
        self.push(&id, &payload, &local, 1, None, now, out);
        Ok(())
    }

    /// The broadcast neighbours are now `members` (this node excluded): new ones are eager in
    /// every tree, lost ones leave every tree, their queued announcements and exchanges.
    pub fn set_neighbours(&mut self, mut members: BTreeSet<NodeName>) {
        members.remove(&self.local);
        let added: Vec<NodeName> = members.difference(&self.neighbours).cloned().collect();
        let removed: Vec<NodeName> = self.neighbours.difference(&members).cloned().collect();
        for p in &removed {
            self.common.eager.remove(p);
            self.common.lazy.remove(p);
            for t in self.trees.values_mut() {
                t.eager.remove(p);
                t.lazy.remove(p);
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
            self.common.lazy.remove(p);
            self.common.eager.insert(p.clone());
            for t in self.trees.values_mut() {
                t.lazy.remove(p);
                t.eager.insert(p.clone());
            }
        }
        self.neighbours = members;
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
            BroadcastBody::Prune { root } => {
                self.stats.prunes_received += 1;
                if neighbour {
                    self.mark(&root, from, false);
                }
            }
            BroadcastBody::Graft { id, root, round } => {
                self.stats.grafts_received += 1;
                if neighbour {
                    self.mark(&root, from, true);
                }
                if id.is_empty() {
                    return;
                }
                match self.handler.graft(&id) {
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
    pub fn on_timer(
        &mut self,
        timer: PlumtreeTimer,
        now: Instant,
        rng: &mut dyn RngCore,
        out: &mut Vec<PlumtreeOutput>,
    ) {
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
                self.exchange_tick(now, rng, out);
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

    /// Makes `peer` eager (or lazy) in `root`'s tree and in the shared tree new roots start
    /// from.
    fn mark(&mut self, root: &NodeName, peer: &NodeName, eager: bool) {
        let t = self.tree_mut(root);
        if eager {
            t.lazy.remove(peer);
            t.eager.insert(peer.clone());
        } else {
            t.eager.remove(peer);
            t.lazy.insert(peer.clone());
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

    fn tree_mut(&mut self, root: &NodeName) -> &mut Tree {
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
            // A new root's tree starts as the shared tree: the eager links every root's
            // prunes and grafts left (an undirected spanning tree serves every root), so a new
            // broadcaster does not flood. At first, every neighbour is eager.
            self.trees.insert(
                root.clone(),
                Tree {
                    eager: self.common.eager.clone(),
                    lazy: self.common.lazy.clone(),
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
        if self.handler.merge(&id, &payload, receipt) {
            self.stats.delivered += 1;
            self.forget_missing(&id);
            self.remember_receipt(&id, round, from, &root);
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
                    body: BroadcastBody::Prune { root },
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
        if self.handler.is_stale(&a.id) {
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
        let due = now + self.cfg.graft_timeout;
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
        self.mark(&root, from, true);
        if self.neighbours.contains(&eager_from) {
            self.mark(&root, &eager_from, false);
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
                body: BroadcastBody::Prune { root },
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
        let t = self.tree_mut(root);
        let eager: Vec<NodeName> = t
            .eager
            .iter()
            .filter(|p| Some(*p) != except && *p != root)
            .cloned()
            .collect();
        let lazy: Vec<NodeName> = t
            .lazy
            .iter()
            .filter(|p| Some(*p) != except && *p != root)
            .cloned()
            .collect();
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
        if lazy.is_empty() {
            return;
        }
        let max = self.cfg.max_outstanding_per_peer.max(1);
        for p in lazy {
            let q = self.outstanding.entry(p).or_default();
            if q.len() >= max {
                q.pop_front();
                self.stats.ihaves_dropped += 1;
            }
            q.push_back(Announcement {
                id: id.to_vec(),
                root: root.clone(),
                round,
            });
        }
        if !self.lazy_armed {
            self.lazy_armed = true;
            out.push(PlumtreeOutput::SetTimer {
                timer: PlumtreeTimer::Lazy,
                at: now + self.cfg.lazy_tick,
            });
        }
    }

    fn remember_receipt(&mut self, id: &[u8], round: u32, from: &NodeName, root: &NodeName) {
        if self.cfg.receipts == 0 {
            return;
        }
        if self
            .receipts
            .insert(id.to_vec(), (round, from.clone(), root.clone()))
            .is_none()
        {
            self.receipt_order.push_back(id.to_vec());
        }
        while self.receipt_order.len() > self.cfg.receipts {
            if let Some(old) = self.receipt_order.pop_front() {
                self.receipts.remove(&old);
            }
        }
    }

    fn forget_missing(&mut self, id: &[u8]) {
        if let Some(m) = self.missing.remove(id) {
            self.schedule.remove(&(m.due, id.to_vec()));
        }
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
            let stale = self.handler.is_stale(&id);
            let Some(m) = self.missing.get_mut(&id) else {
                continue;
            };
            let next = if stale {
                None
            } else {
                m.announcers.pop_front()
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

    fn exchange_tick(
        &mut self,
        now: Instant,
        rng: &mut dyn RngCore,
        out: &mut Vec<PlumtreeOutput>,
    ) {
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
        let peer = free[rng.gen_range(0..free.len())].clone();
        let Some(data) = self.handler.exchange_start(&peer) else {
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
        let step = self.handler.exchange_step(from, &data, !from_initiator);
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
