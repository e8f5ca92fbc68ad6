//! The engine: the whole control plane of one node as one sans-IO object.
//!
//! An [`Engine`] owns the connection planner, the overlay, the overlay messages held for peers
//! not yet reached, transient wants, the handshake identities of known peers, the callers
//! waiting for a connect or a join (as [`Waiter`] tokens), keepalive and failure detection of
//! every lane, and one timer table. The tokio runtime and the simulator drive this same object:
//! the runtime moves bytes and time between sockets and it, the simulator turns its outputs
//! into simulated connections. User data never passes through it.
//!
//! # Calling contract
//!
//! 1. [`Engine::new`] starts the overlay at `now`.
//! 2. Feed each input when it happens, with the current time: a user command
//!    ([`Engine::handle_command`]); an authenticated inbound connection asking to be admitted
//!    ([`Engine::handle_accept`], whose verdict the caller carries out before anything else on
//!    that connection); the outcome of a dial the engine asked for
//!    ([`Engine::handle_dial_result`]); a lane gone down for any reason, including one the
//!    engine asked to close ([`Engine::handle_lane_down`], exactly once per lane the engine
//!    admitted or kept); a control frame read from a lane ([`Engine::handle_control`]); a
//!    control frame or probe the caller could not queue ([`Engine::handle_transmit_failed`]).
//! 3. After every input, drain [`Engine::poll_output`] until it returns `None` and carry out
//!    each [`Output`] in order (dial, close, put a frame on a lane), then drain
//!    [`Engine::poll_event`] ([`Event`]s for the API: answers to waiters, membership changes,
//!    peers up and down). Nothing is lost if draining waits, but nothing happens either.
//! 4. Then ask [`Engine::poll_timeout`] and call [`Engine::handle_timeout`] once that instant
//!    has come. Any input may move the deadline earlier or later; a call before the deadline,
//!    or a late one, is harmless.
//!
//! The transport under the engine answers a [`Message::Ping`] with a [`Message::Pong`] of the
//! same id on the same lane, and remembers when each lane last received anything, which the
//! engine reads through [`LaneActivity`] when a keepalive check comes due: a lane with no
//! traffic for `idle` is probed every `timeout`, and closed with
//! [`CloseReason::KeepaliveTimeout`] after `max_attempts` unanswered probes.
//!
//! # Guarantees
//!
//! - An overlay message for a peer goes out on an open lane to it (the membership channel's
//!   first, else the default channel's, else any), or is held (bounded per peer, oldest dropped
//!   and counted) while a temporary connection is made, and sent on the first lane that opens.
//!   A message the caller could not queue on a lane found closed is sent again the same way.
//!   Held messages of a peer found unreachable are dropped and counted.
//! - Known identities are forgotten once their peer is neither connected nor wanted, so they
//!   are bounded by the wanted plus the connected peers.
//! - Every waiter gets exactly one [`Answer`].
//! - The same inputs, with the same RNG seed, give the same outputs in the same order.

mod broadcasts;
mod commands;
mod config;
mod io;
mod keepalive;
mod lanes;
mod liveness;
mod pending;
mod signals;
#[cfg(test)]
mod tests;
pub mod timers;
mod up_tracker;
mod waiters;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;

use rand::{Rng, RngCore, SeedableRng};

use crate::broadcast::PlumtreeTimer;
use crate::connection_plan::{
    CloseReason, ConnId, ConnectionPlan, DialFailure, DialRequest, DialTarget, PlanOutput, Want,
};
use crate::id::{NodeName, NodeSpec};
use crate::overlay::{Overlay, OverlayMsg, OverlayOutput, OverlayTimer, PeerInfo};
use crate::signals::{LocalProcesses, SignalCounts, SignalOutput, SignalTable};
use crate::time::Instant;
use crate::wire::handshake::{Identity, PeerHello, RefuseCode};
use crate::wire::{Control, Message};

pub use config::{EngineConfig, Keepalive};
pub use io::{
    Answer, Command, ConnectFailure, DialId, DialResult, EngineStats, Event, LaneActivity, Output,
    Target, TransmitFailure, Waiter,
};
pub use lanes::{Lane, LaneState};
pub use timers::{TimerTable, TimerToken};
pub use up_tracker::MembershipEvent;

use lanes::Lanes;
use pending::Pending;
use up_tracker::UpTracker;
use waiters::Waiters;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKey {
    Overlay(OverlayTimer),
    Keepalive(ConnId),
    Broadcast(usize, PlumtreeTimer),
    /// A member unreachable since the arming is removed when it fires (`down_after`).
    Down(NodeName),
    /// The liveness probing tick.
    Liveness,
    /// The wait for a probed peer's answer is over.
    Probe(NodeName),
}

/// The control plane of one node. See the module documentation for the calling contract.
pub struct Engine {
    cfg: EngineConfig,
    local: PeerInfo,
    plan: ConnectionPlan,
    overlay: Box<dyn Overlay>,
    timers: TimerTable<TimerKey>,
    lanes: Lanes,
    dials: std::collections::BTreeMap<DialId, DialRequest>,
    next_dial: u64,
    pending: Pending,
    identities: std::collections::BTreeMap<NodeName, Identity>,
    /// Peers whose lanes or wants changed in the current batch: their identity is forgotten
    /// at its end if they are neither wanted nor have a lane.
    lost: BTreeSet<NodeName>,
    waiters: Waiters,
    up: UpTracker,
    membership_dirty: bool,
    outputs: VecDeque<Output>,
    events: VecDeque<Event>,
    plan_out: Vec<PlanOutput>,
    overlay_out: Vec<OverlayOutput>,
    stats: EngineStats,
    shutdown: Option<Vec<Waiter>>,
    broadcasts: broadcasts::Broadcasts,
    /// Monitors, links and liveness queries across nodes.
    signals: SignalTable,
    signal_out: Vec<SignalOutput>,
    /// Keepalive jitter.
    rng: rand::rngs::StdRng,
    live: liveness::LivenessState,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("node", self.local.name())
            .field("overlay", &self.overlay.kind())
            .field("lanes", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

/// A handshake identity as overlays see peers.
pub fn peer_info(id: &Identity) -> PeerInfo {
    PeerInfo {
        spec: id.spec.clone(),
        creation: id.creation,
        tag: id.tag.clone(),
    }
}

impl Engine {
    /// An engine for the node `cfg.identity` describes, running `overlay`, started at `now`.
    /// `rng` drives redial and keepalive jitter (the overlay has its own).
    pub fn new(
        cfg: EngineConfig,
        overlay: Box<dyn Overlay>,
        rng: Box<dyn RngCore + Send>,
        now: Instant,
    ) -> Engine {
        let local = peer_info(&cfg.identity);
        let mut rng = rng;
        let plan_rng = rand::rngs::StdRng::from_rng(&mut rng).expect("seeding from an RNG");
        let own_rng = rand::rngs::StdRng::from_rng(&mut rng).expect("seeding from an RNG");
        let plan = ConnectionPlan::new(cfg.identity.spec.clone(), cfg.backoff, Box::new(plan_rng));
        let pending = Pending::new(cfg.pending_per_peer);
        let cfg_max_signals = (cfg.max_signal_entries, cfg.max_peer_sessions);
        let mut e = Engine {
            cfg,
            local,
            plan,
            overlay,
            timers: TimerTable::new(),
            lanes: Lanes::default(),
            dials: Default::default(),
            next_dial: 0,
            pending,
            identities: Default::default(),
            lost: BTreeSet::new(),
            waiters: Waiters::default(),
            up: UpTracker::default(),
            membership_dirty: true,
            outputs: VecDeque::new(),
            events: VecDeque::new(),
            plan_out: Vec::new(),
            overlay_out: Vec::new(),
            stats: EngineStats::default(),
            shutdown: None,
            broadcasts: Default::default(),
            signals: SignalTable::new(cfg_max_signals.0, cfg_max_signals.1),
            signal_out: Vec::new(),
            rng: own_rng,
            live: Default::default(),
        };
        e.start_liveness(now);
        e.overlay.start(now, &mut e.overlay_out);
        e.apply(now);
        e
    }

    // ----- reads -----

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.cfg.identity
    }

    /// This node's name.
    pub fn name(&self) -> &NodeName {
        self.local.name()
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The overlay state machine.
    pub fn overlay(&self) -> &dyn Overlay {
        self.overlay.as_ref()
    }

    /// The concrete overlay, if it is an `O`.
    pub fn overlay_as<O: Overlay>(&self) -> Option<&O> {
        self.overlay.as_any().downcast_ref::<O>()
    }

    /// Whether at least one lane to `node` is open.
    pub fn is_connected(&self, node: &NodeName) -> bool {
        self.lanes.is_connected(node)
    }

    /// The latest failure of a dial to `target` since it was last reached, while it is still
    /// dialed: what a connect that timed out reports.
    pub fn last_dial_failure(&self, target: &DialTarget) -> Option<&DialFailure> {
        self.plan.last_failure(target)
    }

    /// Members wanted by this node whose every lane is down and that could not be dialed since
    /// (a SIGKILLed host, a partition), sorted. A member leaves this list as soon as a lane to
    /// it is up again (a restarted node dials in at once).
    pub fn unreachable_members(&self) -> Vec<NodeName> {
        let members: std::collections::BTreeSet<NodeName> =
            self.overlay.members().into_iter().collect();
        self.plan
            .unreachable()
            .filter(|(n, _)| members.contains(*n))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// `down_after`: removes `node` from the membership if it is still unreachable and has
    /// been for that long.
    fn down_check(&mut self, node: &NodeName, now: Instant) {
        let Some(after) = self.cfg.down_after else {
            return;
        };
        if self.shutdown.is_some() {
            return;
        }
        let since = self
            .plan
            .unreachable()
            .find(|(n, _)| *n == node)
            .map(|(_, t)| t);
        if since.is_some_and(|t| t + after <= now) {
            self.stats.members_downed += 1;
            self.events.push_back(Event::Downed {
                node: node.clone(),
                after,
            });
            self.overlay.remove(node, now, &mut self.overlay_out);
            self.membership_dirty = true;
        }
    }

    /// Whether any lane to `node` is known, open or closing.
    pub fn has_lane_to(&self, node: &NodeName) -> bool {
        self.lanes.has_any(node)
    }

    /// Peers with at least one open lane, sorted.
    pub fn connected_peers(&self) -> impl Iterator<Item = &NodeName> {
        self.lanes.connected()
    }

    /// Every lane the engine knows (open or closing), by connection id.
    pub fn lanes(&self) -> impl Iterator<Item = (ConnId, &Lane)> {
        self.lanes.iter()
    }

    /// One lane.
    pub fn lane(&self, conn: ConnId) -> Option<&Lane> {
        self.lanes.get(conn)
    }

    /// Whether `node` is wanted for any reason (user, overlay, transient).
    pub fn is_wanted(&self, node: &NodeName) -> bool {
        self.plan.is_wanted(node)
    }

    /// Peers wanted for any reason, sorted.
    pub fn wanted(&self) -> impl Iterator<Item = &NodeName> {
        self.plan.wanted()
    }

    /// The connection planner's state for `node`, for diagnostics.
    pub fn describe_peer(&self, node: &NodeName) -> String {
        let lanes: Vec<String> = self
            .lanes
            .iter()
            .filter(|(_, l)| &l.peer == node)
            .map(|(c, l)| format!("{}:{}/{}{:?}", c.0, l.channel, l.lane, l.state))
            .collect();
        format!(
            "{} lanes=[{}]",
            self.plan.describe_peer(node),
            lanes.join(" ")
        )
    }

    /// Handshake identities this node keeps (of wanted or connected peers).
    pub fn known_identities(&self) -> usize {
        self.identities.len()
    }

    /// The identity a peer presented, while it is known.
    pub fn identity_of(&self, node: &NodeName) -> Option<&Identity> {
        self.identities.get(node)
    }

    /// A kept identity of a peer neither wanted nor with a lane, if any: always `None` (known
    /// identities are bounded by wanted plus connected peers). One merged pass over sorted
    /// sets, cheap enough to check after every input.
    pub fn unneeded_identity(&self) -> Option<&NodeName> {
        let mut wanted = self.plan.wanted().peekable();
        let mut laned = self.lanes.peers().peekable();
        for p in self.identities.keys() {
            while wanted.peek().is_some_and(|w| *w < p) {
                wanted.next();
            }
            while laned.peek().is_some_and(|w| *w < p) {
                laned.next();
            }
            if wanted.peek() != Some(&p) && laned.peek() != Some(&p) {
                return Some(p);
            }
        }
        None
    }

    /// Names of peers whose identity is kept, sorted.
    pub fn known_peers(&self) -> impl Iterator<Item = &NodeName> {
        self.identities.keys()
    }

    /// Overlay messages held for `node` until a lane to it opens.
    pub fn held_for(&self, node: &NodeName) -> usize {
        self.pending.len_for(node)
    }

    /// Peers with held overlay messages, sorted.
    pub fn peers_with_held(&self) -> impl Iterator<Item = &NodeName> {
        self.pending.peers()
    }

    /// Overlay messages held in all.
    pub fn held(&self) -> usize {
        self.pending.total()
    }

    /// Dials asked for and not yet reported.
    pub fn dials_in_flight(&self) -> usize {
        self.dials.len()
    }

    /// Which members came up or went down since the last call: a member is up while at least
    /// one lane to it is open. Downs first, then ups, each in name order. Costs one pass over
    /// the members; call it when [`Event::MembershipChanged`] says something changed.
    pub fn membership_events(&mut self) -> Vec<MembershipEvent> {
        let members = self.overlay.members();
        let lanes = &self.lanes;
        self.up
            .update(&members, self.local.name(), |n| lanes.is_connected(n))
    }

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// How many monitors, links and liveness queries across nodes this node holds.
    pub fn signal_counts(&self) -> SignalCounts {
        self.signals.counts()
    }

    /// Whether this node holds no monitor, link or query concerning `node`.
    pub fn signals_clear_of(&self, node: &NodeName) -> bool {
        self.signals.is_clear_of(node)
    }

    /// This node's signal session with `node` and the newest of the peer's it heard (see
    /// [`SignalTable::session_of`]).
    pub fn signal_session(&self, node: &NodeName) -> Option<(u64, u64)> {
        self.signals.session_of(node)
    }

    /// A process frame to `node` carrying `msg` (none: only the sessions), stamped as this
    /// engine stamps the frames it sends.
    pub fn signal_frame(
        &self,
        node: &NodeName,
        msg: Option<crate::signals::ProcessMsg>,
    ) -> crate::signals::ProcessFrame {
        self.signals.frame(node, msg)
    }

    /// Whether local process `local` holds a link with process `remote` of `node` (see
    /// [`SignalTable::holds_link`]).
    pub fn signal_holds_link(&self, local: u64, node: &NodeName, remote: u64) -> bool {
        self.signals.holds_link(local, node, remote)
    }

    /// Counters of the signal table.
    pub fn signal_stats(&self) -> &crate::signals::SignalStats {
        self.signals.stats()
    }

    /// Whether a shutdown was asked for.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// Whether a shutdown was asked for and every lane is down.
    pub fn is_shut_down(&self) -> bool {
        self.shutdown.is_some() && self.lanes.is_empty()
    }

    // ----- outputs -----

    /// The next thing the caller must do, in order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next event for the API.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Engine::handle_timeout`] is next due, if ever. Changes after any input.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next_deadline(), self.plan.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- inputs -----

    /// A user command.
    pub fn handle_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Connect { target, waiter } => self.connect(target, waiter, now),
            Command::Disconnect { node } => {
                self.plan.unwant(&node, Want::User, &mut self.plan_out);
            }
            Command::CancelConnect { addr, waiter } => {
                let pending = self.plan.pending_addrs().any(|a| *a == addr);
                self.plan.unwant_addr(&addr);
                for w in self.waiters.take_addr(&addr) {
                    self.answer(w, Answer::Failed(ConnectFailure::Cancelled(addr)));
                }
                self.answer_opt(waiter, Answer::Cancelled(pending));
            }
            Command::Join { target, waiter } => self.join(target, waiter, now),
            Command::Remove { node, waiter } if &node == self.local.name() => {
                // Removing this node is leaving (pending joins given up alike).
                self.handle_command(Command::Leave { waiter }, now);
                return;
            }
            Command::Leave { waiter } => {
                let addrs: Vec<SocketAddr> = self.waiters.join_addr.keys().copied().collect();
                for a in addrs {
                    self.plan.unwant_addr(&a);
                }
                for w in self.waiters.take_joins() {
                    self.answer(w, Answer::Failed(ConnectFailure::LeftCluster));
                }
                if self.shutdown.is_none() {
                    self.overlay.leave(now, &mut self.overlay_out);
                }
                self.answer_opt(waiter, Answer::Done);
            }
            Command::Remove { node, waiter } => {
                if self.shutdown.is_none() {
                    self.overlay.remove(&node, now, &mut self.overlay_out);
                }
                self.answer_opt(waiter, Answer::Done);
            }
            Command::UpdateMembers { specs, waiter } => {
                if self.shutdown.is_none() {
                    let infos: Vec<PeerInfo> = specs
                        .into_iter()
                        .map(|spec| {
                            let known = self.identities.get(spec.name());
                            PeerInfo {
                                creation: known.map_or(0, |i| i.creation),
                                tag: known.and_then(|i| i.tag.clone()),
                                spec,
                            }
                        })
                        .collect();
                    self.overlay
                        .update_members(&infos, now, &mut self.overlay_out);
                }
                self.answer_opt(waiter, Answer::Done);
            }
            Command::Reserve { tag, waiter } => {
                let r = self.overlay.reserve(tag);
                self.answer_opt(waiter, Answer::Reserved(r));
            }
            Command::Shutdown { waiter } => self.shut_down(waiter),
            Command::Broadcast {
                handler,
                msg,
                waiter,
            } => {
                let r = self.broadcast_command(&handler, &msg, now);
                self.answer_opt(waiter, Answer::Broadcast(r));
            }
            cmd @ (Command::Monitor { .. }
            | Command::Demonitor { .. }
            | Command::Link { .. }
            | Command::Unlink { .. }
            | Command::Exit { .. }
            | Command::ProcessExited { .. }
            | Command::IsAlive { .. }) => self.signal_command(cmd),
        }
        self.apply(now);
    }

    /// An authenticated inbound connection `conn` from `hello`'s node asks to be admitted. On
    /// `Ok` the lane is up (the caller sends its Welcome first, then any frame the engine
    /// asks for); on `Err` the caller refuses the dialer with that code.
    pub fn handle_accept(
        &mut self,
        conn: ConnId,
        hello: &PeerHello,
        now: Instant,
    ) -> Result<(), RefuseCode> {
        if self.shutdown.is_some() {
            return Err(RefuseCode::ShuttingDown);
        }
        let replaced = self.plan.admit(conn, hello, now, &mut self.plan_out)?;
        // The replaced lane goes first, so nothing held is flushed onto it.
        if let Some(old) = replaced {
            self.close(old, CloseReason::Replaced);
        }
        self.open_lane(conn, hello, false, now);
        self.apply(now);
        Ok(())
    }

    /// The outcome of dial `dial`. For an established connection, `Ok` means the lane is up;
    /// `Err` means the caller closes it (it is not wanted, or belongs to an older run).
    pub fn handle_dial_result(
        &mut self,
        dial: DialId,
        result: DialResult,
        now: Instant,
    ) -> Result<(), CloseReason> {
        let Some(req) = self.dials.remove(&dial) else {
            return Err(CloseReason::Unwanted);
        };
        let verdict = match result {
            DialResult::Established { conn, hello } => {
                if self.shutdown.is_some() {
                    Err(CloseReason::ShuttingDown)
                } else {
                    match self.plan.on_established(
                        conn,
                        &req.target,
                        &hello,
                        now,
                        &mut self.plan_out,
                    ) {
                        Ok(replaced) => {
                            if let Some(old) = replaced {
                                self.close(old, CloseReason::Replaced);
                            }
                            self.open_lane(conn, &hello, true, now);
                            Ok(())
                        }
                        Err(reason) => Err(reason),
                    }
                }
            }
            DialResult::Failed(failure) => {
                self.plan.on_dial_failed(
                    &req.target,
                    &req.channel,
                    req.lane,
                    failure,
                    now,
                    &mut self.plan_out,
                );
                Ok(())
            }
        };
        self.apply(now);
        verdict
    }

    /// A lane went down (either side, any reason, including a close the engine asked for).
    /// `clean`: it ended by a goodbye after its queue was flushed (either side's), so every
    /// frame put on it was delivered; else it broke (a reset, an i/o error, a cut). Unknown
    /// lanes are ignored.
    ///
    /// A broken lane that carried process signals while other lanes to the peer remain makes
    /// this node lose the peer (its monitors and links with the peer's processes fire, and the
    /// peer hears of it): a signal lost with the lane would otherwise leave its entry on one
    /// side only.
    pub fn handle_lane_down(&mut self, conn: ConnId, clean: bool, now: Instant) {
        let Some((lane, last)) = self.lanes.remove(conn) else {
            return;
        };
        if (!clean || lane.cut) && lane.carried_signals && self.lanes.has_any(&lane.peer) {
            self.stats.signal_lanes_broken += 1;
            self.signal_lose(&lane.peer);
        }
        self.timers.cancel(&TimerKey::Keepalive(conn));
        if last {
            self.membership_dirty = true;
        }
        self.plan.on_closed(
            conn,
            &lane.peer,
            &lane.channel,
            lane.lane,
            now,
            &mut self.plan_out,
        );
        self.lost.insert(lane.peer);
        self.apply(now);
    }

    /// A control frame read from lane `conn`. `procs` resolves the targets of peers' monitors
    /// and links among the local processes.
    pub fn handle_control(
        &mut self,
        conn: ConnId,
        msg: Control,
        now: Instant,
        procs: &mut dyn LocalProcesses,
    ) {
        let Some(lane) = self.lanes.get(conn) else {
            self.stats.control_stale += 1;
            return;
        };
        let peer = lane.peer.clone();
        let info = match self.identities.get(&peer) {
            Some(id) if id.creation == lane.creation => peer_info(id),
            _ => {
                self.stats.control_stale += 1;
                return;
            }
        };
        if self.shutdown.is_some() {
            return;
        }
        match msg {
            Control::Overlay(m) => {
                if let Err(error) = self
                    .overlay
                    .on_message(&info, m, now, &mut self.overlay_out)
                {
                    self.stats.overlay_rejected += 1;
                    self.events
                        .push_back(Event::OverlayRejected { node: peer, error });
                }
            }
            Control::Broadcast(m) => self.broadcast_message(&peer, m, now),
            Control::Process(f) => self.signal_message(&peer, info.creation, f, procs),
            Control::Liveness(m) => self.liveness_message(&peer, m, now),
        }
        self.apply(now);
    }

    /// A frame the engine asked to put on lane `conn` could not be queued. A control frame on a
    /// lane found closed is sent again another way; one on a full lane is dropped and counted.
    pub fn handle_transmit_failed(
        &mut self,
        conn: ConnId,
        msg: Message,
        why: TransmitFailure,
        now: Instant,
    ) {
        let peer = self.lanes.get(conn).map(|l| l.peer.clone());
        if why == TransmitFailure::Closed && self.lanes.set_closing(conn).is_some() {
            self.membership_dirty = true;
        }
        match msg {
            Message::Control(Control::Broadcast(_)) => {
                // Plumtree repairs a lost message by graft or anti-entropy.
                self.stats.broadcast_returned += 1;
            }
            Message::Control(Control::Process(f)) => match (why, peer, f.msg) {
                // Another open lane to the peer carries it (stamped anew); with none left, the
                // peer's loss fires every entry the signal concerned.
                (TransmitFailure::Closed, Some(peer), Some(m)) => self.send_signal(&peer, Some(m)),
                (TransmitFailure::Closed, None, Some(_)) => self.stats.signals_dropped += 1,
                // A frame telling only the sessions is sent on every lane that opens.
                (TransmitFailure::Closed, _, None) => {}
                // The lane is far past its bound: a signal lost here would leave its entry on
                // one side only, so the lane is cut and the peer lost (every entry with it
                // fires here, and the peer hears of it on the lanes left or the next).
                (TransmitFailure::Full, Some(peer), msg) => {
                    self.stats.signal_lanes_cut += 1;
                    self.close(conn, CloseReason::Stalled);
                    if msg.is_some() {
                        self.stats.signals_dropped += 1;
                        self.signal_lose(&peer);
                    }
                }
                (TransmitFailure::Full, None, _) => self.stats.signals_dropped += 1,
            },
            Message::Control(Control::Overlay(m)) => {
                self.stats.overlay_returned += 1;
                match (why, peer) {
                    (TransmitFailure::Full, _) => self.stats.overlay_dropped_full += 1,
                    (TransmitFailure::Closed, Some(peer)) => {
                        match self.identities.get(&peer).map(|i| i.spec.clone()) {
                            Some(spec) => self.route_overlay(spec, m, now),
                            None => self.stats.overlay_dropped_unreachable += 1,
                        }
                    }
                    (TransmitFailure::Closed, None) => self.stats.overlay_dropped_unreachable += 1,
                }
            }
            _ => {}
        }
        self.apply(now);
    }

    /// Fires whatever is due at `now`: redials, lapsing transient wants, overlay timers and
    /// keepalive checks (reading lane activity from `activity`).
    pub fn handle_timeout(&mut self, now: Instant, activity: &dyn LaneActivity) {
        if self.plan.next_deadline().is_some_and(|t| t <= now) {
            self.plan.on_tick(now, &mut self.plan_out);
        }
        while let Some((key, _token)) = self.timers.pop_due(now) {
            match key {
                TimerKey::Overlay(t) => {
                    if self.shutdown.is_none() {
                        self.overlay.on_timer(t, now, &mut self.overlay_out);
                    }
                }
                TimerKey::Keepalive(conn) => self.keepalive_check(conn, now, activity),
                TimerKey::Down(node) => self.down_check(&node, now),
                TimerKey::Liveness => self.liveness_tick(now, activity),
                TimerKey::Probe(node) => self.probe_check(&node, now, activity),
                TimerKey::Broadcast(i, t) => {
                    if self.shutdown.is_none() {
                        self.broadcast_timer(i, t, now);
                    }
                }
            }
            // Carry out each timer's outputs before the next fires, as if they came apart.
            self.apply(now);
        }
        self.apply(now);
    }

    // ----- internals -----

    fn answer(&mut self, waiter: Waiter, answer: Answer) {
        self.events.push_back(Event::Answer { waiter, answer });
    }

    fn answer_opt(&mut self, waiter: Option<Waiter>, answer: Answer) {
        if let Some(w) = waiter {
            self.answer(w, answer);
        }
    }

    fn open_lane(&mut self, conn: ConnId, hello: &PeerHello, dialed: bool, now: Instant) {
        let peer = hello.spec().name().clone();
        let first = self.lanes.insert(
            conn,
            Lane {
                peer: peer.clone(),
                creation: hello.creation(),
                channel: hello.channel.clone(),
                lane: hello.lane,
                dialed,
                state: LaneState::Open,
                opened: now,
                probes: 0,
                last_probe: now,
                carried_signals: false,
                cut: false,
            },
        );
        if first {
            self.membership_dirty = true;
        }
        if let Some(ka) = self.cfg.keepalive {
            let due = self.idle_deadline(now, ka);
            self.timers.arm(TimerKey::Keepalive(conn), due);
        }
        let known = self.identities.get(&peer);
        if known.is_none_or(|i| i.creation <= hello.creation()) {
            self.identities.insert(peer.clone(), hello.identity.clone());
            self.signal_lane_up(conn, &peer, hello.creation());
        }
        // Messages held while no lane was open go out now (a peer that lost one lane and kept
        // others never comes "up" again to flush them).
        self.flush_pending(&peer, now);
    }

    /// When a lane last heard from at `last` is probed: `idle` after, less up to a quarter of
    /// it at random, so the two ends of an idle lane rarely probe at once (the first probe
    /// counts as traffic at the other end, which then need not probe).
    fn idle_deadline(&mut self, last: Instant, ka: Keepalive) -> Instant {
        let quarter = (ka.idle.as_micros() / 4) as u64;
        let jitter = if quarter > 0 {
            self.rng.gen_range(0..=quarter)
        } else {
            0
        };
        Instant(
            last.0
                .saturating_add(ka.idle.as_micros() as u64)
                .saturating_sub(jitter),
        )
    }

    /// Asks the caller to close `conn`; it is not used any more.
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(lane) = self.lanes.get(conn) else {
            return;
        };
        if lane.state == LaneState::Closing {
            return;
        }
        if self.lanes.set_closing(conn).is_some() {
            self.membership_dirty = true;
        }
        if reason.is_abrupt() {
            if let Some(l) = self.lanes.get_mut(conn) {
                l.cut = true;
            }
        }
        self.timers.cancel(&TimerKey::Keepalive(conn));
        self.outputs.push_back(Output::Close { conn, reason });
    }

    /// Sends an overlay message the overlay asked for.
    fn send_overlay(&mut self, to: NodeSpec, msg: OverlayMsg, now: Instant) {
        if to.name() == self.local.name() {
            return;
        }
        self.stats.overlay_sent += 1;
        self.route_overlay(to, msg, now);
    }

    /// Puts an overlay message on an open lane to its node, or holds it while a temporary
    /// connection is made.
    fn route_overlay(&mut self, to: NodeSpec, msg: OverlayMsg, now: Instant) {
        let name = to.name().clone();
        if let Some(conn) = self.lanes.control_route(&name) {
            self.transmit_overlay(conn, msg);
            return;
        }
        self.stats.overlay_dropped_overflow += self.pending.push(&name, msg);
        if self.shutdown.is_none() {
            let ttl = self.cfg.transient_ttl;
            self.plan
                .want(to, Want::Transient { ttl }, now, &mut self.plan_out);
        }
    }

    fn transmit_overlay(&mut self, conn: ConnId, msg: OverlayMsg) {
        self.stats.overlay_handed += 1;
        self.outputs.push_back(Output::Transmit {
            conn,
            msg: Message::Control(Control::Overlay(msg)),
        });
    }

    fn flush_pending(&mut self, node: &NodeName, _now: Instant) {
        let Some(conn) = self.lanes.control_route(node) else {
            return;
        };
        for m in self.pending.take(node) {
            self.transmit_overlay(conn, m);
        }
    }

    /// Drops the messages held for `node` (found unreachable).
    fn drop_held(&mut self, node: &NodeName) -> usize {
        let dropped = self.pending.take(node).len();
        self.stats.overlay_dropped_unreachable += dropped as u64;
        dropped
    }

    /// Carries out planner and overlay outputs until neither has more, forgets identities no
    /// longer needed, and reports membership changes.
    fn apply(&mut self, now: Instant) {
        loop {
            if self.plan_out.is_empty() && self.overlay_out.is_empty() {
                break;
            }
            for o in std::mem::take(&mut self.plan_out) {
                self.apply_plan(o, now);
            }
            for o in std::mem::take(&mut self.overlay_out) {
                self.apply_overlay(o, now);
            }
        }
        self.forget_lost_identities();
        if self.membership_dirty {
            self.membership_dirty = false;
            self.refresh_broadcast_neighbours(now);
            self.events.push_back(Event::MembershipChanged);
        }
        if let Some(waiters) = &mut self.shutdown {
            if self.lanes.is_empty() && !waiters.is_empty() {
                for w in std::mem::take(waiters) {
                    self.events.push_back(Event::Answer {
                        waiter: w,
                        answer: Answer::Done,
                    });
                }
            }
        }
    }

    /// Forgets the identity of every peer whose lanes or wants changed in this batch and that
    /// is now neither wanted nor has a lane. A peer still needed is looked at again when its
    /// last lane goes down or the planner forgets it.
    fn forget_lost_identities(&mut self) {
        for node in std::mem::take(&mut self.lost) {
            if !self.lanes.has_any(&node) && !self.plan.is_wanted(&node) {
                self.identities.remove(&node);
            }
        }
    }

    fn apply_plan(&mut self, o: PlanOutput, now: Instant) {
        match o {
            PlanOutput::Dial(req) => {
                self.next_dial += 1;
                let id = DialId(self.next_dial);
                self.dials.insert(id, req.clone());
                self.outputs.push_back(Output::Dial { id, req });
            }
            PlanOutput::Close { conn, reason } => self.close(conn, reason),
            PlanOutput::PeerUp { hello } => {
                let name = hello.spec().name().clone();
                self.timers.cancel(&TimerKey::Down(name.clone()));
                self.identities.insert(name.clone(), hello.identity.clone());
                self.events.push_back(Event::PeerUp {
                    node: name.clone(),
                    creation: hello.creation(),
                });
                for w in self.waiters.connect_node.remove(&name).unwrap_or_default() {
                    self.answer(w, Answer::Reached(name.clone()));
                }
                self.flush_pending(&name, now);
                let info = peer_info(&hello.identity);
                if let Some((_, waiters)) = self.waiters.join_node.remove(&name) {
                    self.overlay.join(&info, now, &mut self.overlay_out);
                    for w in waiters {
                        self.answer(w, Answer::Reached(name.clone()));
                    }
                }
                if self.shutdown.is_none() {
                    self.overlay.on_peer_up(&info, now, &mut self.overlay_out);
                }
                self.signal_peer_up(&name, hello.creation());
                self.membership_dirty = true;
            }
            PlanOutput::PeerDown { node } => {
                self.events
                    .push_back(Event::PeerDown { node: node.clone() });
                self.signal_peer_down(&node);
                if self.shutdown.is_none() {
                    self.overlay.on_peer_down(&node, now, &mut self.overlay_out);
                }
                self.membership_dirty = true;
                self.lost.insert(node);
            }
            PlanOutput::Resolved { addr, hello } => {
                let name = hello.spec().name().clone();
                for w in self.waiters.connect_addr.remove(&addr).unwrap_or_default() {
                    self.answer(w, Answer::Reached(name.clone()));
                }
                if let Some(waiters) = self.waiters.join_addr.remove(&addr) {
                    let info = peer_info(&hello.identity);
                    self.overlay.join(&info, now, &mut self.overlay_out);
                    for w in waiters {
                        self.answer(w, Answer::Reached(name.clone()));
                    }
                }
            }
            PlanOutput::Unreachable { node } => {
                // A join contact not reached yet is tried on until it answers (or the join is
                // given up by a leave): a join made during a partition completes once it heals.
                if let Some((spec, _)) = self.waiters.join_node.get(&node) {
                    if self.shutdown.is_none() {
                        let ttl = self.cfg.join_ttl;
                        self.plan.want(
                            spec.clone(),
                            Want::Transient { ttl },
                            now,
                            &mut self.plan_out,
                        );
                    }
                }
                let dropped = self.drop_held(&node);
                self.membership_dirty = true;
                if let Some(after) = self.cfg.down_after {
                    if self.overlay.members().contains(&node) {
                        self.timers.arm(TimerKey::Down(node.clone()), now + after);
                    }
                }
                self.events.push_back(Event::Unreachable {
                    node: node.clone(),
                    dropped,
                });
                if self.shutdown.is_none() {
                    self.overlay
                        .on_unreachable(&node, now, &mut self.overlay_out);
                }
                self.lost.insert(node);
            }
            PlanOutput::StillUnreachable { node } => {
                // The outage was reported already; only what was sent since is answered.
                self.drop_held(&node);
                if self.shutdown.is_none() {
                    self.overlay
                        .on_unreachable(&node, now, &mut self.overlay_out);
                }
            }
            PlanOutput::Forgotten { node } => {
                self.lost.insert(node);
            }
            PlanOutput::GaveUp { target, reason } => {
                let waiters = match &target {
                    DialTarget::Addr(a) => self.waiters.take_addr(a),
                    DialTarget::Node(n) => self.waiters.take_node(n),
                };
                for w in waiters {
                    self.answer(w, Answer::Failed(ConnectFailure::Dial(reason.clone())));
                }
                if let DialTarget::Node(n) = &target {
                    self.drop_held(n);
                    if self.shutdown.is_none() {
                        self.overlay.on_unreachable(n, now, &mut self.overlay_out);
                    }
                    self.lost.insert(n.clone());
                }
                self.events.push_back(Event::GaveUp { target, reason });
            }
            PlanOutput::DialFailing {
                target,
                failure,
                failures,
            } => {
                self.events.push_back(Event::DialFailing {
                    target,
                    failure,
                    failures,
                });
            }
        }
    }

    fn apply_overlay(&mut self, o: OverlayOutput, now: Instant) {
        match o {
            OverlayOutput::Connect(spec) => {
                // A member's spec may have changed (new address) without the names changing.
                self.membership_dirty = true;
                if self.shutdown.is_none() {
                    self.plan.want(spec, Want::Overlay, now, &mut self.plan_out);
                }
            }
            OverlayOutput::Disconnect(node) => {
                self.plan.unwant(&node, Want::Overlay, &mut self.plan_out);
                self.lost.insert(node);
            }
            OverlayOutput::Send { to, msg } => self.send_overlay(to, msg, now),
            OverlayOutput::SetTimer { timer, at } => {
                if self.shutdown.is_none() {
                    self.timers.arm(TimerKey::Overlay(timer), at);
                }
            }
            OverlayOutput::MembersChanged => self.membership_dirty = true,
        }
    }

    /// Test hook: runs one overlay timer now, whatever its deadline.
    #[cfg(any(test, feature = "testing"))]
    pub fn fire_overlay_timer(&mut self, timer: OverlayTimer, now: Instant) {
        self.timers.cancel(&TimerKey::Overlay(timer));
        self.overlay.on_timer(timer, now, &mut self.overlay_out);
        self.apply(now);
    }

    /// Test hook: whether an overlay timer is armed, and when.
    #[cfg(any(test, feature = "testing"))]
    pub fn overlay_timer(&self, timer: OverlayTimer) -> Option<Instant> {
        self.timers.deadline(&TimerKey::Overlay(timer))
    }
}
