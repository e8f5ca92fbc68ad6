//! Property tests of the full-mesh overlay and its membership CRDT.
//!
//! * A seeded in-memory network of 3 to 8 `FullMesh` nodes runs a random mix of joins, leaves,
//!   removes, restarts (new creation and address), out-of-order / duplicated / lost messages and
//!   timer firings. Then a healing phase (no loss; every node still meant to be in the cluster
//!   joins one seed if it does not know it; periodic timers fire) must end, at a fixed point
//!   (a whole probe cycle of periods changes nothing), with every such node holding the
//!   identical membership (same hash) made of exactly those nodes, connected to all the others,
//!   and no node that left (and did not join again) a member anywhere. Once healed, the cluster
//!   is quiet: another probe cycle changes no state and sends only digests, the answers of left
//!   nodes to probes (the record of their removal), and a lone survivor's join retries.
//! * Merging the same deltas in any order, with repetitions, gives the same replica.
//!
//! Every message crosses the network encoded with postcard, as on the wire.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use partisan_core::id::{Creation, NodeName, NodeSpec};
use partisan_core::membership::{CausalContext, Delta, Membership};
use partisan_core::overlay::{
    FullMesh, FullMeshConfig, FullMeshMsg, Overlay, OverlayMsg, OverlayOutput, OverlayTimer,
    PeerInfo,
};
use partisan_core::time::Instant;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Periods within which every member probes its stalled contacts at least once (a node probes
/// every 8 to 12 periods).
const PROBE_CYCLE: usize = 13;

fn name(i: usize) -> NodeName {
    NodeName::new(&format!("node{i}@sim")).unwrap()
}

fn info(i: usize, creation: Creation, port: u16) -> PeerInfo {
    PeerInfo {
        spec: NodeSpec::new(
            name(i),
            vec![SocketAddr::from(([10, 0, 0, i as u8], port))],
            Default::default(),
        )
        .unwrap(),
        creation,
        tag: None,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Join(usize, usize),
    Leave(usize),
    Remove(usize, usize),
    Restart(usize),
    /// Deliver the queued message at this index (modulo the queue length): reordering.
    Deliver(usize),
    /// Deliver a copy and keep the original queued.
    Duplicate(usize),
    /// Lose it.
    Drop(usize),
    /// Fire a node's periodic (`true`) or push timer, if armed.
    Fire(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..8usize, 0..8usize).prop_map(|(a, b)| Op::Join(a, b)),
        1 => (0..8usize).prop_map(Op::Leave),
        1 => (0..8usize, 0..8usize).prop_map(|(a, b)| Op::Remove(a, b)),
        1 => (0..8usize).prop_map(Op::Restart),
        12 => (0..1024usize).prop_map(Op::Deliver),
        1 => (0..1024usize).prop_map(Op::Duplicate),
        2 => (0..1024usize).prop_map(Op::Drop),
        4 => (0..8usize, any::<bool>()).prop_map(|(a, b)| Op::Fire(a, b)),
    ]
}

struct Net {
    nodes: Vec<FullMesh>,
    infos: Vec<PeerInfo>,
    /// (sender as it was when sending, destination, encoded message)
    queue: Vec<(PeerInfo, usize, Vec<u8>)>,
    timers: BTreeMap<(usize, OverlayTimer), Instant>,
    wanted: Vec<BTreeMap<NodeName, NodeSpec>>,
    /// `members()` as of each node's last `MembersChanged`.
    reported: Vec<Vec<NodeName>>,
    /// Whether the node's last membership command was a leave.
    left: Vec<bool>,
    now: Instant,
    seed: u64,
    restarts: u64,
    /// When set, every message sent: (sender, destination, message).
    log: Option<Vec<(usize, usize, FullMeshMsg)>>,
}

impl Net {
    fn new(n: usize, seed: u64) -> Net {
        let mut net = Net {
            nodes: Vec::new(),
            infos: Vec::new(),
            queue: Vec::new(),
            timers: BTreeMap::new(),
            wanted: vec![BTreeMap::new(); n],
            reported: (0..n).map(|i| vec![name(i)]).collect(),
            left: vec![false; n],
            now: Instant::ZERO,
            seed,
            restarts: 0,
            log: None,
        };
        for i in 0..n {
            let info = info(i, 1, 4000);
            net.nodes.push(net.make(&info, i as u64));
            net.infos.push(info);
            let mut out = vec![];
            net.nodes[i].start(net.now, &mut out);
            net.apply(i, out);
        }
        net
    }

    fn make(&self, info: &PeerInfo, salt: u64) -> FullMesh {
        let rng = ChaCha8Rng::seed_from_u64(self.seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        FullMesh::new(info.clone(), FullMeshConfig::default(), Box::new(rng))
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
                    let j = self.infos.iter().position(|p| p.name() == to.name());
                    let bytes = postcard::to_stdvec(&msg).unwrap();
                    let OverlayMsg::FullMesh(msg) = msg else {
                        panic!("not a full-mesh message: {msg:?}")
                    };
                    if let Some(log) = &mut self.log {
                        log.push((i, j.unwrap(), msg));
                    }
                    self.queue.push((self.infos[i].clone(), j.unwrap(), bytes));
                }
                OverlayOutput::SetTimer { timer, at } => {
                    self.timers.insert((i, timer), at);
                }
                OverlayOutput::MembersChanged => self.reported[i] = self.nodes[i].members(),
            }
        }
    }

    fn deliver(&mut self, from: PeerInfo, to: usize, bytes: &[u8]) {
        let msg: OverlayMsg = postcard::from_bytes(bytes).unwrap();
        let mut out = vec![];
        let r = self.nodes[to].on_message(&from, msg, self.now, &mut out);
        // Nothing a correct node sends, however late, is ever refused.
        assert_eq!(r, Ok(()), "node{to} refused a message from {}", from.name());
        self.apply(to, out);
    }

    fn fire(&mut self, i: usize, timer: OverlayTimer) {
        if let Some(at) = self.timers.remove(&(i, timer)) {
            self.now = self.now.max(at);
            let mut out = vec![];
            self.nodes[i].on_timer(timer, self.now, &mut out);
            self.apply(i, out);
        }
    }

    /// Delivers everything in order (push timers fire once the queue is empty).
    fn flush(&mut self) {
        for _ in 0..100_000 {
            if !self.queue.is_empty() {
                let (from, to, bytes) = self.queue.remove(0);
                self.deliver(from, to, &bytes);
                continue;
            }
            let pushes: Vec<usize> = self
                .timers
                .keys()
                .filter(|(_, t)| *t == OverlayTimer::Push)
                .map(|(i, _)| *i)
                .collect();
            if pushes.is_empty() {
                return;
            }
            for i in pushes {
                self.fire(i, OverlayTimer::Push);
            }
        }
        panic!("the network never went quiet");
    }

    fn run(&mut self, op: &Op) {
        let n = self.nodes.len();
        match *op {
            Op::Join(a, b) => {
                let (a, b) = (a % n, b % n);
                if a != b {
                    let mut out = vec![];
                    let contact = self.infos[b].clone();
                    self.nodes[a].join(&contact, self.now, &mut out);
                    self.apply(a, out);
                    self.left[a] = false;
                }
            }
            Op::Leave(a) => {
                let a = a % n;
                let mut out = vec![];
                self.nodes[a].leave(self.now, &mut out);
                self.apply(a, out);
                self.left[a] = true;
            }
            Op::Remove(a, b) => {
                let (a, b) = (a % n, b % n);
                let mut out = vec![];
                self.nodes[a].remove(&name(b), self.now, &mut out);
                self.apply(a, out);
                if a == b {
                    self.left[a] = true;
                }
            }
            Op::Restart(a) => {
                let a = a % n;
                self.restarts += 1;
                let info = info(a, self.infos[a].creation + 1, 4000 + self.restarts as u16);
                self.nodes[a] = self.make(&info, 1000 + self.restarts);
                self.infos[a] = info;
                self.wanted[a].clear();
                self.reported[a] = vec![name(a)];
                self.timers.retain(|(i, _), _| *i != a);
                self.left[a] = false;
                let mut out = vec![];
                self.nodes[a].start(self.now, &mut out);
                self.apply(a, out);
            }
            Op::Deliver(k) | Op::Duplicate(k) | Op::Drop(k) => {
                if self.queue.is_empty() {
                    return;
                }
                let k = k % self.queue.len();
                let (from, to, bytes) = match op {
                    Op::Duplicate(_) => self.queue[k].clone(),
                    _ => self.queue.remove(k),
                };
                if !matches!(op, Op::Drop(_)) {
                    self.deliver(from, to, &bytes);
                }
            }
            Op::Fire(a, periodic) => {
                let timer = if periodic {
                    OverlayTimer::Periodic
                } else {
                    OverlayTimer::Push
                };
                self.fire(a % n, timer);
            }
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| !self.left[i]).collect()
    }

    /// `Ok` when the cluster is healed, else what is still wrong.
    fn check(&self) -> Result<(), String> {
        let live = self.live();
        let live_names: Vec<NodeName> = live.iter().map(|&i| name(i)).collect();
        for (i, node) in self.nodes.iter().enumerate() {
            if self.left[i] {
                if !node.members().is_empty() || !self.wanted[i].is_empty() || !node.has_left() {
                    return Err(format!("left node{i} still has members or connections"));
                }
                continue;
            }
            if node.members() != live_names {
                return Err(format!("node{i} has members {:?}", node.members()));
            }
            let h0 = self.nodes[live[0]].membership().hash();
            if node.membership().hash() != h0 {
                return Err(format!("node{i} has another hash"));
            }
            let others: Vec<NodeName> = live_names
                .iter()
                .filter(|m| **m != name(i))
                .cloned()
                .collect();
            let wanted: Vec<NodeName> = self.wanted[i].keys().cloned().collect();
            if wanted != others || node.active_view() != others {
                return Err(format!("node{i} keeps {wanted:?} connected"));
            }
            for (n, spec) in &self.wanted[i] {
                let j = self.infos.iter().position(|p| p.name() == n).unwrap();
                if *spec != self.infos[j].spec {
                    return Err(format!("node{i} dials an old address of {n}"));
                }
            }
        }
        Ok(())
    }

    /// What must hold at every step, whatever is in flight.
    fn check_local(&self) -> Result<(), TestCaseError> {
        for (i, node) in self.nodes.iter().enumerate() {
            let members = node.members();
            prop_assert!(members.windows(2).all(|w| w[0] < w[1]));
            prop_assert_eq!(&self.reported[i], &members, "members changed unreported");
            prop_assert_eq!(node.has_left(), self.left[i]);
            if node.has_left() {
                prop_assert!(members.is_empty() && self.wanted[i].is_empty());
                continue;
            }
            prop_assert!(members.contains(&name(i)));
            prop_assert!(!self.wanted[i].contains_key(&name(i)));
            for m in node.active_view() {
                let spec = node.membership().get(&m).map(|e| &e.spec);
                prop_assert_eq!(self.wanted[i].get(&m), spec);
            }
        }
        Ok(())
    }

    fn heal(&mut self) -> Result<(), String> {
        let live = self.live();
        let Some(&seed) = live.first() else {
            self.flush();
            return self.check();
        };
        // Healed: the cluster checks out and a whole probe cycle changed no node's state. A
        // period may still teach a node alone (which retries the contacts it joined through)
        // or a probe (of a stalled contact) the latest removal record of a contact that left,
        // joined and left again meanwhile.
        let mut last: Option<Vec<[u8; 16]>> = None;
        let mut stable = 0;
        for _ in 0..300 {
            self.flush();
            for &i in &live {
                if i != seed && !self.nodes[i].members().contains(&name(seed)) {
                    let mut out = vec![];
                    let contact = self.infos[seed].clone();
                    self.nodes[i].join(&contact, self.now, &mut out);
                    self.apply(i, out);
                }
            }
            self.flush();
            let hashes: Vec<[u8; 16]> = self.nodes.iter().map(|m| m.membership().hash()).collect();
            if self.check().is_ok() && last.as_ref() == Some(&hashes) {
                stable += 1;
                if stable >= PROBE_CYCLE {
                    return Ok(());
                }
            } else {
                stable = 0;
            }
            last = Some(hashes);
            for i in 0..self.nodes.len() {
                self.fire(i, OverlayTimer::Periodic);
                self.flush();
            }
        }
        self.check()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn full_mesh_heals_to_one_identical_membership(
        n in 3usize..=8,
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        let mut net = Net::new(n, seed);
        for op in &ops {
            net.run(op);
            net.check_local()?;
        }
        if let Err(e) = net.heal() {
            prop_assert!(false, "not healed: {e}");
        }
        // Healed means quiet: one more probe cycle changes nothing, and sends nothing but
        // digests (anti-entropy, and probes of stalled contacts, all of which left), the
        // removal records left nodes answer them with, and a lone survivor's join retries.
        let hashes: Vec<[u8; 16]> = net.nodes.iter().map(|m| m.membership().hash()).collect();
        net.log = Some(Vec::new());
        for _ in 0..PROBE_CYCLE {
            for i in 0..n {
                net.fire(i, OverlayTimer::Periodic);
            }
            net.flush();
        }
        let after: Vec<[u8; 16]> = net.nodes.iter().map(|m| m.membership().hash()).collect();
        prop_assert_eq!(hashes, after);
        prop_assert!(net.check().is_ok());
        let live = net.live();
        let mut digests = vec![0usize; n];
        for (from, to, msg) in net.log.take().unwrap() {
            match msg {
                FullMeshMsg::Digest { .. } => {
                    prop_assert!(!net.left[from], "node{from} left but sends digests");
                    digests[from] += 1;
                }
                FullMeshMsg::Delta { delta, reply: false } => {
                    prop_assert!(net.left[from] && !net.left[to], "node{from} sends a delta");
                    prop_assert!(delta.entries.is_empty() && delta.removed.len() == 1);
                    prop_assert_eq!(delta.removed[0].name(), &name(from));
                }
                FullMeshMsg::Join { .. } => {
                    prop_assert!(live.len() == 1 && net.left[to], "node{from} joins node{to}");
                }
                other => prop_assert!(false, "node{from} sends {other:?} to node{to}"),
            }
        }
        // One digest per period, plus at most two probe rounds of at most n - 1 contacts.
        for (i, &d) in digests.iter().enumerate() {
            prop_assert!(d <= PROBE_CYCLE + 2 * (n - 1), "node{i} sent {d} digests");
            if live.len() > 1 && live.contains(&i) {
                prop_assert!(d >= PROBE_CYCLE, "node{i} sent {d} digests");
            }
        }
    }

    #[test]
    fn merging_deltas_in_any_order_gives_the_same_replica(
        writes in proptest::collection::vec((0..4usize, 0..3u8, 0..4usize), 1..30),
        order in any::<u64>(),
    ) {
        // Four owners (two incarnations each possible) add, re-add and remove; everything any
        // of them emits is collected, then merged into two fresh replicas in different orders,
        // with repetitions.
        let mut owners: Vec<Membership> = (0..4).map(|_| Membership::new()).collect();
        let mut deltas: Vec<Delta> = Vec::new();
        for &(who, what, other) in &writes {
            let d = match what {
                0 => owners[who].add(info(who, 1, 4000).spec, 1),
                1 => owners[who].add(info(who, 2, 5000).spec, 2),
                _ => owners[who].remove(&name(other)),
            };
            deltas.push(d);
            // Owners also gossip among themselves now and then: a trimmed answer merged by its
            // intended receiver, and the whole state, which anyone may merge.
            let src = (who + other) % 4;
            if src != who {
                let d = owners[src].delta_for(owners[who].context());
                prop_assert!(owners[who].can_merge(&d));
                owners[who].merge_delta(&d);
                deltas.push(owners[src].delta_for(&CausalContext::new()));
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(order);
        let mut a = Membership::new();
        let mut b = Membership::new();
        for d in &deltas {
            a.merge_delta(d);
        }
        let mut idx: Vec<usize> = (0..deltas.len()).chain(0..deltas.len() / 2).collect();
        use rand::seq::SliceRandom;
        idx.shuffle(&mut rng);
        for &i in &idx {
            prop_assert!(b.can_merge(&deltas[i]));
            b.merge_delta(&deltas[i]);
        }
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.hash(), b.hash());
        // At most one live entry per name, never an entry older than a known one.
        let names: BTreeSet<NodeName> = a.members().into_iter().collect();
        prop_assert_eq!(names.len(), a.entries().count());
        for (dot, _) in a.entries() {
            prop_assert_eq!(Some(dot.clone()), a.context().max_dot_for(dot.name()));
        }
    }
}
