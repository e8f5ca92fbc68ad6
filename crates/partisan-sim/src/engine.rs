//! The simulation engine: nodes running real `partisan-core` overlays, one event queue ordered
//! by (time, sequence), a seeded network model, connections and failures.
//!
//! Connections follow the runtime's semantics: a link between two nodes is up while at least
//! one of them wants it (the overlay's `Connect`), both are alive and no partition separates
//! them; both ends are told `peer_up` / `peer_down` one latency after the change (a partition
//! is noticed only after `detect_delay`, as keepalives would). A message to a node without a
//! link travels over a temporary connection (one extra round trip), or comes back as
//! `unreachable` when the node is dead or partitioned away. Messages on one directed link are
//! delivered in order (TCP), apart from injected duplicates.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use partisan_core::id::{NodeName, NodeSpec};
use partisan_core::overlay::{
    FullMesh, FullMeshConfig, HyParView, HyParViewConfig, Overlay, OverlayMsg, OverlayOutput,
    OverlayTimer, PeerInfo,
};
use partisan_core::time::Instant;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::trace::TraceHash;

/// Index of a node in the simulation.
pub type NodeId = u32;

/// The network model. Every random draw comes from the simulation's seeded RNG.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// Smallest one-way latency.
    pub latency_min: Duration,
    /// Largest one-way latency.
    pub latency_max: Duration,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// How long a partition takes to be noticed (keepalive timeout).
    pub detect_delay: Duration,
    /// How long a dial to a partitioned node takes to fail.
    pub connect_timeout: Duration,
    /// Crashes are silent (a host vanishing): peers notice only after `detect_delay` and dials
    /// to it time out after `connect_timeout`. Otherwise a crash is a process dying: its
    /// connections are reset and dials refused within one latency.
    pub silent_crashes: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(10),
            loss: 0.0,
            duplicate: 0.0,
            detect_delay: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            silent_crashes: false,
        }
    }
}

/// Which overlay a simulated node runs.
#[derive(Debug, Clone)]
pub enum OverlayChoice {
    /// HyParView with these parameters.
    HyParView(HyParViewConfig),
    /// Full mesh with these parameters.
    FullMesh(FullMeshConfig),
}

/// A node's overlay, concrete so experiments can read its state.
pub enum SimOverlay {
    /// HyParView.
    HyParView(Box<HyParView>),
    /// Full mesh.
    FullMesh(Box<FullMesh>),
}

impl SimOverlay {
    /// The overlay as the common trait.
    pub fn as_dyn(&self) -> &dyn Overlay {
        match self {
            SimOverlay::HyParView(h) => h.as_ref(),
            SimOverlay::FullMesh(f) => f.as_ref(),
        }
    }

    fn as_dyn_mut(&mut self) -> &mut dyn Overlay {
        match self {
            SimOverlay::HyParView(h) => h.as_mut(),
            SimOverlay::FullMesh(f) => f.as_mut(),
        }
    }
}

/// One simulated node.
pub struct SimNode {
    /// Its overlay state machine.
    pub overlay: SimOverlay,
    /// How peers see it.
    pub info: PeerInfo,
    /// Whether it runs.
    pub alive: bool,
    /// Bumped at every crash and restart; events for an older incarnation are dropped.
    pub incarnation: u32,
    timers: BTreeMap<OverlayTimer, Instant>,
    wants: BTreeSet<NodeId>,
    links: BTreeSet<NodeId>,
    /// Protocol bytes this node sent (when byte counting is on).
    pub bytes_sent: u64,
    /// Protocol messages this node sent.
    pub messages_sent: u64,
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: NodeId,
        to: NodeId,
        inc: u32,
        msg: OverlayMsg,
    },
    PeerUp {
        node: NodeId,
        inc: u32,
        peer: NodeId,
        epoch: u64,
    },
    PeerDown {
        node: NodeId,
        inc: u32,
        peer: NodeId,
    },
    Unreachable {
        node: NodeId,
        inc: u32,
        peer: NodeId,
    },
    Timer {
        node: NodeId,
        inc: u32,
        timer: OverlayTimer,
        at: Instant,
    },
    LinkCheck {
        a: NodeId,
        b: NodeId,
    },
}

struct Scheduled {
    at: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Link {
    up: bool,
    epoch: u64,
}

/// What kind of event [`Sim::step`] processed (for callers checking invariants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stepped {
    /// A protocol message.
    Message,
    /// A connection change.
    Connection,
    /// A timer.
    Timer,
    /// An event that was stale (older incarnation, superseded link state) or internal.
    Other,
}

/// The simulation. See the module documentation.
pub struct Sim {
    /// Current virtual time.
    pub now: Instant,
    /// The nodes, by id.
    pub nodes: Vec<SimNode>,
    net: NetConfig,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    rng: ChaCha8Rng,
    index: HashMap<NodeName, NodeId>,
    links: HashMap<(NodeId, NodeId), Link>,
    link_epochs: u64,
    partitions: BTreeSet<(NodeId, NodeId)>,
    fifo: HashMap<(NodeId, NodeId), Instant>,
    count_bytes: bool,
    /// Nodes whose events are printed to stderr (debugging a scenario).
    watch: BTreeSet<NodeId>,
    /// Hash of every processed event, in order.
    pub trace: TraceHash,
    /// Events processed.
    pub events: u64,
    /// Messages rejected by overlays (should stay 0 without injected faults).
    pub rejected: u64,
    seed: u64,
}

fn node_name(i: NodeId) -> NodeName {
    NodeName::new(&format!("n{i}@sim")).expect("valid simulated node name")
}

fn node_addr(i: NodeId) -> SocketAddr {
    let ip = Ipv4Addr::from(0x0a00_0000u32 | i);
    SocketAddr::from((ip, 4370))
}

/// A seed for stream `stream` of the simulation seeded with `seed` (splitmix64).
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed
        .wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Sim {
    /// A simulation of `n` nodes running `overlay`, every random choice derived from `seed`.
    pub fn new(n: u32, overlay: &OverlayChoice, net: NetConfig, seed: u64) -> Sim {
        let mut sim = Sim {
            now: Instant::ZERO,
            nodes: Vec::with_capacity(n as usize),
            net,
            queue: BinaryHeap::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(derive_seed(seed, u64::MAX)),
            index: HashMap::with_capacity(n as usize),
            links: HashMap::new(),
            link_epochs: 0,
            partitions: BTreeSet::new(),
            fifo: HashMap::new(),
            count_bytes: false,
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
            seed,
        };
        for i in 0..n {
            let name = node_name(i);
            sim.index.insert(name.clone(), i);
            let info = PeerInfo {
                spec: NodeSpec::new(name, vec![node_addr(i)], BTreeMap::new())
                    .expect("valid simulated spec"),
                creation: 1,
                tag: None,
            };
            let overlay = build_overlay(overlay, &info, derive_seed(seed, u64::from(i) << 8));
            sim.nodes.push(SimNode {
                overlay,
                info,
                alive: true,
                incarnation: 0,
                timers: BTreeMap::new(),
                wants: BTreeSet::new(),
                links: BTreeSet::new(),
                bytes_sent: 0,
                messages_sent: 0,
            });
        }
        for i in 0..n {
            sim.drive(i, |o, now, out| o.start(now, out));
        }
        sim
    }

    /// The seed the simulation was created with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Counts protocol bytes (postcard-encoded control frames plus framing) per node.
    pub fn set_count_bytes(&mut self, on: bool) {
        self.count_bytes = on;
    }

    /// Replaces the network model (e.g. to heal after a faulty phase).
    pub fn set_net(&mut self, net: NetConfig) {
        self.net = net;
    }

    /// Node id of a name.
    pub fn id_of(&self, name: &NodeName) -> Option<NodeId> {
        self.index.get(name).copied()
    }

    /// Name of a node.
    pub fn name_of(&self, id: NodeId) -> &NodeName {
        self.nodes[id as usize].info.name()
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
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

    fn link_key(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
        (a.min(b), a.max(b))
    }

    /// Whether the link between `a` and `b` is up.
    pub fn linked(&self, a: NodeId, b: NodeId) -> bool {
        self.links.get(&Self::link_key(a, b)).is_some_and(|l| l.up)
    }

    /// Recomputes a link and tells both ends of a change after `delay`.
    fn update_link(&mut self, a: NodeId, b: NodeId, delay: Option<Duration>) {
        if a == b {
            return;
        }
        let (na, nb) = (&self.nodes[a as usize], &self.nodes[b as usize]);
        let want = (na.wants.contains(&b) || nb.wants.contains(&a))
            && na.alive
            && nb.alive
            && !self.blocked(a, b)
            && !self.blocked(b, a);
        let key = Self::link_key(a, b);
        let link = self.links.entry(key).or_default();
        if link.up == want {
            return;
        }
        link.up = want;
        self.link_epochs += 1;
        link.epoch = self.link_epochs;
        let epoch = link.epoch;
        if !want {
            self.links.remove(&key);
        }
        for (x, y) in [(a, b), (b, a)] {
            if want {
                self.nodes[x as usize].links.insert(y);
            } else {
                self.nodes[x as usize].links.remove(&y);
            }
        }
        for (x, y) in [(a, b), (b, a)] {
            if !self.nodes[x as usize].alive {
                continue;
            }
            let d = delay.unwrap_or_else(|| self.latency());
            let inc = self.nodes[x as usize].incarnation;
            let at = self.now + d;
            let ev = if want {
                Event::PeerUp {
                    node: x,
                    inc,
                    peer: y,
                    epoch,
                }
            } else {
                Event::PeerDown {
                    node: x,
                    inc,
                    peer: y,
                }
            };
            self.schedule(at, ev);
        }
    }

    fn apply(&mut self, i: NodeId, outs: Vec<OverlayOutput>) {
        for o in outs {
            match o {
                OverlayOutput::Connect(spec) => {
                    if let Some(j) = self.id_of(spec.name()) {
                        if j != i {
                            self.nodes[i as usize].wants.insert(j);
                            self.update_link(i, j, None);
                        }
                    }
                }
                OverlayOutput::Disconnect(name) => {
                    if let Some(j) = self.id_of(&name) {
                        self.nodes[i as usize].wants.remove(&j);
                        self.update_link(i, j, None);
                    }
                }
                OverlayOutput::Send { to, msg } => {
                    if let Some(j) = self.id_of(to.name()) {
                        self.send(i, j, msg);
                    }
                }
                OverlayOutput::SetTimer { timer, at } => {
                    let inc = self.nodes[i as usize].incarnation;
                    self.nodes[i as usize].timers.insert(timer, at);
                    self.schedule(
                        at.max(self.now),
                        Event::Timer {
                            node: i,
                            inc,
                            timer,
                            at,
                        },
                    );
                }
                OverlayOutput::MembersChanged => {}
            }
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: OverlayMsg) {
        if from == to {
            return;
        }
        let node = &mut self.nodes[from as usize];
        node.messages_sent += 1;
        if self.count_bytes {
            let body =
                postcard::serialize_with_flavor(&msg, postcard::ser_flavors::Size::default())
                    .unwrap_or(0);
            // Length prefix, kind byte and `Control::Overlay` tag of the control frame.
            node.bytes_sent += body as u64 + 6;
        }
        let linked = self.linked(from, to);
        let target = &self.nodes[to as usize];
        if !linked && (!target.alive || self.blocked(from, to) || self.blocked(to, from)) {
            // A dial that fails: refused at once by a dead host, timed out across a partition.
            let d = if target.alive || self.net.silent_crashes {
                self.net.connect_timeout
            } else {
                self.latency() * 2
            };
            let inc = self.nodes[from as usize].incarnation;
            self.schedule(
                self.now + d,
                Event::Unreachable {
                    node: from,
                    inc,
                    peer: to,
                },
            );
            return;
        }
        if self.blocked(from, to) || (self.net.loss > 0.0 && self.rng.gen_bool(self.net.loss)) {
            return;
        }
        let mut d = self.latency();
        if !linked {
            d += self.latency() + self.latency();
        }
        let key = (from, to);
        let at = (self.now + d).max(self.fifo.get(&key).copied().unwrap_or(Instant::ZERO));
        self.fifo.insert(key, at);
        let inc = self.nodes[to as usize].incarnation;
        let dup = self.net.duplicate > 0.0 && self.rng.gen_bool(self.net.duplicate);
        if dup {
            let extra = self.latency();
            self.schedule(
                at + extra,
                Event::Deliver {
                    from,
                    to,
                    inc,
                    msg: msg.clone(),
                },
            );
        }
        self.schedule(at, Event::Deliver { from, to, inc, msg });
    }

    /// When the next event is due, if any.
    pub fn next_time(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(s)| s.at)
    }

    /// Processes the next event; `None` when the queue is empty. Returns what kind of event
    /// it was and the node whose state it may have changed.
    pub fn step(&mut self) -> Option<(Stepped, Option<NodeId>)> {
        let Reverse(s) = self.queue.pop()?;
        self.now = self.now.max(s.at);
        self.events += 1;
        if !self.watch.is_empty() {
            let touches = match &s.event {
                Event::Deliver { from, to, .. } => {
                    self.watch.contains(from) || self.watch.contains(to)
                }
                Event::PeerUp { node, peer, .. }
                | Event::PeerDown { node, peer, .. }
                | Event::Unreachable { node, peer, .. } => {
                    self.watch.contains(node) || self.watch.contains(peer)
                }
                Event::Timer { node, .. } => self.watch.contains(node),
                Event::LinkCheck { a, b } => self.watch.contains(a) || self.watch.contains(b),
            };
            if touches {
                eprintln!("[{:>10.3}s] {:?}", s.at.0 as f64 / 1e6, s.event);
            }
        }
        let node = match &s.event {
            Event::Deliver { to, .. } => Some(*to),
            Event::PeerUp { node, .. }
            | Event::PeerDown { node, .. }
            | Event::Unreachable { node, .. }
            | Event::Timer { node, .. } => Some(*node),
            Event::LinkCheck { .. } => None,
        };
        Some((self.process(s.event), node))
    }

    /// Like [`Sim::run_until`], calling `check` after every event with the node it touched;
    /// stops at the first error.
    pub fn run_checked<E>(
        &mut self,
        until: Instant,
        mut check: impl FnMut(&Sim, NodeId) -> Result<(), E>,
    ) -> Result<(), E> {
        while self.next_time().is_some_and(|t| t <= until) {
            if let Some((_, Some(n))) = self.step() {
                check(self, n)?;
            }
        }
        self.now = self.now.max(until);
        Ok(())
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

    fn current(&self, node: NodeId, inc: u32) -> bool {
        let n = &self.nodes[node as usize];
        n.alive && n.incarnation == inc
    }

    fn process(&mut self, ev: Event) -> Stepped {
        let now = self.now;
        match ev {
            Event::Deliver { from, to, inc, msg } => {
                if !self.current(to, inc) {
                    return Stepped::Other;
                }
                self.trace
                    .mix(&[1, now.0, u64::from(from), u64::from(to), msg_code(&msg)]);
                let from_info = self.nodes[from as usize].info.clone();
                if self
                    .drive(to, |o, now, out| o.on_message(&from_info, msg, now, out))
                    .is_err()
                {
                    self.rejected += 1;
                }
                Stepped::Message
            }
            Event::PeerUp {
                node,
                inc,
                peer,
                epoch,
            } => {
                let live = self.links.get(&Self::link_key(node, peer));
                if !self.current(node, inc) || live.is_none_or(|l| l.epoch != epoch) {
                    return Stepped::Other;
                }
                self.trace
                    .mix(&[2, now.0, u64::from(node), u64::from(peer)]);
                let info = self.nodes[peer as usize].info.clone();
                self.drive(node, |o, now, out| o.on_peer_up(&info, now, out));
                Stepped::Connection
            }
            Event::PeerDown { node, inc, peer } => {
                // A down is delivered even if the link came back since: the connection the
                // node knew did fail.
                if !self.current(node, inc) {
                    return Stepped::Other;
                }
                self.trace
                    .mix(&[3, now.0, u64::from(node), u64::from(peer)]);
                let name = self.nodes[peer as usize].info.name().clone();
                self.drive(node, |o, now, out| o.on_peer_down(&name, now, out));
                Stepped::Connection
            }
            Event::Unreachable { node, inc, peer } => {
                if !self.current(node, inc) {
                    return Stepped::Other;
                }
                self.trace
                    .mix(&[4, now.0, u64::from(node), u64::from(peer)]);
                let name = self.nodes[peer as usize].info.name().clone();
                self.drive(node, |o, now, out| o.on_unreachable(&name, now, out));
                Stepped::Connection
            }
            Event::Timer {
                node,
                inc,
                timer,
                at,
            } => {
                if !self.current(node, inc)
                    || self.nodes[node as usize].timers.get(&timer) != Some(&at)
                {
                    return Stepped::Other;
                }
                self.nodes[node as usize].timers.remove(&timer);
                self.trace.mix(&[5, now.0, u64::from(node), timer as u64]);
                self.drive(node, |o, now, out| o.on_timer(timer, now, out));
                Stepped::Timer
            }
            Event::LinkCheck { a, b } => {
                self.update_link(a, b, Some(Duration::ZERO));
                Stepped::Other
            }
        }
    }

    /// Runs one call into node `i`'s overlay and carries out what it asks for.
    fn drive<R>(
        &mut self,
        i: NodeId,
        f: impl FnOnce(&mut dyn Overlay, Instant, &mut Vec<OverlayOutput>) -> R,
    ) -> R {
        let mut out = Vec::new();
        let now = self.now;
        let r = f(self.nodes[i as usize].overlay.as_dyn_mut(), now, &mut out);
        self.apply(i, out);
        r
    }

    /// Node `i` joins through node `contact` now.
    pub fn join(&mut self, i: NodeId, contact: NodeId) {
        if !self.nodes[i as usize].alive || i == contact {
            return;
        }
        self.trace
            .mix(&[6, self.now.0, u64::from(i), u64::from(contact)]);
        let info = self.nodes[contact as usize].info.clone();
        self.drive(i, |o, now, out| o.join(&info, now, out));
    }

    /// Node `i` leaves gracefully now.
    pub fn leave(&mut self, i: NodeId) {
        if !self.nodes[i as usize].alive {
            return;
        }
        self.trace.mix(&[7, self.now.0, u64::from(i)]);
        self.drive(i, |o, now, out| o.leave(now, out));
    }

    /// Node `i` crashes now: its links drop (peers notice one latency later), its state and
    /// timers are lost, messages to it are lost.
    pub fn crash(&mut self, i: NodeId) {
        let node = &mut self.nodes[i as usize];
        if !node.alive {
            return;
        }
        self.trace.mix(&[8, self.now.0, u64::from(i)]);
        node.alive = false;
        node.incarnation += 1;
        node.timers.clear();
        node.wants.clear();
        let links: Vec<NodeId> = node.links.iter().copied().collect();
        let delay = self.net.silent_crashes.then_some(self.net.detect_delay);
        for j in links {
            self.update_link(i, j, delay);
        }
    }

    /// Restarts a crashed node with a fresh overlay of a new creation.
    pub fn restart(&mut self, i: NodeId, overlay: &OverlayChoice) {
        let seed = derive_seed(self.seed, (u64::from(i) << 8) | 1) ^ self.now.0;
        let node = &mut self.nodes[i as usize];
        if node.alive {
            return;
        }
        node.incarnation += 1;
        node.alive = true;
        node.info.creation += 1;
        node.overlay = build_overlay(overlay, &node.info, seed);
        self.trace.mix(&[9, self.now.0, u64::from(i)]);
        self.drive(i, |o, now, out| o.start(now, out));
    }

    /// Blocks traffic from `a` to `b` (and `b` to `a` when `both`); links between them drop
    /// after the detection delay.
    pub fn partition(&mut self, a: NodeId, b: NodeId, both: bool) {
        self.trace
            .mix(&[10, self.now.0, u64::from(a), u64::from(b), u64::from(both)]);
        self.partitions.insert((a, b));
        if both {
            self.partitions.insert((b, a));
        }
        let at = self.now + self.net.detect_delay;
        self.schedule(at, Event::LinkCheck { a, b });
    }

    /// Removes every partition; wanted links come back.
    pub fn heal(&mut self) {
        self.trace.mix(&[11, self.now.0]);
        let pairs: Vec<(NodeId, NodeId)> =
            std::mem::take(&mut self.partitions).into_iter().collect();
        for (a, b) in pairs {
            self.update_link(a, b, None);
        }
    }

    /// Ids of live nodes.
    pub fn live(&self) -> Vec<NodeId> {
        (0..self.nodes.len() as NodeId)
            .filter(|i| self.nodes[*i as usize].alive)
            .collect()
    }

    /// A random number from the simulation's own stream (for experiments and scenarios).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Active view of node `i`, as node ids.
    pub fn active_ids(&self, i: NodeId) -> Vec<NodeId> {
        self.nodes[i as usize]
            .overlay
            .as_dyn()
            .active_view()
            .iter()
            .filter_map(|n| self.id_of(n))
            .collect()
    }
}

fn build_overlay(choice: &OverlayChoice, info: &PeerInfo, seed: u64) -> SimOverlay {
    let rng = Box::new(ChaCha8Rng::seed_from_u64(seed));
    match choice {
        OverlayChoice::HyParView(cfg) => {
            SimOverlay::HyParView(Box::new(HyParView::new(info.clone(), cfg.clone(), rng)))
        }
        OverlayChoice::FullMesh(cfg) => {
            SimOverlay::FullMesh(Box::new(FullMesh::new(info.clone(), cfg.clone(), rng)))
        }
    }
}

/// A small stable code per message variant, for the trace hash.
fn msg_code(m: &OverlayMsg) -> u64 {
    use partisan_core::overlay::{FullMeshMsg, HvMsg};
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
        OverlayMsg::ClientServer(_) => 40,
        OverlayMsg::Static(_) => 50,
    }
}
