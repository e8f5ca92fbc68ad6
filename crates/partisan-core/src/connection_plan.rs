//! Which connections a node keeps, when it dials, and which of two simultaneous connections
//! survives. Sans-IO: the runtime (or the simulator) reports what happened on the network and
//! carries out the dials and closes this planner asks for.
//!
//! There is one connection per (peer, channel, lane) slot, carrying traffic both ways. A node
//! dials the lanes of the *peer's* spec for every peer it wants, and accepts inbound connections
//! for the lanes of its own spec. When both nodes dial the same slot at once, the connection
//! dialed by the node whose name orders first survives; the other is refused with
//! [`RefuseCode::Simultaneous`]. A newer incarnation of a peer (higher creation) replaces every
//! connection of the older one; an older incarnation is refused.
//!
//! A peer is wanted for one or more reasons ([`Want`]): by the user (`connect`), by the
//! overlay, or transiently (to deliver a protocol message to a node the overlay does not keep,
//! such as a shuffle reply). A transient want dials only the `membership` channel's first lane
//! and lapses after its time to live; when the last reason goes, the connections this node
//! dialed close (those the peer dialed stay while it wants them; `forget` closes everything).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng, RngCore};

pub use crate::dial_failure::DialFailure;
use crate::id::{ChannelName, Creation, NodeName, NodeSpec};
use crate::time::Instant;
use crate::wire::handshake::{PeerHello, RefuseCode};

/// Identifies one connection for its whole life; chosen by the runtime, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Who a dial is for: a known node, or an address whose node is not known yet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DialTarget {
    /// A node whose spec is known.
    Node(NodeName),
    /// An address given by the user (`connect(addr)`, `join(addr)`); the node is learned at
    /// the handshake.
    Addr(SocketAddr),
}

/// Why a peer is wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The user asked (`connect`): every lane, until the user disconnects.
    User,
    /// The overlay keeps it: every lane, until the overlay disconnects.
    Overlay,
    /// To deliver messages: the first membership lane, for `ttl` after the last use.
    Transient {
        /// How long the want lasts.
        ttl: Duration,
    },
}

/// One dial the runtime must attempt, and report back with the same key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialRequest {
    /// Who the dial is for.
    pub target: DialTarget,
    /// Addresses to try, in order.
    pub addrs: Vec<SocketAddr>,
    /// Node that must answer (refuse anyone else), when known.
    pub expect: Option<NodeName>,
    /// Channel of the connection.
    pub channel: ChannelName,
    /// Lane of the connection.
    pub lane: u16,
}

/// Why the planner asks for a connection to be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Another connection took over its slot.
    Replaced,
    /// It belongs to an older incarnation of the peer.
    StaleCreation,
    /// The peer is no longer wanted.
    Unwanted,
    /// The peer stopped answering keepalive probes (decided by the engine, not the planner):
    /// the connection is cut at once, without a goodbye.
    KeepaliveTimeout,
    /// This node is shutting down.
    ShuttingDown,
    /// A process signal could not be queued: the lane is far past its bound (the peer reads
    /// too slowly). Cut at once, like [`CloseReason::KeepaliveTimeout`].
    Stalled,
}

impl CloseReason {
    /// Whether the connection is cut at once, without flushing or a goodbye.
    pub fn is_abrupt(self) -> bool {
        matches!(self, CloseReason::KeepaliveTimeout | CloseReason::Stalled)
    }
}

/// What the planner asks the runtime to do, or tells it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanOutput {
    /// Open a connection.
    Dial(DialRequest),
    /// Close a connection.
    Close {
        /// Which.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// First lane to a peer is up.
    PeerUp {
        /// The peer as learned at the handshake.
        hello: PeerHello,
    },
    /// Last lane to a peer is down.
    PeerDown {
        /// The peer.
        node: NodeName,
    },
    /// A wanted peer with no lane up could not be dialed (reported once per outage), or a
    /// transient want lapsed before the peer was reached.
    Unreachable {
        /// The peer.
        node: NodeName,
    },
    /// A peer already reported [`PlanOutput::Unreachable`] was wanted again for a message
    /// (a transient want), redialed at once, and failed again: the messages held for it will
    /// not go. The outage goes on (no new [`PlanOutput::Unreachable`]).
    StillUnreachable {
        /// The peer.
        node: NodeName,
    },
    /// A target given to [`ConnectionPlan::want_addr`] answered as this node.
    Resolved {
        /// The address.
        addr: SocketAddr,
        /// The node that answered.
        hello: PeerHello,
    },
    /// The planner stopped tracking a node: no reason to want it and no lane up.
    Forgotten {
        /// The node.
        node: NodeName,
    },
    /// A target was given up on because of a permanent failure.
    GaveUp {
        /// The target.
        target: DialTarget,
        /// Why.
        reason: DialFailure,
    },
    /// Dials to a target keep failing and are retried with backoff: reported at the 1st,
    /// 10th, 100th, ... consecutive failure (races excepted), so a log says it without
    /// repeating it on every redial. Addresses and nodes wanted by the user or the overlay
    /// only: transient wants are expected to meet nodes that are gone.
    DialFailing {
        /// The target.
        target: DialTarget,
        /// The latest failure.
        failure: DialFailure,
        /// Consecutive failures so far.
        failures: u32,
    },
}

/// Whether the `n`th consecutive failure is reported: the first, then every tenfold.
fn reported(n: u32) -> bool {
    let mut m = n;
    while m >= 10 && m % 10 == 0 {
        m /= 10;
    }
    m == 1
}

/// Redial timing: exponential backoff with jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first redial after a loss.
    pub initial: Duration,
    /// Upper bound of the delay while other lanes to the peer are up.
    pub max: Duration,
    /// Upper bound of the delay once every lane to the peer is down (it is unreachable): the
    /// delay keeps doubling past `max` up to this, so a dead member costs little.
    pub outage_max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            outage_max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// Delay after `failures` consecutive failures, with ±25% jitter from `rng`.
    fn delay(&self, failures: u32, rng: &mut dyn RngCore) -> Duration {
        self.delay_up_to(failures, self.max, rng)
    }

    /// [`Backoff::delay`] with `cap` as the upper bound.
    fn delay_up_to(&self, failures: u32, cap: Duration, rng: &mut dyn RngCore) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << failures.min(20))
            .min(cap);
        let micros = exp.as_micros() as u64;
        let jitter = micros / 4;
        let lo = micros - jitter;
        Duration::from_micros(if jitter == 0 {
            micros
        } else {
            rng.gen_range(lo..=micros + jitter)
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Slot {
    Idle {
        failures: u32,
        retry_at: Option<Instant>,
    },
    Dialing {
        failures: u32,
    },
    Up {
        conn: ConnId,
        creation: Creation,
        /// This node dialed it (else the peer did, and still wants it).
        dialed: bool,
    },
}

type SlotKey = (ChannelName, u16);

fn membership_lane() -> SlotKey {
    (ChannelName::membership(), 0)
}

#[derive(Debug, Default)]
struct Reasons {
    user: bool,
    overlay: bool,
    transient_until: Option<Instant>,
}

impl Reasons {
    fn any(&self) -> bool {
        self.user || self.overlay || self.transient_until.is_some()
    }

    /// Whether every lane is wanted (not just the transient membership lane).
    fn full(&self) -> bool {
        self.user || self.overlay
    }
}

#[derive(Debug)]
struct Peer {
    spec: Option<NodeSpec>,
    creation: Option<Creation>,
    reasons: Reasons,
    slots: BTreeMap<SlotKey, Slot>,
    /// Dials failed (any lane) since a lane was last up.
    dial_failures: u32,
    /// The latest dial failure since a lane was last up.
    last_failure: Option<DialFailure>,
    /// When the current outage was reported with [`PlanOutput::Unreachable`] (every lane down
    /// and a dial failed); `None` while a lane is up or no dial has failed since.
    unreachable_since: Option<Instant>,
    /// Wanted for a message during the outage: the next dial failure is reported
    /// ([`PlanOutput::StillUnreachable`]).
    renotify: bool,
}

impl Peer {
    fn new() -> Peer {
        Peer {
            spec: None,
            creation: None,
            reasons: Reasons::default(),
            slots: BTreeMap::new(),
            dial_failures: 0,
            last_failure: None,
            unreachable_since: None,
            renotify: false,
        }
    }

    fn up_count(&self) -> usize {
        self.slots
            .values()
            .filter(|s| matches!(s, Slot::Up { .. }))
            .count()
    }

    /// Whether we dial this slot: a lane of the peer's spec, and wanted for the whole peer or
    /// it is the transient membership lane.
    fn dials(&self, key: &SlotKey) -> bool {
        self.reasons.any()
            && self
                .spec
                .as_ref()
                .is_some_and(|s| s.has_lane(&key.0, key.1))
            && (self.reasons.full() || *key == membership_lane())
    }
}

#[derive(Debug)]
struct AddrTarget {
    state: Slot,
    want: Want,
    /// The latest dial failure.
    last_failure: Option<DialFailure>,
}

/// The connection planner of one node. See the module documentation.
pub struct ConnectionPlan {
    local: NodeSpec,
    backoff: Backoff,
    rng: Box<dyn RngCore + Send>,
    peers: BTreeMap<NodeName, Peer>,
    addrs: BTreeMap<SocketAddr, AddrTarget>,
    /// Redials due, ordered by time; entries are checked against the slot when they fire.
    retries: BTreeSet<(Instant, DialTarget, SlotKey)>,
    /// Transient wants lapsing, ordered by time; checked against the peer when they fire.
    expiries: BTreeSet<(Instant, NodeName)>,
}

impl ConnectionPlan {
    /// A planner for the node described by `local`.
    pub fn new(local: NodeSpec, backoff: Backoff, rng: Box<dyn RngCore + Send>) -> Self {
        ConnectionPlan {
            local,
            backoff,
            rng,
            peers: BTreeMap::new(),
            addrs: BTreeMap::new(),
            retries: BTreeSet::new(),
            expiries: BTreeSet::new(),
        }
    }

    /// This node's spec.
    pub fn local(&self) -> &NodeSpec {
        &self.local
    }

    /// Wants `spec`'s node for `why`, dialing what that calls for and redialing with backoff
    /// when lost. While the peer has no lane up, `spec` replaces any spec known for it (a node
    /// that came back on a new address); while connected, the spec learned from the peer's own
    /// handshake is kept.
    pub fn want(&mut self, spec: NodeSpec, why: Want, now: Instant, out: &mut Vec<PlanOutput>) {
        if spec.name() == self.local.name() {
            return;
        }
        let name = spec.name().clone();
        let peer = self.peers.entry(name.clone()).or_insert_with(Peer::new);
        match why {
            Want::User => peer.reasons.user = true,
            Want::Overlay => peer.reasons.overlay = true,
            Want::Transient { ttl } => {
                let until = now + ttl;
                if peer.reasons.transient_until.is_none_or(|u| u < until) {
                    peer.reasons.transient_until = Some(until);
                    self.expiries.insert((until, name.clone()));
                }
            }
        }
        if peer.up_count() == 0 || peer.spec.is_none() {
            peer.spec = Some(spec);
        }
        // A message for a peer in an outage: its redial may be a minute away, so it is
        // redialed now, and a failure is reported again (the sender is waiting to know).
        if matches!(why, Want::Transient { .. })
            && peer.unreachable_since.is_some()
            && peer.up_count() == 0
        {
            peer.renotify = true;
            for slot in peer.slots.values_mut() {
                if let Slot::Idle { retry_at, .. } = slot {
                    *retry_at = None;
                }
            }
        }
        self.plan_peer(&name, out);
    }

    /// Connect to whatever node listens at `addr`, retrying with backoff until it answers;
    /// once it does, it is wanted for `why` (reported with [`PlanOutput::Resolved`]). Returns
    /// `false` (and does nothing) when `addr` is one of this node's own listen addresses or a
    /// connected peer's.
    pub fn want_addr(
        &mut self,
        addr: SocketAddr,
        why: Want,
        now: Instant,
        out: &mut Vec<PlanOutput>,
    ) -> bool {
        let _ = now;
        if self.local.listen_addrs().contains(&addr) {
            return false;
        }
        let known = self.peers.values().any(|p| {
            p.up_count() > 0
                && p.spec
                    .as_ref()
                    .is_some_and(|s| s.listen_addrs().contains(&addr))
        });
        if known {
            return false;
        }
        if let Some(t) = self.addrs.get_mut(&addr) {
            if matches!(why, Want::User | Want::Overlay) {
                t.want = why;
            }
            return true;
        }
        self.addrs.insert(
            addr,
            AddrTarget {
                state: Slot::Idle {
                    failures: 0,
                    retry_at: None,
                },
                want: why,
                last_failure: None,
            },
        );
        self.dial_addr(addr, out);
        true
    }

    /// Withdraws one reason to want `node` (`User` or `Overlay`; a transient want lapses by
    /// itself). When no reason is left, the node's connections close and are not redialed.
    pub fn unwant(&mut self, node: &NodeName, why: Want, out: &mut Vec<PlanOutput>) {
        let Some(peer) = self.peers.get_mut(node) else {
            return;
        };
        match why {
            Want::User => peer.reasons.user = false,
            Want::Overlay => peer.reasons.overlay = false,
            Want::Transient { .. } => peer.reasons.transient_until = None,
        }
        if !peer.reasons.any() {
            self.drop_peer(node, false, out);
        }
    }

    /// Withdraws every reason to want `node` and closes all its connections, those the peer
    /// dialed included.
    pub fn forget(&mut self, node: &NodeName, out: &mut Vec<PlanOutput>) {
        if let Some(peer) = self.peers.get_mut(node) {
            peer.reasons = Reasons::default();
            self.drop_peer(node, true, out);
        }
    }

    /// Closes the connections to an unwanted `node` that this node dialed (all of them with
    /// `all`) and stops dialing. Connections the peer dialed stay: it still wants them, and
    /// closing them would look like a failure on its side (a HyParView neighbor that merely
    /// answered our shuffle would drop us from its active view).
    fn drop_peer(&mut self, node: &NodeName, all: bool, out: &mut Vec<PlanOutput>) {
        let Some(peer) = self.peers.get_mut(node) else {
            return;
        };
        let was_up = peer.up_count() > 0;
        for slot in peer.slots.values_mut() {
            match *slot {
                Slot::Up { dialed: false, .. } if !all => continue,
                Slot::Up { conn, .. } => out.push(PlanOutput::Close {
                    conn,
                    reason: CloseReason::Unwanted,
                }),
                _ => {}
            }
            *slot = Slot::Idle {
                failures: 0,
                retry_at: None,
            };
        }
        if peer.up_count() == 0 {
            self.peers.remove(node);
            if was_up {
                out.push(PlanOutput::PeerDown { node: node.clone() });
            }
            out.push(PlanOutput::Forgotten { node: node.clone() });
        }
    }

    /// Stops dialing an address target that never answered.
    pub fn unwant_addr(&mut self, addr: &SocketAddr) {
        self.addrs.remove(addr);
    }

    /// Decide whether to admit an authenticated inbound connection `conn` from `peer`.
    /// On `Ok`, the slot is now this connection's (replacing the returned one, which the caller
    /// closes); on `Err`, refuse the dialer with that code.
    pub fn admit(
        &mut self,
        conn: ConnId,
        peer: &PeerHello,
        now: Instant,
        out: &mut Vec<PlanOutput>,
    ) -> Result<Option<ConnId>, RefuseCode> {
        let name = peer.spec().name().clone();
        let key: SlotKey = (peer.channel.clone(), peer.lane);
        if let Some(p) = self.peers.get(&name) {
            if p.creation.is_some_and(|c| peer.creation() < c) {
                return Err(RefuseCode::StaleCreation);
            }
            if matches!(p.slots.get(&key), Some(Slot::Dialing { .. }))
                && p.creation.is_none_or(|c| c == peer.creation())
                && self.local.name() < &name
            {
                return Err(RefuseCode::Simultaneous);
            }
        }
        Ok(self.install(conn, peer, key, false, now, out))
    }

    /// A dial reported established (the acceptor admitted it). Returns the connection it
    /// replaces, or `Err` when this connection must be closed instead.
    pub fn on_established(
        &mut self,
        conn: ConnId,
        target: &DialTarget,
        peer: &PeerHello,
        now: Instant,
        out: &mut Vec<PlanOutput>,
    ) -> Result<Option<ConnId>, CloseReason> {
        let name = peer.spec().name().clone();
        let key: SlotKey = (peer.channel.clone(), peer.lane);
        if let DialTarget::Addr(addr) = target {
            let Some(t) = self.addrs.remove(addr) else {
                return Err(CloseReason::Unwanted);
            };
            out.push(PlanOutput::Resolved {
                addr: *addr,
                hello: peer.clone(),
            });
            let p = self.peers.entry(name.clone()).or_insert_with(Peer::new);
            match t.want {
                Want::User => p.reasons.user = true,
                Want::Overlay => p.reasons.overlay = true,
                Want::Transient { ttl } => {
                    let until = now + ttl;
                    p.reasons.transient_until = Some(until);
                    self.expiries.insert((until, name.clone()));
                }
            }
        }
        match self.peers.get(&name) {
            Some(p) if p.reasons.any() => {
                if p.creation.is_some_and(|c| peer.creation() < c) {
                    return Err(CloseReason::StaleCreation);
                }
            }
            _ => return Err(CloseReason::Unwanted),
        }
        Ok(self.install(conn, peer, key, true, now, out))
    }

    /// A dial failed before being established. A target never reached that fails
    /// permanently ([`DialFailure::is_permanent`]) is given up ([`PlanOutput::GaveUp`]); any
    /// other failure is redialed with backoff.
    pub fn on_dial_failed(
        &mut self,
        target: &DialTarget,
        channel: &ChannelName,
        lane: u16,
        failure: DialFailure,
        now: Instant,
        out: &mut Vec<PlanOutput>,
    ) {
        match target {
            DialTarget::Addr(addr) => {
                let Some(t) = self.addrs.get_mut(addr) else {
                    return;
                };
                if failure.is_permanent() {
                    self.addrs.remove(addr);
                    out.push(PlanOutput::GaveUp {
                        target: target.clone(),
                        reason: failure,
                    });
                    return;
                }
                let failures = match t.state {
                    Slot::Dialing { failures } => failures + 1,
                    _ => return,
                };
                let at = now + self.backoff.delay(failures, &mut *self.rng);
                t.state = Slot::Idle {
                    failures,
                    retry_at: Some(at),
                };
                if reported(failures) && !failure.is_race() {
                    out.push(PlanOutput::DialFailing {
                        target: target.clone(),
                        failure: failure.clone(),
                        failures,
                    });
                }
                t.last_failure = Some(failure);
                self.retries.insert((at, target.clone(), membership_lane()));
            }
            DialTarget::Node(name) => {
                let key = (channel.clone(), lane);
                // A node we have reached before is a member whose address answers wrongly for
                // now (it restarted elsewhere, another process holds its port): it may come
                // back there, so it is redialed with backoff like any lost peer. Only a node
                // never reached is given up on.
                let known = self.peers.get(name).is_some_and(|p| p.creation.is_some());
                if failure.is_permanent() && !known {
                    if self.peers.contains_key(name) {
                        self.drop_peer(name, true, out);
                        out.push(PlanOutput::GaveUp {
                            target: target.clone(),
                            reason: failure,
                        });
                    }
                    return;
                }
                let Some(peer) = self.peers.get_mut(name) else {
                    return;
                };
                let Some(Slot::Dialing { failures }) = peer.slots.get(&key).cloned() else {
                    return;
                };
                let failures = failures + 1;
                let cap = if peer.up_count() == 0 {
                    self.backoff.outage_max.max(self.backoff.max)
                } else {
                    self.backoff.max
                };
                let at = now + self.backoff.delay_up_to(failures, cap, &mut *self.rng);
                peer.slots.insert(
                    key.clone(),
                    Slot::Idle {
                        failures,
                        retry_at: Some(at),
                    },
                );
                self.retries.insert((at, target.clone(), key));
                // Only peers kept for the user or the overlay: a transient want (a shuffle
                // reply, a passive member probed for promotion) is expected to find nodes gone.
                if !failure.is_race() && peer.reasons.full() {
                    peer.dial_failures = peer.dial_failures.saturating_add(1);
                    if reported(peer.dial_failures) {
                        out.push(PlanOutput::DialFailing {
                            target: target.clone(),
                            failure: failure.clone(),
                            failures: peer.dial_failures,
                        });
                    }
                }
                // A race (the peer's own dial won, or it was busy) says nothing about whether
                // the peer can be reached: the lanes it dialed are coming up.
                let race = failure.is_race();
                peer.last_failure = Some(failure);
                if !race && peer.up_count() == 0 && peer.unreachable_since.is_none() {
                    peer.unreachable_since = Some(now);
                    peer.renotify = false;
                    out.push(PlanOutput::Unreachable { node: name.clone() });
                } else if !race && peer.renotify {
                    peer.renotify = false;
                    out.push(PlanOutput::StillUnreachable { node: name.clone() });
                }
            }
        }
    }

    /// Peers wanted by the user or the overlay whose every lane is down and that could not be
    /// dialed since, with when that was first found.
    pub fn unreachable(&self) -> impl Iterator<Item = (&NodeName, Instant)> {
        self.peers.iter().filter_map(|(n, p)| {
            let since = p.unreachable_since?;
            (p.reasons.full() && p.up_count() == 0).then_some((n, since))
        })
    }

    /// The latest failure of a dial to `target` since it was last reached, while the planner
    /// still tracks it.
    pub fn last_failure(&self, target: &DialTarget) -> Option<&DialFailure> {
        match target {
            DialTarget::Addr(a) => self.addrs.get(a)?.last_failure.as_ref(),
            DialTarget::Node(n) => self.peers.get(n)?.last_failure.as_ref(),
        }
    }

    /// An established connection closed (either side, any reason).
    pub fn on_closed(
        &mut self,
        conn: ConnId,
        node: &NodeName,
        channel: &ChannelName,
        lane: u16,
        now: Instant,
        out: &mut Vec<PlanOutput>,
    ) {
        let key = (channel.clone(), lane);
        let Some(peer) = self.peers.get_mut(node) else {
            return;
        };
        match peer.slots.get(&key) {
            Some(Slot::Up { conn: c, .. }) if *c == conn => {}
            _ => return,
        }
        let redial = peer.dials(&key);
        let retry_at = redial.then(|| now + self.backoff.delay(0, &mut *self.rng));
        peer.slots.insert(
            key.clone(),
            Slot::Idle {
                failures: 0,
                retry_at,
            },
        );
        if let Some(at) = retry_at {
            self.retries
                .insert((at, DialTarget::Node(node.clone()), key));
        }
        if peer.up_count() == 0 {
            out.push(PlanOutput::PeerDown { node: node.clone() });
            if !peer.reasons.any() {
                self.peers.remove(node);
                out.push(PlanOutput::Forgotten { node: node.clone() });
            }
        }
    }

    /// When [`ConnectionPlan::on_tick`] next has work, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let r = self.retries.first().map(|(at, _, _)| *at);
        let e = self.expiries.first().map(|(at, _)| *at);
        match (r, e) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires every redial and expiry that is due at `now`.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<PlanOutput>) {
        while let Some((at, name)) = self.expiries.first().cloned() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            let Some(peer) = self.peers.get_mut(&name) else {
                continue;
            };
            if peer.reasons.transient_until != Some(at) {
                continue;
            }
            peer.reasons.transient_until = None;
            if !peer.reasons.any() {
                let never_reached = peer.up_count() == 0;
                self.drop_peer(&name, false, out);
                if never_reached {
                    out.push(PlanOutput::Unreachable { node: name });
                }
            }
        }
        while let Some((at, target, key)) = self.retries.first().cloned() {
            if at > now {
                break;
            }
            self.retries.pop_first();
            match &target {
                DialTarget::Addr(addr) => {
                    let due = matches!(
                        self.addrs.get(addr).map(|t| &t.state),
                        Some(Slot::Idle { retry_at: Some(r), .. }) if *r == at
                    );
                    if due {
                        self.dial_addr(*addr, out);
                    }
                }
                DialTarget::Node(name) => {
                    let Some(peer) = self.peers.get_mut(name) else {
                        continue;
                    };
                    let Some(Slot::Idle {
                        failures,
                        retry_at: Some(r),
                    }) = peer.slots.get(&key).cloned()
                    else {
                        continue;
                    };
                    if r != at {
                        continue;
                    }
                    if !peer.dials(&key) {
                        // Not wanted now (the peer is kept for another reason, such as a
                        // temporary want of its membership lane): the slot waits idle, and a
                        // later want dials it at once.
                        peer.slots.insert(
                            key,
                            Slot::Idle {
                                failures,
                                retry_at: None,
                            },
                        );
                        continue;
                    }
                    let spec = peer.spec.clone().expect("dialed slots have a spec");
                    peer.slots.insert(key.clone(), Slot::Dialing { failures });
                    out.push(PlanOutput::Dial(dial_request(&spec, &key)));
                }
            }
        }
    }

    /// Names of peers wanted for any reason, in order.
    pub fn wanted(&self) -> impl Iterator<Item = &NodeName> {
        self.peers
            .iter()
            .filter(|(_, p)| p.reasons.any())
            .map(|(n, _)| n)
    }

    /// Whether `node` is wanted for any reason.
    pub fn is_wanted(&self, node: &NodeName) -> bool {
        self.peers.get(node).is_some_and(|p| p.reasons.any())
    }

    /// The planner's state for `node` (wants, slots, creation), for diagnostics.
    pub fn describe_peer(&self, node: &NodeName) -> String {
        match self.peers.get(node) {
            None => "not known".into(),
            Some(p) => format!(
                "user={} overlay={} transient_until={:?} creation={:?} slots={:?}",
                p.reasons.user, p.reasons.overlay, p.reasons.transient_until, p.creation, p.slots
            ),
        }
    }

    /// Address targets still waiting for their first answer.
    pub fn pending_addrs(&self) -> impl Iterator<Item = &SocketAddr> {
        self.addrs.keys()
    }

    /// Puts `conn` into its slot, handling a newer creation; returns the replaced connection.
    fn install(
        &mut self,
        conn: ConnId,
        hello: &PeerHello,
        key: SlotKey,
        dialed: bool,
        _now: Instant,
        out: &mut Vec<PlanOutput>,
    ) -> Option<ConnId> {
        let name = hello.spec().name().clone();
        let peer = self.peers.entry(name.clone()).or_insert_with(Peer::new);
        let mut was_up = peer.up_count() > 0;
        let newer = peer.creation.is_none_or(|c| hello.creation() > c);
        if newer {
            if peer.creation.is_some() {
                // A new incarnation: every connection of the old one is dead weight.
                for (k, slot) in peer.slots.iter_mut() {
                    if let Slot::Up { conn: old, .. } = *slot {
                        // The connection in the new one's own slot is returned as replaced.
                        if *k != key {
                            out.push(PlanOutput::Close {
                                conn: old,
                                reason: CloseReason::StaleCreation,
                            });
                            *slot = Slot::Idle {
                                failures: 0,
                                retry_at: None,
                            };
                        }
                    }
                }
                if was_up {
                    out.push(PlanOutput::PeerDown { node: name.clone() });
                    was_up = false;
                }
            }
            peer.creation = Some(hello.creation());
            peer.spec = Some(hello.spec().clone());
        }
        let replaced = match peer.slots.insert(
            key,
            Slot::Up {
                conn,
                creation: hello.creation(),
                dialed,
            },
        ) {
            Some(Slot::Up { conn: old, .. }) if old != conn => Some(old),
            _ => None,
        };
        peer.unreachable_since = None;
        peer.renotify = false;
        peer.dial_failures = 0;
        peer.last_failure = None;
        if !was_up {
            out.push(PlanOutput::PeerUp {
                hello: hello.clone(),
            });
        }
        self.plan_peer(&name, out);
        replaced
    }

    /// Dials every idle, not-yet-scheduled slot a wanted peer calls for.
    fn plan_peer(&mut self, name: &NodeName, out: &mut Vec<PlanOutput>) {
        let Some(peer) = self.peers.get_mut(name) else {
            return;
        };
        let Some(spec) = peer.spec.clone() else {
            return;
        };
        for (channel, lane) in spec.lanes() {
            let key = (channel.clone(), lane);
            if !peer.dials(&key) {
                continue;
            }
            let slot = peer.slots.entry(key.clone()).or_insert(Slot::Idle {
                failures: 0,
                retry_at: None,
            });
            if let Slot::Idle {
                failures,
                retry_at: None,
            } = *slot
            {
                *slot = Slot::Dialing { failures };
                out.push(PlanOutput::Dial(dial_request(&spec, &key)));
            }
        }
    }

    fn dial_addr(&mut self, addr: SocketAddr, out: &mut Vec<PlanOutput>) {
        let Some(t) = self.addrs.get_mut(&addr) else {
            return;
        };
        let failures = match t.state {
            Slot::Idle { failures, .. } => failures,
            _ => return,
        };
        t.state = Slot::Dialing { failures };
        out.push(PlanOutput::Dial(DialRequest {
            target: DialTarget::Addr(addr),
            addrs: vec![addr],
            expect: None,
            channel: ChannelName::membership(),
            lane: 0,
        }));
    }
}

fn dial_request(spec: &NodeSpec, key: &SlotKey) -> DialRequest {
    DialRequest {
        target: DialTarget::Node(spec.name().clone()),
        addrs: spec.listen_addrs().to_vec(),
        expect: Some(spec.name().clone()),
        channel: key.0.clone(),
        lane: key.1,
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod want_tests;
