//! The connection table: which lanes are up to which peer, readable without locks.
//!
//! Readers (every send, `is_connected`, `nodes`) load an immutable snapshot of the peer map
//! (`arc-swap`) and the lane slot they need (`ArcSwapOption`): no lock, no call into a task.
//! Only the driver task writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use partisan_core::connection_plan::ConnId;
use partisan_core::id::{ChannelName, Creation, NodeName, NodeSpec};

use crate::error::SendError;
use crate::lane_queue::LaneQueue;

/// One established connection as senders see it.
pub(crate) struct LaneHandle {
    pub(crate) conn: ConnId,
    pub(crate) queue: Arc<LaneQueue>,
}

struct ChannelLinks {
    lanes: Box<[ArcSwapOption<LaneHandle>]>,
    /// Lanes the peer's spec declares for this channel: where our messages to it go.
    send_lanes: u16,
    next: AtomicUsize,
}

/// Every lane to one incarnation of a peer.
pub(crate) struct PeerLinks {
    pub(crate) spec: NodeSpec,
    pub(crate) creation: Creation,
    channels: HashMap<ChannelName, ChannelLinks>,
    up: AtomicUsize,
}

impl PeerLinks {
    fn new(peer: &NodeSpec, local: &NodeSpec, creation: Creation) -> Self {
        let mut channels = HashMap::new();
        for (name, opts) in peer.channels().iter().chain(local.channels()) {
            let ours = local.channel(name).map_or(0, |o| o.parallelism);
            let theirs = peer.channel(name).map_or(0, |o| o.parallelism);
            channels
                .entry(name.clone())
                .or_insert_with(|| ChannelLinks {
                    lanes: (0..ours.max(theirs).max(opts.parallelism))
                        .map(|_| ArcSwapOption::empty())
                        .collect(),
                    send_lanes: theirs,
                    next: AtomicUsize::new(0),
                });
        }
        PeerLinks {
            spec: peer.clone(),
            creation,
            channels,
            up: AtomicUsize::new(0),
        }
    }

    fn lanes_up(&self, channel: &ChannelLinks) -> usize {
        channel.lanes.iter().filter(|l| l.load().is_some()).count()
    }
}

/// A chosen lane for one send.
pub(crate) struct Route {
    pub(crate) lane: Arc<LaneHandle>,
    pub(crate) creation: Creation,
}

/// See the module documentation.
pub(crate) struct ConnTable {
    local: NodeSpec,
    peers: ArcSwap<HashMap<NodeName, Arc<PeerLinks>>>,
}

impl ConnTable {
    pub(crate) fn new(local: NodeSpec) -> Self {
        ConnTable {
            local,
            peers: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// Publishes `lane` for (peer, channel, lane). A different creation than the table holds
    /// starts a fresh entry for the peer (the old incarnation's lanes are being closed).
    pub(crate) fn install(
        &self,
        spec: &NodeSpec,
        creation: Creation,
        channel: &ChannelName,
        lane: u16,
        handle: Arc<LaneHandle>,
    ) {
        let name = spec.name();
        let current = self.peers.load();
        let links = match current.get(name) {
            Some(p) if p.creation == creation => p.clone(),
            _ => {
                let fresh = Arc::new(PeerLinks::new(spec, &self.local, creation));
                let mut map = HashMap::clone(&current);
                map.insert(name.clone(), fresh.clone());
                self.peers.store(Arc::new(map));
                fresh
            }
        };
        let Some(slot) = links
            .channels
            .get(channel)
            .and_then(|c| c.lanes.get(lane as usize))
        else {
            return;
        };
        if slot.swap(Some(handle)).is_none() {
            links.up.fetch_add(1, Relaxed);
        }
    }

    /// Clears (peer, channel, lane) if it still holds connection `conn`; drops the peer's entry
    /// when its last lane goes.
    pub(crate) fn remove(&self, node: &NodeName, channel: &ChannelName, lane: u16, conn: ConnId) {
        let current = self.peers.load();
        let Some(links) = current.get(node) else {
            return;
        };
        let Some(slot) = links
            .channels
            .get(channel)
            .and_then(|c| c.lanes.get(lane as usize))
        else {
            return;
        };
        if slot.load().as_ref().is_some_and(|h| h.conn == conn) {
            slot.store(None);
            if links.up.fetch_sub(1, Relaxed) == 1 {
                let mut map = HashMap::clone(&current);
                map.remove(node);
                self.peers.store(Arc::new(map));
            }
        }
    }

    /// Picks the lane for a message to `node` on `channel`: lane `key % N` when a partition key
    /// is given (N = the peer's lane count for the channel), otherwise the next lane that is up,
    /// round robin. Falls back to the default channel when the peer lacks `channel` and
    /// `fallback` is set.
    pub(crate) fn route(
        &self,
        node: &NodeName,
        channel: &ChannelName,
        key: Option<u64>,
        fallback: bool,
    ) -> Result<Route, SendError> {
        let peers = self.peers.load();
        let links = peers
            .get(node)
            .ok_or_else(|| SendError::NotConnected(node.clone()))?;
        let (cname, ch) = match links.channels.get(channel) {
            Some(c) if c.send_lanes > 0 => (channel, c),
            _ if fallback => {
                let d = links
                    .channels
                    .get_key_value(&ChannelName::default_channel())
                    .ok_or_else(|| SendError::NotConnected(node.clone()))?;
                (d.0, d.1)
            }
            _ => return Err(SendError::UnknownChannel(channel.clone())),
        };
        let n = ch.send_lanes as usize;
        let lane = match key {
            Some(k) => {
                let i = (k % n as u64) as usize;
                ch.lanes[i].load_full().ok_or_else(|| SendError::LaneDown {
                    node: node.clone(),
                    channel: cname.clone(),
                    lane: i as u16,
                })?
            }
            None => {
                let start = ch.next.fetch_add(1, Relaxed);
                (0..n)
                    .find_map(|j| ch.lanes[(start + j) % n].load_full())
                    .ok_or_else(|| SendError::NotConnected(node.clone()))?
            }
        };
        Ok(Route {
            lane,
            creation: links.creation,
        })
    }

    /// Nodes with at least one lane up, sorted.
    pub(crate) fn nodes(&self) -> Vec<NodeName> {
        let mut v: Vec<NodeName> = self
            .peers
            .load()
            .iter()
            .filter(|(_, p)| p.up.load(Relaxed) > 0)
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// Whether any lane to `node` is up.
    pub(crate) fn is_connected(&self, node: &NodeName) -> bool {
        self.peers
            .load()
            .get(node)
            .is_some_and(|p| p.up.load(Relaxed) > 0)
    }

    /// Whether any lane of `channel` to `node` is up.
    pub(crate) fn is_connected_on(&self, node: &NodeName, channel: &ChannelName) -> bool {
        self.peers.load().get(node).is_some_and(|p| {
            p.channels
                .get(channel)
                .is_some_and(|c| c.lanes.iter().any(|l| l.load().is_some()))
        })
    }

    /// Whether every lane of every channel of the peer's spec is up.
    pub(crate) fn is_fully_connected(&self, node: &NodeName) -> bool {
        self.peers.load().get(node).is_some_and(|p| {
            p.spec.lanes().all(|(c, l)| {
                p.channels
                    .get(c)
                    .and_then(|ch| ch.lanes.get(l as usize))
                    .is_some_and(|s| s.load().is_some())
            })
        })
    }

    /// Creation of the connected incarnation of `node`.
    pub(crate) fn creation_of(&self, node: &NodeName) -> Option<Creation> {
        self.peers.load().get(node).map(|p| p.creation)
    }

    /// Lanes up per peer and channel.
    pub(crate) fn lanes_up(&self) -> Vec<(NodeName, ChannelName, usize)> {
        let peers = self.peers.load();
        let mut out = Vec::new();
        for (n, p) in peers.iter() {
            for (c, ch) in &p.channels {
                out.push((n.clone(), c.clone(), p.lanes_up(ch)));
            }
        }
        out.sort();
        out
    }
}
