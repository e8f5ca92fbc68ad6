//! The connection table: which lanes are up to which peer, readable without locks.
//!
//! Readers (every send, `is_connected`, `nodes`) load one immutable snapshot of the whole table
//! (`arc-swap`): no lock, no call into a task, and a single atomic load per send. Only the
//! driver task writes, replacing the snapshot (copy on write) when a lane comes up or goes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use partisan_core::connection_plan::ConnId;
use partisan_core::id::{ChannelName, Creation, NodeName, NodeSpec};

use crate::connection::lane_queue::LaneQueue;
use crate::error::SendError;
use crate::process::registry::KeyHash;

type Map<K, V> = HashMap<K, V, KeyHash>;

thread_local! {
    /// Round-robin position of key-less sends from this thread (no shared counter to contend
    /// on; each thread still spreads its messages over every lane).
    static NEXT_LANE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// Routes this thread looked up last (see [`ConnTable::with_route_cached`]).
    static ROUTES: RefCell<RouteCache> = const { RefCell::new(RouteCache::new()) };
}

/// Every change to any table of the process takes its generation from this one counter, so a
/// generation names one state of one table, never a state of another.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// Slots of the per-thread route cache.
const ROUTE_SLOTS: usize = 4;

/// A thread's recent routes to single-lane channels: what a send to the same peer and channel
/// needs without hashing either name or loading the table. An entry is valid only while its
/// table is at the generation it was looked up in (any lane coming or going changes it).
struct RouteCache {
    slots: [Option<CachedRoute>; ROUTE_SLOTS],
    /// Per slot, the route (by hash) whose lookup last missed: a route is cached on its
    /// second miss in a row, so a sender cycling through many peers does not pay for filling
    /// the cache on every send.
    missed: [u64; ROUTE_SLOTS],
}

struct CachedRoute {
    generation: u64,
    node: NodeName,
    channel: ChannelName,
    lane: Arc<LaneHandle>,
    creation: Creation,
}

impl RouteCache {
    const fn new() -> Self {
        RouteCache {
            slots: [None, None, None, None],
            missed: [0; ROUTE_SLOTS],
        }
    }

    /// Where a route to (`node`, `channel`) is kept, and a fingerprint of the pair (for the
    /// second-miss rule only: a hit compares the names). From the names' contents, not their
    /// addresses (senders often hold their own copies of the same channel name), and cheap:
    /// lengths and a few bytes, mixed by one multiplication.
    fn key(node: &NodeName, channel: &ChannelName) -> (usize, u64) {
        fn print(s: &str) -> u64 {
            let b = s.as_bytes();
            let at = |i: usize| u64::from(b.get(i).copied().unwrap_or(0));
            (b.len() as u64)
                ^ (at(0) << 8)
                ^ (at(b.len() / 2) << 16)
                ^ (at(b.len().wrapping_sub(1)) << 24)
        }
        let id = (print(node.as_str()) ^ print(channel.as_str()).rotate_left(32))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((id >> 62) as usize % ROUTE_SLOTS, id)
    }
}

/// One established connection as senders see it.
pub(crate) struct LaneHandle {
    pub(crate) conn: ConnId,
    pub(crate) queue: Arc<LaneQueue>,
}

#[derive(Clone)]
struct ChannelLinks {
    lanes: Box<[Option<Arc<LaneHandle>>]>,
    /// Lanes the peer's spec declares for this channel: where our messages to it go.
    send_lanes: u16,
}

impl ChannelLinks {
    fn up(&self) -> usize {
        self.lanes.iter().filter(|l| l.is_some()).count()
    }
}

/// Every lane to one incarnation of a peer.
#[derive(Clone)]
pub(crate) struct PeerLinks {
    pub(crate) spec: NodeSpec,
    pub(crate) creation: Creation,
    channels: Map<ChannelName, ChannelLinks>,
    /// Lanes up, over all channels.
    up: usize,
}

impl PeerLinks {
    fn new(peer: &NodeSpec, local: &NodeSpec, creation: Creation) -> Self {
        let mut channels = Map::default();
        for (name, opts) in peer.channels().iter().chain(local.channels()) {
            let ours = local.channel(name).map_or(0, |o| o.parallelism);
            let theirs = peer.channel(name).map_or(0, |o| o.parallelism);
            channels
                .entry(name.clone())
                .or_insert_with(|| ChannelLinks {
                    lanes: vec![None; usize::from(ours.max(theirs).max(opts.parallelism))]
                        .into_boxed_slice(),
                    send_lanes: theirs,
                });
        }
        PeerLinks {
            spec: peer.clone(),
            creation,
            channels,
            up: 0,
        }
    }
}

/// A chosen lane for one send (see [`ConnTable::route`]).
pub(crate) struct Route {
    pub(crate) lane: Arc<LaneHandle>,
}

/// See the module documentation.
pub(crate) struct ConnTable {
    local: NodeSpec,
    default_channel: ChannelName,
    peers: ArcSwap<Map<NodeName, Arc<PeerLinks>>>,
    /// Changes with every published snapshot (from [`GENERATIONS`]).
    generation: AtomicU64,
}

impl ConnTable {
    pub(crate) fn new(local: NodeSpec) -> Self {
        ConnTable {
            local,
            default_channel: ChannelName::default_channel(),
            peers: ArcSwap::from_pointee(Map::default()),
            generation: AtomicU64::new(GENERATIONS.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// Publishes a new snapshot and retires every cached route to the old one.
    fn publish(&self, map: Map<NodeName, Arc<PeerLinks>>) {
        self.peers.store(Arc::new(map));
        self.generation.store(
            GENERATIONS.fetch_add(1, Ordering::Relaxed),
            Ordering::Release,
        );
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
        let mut links = match current.get(name) {
            Some(p) if p.creation == creation => PeerLinks::clone(p),
            _ => PeerLinks::new(spec, &self.local, creation),
        };
        let Some(slot) = links
            .channels
            .get_mut(channel)
            .and_then(|c| c.lanes.get_mut(usize::from(lane)))
        else {
            return;
        };
        if slot.replace(handle).is_none() {
            links.up += 1;
        }
        let mut map = Map::clone(&current);
        map.insert(name.clone(), Arc::new(links));
        self.publish(map);
    }

    /// Clears (peer, channel, lane) if it still holds connection `conn`; drops the peer's entry
    /// when its last lane goes.
    pub(crate) fn remove(&self, node: &NodeName, channel: &ChannelName, lane: u16, conn: ConnId) {
        let current = self.peers.load();
        let Some(links) = current.get(node) else {
            return;
        };
        let holds = links
            .channels
            .get(channel)
            .and_then(|c| c.lanes.get(usize::from(lane)))
            .is_some_and(|s| s.as_ref().is_some_and(|h| h.conn == conn));
        if !holds {
            return;
        }
        let mut map = Map::clone(&current);
        if links.up <= 1 {
            map.remove(node);
        } else {
            let mut links = PeerLinks::clone(links);
            if let Some(slot) = links
                .channels
                .get_mut(channel)
                .and_then(|c| c.lanes.get_mut(usize::from(lane)))
            {
                *slot = None;
            }
            links.up -= 1;
            map.insert(node.clone(), Arc::new(links));
        }
        self.publish(map);
    }

    /// Picks the lane for a message to `node` on `channel` and runs `f` on it, with the peer
    /// incarnation's creation, without taking a reference to the lane (the snapshot stays
    /// loaded meanwhile, so `f` must not wait). Lane `key % N` when a partition key is given
    /// (N = the peer's lane count for the channel), otherwise the next lane that is up, round
    /// robin per sending thread. Falls back to the default channel when the peer lacks
    /// `channel` and `fallback` is set.
    pub(crate) fn with_route<R>(
        &self,
        node: &NodeName,
        channel: &ChannelName,
        key: Option<u64>,
        fallback: bool,
        f: impl FnOnce(&Arc<LaneHandle>, Creation) -> R,
    ) -> Result<R, SendError> {
        self.route_with_lanes(node, channel, key, fallback, |lane, creation, _| {
            f(lane, creation)
        })
    }

    /// [`ConnTable::with_route`], also telling `f` how many lanes the send chose from.
    fn route_with_lanes<R>(
        &self,
        node: &NodeName,
        channel: &ChannelName,
        key: Option<u64>,
        fallback: bool,
        f: impl FnOnce(&Arc<LaneHandle>, Creation, u16) -> R,
    ) -> Result<R, SendError> {
        let peers = self.peers.load();
        let links = peers
            .get(node)
            .ok_or_else(|| SendError::NotConnected(node.clone()))?;
        let (cname, ch) = match links.channels.get(channel) {
            Some(c) if c.send_lanes > 0 => (channel, c),
            _ if fallback => {
                let d = links
                    .channels
                    .get(&self.default_channel)
                    .ok_or_else(|| SendError::NotConnected(node.clone()))?;
                (&self.default_channel, d)
            }
            _ => return Err(SendError::UnknownChannel(channel.clone())),
        };
        let n = usize::from(ch.send_lanes);
        let lane = match key {
            Some(k) => {
                let i = (k % n as u64) as usize;
                ch.lanes[i].as_ref().ok_or_else(|| SendError::LaneDown {
                    node: node.clone(),
                    channel: cname.clone(),
                    lane: i as u16,
                })?
            }
            None if n == 1 => ch.lanes[0]
                .as_ref()
                .ok_or_else(|| SendError::NotConnected(node.clone()))?,
            None => {
                let start = NEXT_LANE.with(|c| {
                    let v = c.get().wrapping_add(1);
                    c.set(v);
                    v as usize % n
                });
                (start..n)
                    .chain(0..start)
                    .find_map(|i| ch.lanes[i].as_ref())
                    .ok_or_else(|| SendError::NotConnected(node.clone()))?
            }
        };
        Ok(f(lane, links.creation, ch.send_lanes))
    }

    /// [`ConnTable::with_route`] through this thread's route cache: a send to a peer and
    /// channel this thread sent to last, on a channel of one lane, skips the lookup while no
    /// lane of the table has come or gone since. The hot path of every remote send.
    ///
    /// A cached entry holds its lane (and names) until the slot is reused: at most
    /// [`ROUTE_SLOTS`] lanes per thread, and a lane that closed refuses pushes at once.
    pub(crate) fn with_route_cached<R>(
        &self,
        node: &NodeName,
        channel: &ChannelName,
        key: Option<u64>,
        fallback: bool,
        f: impl FnOnce(&Arc<LaneHandle>, Creation) -> R,
    ) -> Result<R, SendError> {
        // Read before the snapshot: a route found in a newer snapshot than this generation is
        // only ever cached under the older generation, hence never used.
        let generation = self.generation.load(Ordering::Acquire);
        let (slot, addr) = RouteCache::key(node, channel);
        let looked_up = ROUTES.with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return Err((f, false));
            };
            match &cache.slots[slot] {
                Some(r)
                    if r.generation == generation && r.node == *node && r.channel == *channel =>
                {
                    Ok(f(&r.lane, r.creation))
                }
                _ => {
                    let again = cache.missed[slot] == addr;
                    cache.missed[slot] = addr;
                    Err((f, again))
                }
            }
        });
        let (f, again) = match looked_up {
            Ok(out) => return Ok(out),
            Err(miss) => miss,
        };
        if !again {
            return self.with_route(node, channel, key, fallback, f);
        }
        let mut found = None;
        let out =
            self.route_with_lanes(node, channel, key, fallback, |lane, creation, lanes| {
                if lanes == 1 {
                    found = Some((lane.clone(), creation));
                }
                f(lane, creation)
            })?;
        if let Some((lane, creation)) = found {
            ROUTES.with(|cache| {
                if let Ok(mut cache) = cache.try_borrow_mut() {
                    cache.slots[slot] = Some(CachedRoute {
                        generation,
                        node: node.clone(),
                        channel: channel.clone(),
                        lane,
                        creation,
                    });
                }
            });
        }
        Ok(out)
    }

    /// [`ConnTable::with_route`] keeping a reference to the lane (for senders that may wait).
    pub(crate) fn route(
        &self,
        node: &NodeName,
        channel: &ChannelName,
        key: Option<u64>,
        fallback: bool,
    ) -> Result<Route, SendError> {
        self.with_route(node, channel, key, fallback, |lane, _| Route {
            lane: lane.clone(),
        })
    }

    /// Nodes with at least one lane up, sorted.
    pub(crate) fn nodes(&self) -> Vec<NodeName> {
        let mut v: Vec<NodeName> = self
            .peers
            .load()
            .iter()
            .filter(|(_, p)| p.up > 0)
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// Whether any lane to `node` is up.
    pub(crate) fn is_connected(&self, node: &NodeName) -> bool {
        self.peers.load().get(node).is_some_and(|p| p.up > 0)
    }

    /// Whether any lane of `channel` to `node` is up.
    pub(crate) fn is_connected_on(&self, node: &NodeName, channel: &ChannelName) -> bool {
        self.peers.load().get(node).is_some_and(|p| {
            p.channels
                .get(channel)
                .is_some_and(|c| c.lanes.iter().any(Option::is_some))
        })
    }

    /// Whether every lane of every channel of the peer's spec is up.
    pub(crate) fn is_fully_connected(&self, node: &NodeName) -> bool {
        self.peers.load().get(node).is_some_and(|p| {
            p.spec.lanes().all(|(c, l)| {
                p.channels
                    .get(c)
                    .and_then(|ch| ch.lanes.get(l as usize))
                    .is_some_and(Option::is_some)
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
                out.push((n.clone(), c.clone(), ch.up()));
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use partisan_core::id::ChannelOpts;

    use super::*;
    use crate::connection::lane_queue::Overflow;
    use crate::stats::ChannelStats;

    fn spec(name: &str, data_lanes: u16) -> NodeSpec {
        let mut channels = BTreeMap::new();
        channels.insert(
            ChannelName::new("data").unwrap(),
            ChannelOpts::with_parallelism(data_lanes),
        );
        NodeSpec::new(NodeName::new(name).unwrap(), vec![], channels).unwrap()
    }

    fn handle(conn: u64) -> Arc<LaneHandle> {
        let stats = Arc::new(ChannelStats::new("a@h", &ChannelName::default_channel()));
        Arc::new(LaneHandle {
            conn: ConnId(conn),
            queue: Arc::new(LaneQueue::new(1024, Overflow::Block, 1 << 20, stats)),
        })
    }

    fn conn_of(t: &ConnTable, node: &NodeName, key: Option<u64>) -> Result<u64, SendError> {
        let data = ChannelName::new("data").unwrap();
        t.with_route(node, &data, key, true, |l, _| l.conn.0)
    }

    fn cached_conn(t: &ConnTable, node: &NodeName) -> Result<u64, SendError> {
        let data = ChannelName::new("data").unwrap();
        t.with_route_cached(node, &data, None, true, |l, _| l.conn.0)
    }

    #[test]
    fn cached_routes_follow_every_change_of_the_table() {
        let t = ConnTable::new(spec("a@h", 1));
        let b = spec("b@h", 1);
        let data = ChannelName::new("data").unwrap();
        let name = b.name().clone();
        assert!(matches!(
            cached_conn(&t, &name),
            Err(SendError::NotConnected(_))
        ));
        t.install(&b, 1, &data, 0, handle(10));
        for _ in 0..3 {
            assert_eq!(cached_conn(&t, &name), Ok(10));
        }
        // Replaced by another connection: the cached lane is not used any more.
        t.install(&b, 1, &data, 0, handle(11));
        assert_eq!(cached_conn(&t, &name), Ok(11));
        assert_eq!(cached_conn(&t, &name), Ok(11));
        t.remove(&name, &data, 0, ConnId(11));
        assert!(matches!(
            cached_conn(&t, &name),
            Err(SendError::NotConnected(_))
        ));
        // Another table (another node on this thread) never sees this one's routes.
        let other = ConnTable::new(spec("a@h", 1));
        t.install(&b, 1, &data, 0, handle(12));
        assert_eq!(cached_conn(&t, &name), Ok(12));
        assert_eq!(cached_conn(&t, &name), Ok(12));
        assert!(matches!(
            cached_conn(&other, &name),
            Err(SendError::NotConnected(_))
        ));
        // Channels of several lanes are not cached: sends keep spreading over them.
        let c = spec("c@h", 3);
        for lane in 0..3 {
            t.install(&c, 1, &data, lane, handle(20 + u64::from(lane)));
        }
        let seen: std::collections::BTreeSet<u64> =
            (0..9).map(|_| cached_conn(&t, c.name()).unwrap()).collect();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn lanes_come_and_go_and_sends_spread_over_the_lanes_up() {
        let t = ConnTable::new(spec("a@h", 1));
        let b = spec("b@h", 3);
        let data = ChannelName::new("data").unwrap();
        for lane in 0..3 {
            t.install(&b, 1, &data, lane, handle(10 + u64::from(lane)));
        }
        let name = b.name().clone();
        let mut seen = BTreeMap::<u64, usize>::new();
        for _ in 0..30 {
            *seen.entry(conn_of(&t, &name, None).unwrap()).or_default() += 1;
        }
        assert_eq!(seen.into_values().collect::<Vec<_>>(), vec![10, 10, 10]);
        assert_eq!(conn_of(&t, &name, Some(4)), Ok(11));

        t.remove(&name, &data, 1, ConnId(99)); // another connection's slot: no change
        assert_eq!(conn_of(&t, &name, Some(4)), Ok(11));
        t.remove(&name, &data, 1, ConnId(11));
        assert!(matches!(
            conn_of(&t, &name, Some(4)),
            Err(SendError::LaneDown { lane: 1, .. })
        ));
        assert!((0..10).all(|_| conn_of(&t, &name, None).unwrap() != 11));
        assert!(t.is_connected(&name) && t.is_connected_on(&name, &data));
        assert!(!t.is_fully_connected(&name));

        // A newer incarnation starts afresh.
        t.install(&b, 2, &data, 2, handle(20));
        assert_eq!(t.creation_of(&name), Some(2));
        assert_eq!(conn_of(&t, &name, None), Ok(20));
        t.remove(&name, &data, 2, ConnId(20));
        assert!(!t.is_connected(&name));
        assert!(t.nodes().is_empty());
        assert!(matches!(
            conn_of(&t, &name, None),
            Err(SendError::NotConnected(_))
        ));
    }
}
