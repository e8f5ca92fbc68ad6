//! One in-memory network of [`Engine`]s, shared by the unit tests, the property tests and the
//! simulator (`partisan-sim`). Behind the `testing` feature.
//!
//! Every node runs the real engine (planner, overlay, held messages, keepalive, timers); this
//! module plays the transport and the clock, as the tokio runtime does for a real node:
//!
//! - **Time** is virtual: one event queue ordered by (time, sequence). One seed derives every
//!   node's RNGs and the network's own; the same seed gives the same trace ([`TraceHash`]).
//! - **Dials** become connections, one per (pair, channel, lane) as in the runtime: the
//!   handshake reaches the acceptor three latencies after the dial and is admitted or refused
//!   by its engine (simultaneous-dial tie-break, older creation refused, shutting down); the
//!   verdict reaches the dialer one latency later. A dial to a dead process is refused within
//!   a round trip; one to a vanished host (silent crash) or across a partition times out after
//!   `connect_timeout`. A dial that reaches another node than the one expected fails for good.
//! - **Frames** on a connection arrive in order (TCP), one latency each way, apart from
//!   injected loss and duplication of control frames. The transport answers a probe with a
//!   pong and remembers when each end last received anything, which engines read for their
//!   keepalive. A frame handed to an end whose connection already failed (but whose engine was
//!   not told yet) comes back as [`crate::engine::TransmitFailure::Closed`].
//! - **Closes** flush and say goodbye: the far end learns after the frames already in flight
//!   (nothing, across a partition: its keepalive finds out); a keepalive timeout cuts at once.
//! - **Crashes** reset every connection of a process (peers notice within one latency) or, when
//!   silent, leave them open at the peers until their keepalive gives up. A restarted node runs
//!   a new engine with the next creation, at the same address.
//! - **Partitions** (one way or both) lose every frame across them; connections stay up at both
//!   ends until keepalive closes them, exactly as on a real network.
//!
//! Tests that need to drive messages by hand (reorder, duplicate, lose one) use the in-flight
//! controls: [`Network::in_flight`], [`Network::deliver_now`], [`Network::drop_in_flight`],
//! [`Network::drop_in_flight_where`], [`Network::duplicate_in_flight`], and
//! [`Network::fire_overlay_timer`]; [`Network::inject`] hands an engine a frame a test wrote.
//! [`Network::step_until`] runs until a condition holds, [`Network::run_until_quiet`] until
//! nothing but keepalive is under way; [`Network::set_log`] records the control frames sent.

mod config;
mod controls;
mod processes;
mod queue;
pub mod recorder;
mod trace;
mod transport;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::connection_plan::{ConnId, DialFailure, DialRequest};
use crate::engine::{
    Answer, Command, DialId, Engine, EngineConfig, Event, LaneActivity, Output, Target,
    TransmitFailure, Waiter,
};
use crate::id::{ChannelName, NodeName, NodeSpec, Pid, ProcessName, RemoteRef};
use crate::overlay::{OverlayKind, OverlayMsg, PeerInfo};
use crate::signals::ExitReason;
use crate::time::Instant;
use crate::wire::handshake::{Identity, RefuseCode};
use crate::wire::{Control, Message, DEFAULT_MAX_FRAME_LEN};

pub use config::{BroadcastFactory, NetConfig, OverlayFactory, Setup};
pub use controls::InFlight;
pub use processes::{DownRecord, ExitRecord, SimProcesses};
pub use recorder::{Delivery, Recorder};
pub use trace::{derive_seed, TraceHash};

/// Index of a node in the network.
pub type NodeId = u32;

/// Side of a connection: the dialer's end or the acceptor's.
const DIALER: usize = 0;
const ACCEPTOR: usize = 1;

/// How long a closing end waits for the peer's answer to its goodbye before cutting (the
/// runtime's linger).
const LINGER: Duration = Duration::from_secs(2);

/// One node of the network.
pub struct SimNode {
    /// Its engine (replaced at each restart).
    pub engine: Engine,
    /// How peers see it now.
    pub info: PeerInfo,
    /// Whether it runs.
    pub alive: bool,
    /// Bumped at every crash and restart; events for an older incarnation are dropped.
    pub incarnation: u32,
    /// Control bytes this node sent (frames as on the wire, length prefix included).
    pub bytes_sent: u64,
    /// Control frames this node sent.
    pub messages_sent: u64,
    /// Answers its engine gave to waiters, in order.
    pub answers: Vec<(Waiter, Answer)>,
    /// Membership changes its engine reported.
    pub membership_changes: u64,
    /// The overlay's members as of the last membership change its engine reported, when the
    /// setup records them ([`Setup::record_members`]); empty otherwise.
    pub reported_members: Vec<NodeName>,
    /// Its simulated processes (emptied when it crashes).
    pub processes: SimProcesses,
    wake: Option<(Instant, u64)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndState {
    /// The handshake is under way.
    Connecting,
    /// Its engine holds it as a lane.
    Open,
    /// Its engine let it go on purpose: it sends nothing more (its goodbye is out) but still
    /// reads, as the runtime's reader does, until the peer's goodbye or the linger.
    Closing,
    /// It failed or was cut; its engine is told (or will be) and it carries nothing.
    Broken,
    /// Its engine was told it is down (or never held it).
    Gone,
}

#[derive(Clone, Debug)]
struct End {
    node: NodeId,
    inc: u32,
    id: ConnId,
    state: EndState,
    last_rx: Instant,
    /// It ended by a goodbye (its own, after its queue, or the peer's): nothing put on it was
    /// lost.
    clean: bool,
}

#[derive(Clone, Debug)]
struct Conn {
    dial: DialId,
    req: DialRequest,
    ends: [End; 2],
    /// Last arrival time scheduled per direction (to side 0, to side 1): frames keep order.
    fifo: [Instant; 2],
    /// Whether the other end read this end's goodbye (so everything this end sent before it).
    goodbye_read: [bool; 2],
}

#[derive(Debug)]
enum Ev {
    Accept {
        conn: u64,
    },
    Verdict {
        conn: u64,
        refused: Option<RefuseCode>,
    },
    DialFailed {
        node: NodeId,
        inc: u32,
        dial: DialId,
        failure: DialFailure,
    },
    Frame {
        conn: u64,
        to: usize,
        msg: Message,
    },
    /// The transport notices one end of a connection is down (goodbye answered, reset, cut).
    Down {
        conn: u64,
        side: usize,
    },
    /// The end's engine is told (a moment later: frames handed to the end meanwhile fail).
    LaneDown {
        conn: u64,
        side: usize,
    },
    Wake {
        node: NodeId,
        inc: u32,
        token: u64,
    },
    TransmitFailed {
        node: NodeId,
        inc: u32,
        end: ConnId,
        msg: Message,
    },
}

/// What kind of event [`Network::step`] processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stepped {
    /// A control frame (overlay message).
    Message,
    /// A connection or dial change.
    Connection,
    /// A node's timers.
    Timer,
    /// Keepalive traffic, or an event for a node that is gone.
    Other,
}

/// A control frame as the log records it ([`Network::set_log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// When it was sent.
    pub at: Instant,
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The message.
    pub msg: OverlayMsg,
}

/// The network. See the module documentation.
pub struct Network {
    /// Current virtual time.
    pub now: Instant,
    nodes: Vec<SimNode>,
    setup: Setup,
    net: NetConfig,
    queue: queue::EventQueue<Ev>,
    seq: u64,
    rng: ChaCha8Rng,
    index: HashMap<NodeName, NodeId>,
    addrs: HashMap<SocketAddr, NodeId>,
    conns: BTreeMap<u64, Conn>,
    ends: HashMap<ConnId, (u64, usize)>,
    by_node: Vec<BTreeSet<u64>>,
    next_conn: u64,
    next_end: u64,
    partitions: BTreeSet<(NodeId, NodeId)>,
    log: Option<Vec<Sent>>,
    /// Nodes whose events are printed to stderr (debugging a scenario).
    watch: BTreeSet<NodeId>,
    /// Hash of every processed event, in order.
    pub trace: TraceHash,
    /// Events processed.
    pub events: u64,
    /// Overlay messages rejected by their receiver (0 without injected faults).
    pub rejected: u64,
    /// Control frames that failed to decode on arrival (always 0 unless a codec bug).
    pub decode_errors: u64,
    /// Lanes a node closed as unwanted although the peer dialed them (and so still wants
    /// them): always 0 unless the planner breaks its rule, which looks like a failure to the
    /// peer.
    pub peer_lanes_closed: u64,
}

/// The name of node `i`.
pub fn node_name(i: NodeId) -> NodeName {
    NodeName::new(&format!("n{i}@sim")).expect("valid simulated node name")
}

/// The address node `i` listens on.
pub fn node_addr(i: NodeId) -> SocketAddr {
    let ip = Ipv4Addr::from(0x0a00_0000u32 | i);
    SocketAddr::from((ip, 4370))
}

struct Activity<'a> {
    conns: &'a BTreeMap<u64, Conn>,
    ends: &'a HashMap<ConnId, (u64, usize)>,
}

impl LaneActivity for Activity<'_> {
    fn last_received(&self, conn: ConnId) -> Option<Instant> {
        let (c, side) = self.ends.get(&conn)?;
        Some(self.conns.get(c)?.ends[*side].last_rx)
    }
}

impl Network {
    /// A network of `setup.nodes` nodes, all started at time zero.
    pub fn new(setup: Setup) -> Network {
        let n = setup.nodes;
        let mut net = Network {
            now: Instant::ZERO,
            nodes: Vec::with_capacity(n as usize),
            net: setup.net.clone(),
            queue: queue::EventQueue::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(derive_seed(setup.seed, u64::MAX)),
            index: HashMap::with_capacity(n as usize),
            addrs: HashMap::with_capacity(n as usize),
            conns: BTreeMap::new(),
            ends: HashMap::new(),
            by_node: vec![BTreeSet::new(); n as usize],
            next_conn: 0,
            next_end: 0,
            partitions: BTreeSet::new(),
            log: None,
            watch: std::env::var("PARTISAN_SIM_WATCH")
                .ok()
                .map(|v| {
                    v.split(',')
                        .filter_map(|x| x.trim().trim_start_matches('n').parse().ok())
                        .collect()
                })
                .unwrap_or_default(),
            trace: TraceHash::new(),
            events: 0,
            rejected: 0,
            decode_errors: 0,
            peer_lanes_closed: 0,
            setup,
        };
        for i in 0..n {
            let info = PeerInfo {
                spec: NodeSpec::new(node_name(i), vec![node_addr(i)], net.setup.channels.clone())
                    .expect("valid simulated spec"),
                creation: 1,
                tag: net.setup.tags.get(i as usize).cloned().flatten(),
            };
            net.index.insert(info.name().clone(), i);
            net.addrs.insert(node_addr(i), i);
            let engine = net.make_engine(i, &info, derive_seed(net.setup.seed, u64::from(i) << 8));
            net.nodes.push(SimNode {
                engine,
                info,
                alive: true,
                incarnation: 0,
                bytes_sent: 0,
                messages_sent: 0,
                answers: Vec::new(),
                membership_changes: 0,
                reported_members: Vec::new(),
                processes: SimProcesses::default(),
                wake: None,
            });
        }
        for i in 0..n {
            net.drain(i);
        }
        net
    }

    fn make_engine(&self, i: NodeId, info: &PeerInfo, seed: u64) -> Engine {
        let overlay = (self.setup.overlay)(i, info, seed);
        let identity = Identity {
            spec: info.spec.clone(),
            creation: info.creation,
            overlay: overlay.kind(),
            tag: info.tag.clone(),
            max_frame: u32::try_from(DEFAULT_MAX_FRAME_LEN).unwrap_or(u32::MAX),
        };
        let mut cfg = EngineConfig::new(identity);
        cfg.backoff = self.setup.backoff;
        cfg.keepalive = self.setup.keepalive;
        cfg.liveness = self.setup.liveness;
        cfg.transient_ttl = self.setup.transient_ttl;
        cfg.join_ttl = self.setup.join_ttl;
        let rng = Box::new(ChaCha8Rng::seed_from_u64(derive_seed(seed, 1)));
        let mut engine = Engine::new(cfg, overlay, rng, self.now);
        if let Some(factory) = &self.setup.broadcast {
            for (handler, pcfg) in factory(i, info) {
                engine
                    .register_broadcast(handler, pcfg, self.now)
                    .expect("a valid broadcast handler");
            }
        }
        engine
    }

    // ----- reads -----

    /// The seed the network was created with.
    pub fn seed(&self) -> u64 {
        self.setup.seed
    }

    /// How the network was set up.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// The overlay every node runs.
    pub fn overlay_kind(&self) -> OverlayKind {
        self.nodes[0].engine.overlay().kind()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the network has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`.
    pub fn node(&self, i: NodeId) -> &SimNode {
        &self.nodes[i as usize]
    }

    /// Every node, by id.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// Node `i`'s engine.
    pub fn engine(&self, i: NodeId) -> &Engine {
        &self.nodes[i as usize].engine
    }

    /// Node id of a name.
    pub fn id_of(&self, name: &NodeName) -> Option<NodeId> {
        self.index.get(name).copied()
    }

    /// Name of a node.
    pub fn name_of(&self, id: NodeId) -> &NodeName {
        self.nodes[id as usize].info.name()
    }

    /// Ids of live nodes.
    pub fn live(&self) -> Vec<NodeId> {
        (0..self.nodes.len() as NodeId)
            .filter(|i| self.nodes[*i as usize].alive)
            .collect()
    }

    /// Whether `a` holds an open lane to `b`.
    pub fn linked(&self, a: NodeId, b: NodeId) -> bool {
        let na = &self.nodes[a as usize];
        na.alive && na.engine.is_connected(self.name_of(b))
    }

    /// Members of node `i`'s overlay that are nodes of the network, as node ids, sorted.
    pub fn member_ids(&self, i: NodeId) -> Vec<NodeId> {
        let members = self.nodes[i as usize].engine.overlay().members();
        let mut ids: Vec<NodeId> = members.iter().filter_map(|n| self.id_of(n)).collect();
        ids.sort_unstable();
        ids
    }

    /// Active view of node `i`, as node ids.
    pub fn active_ids(&self, i: NodeId) -> Vec<NodeId> {
        self.nodes[i as usize]
            .engine
            .overlay()
            .active_view()
            .iter()
            .filter_map(|n| self.id_of(n))
            .collect()
    }

    /// The network's own random stream (for experiments and scenarios).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Connections with both ends open, as (dialer, acceptor, channel, lane).
    pub fn open_connections(&self) -> Vec<(NodeId, NodeId, ChannelName, u16)> {
        self.conns
            .values()
            .filter(|c| c.ends.iter().all(|e| e.state == EndState::Open))
            .map(|c| {
                (
                    c.ends[DIALER].node,
                    c.ends[ACCEPTOR].node,
                    c.req.channel.clone(),
                    c.req.lane,
                )
            })
            .collect()
    }

    /// Breaks the open connection between nodes `a` and `b` on lane `lane` of `channel`, as a
    /// reset would: both ends fail now, with no goodbye, and what was in flight on it is lost
    /// (the nodes' other connections stay up). Whether there was one.
    pub fn break_connection(
        &mut self,
        a: NodeId,
        b: NodeId,
        channel: &ChannelName,
        lane: u16,
    ) -> bool {
        let found = self.conns.iter().find(|(_, c)| {
            c.ends.iter().all(|e| e.state == EndState::Open)
                && c.req.channel == *channel
                && c.req.lane == lane
                && {
                    let (d, x) = (c.ends[DIALER].node, c.ends[ACCEPTOR].node);
                    (d, x) == (a, b) || (d, x) == (b, a)
                }
        });
        let Some((&c, _)) = found else {
            return false;
        };
        for side in [DIALER, ACCEPTOR] {
            self.down(c, side, false);
        }
        true
    }

    /// When the next event is due, if any.
    pub fn next_time(&mut self) -> Option<Instant> {
        self.queue.next_time()
    }

    // ----- setup changes and faults -----

    /// Replaces the network model (e.g. to heal after a faulty phase).
    pub fn set_net(&mut self, net: NetConfig) {
        self.net = net;
    }

    /// The network model in force.
    pub fn net(&self) -> &NetConfig {
        &self.net
    }

    /// Starts (or stops) recording every control frame sent, in [`Network::sent`].
    pub fn set_log(&mut self, on: bool) {
        self.log = on.then(Vec::new);
    }

    /// Control frames sent since logging started.
    pub fn sent(&self) -> &[Sent] {
        self.log.as_deref().unwrap_or(&[])
    }

    /// Empties the log of sent frames.
    pub fn clear_log(&mut self) {
        if let Some(l) = &mut self.log {
            l.clear();
        }
    }

    /// Runs a command on node `i` now.
    pub fn command(&mut self, i: NodeId, cmd: Command) {
        if !self.nodes[i as usize].alive {
            return;
        }
        let now = self.now;
        self.nodes[i as usize].engine.handle_command(cmd, now);
        self.drain(i);
    }

    /// A new simulated process on node `i` (which must be running); its pid.
    pub fn spawn_process(&mut self, i: NodeId) -> Pid {
        let node = &mut self.nodes[i as usize];
        Pid {
            node: node.info.name().clone(),
            creation: node.info.creation,
            id: node.processes.spawn(),
        }
    }

    /// Process `id` of node `i` ends with `reason` now; its monitors and links fire.
    pub fn end_process(&mut self, i: NodeId, id: u64, reason: ExitReason) {
        if self.nodes[i as usize].processes.end(id, reason.clone()) {
            self.command(i, Command::ProcessExited { id, reason });
        }
    }

    /// Node `i`'s engine is told that `msg`, a process signal for node `to`, could not be
    /// queued on its first open lane to `to` because that lane is far past its bound (as the
    /// runtime reports a lane whose peer stopped reading). Whether there was such a lane.
    pub fn stall_signal(&mut self, i: NodeId, to: NodeId, msg: crate::signals::ProcessMsg) -> bool {
        let name = self.nodes[to as usize].info.name().clone();
        let node = &mut self.nodes[i as usize];
        let Some(conn) = node
            .engine
            .lanes()
            .find(|(_, l)| l.peer == name && l.is_open())
            .map(|(c, _)| c)
        else {
            return false;
        };
        let frame = node.engine.signal_frame(&name, Some(msg));
        let now = self.now;
        node.engine.handle_transmit_failed(
            conn,
            Message::Control(Control::Process(frame)),
            crate::engine::TransmitFailure::Full,
            now,
        );
        self.drain(i);
        true
    }

    /// Registers live process `id` of node `i` as `name`; whether it was (the name free, the
    /// process alive).
    pub fn register_process(&mut self, i: NodeId, id: u64, name: ProcessName) -> bool {
        self.nodes[i as usize].alive && self.nodes[i as usize].processes.register(name, id)
    }

    /// Process `watcher` of node `i` monitors `target` on another node; the monitor's
    /// reference id.
    pub fn monitor(&mut self, i: NodeId, watcher: u64, target: RemoteRef) -> u64 {
        let monitor = self.nodes[i as usize].processes.make_ref();
        self.command(
            i,
            Command::Monitor {
                watcher,
                monitor,
                target,
            },
        );
        monitor
    }

    /// Node `i` broadcasts `msg` with its handler `handler` now; the engine's answer.
    pub fn broadcast(
        &mut self,
        i: NodeId,
        handler: &str,
        msg: &[u8],
    ) -> Result<(), crate::broadcast::BroadcastError> {
        if !self.nodes[i as usize].alive {
            return Err(crate::broadcast::BroadcastError::ShuttingDown);
        }
        let waiter = Waiter(u64::MAX - 1);
        self.command(
            i,
            Command::Broadcast {
                handler: handler.to_string(),
                msg: msg.to_vec(),
                waiter: Some(waiter),
            },
        );
        let answers = &mut self.nodes[i as usize].answers;
        match answers.iter().rposition(|(w, _)| *w == waiter) {
            Some(k) => match answers.remove(k).1 {
                Answer::Broadcast(r) => r,
                other => panic!("unexpected answer to a broadcast: {other:?}"),
            },
            None => panic!("a broadcast is answered at once"),
        }
    }

    /// Node `i` joins the cluster through node `contact` (its spec, as a configured seed
    /// would name it).
    pub fn join(&mut self, i: NodeId, contact: NodeId) {
        if !self.nodes[i as usize].alive || i == contact {
            return;
        }
        self.trace
            .mix(&[20, self.now.0, u64::from(i), u64::from(contact)]);
        let spec = self.nodes[contact as usize].info.spec.clone();
        self.command(
            i,
            Command::Join {
                target: Target::Spec(spec),
                waiter: None,
            },
        );
    }

    /// Node `i` leaves the cluster gracefully now.
    pub fn leave(&mut self, i: NodeId) {
        if !self.nodes[i as usize].alive {
            return;
        }
        self.trace.mix(&[21, self.now.0, u64::from(i)]);
        self.command(i, Command::Leave { waiter: None });
    }

    /// Node `i` crashes now: its state is lost; its connections are reset (or, with silent
    /// crashes, just go quiet).
    pub fn crash(&mut self, i: NodeId) {
        if !self.nodes[i as usize].alive {
            return;
        }
        self.trace.mix(&[22, self.now.0, u64::from(i)]);
        let node = &mut self.nodes[i as usize];
        node.alive = false;
        node.incarnation += 1;
        node.wake = None;
        node.processes = SimProcesses::default();
        let conns: Vec<u64> = std::mem::take(&mut self.by_node[i as usize])
            .into_iter()
            .collect();
        for c in conns {
            let Some(conn) = self.conns.get_mut(&c) else {
                continue;
            };
            let mine = if conn.ends[DIALER].node == i {
                DIALER
            } else {
                ACCEPTOR
            };
            conn.ends[mine].state = EndState::Gone;
            let other = 1 - mine;
            let o = conn.ends[other].clone();
            if matches!(
                o.state,
                EndState::Open | EndState::Closing | EndState::Broken
            ) && !self.net.silent_crashes
                && !self.blocked(i, o.node)
            {
                let at = self.now + self.latency();
                self.schedule(
                    at,
                    Ev::Down {
                        conn: c,
                        side: other,
                    },
                );
            }
            self.reap(c);
        }
    }

    /// Restarts a crashed node with a new engine of the next creation, at the same address.
    pub fn restart(&mut self, i: NodeId) {
        if self.nodes[i as usize].alive {
            return;
        }
        let info = self.nodes[i as usize].info.clone();
        self.start_again(i, info);
    }

    /// Restarts a crashed node with a new engine of the next creation, listening on `port` of
    /// its host from now on (as after a redeploy): dials to its old address are refused.
    pub fn restart_with_port(&mut self, i: NodeId, port: u16) {
        if self.nodes[i as usize].alive {
            return;
        }
        let mut info = self.nodes[i as usize].info.clone();
        let old = info.spec.listen_addrs().to_vec();
        let addr = SocketAddr::new(old.first().map_or(node_addr(i).ip(), |a| a.ip()), port);
        for a in &old {
            self.addrs.remove(a);
        }
        self.addrs.insert(addr, i);
        info.spec = NodeSpec::new(info.name().clone(), vec![addr], self.setup.channels.clone())
            .expect("valid simulated spec");
        self.start_again(i, info);
    }

    /// Runs a new engine for crashed node `i`, seen as `info` with the next creation.
    fn start_again(&mut self, i: NodeId, mut info: PeerInfo) {
        let seed = derive_seed(self.setup.seed, (u64::from(i) << 8) | 1) ^ self.now.0;
        info.creation += 1;
        let engine = self.make_engine(i, &info, seed);
        let node = &mut self.nodes[i as usize];
        node.incarnation += 1;
        node.alive = true;
        node.info = info;
        node.engine = engine;
        node.wake = None;
        self.trace.mix(&[23, self.now.0, u64::from(i)]);
        self.drain(i);
    }

    /// Blocks traffic from `a` to `b` (and from `b` to `a` when `both`). Connections across
    /// stay up until keepalive closes them.
    pub fn partition(&mut self, a: NodeId, b: NodeId, both: bool) {
        self.trace
            .mix(&[24, self.now.0, u64::from(a), u64::from(b), u64::from(both)]);
        self.partitions.insert((a, b));
        if both {
            self.partitions.insert((b, a));
        }
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.trace.mix(&[25, self.now.0]);
        self.partitions.clear();
    }

    // ----- running -----

    /// Processes the next event; `None` when the queue is empty. Returns what kind of event it
    /// was and the node whose state it may have changed.
    pub fn step(&mut self) -> Option<(Stepped, Option<NodeId>)> {
        let ((at, _), ev) = self.queue.pop()?;
        self.now = self.now.max(at);
        self.events += 1;
        if !self.watch.is_empty() {
            self.print_watched(&ev);
        }
        Some(self.process(ev))
    }

    /// Processes every event due up to `until`, then sets the clock to `until`.
    pub fn run_until(&mut self, until: Instant) {
        while self.next_time().is_some_and(|t| t <= until) {
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Like [`Network::run_until`], calling `check` after every event that may have changed
    /// an engine (keepalive traffic and stale events do not), with the node it touched; stops
    /// at the first error.
    pub fn run_checked<E>(
        &mut self,
        until: Instant,
        mut check: impl FnMut(&Network, NodeId) -> Result<(), E>,
    ) -> Result<(), E> {
        while self.next_time().is_some_and(|t| t <= until) {
            match self.step() {
                Some((Stepped::Other, _)) | Some((_, None)) | None => {}
                Some((_, Some(n))) => check(self, n)?,
            }
        }
        self.now = self.now.max(until);
        Ok(())
    }

    // ----- internals -----

    fn schedule(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push((at.max(self.now), self.seq), ev);
    }

    fn latency(&mut self) -> Duration {
        let lo = self.net.latency_min.as_micros() as u64;
        let hi = self.net.latency_max.as_micros() as u64;
        Duration::from_micros(if hi > lo {
            self.rng.gen_range(lo..=hi)
        } else {
            lo
        })
    }

    fn blocked(&self, a: NodeId, b: NodeId) -> bool {
        self.partitions.contains(&(a, b))
    }

    fn current(&self, node: NodeId, inc: u32) -> bool {
        let n = &self.nodes[node as usize];
        n.alive && n.incarnation == inc
    }

    /// Carries out everything node `i`'s engine asks for, then schedules its next wake.
    fn drain(&mut self, i: NodeId) {
        // A process ended by an exit signal asks its engine for more frames: carry those out
        // too, in the same round.
        let mut again = true;
        while again {
            again = false;
            self.drain_once(i, &mut again);
        }
        self.reschedule(i);
    }

    fn drain_once(&mut self, i: NodeId, again: &mut bool) {
        loop {
            let Some(out) = self.nodes[i as usize].engine.poll_output() else {
                break;
            };
            match out {
                Output::Dial { id, req } => self.dial(i, id, req),
                Output::Close { conn, reason } => self.close_end(i, conn, reason),
                Output::Transmit { conn, msg } => self.transmit(i, conn, msg),
            }
        }
        let record = self.setup.record_members;
        let node = &mut self.nodes[i as usize];
        while let Some(ev) = node.engine.poll_event() {
            match ev {
                Event::Answer { waiter, answer } => node.answers.push((waiter, answer)),
                Event::MembershipChanged => {
                    node.membership_changes += 1;
                    if record {
                        node.reported_members = node.engine.overlay().members();
                    }
                }
                Event::OverlayRejected { .. } => self.rejected += 1,
                Event::Down {
                    watcher,
                    monitor,
                    target,
                    reason,
                } => node.processes.downs.push(DownRecord {
                    watcher,
                    monitor,
                    target,
                    reason,
                }),
                Event::Exit {
                    to,
                    from,
                    reason,
                    link,
                } => {
                    node.processes.exits.push(ExitRecord {
                        to,
                        from,
                        reason: reason.clone(),
                        link,
                    });
                    // No simulated process traps exits: any reason but `normal` ends it
                    // (`kill` as `killed`), and its own monitors and links fire in turn.
                    if !reason.is_normal() {
                        let reason = match reason {
                            ExitReason::Kill => ExitReason::Killed,
                            r => r,
                        };
                        if node.processes.end(to, reason.clone()) {
                            let now = self.now;
                            node.engine
                                .handle_command(Command::ProcessExited { id: to, reason }, now);
                            *again = true;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn reschedule(&mut self, i: NodeId) {
        let node = &self.nodes[i as usize];
        if !node.alive {
            return;
        }
        let Some(t) = node.engine.poll_timeout() else {
            return;
        };
        if node.wake.is_some_and(|(at, _)| at <= t) {
            return;
        }
        self.seq += 1;
        let token = self.seq;
        let inc = node.incarnation;
        self.nodes[i as usize].wake = Some((t, token));
        self.schedule(
            t,
            Ev::Wake {
                node: i,
                inc,
                token,
            },
        );
    }

    fn wake(&mut self, node: NodeId, inc: u32, token: u64) -> Stepped {
        if !self.current(node, inc) || self.nodes[node as usize].wake.map(|(_, t)| t) != Some(token)
        {
            return Stepped::Other;
        }
        self.nodes[node as usize].wake = None;
        self.trace.mix(&[7, self.now.0, u64::from(node)]);
        let now = self.now;
        let Network {
            nodes, conns, ends, ..
        } = self;
        let activity = Activity { conns, ends };
        nodes[node as usize].engine.handle_timeout(now, &activity);
        self.drain(node);
        Stepped::Timer
    }

    fn transmit_failed(&mut self, node: NodeId, inc: u32, end: ConnId, msg: Message) -> Stepped {
        if !self.current(node, inc) {
            return Stepped::Other;
        }
        self.trace.mix(&[8, self.now.0, u64::from(node), end.0]);
        let now = self.now;
        self.nodes[node as usize].engine.handle_transmit_failed(
            end,
            msg,
            TransmitFailure::Closed,
            now,
        );
        self.drain(node);
        Stepped::Connection
    }

    fn touched(&self, ev: &Ev) -> Option<NodeId> {
        match ev {
            Ev::Accept { conn } => self.conns.get(conn).map(|c| c.ends[ACCEPTOR].node),
            Ev::Verdict { conn, .. } => self.conns.get(conn).map(|c| c.ends[DIALER].node),
            Ev::Frame { conn, to, .. } => self.conns.get(conn).map(|c| c.ends[*to].node),
            Ev::Down { conn, side } | Ev::LaneDown { conn, side } => {
                self.conns.get(conn).map(|c| c.ends[*side].node)
            }
            Ev::DialFailed { node, .. }
            | Ev::Wake { node, .. }
            | Ev::TransmitFailed { node, .. } => Some(*node),
        }
    }

    fn process(&mut self, ev: Ev) -> (Stepped, Option<NodeId>) {
        let node = self.touched(&ev);
        let kind = match ev {
            Ev::Accept { conn } => self.accept(conn),
            Ev::Verdict { conn, refused } => self.verdict(conn, refused),
            Ev::DialFailed {
                node,
                inc,
                dial,
                failure,
            } => self.dial_failed(node, inc, dial, failure),
            Ev::Frame { conn, to, msg } => self.frame(conn, to, msg),
            Ev::Down { conn, side } => self.down(conn, side, false),
            Ev::LaneDown { conn, side } => {
                self.end_down(conn, side);
                Stepped::Connection
            }
            Ev::Wake { node, inc, token } => self.wake(node, inc, token),
            Ev::TransmitFailed {
                node,
                inc,
                end,
                msg,
            } => self.transmit_failed(node, inc, end, msg),
        };
        (kind, node)
    }

    fn print_watched(&self, ev: &Ev) {
        let involved: Vec<NodeId> = match ev {
            Ev::Accept { conn }
            | Ev::Verdict { conn, .. }
            | Ev::Frame { conn, .. }
            | Ev::Down { conn, .. }
            | Ev::LaneDown { conn, .. } => self
                .conns
                .get(conn)
                .map(|c| vec![c.ends[0].node, c.ends[1].node])
                .unwrap_or_default(),
            Ev::DialFailed { node, .. }
            | Ev::Wake { node, .. }
            | Ev::TransmitFailed { node, .. } => vec![*node],
        };
        if involved.iter().any(|n| self.watch.contains(n)) {
            eprintln!("[{:>10.3}s] {involved:?} {ev:?}", self.now.0 as f64 / 1e6);
        }
    }
}

/// A small stable code per control message variant, for the trace hash.
pub fn control_code(c: &Control) -> u64 {
    use crate::broadcast::BroadcastBody;
    match c {
        Control::Overlay(m) => msg_code(m),
        Control::Liveness(crate::liveness::LivenessMsg::Suspect { creation, .. }) => {
            90 + (creation << 8)
        }
        Control::Broadcast(b) => match &b.body {
            BroadcastBody::Gossip { round, .. } => 60 + (u64::from(*round) << 8),
            BroadcastBody::IHave(list) => 61 + ((list.len() as u64) << 8),
            BroadcastBody::Prune { .. } => 62,
            BroadcastBody::Graft { round, .. } => 63 + (u64::from(*round) << 8),
            BroadcastBody::Exchange { session, .. } => 64 + (*session << 8),
        },
        Control::Process(f) => {
            use crate::signals::ProcessMsg;
            let sessions = (f.session << 40) ^ (f.heard << 20);
            sessions
                ^ match &f.msg {
                    None => 69,
                    Some(p) => match p {
                        ProcessMsg::Monitor { monitor, .. } => 70 + (monitor << 8),
                        ProcessMsg::Demonitor { monitor } => 71 + (monitor << 8),
                        ProcessMsg::Down { monitor, .. } => 72 + (monitor << 8),
                        ProcessMsg::Link { from, to } => 73 + (from << 8) + (to << 32),
                        ProcessMsg::Unlink { from, to, id } => {
                            74 + (from << 8) + (to << 32) + (id << 48)
                        }
                        ProcessMsg::UnlinkAck { from, to, id } => {
                            78 + (from << 8) + (to << 32) + (id << 48)
                        }
                        ProcessMsg::Exit { to, .. } => 75 + (to << 8),
                        ProcessMsg::IsAlive { query, .. } => 76 + (query << 8),
                        ProcessMsg::Alive { query, .. } => 77 + (query << 8),
                    },
                }
        }
    }
}

/// A small stable code per overlay message variant, for the trace hash.
pub fn msg_code(m: &OverlayMsg) -> u64 {
    use crate::overlay::{CsMsg, FullMeshMsg, HvMsg};
    match m {
        OverlayMsg::HyParView(h) => match h {
            HvMsg::Join { .. } => 10,
            HvMsg::ForwardJoin { ttl, .. } => 11 + (u64::from(*ttl) << 8),
            HvMsg::ForwardJoinAccepted => 12,
            HvMsg::NeighborRequest { high } => 13 + (u64::from(*high) << 8),
            HvMsg::NeighborReply { accepted } => 14 + (u64::from(*accepted) << 8),
            HvMsg::Disconnect => 15,
            HvMsg::Leave { handover } => 16 + ((handover.len() as u64) << 8),
            HvMsg::Shuffle { sample, .. } => 17 + ((sample.len() as u64) << 8),
            HvMsg::ShuffleReply { sample } => 18 + ((sample.len() as u64) << 8),
            HvMsg::KeepActive => 19,
        },
        OverlayMsg::FullMesh(f) => match f {
            FullMeshMsg::Digest { .. } => 30,
            FullMeshMsg::Sync { .. } => 31,
            FullMeshMsg::Delta { .. } => 32,
            FullMeshMsg::Join { .. } => 33,
            FullMeshMsg::Handover { .. } => 34,
        },
        OverlayMsg::ClientServer(c) => match c {
            CsMsg::Hello { .. } => 40,
            CsMsg::Welcome { members, .. } => 41 + ((members.len() as u64) << 8),
            CsMsg::Announce { .. } => 42,
            CsMsg::Refused { .. } => 43,
            CsMsg::Leaving => 44,
            CsMsg::Removed { .. } => 45,
        },
        OverlayMsg::Static(_) => 50,
    }
}
