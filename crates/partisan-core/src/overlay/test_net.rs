//! An in-memory network of overlays for unit and property tests: messages, connections,
//! crashes and timers, all driven by hand. A link between two nodes is up while at least one of
//! them wants it (as in the runtime, where the wanting side dials and the other admits).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Overlay, OverlayMsg, OverlayOutput, OverlayTimer, PeerInfo};
use crate::id::{NodeName, NodeSpec};
use crate::time::Instant;

/// A peer named `name@h` listening on 127.0.0.1:`port` with creation `port`.
pub(crate) fn peer(name: &str, port: u16) -> PeerInfo {
    PeerInfo {
        spec: NodeSpec::new(
            NodeName::new(&format!("{name}@h")).unwrap(),
            vec![SocketAddr::from(([127, 0, 0, 1], port))],
            Default::default(),
        )
        .unwrap(),
        creation: port as u64,
        tag: None,
    }
}

enum Event {
    Msg(usize, usize, OverlayMsg),
    Unreachable(usize, usize),
}

/// See the module documentation.
pub(crate) struct Net {
    pub(crate) nodes: Vec<Box<dyn Overlay>>,
    pub(crate) infos: Vec<PeerInfo>,
    index: BTreeMap<NodeName, usize>,
    pub(crate) alive: Vec<bool>,
    wants: BTreeSet<(usize, usize)>,
    links: BTreeSet<(usize, usize)>,
    queue: VecDeque<Event>,
    timers: BTreeMap<(usize, OverlayTimer), Instant>,
    pub(crate) now: Instant,
    pub(crate) rejected: usize,
    pub(crate) delivered: usize,
    rng: ChaCha8Rng,
}

impl Net {
    /// A network of `nodes` (each with the peer info others see it as), all started at time
    /// zero; `seed` drives shuffled delivery.
    pub(crate) fn new(nodes: Vec<(PeerInfo, Box<dyn Overlay>)>, seed: u64) -> Net {
        let (infos, nodes): (Vec<PeerInfo>, Vec<Box<dyn Overlay>>) = nodes.into_iter().unzip();
        let index = infos
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name().clone(), i))
            .collect();
        let n = nodes.len();
        let mut net = Net {
            nodes,
            infos,
            index,
            alive: vec![true; n],
            wants: BTreeSet::new(),
            links: BTreeSet::new(),
            queue: VecDeque::new(),
            timers: BTreeMap::new(),
            now: Instant::ZERO,
            rejected: 0,
            delivered: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        };
        for i in 0..n {
            let mut out = vec![];
            net.nodes[i].start(Instant::ZERO, &mut out);
            net.apply(i, out);
        }
        net
    }

    fn apply(&mut self, i: usize, outs: Vec<OverlayOutput>) {
        for o in outs {
            match o {
                OverlayOutput::Connect(spec) => {
                    if let Some(&j) = self.index.get(spec.name()) {
                        self.wants.insert((i, j));
                        self.update_link(i, j);
                    }
                }
                OverlayOutput::Disconnect(name) => {
                    if let Some(&j) = self.index.get(&name) {
                        self.wants.remove(&(i, j));
                        self.update_link(i, j);
                    }
                }
                OverlayOutput::Send { to, msg } => {
                    let Some(&j) = self.index.get(to.name()) else {
                        continue;
                    };
                    if self.alive[j] {
                        self.queue.push_back(Event::Msg(i, j, msg));
                    } else if !self.linked(i, j) {
                        self.queue.push_back(Event::Unreachable(i, j));
                    }
                }
                OverlayOutput::SetTimer { timer, at } => {
                    self.timers.insert((i, timer), at);
                }
                OverlayOutput::MembersChanged => {}
            }
        }
    }

    fn linked(&self, i: usize, j: usize) -> bool {
        self.links.contains(&(i.min(j), i.max(j)))
    }

    fn update_link(&mut self, i: usize, j: usize) {
        let key = (i.min(j), i.max(j));
        let want = (self.wants.contains(&(i, j)) || self.wants.contains(&(j, i)))
            && self.alive[i]
            && self.alive[j];
        if want && !self.links.contains(&key) {
            self.links.insert(key);
            for (a, b) in [(i, j), (j, i)] {
                let mut out = vec![];
                let info = self.infos[b].clone();
                self.nodes[a].on_peer_up(&info, self.now, &mut out);
                self.apply(a, out);
            }
        } else if !want && self.links.contains(&key) {
            self.links.remove(&key);
            for (a, b) in [(i, j), (j, i)] {
                if self.alive[a] {
                    let mut out = vec![];
                    let name = self.infos[b].name().clone();
                    self.nodes[a].on_peer_down(&name, self.now, &mut out);
                    self.apply(a, out);
                }
            }
        }
    }

    /// Node `i` joins through node `j`.
    pub(crate) fn join(&mut self, i: usize, j: usize) {
        let mut out = vec![];
        let contact = self.infos[j].clone();
        self.nodes[i].join(&contact, self.now, &mut out);
        self.apply(i, out);
    }

    /// Node `i` leaves gracefully.
    pub(crate) fn leave(&mut self, i: usize) {
        let mut out = vec![];
        self.nodes[i].leave(self.now, &mut out);
        self.apply(i, out);
    }

    /// Node `i` crashes: its links drop, messages to it are lost.
    pub(crate) fn crash(&mut self, i: usize) {
        self.alive[i] = false;
        let links: Vec<(usize, usize)> = self
            .links
            .iter()
            .filter(|(a, b)| *a == i || *b == i)
            .copied()
            .collect();
        for (a, b) in links {
            self.update_link(a, b);
        }
        self.timers.retain(|(n, _), _| *n != i);
    }

    /// Delivers one queued event; `false` when the queue is empty. With `shuffle`, picks a
    /// random queued event instead of the oldest (per-pair order is then not kept).
    pub(crate) fn step(&mut self, shuffle: bool) -> bool {
        let ev = if shuffle && self.queue.len() > 1 {
            let k = self.rng.gen_range(0..self.queue.len());
            self.queue.remove(k)
        } else {
            self.queue.pop_front()
        };
        let Some(ev) = ev else {
            return false;
        };
        match ev {
            Event::Msg(i, j, msg) => {
                if !self.alive[j] {
                    return true;
                }
                let mut out = vec![];
                let from = self.infos[i].clone();
                self.delivered += 1;
                if self.nodes[j]
                    .on_message(&from, msg, self.now, &mut out)
                    .is_err()
                {
                    self.rejected += 1;
                }
                self.apply(j, out);
            }
            Event::Unreachable(i, j) => {
                if self.alive[i] {
                    let mut out = vec![];
                    let name = self.infos[j].name().clone();
                    self.nodes[i].on_unreachable(&name, self.now, &mut out);
                    self.apply(i, out);
                }
            }
        }
        true
    }

    /// Delivers everything queued, in order, until quiet.
    pub(crate) fn run(&mut self) {
        let mut steps = 0;
        while self.step(false) {
            steps += 1;
            assert!(
                steps < 1_000_000,
                "message storm: the network never went quiet"
            );
        }
    }

    /// Drops the oldest queued event (message loss).
    pub(crate) fn drop_one(&mut self) {
        self.queue.pop_front();
    }

    /// Advances time by `d`, firing due timers in deadline order, delivering after each.
    pub(crate) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self
                .timers
                .iter()
                .filter(|(_, at)| **at <= end)
                .min_by_key(|(k, at)| (**at, **k))
                .map(|(k, at)| (*k, *at));
            let Some(((i, timer), at)) = next else {
                break;
            };
            self.timers.remove(&(i, timer));
            self.now = self.now.max(at);
            if self.alive[i] {
                let mut out = vec![];
                self.nodes[i].on_timer(timer, self.now, &mut out);
                self.apply(i, out);
                self.run();
            }
        }
        self.now = end;
    }

    /// Index of a node by name.
    pub(crate) fn index_of(&self, name: &NodeName) -> usize {
        self.index[name]
    }

    /// Whether a link is up between `i` and `j`.
    pub(crate) fn is_linked(&self, i: usize, j: usize) -> bool {
        self.linked(i, j)
    }
}
