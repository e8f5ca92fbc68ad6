//! How a test network behaves, and how its nodes are set up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::broadcast::{BroadcastHandler, PlumtreeConfig};
use crate::connection_plan::Backoff;
use crate::engine::Keepalive;
use crate::id::{ChannelName, ChannelOpts, NodeSpec};
use crate::overlay::{
    ClientServer, FullMesh, FullMeshConfig, HyParView, HyParViewConfig, Overlay, PeerInfo, Role,
    StaticMembership, Tag,
};

use super::{node_addr, node_name, NodeId};

/// The network model. Every random draw comes from the network's seeded RNG.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// Smallest one-way latency.
    pub latency_min: Duration,
    /// Largest one-way latency.
    pub latency_max: Duration,
    /// Probability that a control frame is lost (as a full lane queue drops it).
    pub loss: f64,
    /// Probability that an overlay control frame (a membership message: Hello, Welcome,
    /// Announce, Leaving, shuffles, ...) is lost, on top of `loss`; other frames are spared.
    pub overlay_loss: f64,
    /// Probability that a control frame is delivered twice.
    pub duplicate: f64,
    /// How long a dial to a vanished host, or across a partition, takes to fail.
    pub connect_timeout: Duration,
    /// Crashes are silent (a host vanishing): peers learn nothing, their keepalive must find
    /// out, and dials to it time out. Otherwise a crash is a process dying: its connections are
    /// reset (peers notice within one latency) and dials to it are refused at once.
    pub silent_crashes: bool,
    /// Longest time between the transport noticing a connection ended and the engine being
    /// told (drawn uniformly; the runtime's reader reports through the driver's queue). Frames
    /// handed to the lane meanwhile come back to the engine as failed.
    pub notice_delay: Duration,
    /// Every control frame crosses the network encoded and is decoded on arrival, as on the
    /// wire (a frame that fails to decode is counted in [`super::Network::decode_errors`]).
    pub encode: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(10),
            loss: 0.0,
            overlay_loss: 0.0,
            duplicate: 0.0,
            connect_timeout: Duration::from_secs(1),
            silent_crashes: false,
            notice_delay: Duration::from_millis(1),
            encode: true,
        }
    }
}

/// Makes the overlay of node `id` in its incarnation `local`, from a seed for its RNG.
pub type OverlayFactory = Arc<dyn Fn(NodeId, &PeerInfo, u64) -> Box<dyn Overlay> + Send + Sync>;

/// Makes the broadcast handlers node `id` registers in its incarnation `local`, each with its
/// Plumtree settings (called at the start and at every restart: a restarted node's handlers
/// start empty).
pub type BroadcastFactory = Arc<
    dyn Fn(NodeId, &PeerInfo) -> Vec<(Box<dyn BroadcastHandler>, PlumtreeConfig)> + Send + Sync,
>;

/// How every node of a network is set up.
#[derive(Clone)]
pub struct Setup {
    /// Number of nodes, named `n0@sim`, `n1@sim`, ...
    pub nodes: u32,
    /// Seed of the whole run: every node's RNGs and the network's derive from it.
    pub seed: u64,
    /// The network model.
    pub net: NetConfig,
    /// Channels besides `default` and `membership` (one lane each by default).
    pub channels: BTreeMap<ChannelName, ChannelOpts>,
    /// Keepalive of every idle lane (off, the runtime's default, unless set).
    pub keepalive: Option<Keepalive>,
    /// Peer liveness probing (the runtime's default unless set).
    pub liveness: Option<crate::liveness::Liveness>,
    /// Redial backoff.
    pub backoff: Backoff,
    /// Lifetime of temporary connections.
    pub transient_ttl: Duration,
    /// Lifetime of a connection to a join contact the overlay did not keep.
    pub join_ttl: Duration,
    /// Tags by node id (missing entries: no tag).
    pub tags: Vec<Option<Tag>>,
    /// Whether each node records its overlay's members at every membership change its engine
    /// reports ([`super::SimNode::reported_members`]: what an API built on the events shows).
    /// Off by default: it costs a member list per event.
    pub record_members: bool,
    /// Each node's overlay.
    pub overlay: OverlayFactory,
    /// Each node's broadcast handlers (none by default).
    pub broadcast: Option<BroadcastFactory>,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("nodes", &self.nodes)
            .field("seed", &self.seed)
            .field("net", &self.net)
            .finish_non_exhaustive()
    }
}

impl Setup {
    /// `nodes` nodes running the overlays `overlay` makes, with the runtime's defaults.
    pub fn new(nodes: u32, seed: u64, overlay: OverlayFactory) -> Setup {
        Setup {
            nodes,
            seed,
            net: NetConfig::default(),
            channels: BTreeMap::new(),
            keepalive: None,
            liveness: Some(crate::liveness::Liveness::default()),
            backoff: Backoff::default(),
            transient_ttl: Duration::from_secs(10),
            join_ttl: Duration::from_secs(30),
            tags: Vec::new(),
            record_members: false,
            overlay,
            broadcast: None,
        }
    }

    /// `nodes` full-mesh nodes with `config`, each overlay seeded from its node's seed.
    pub fn full_mesh(nodes: u32, seed: u64, config: FullMeshConfig) -> Setup {
        let overlay = seeded(move |info, rng| Box::new(FullMesh::new(info, config.clone(), rng)));
        Setup::new(nodes, seed, overlay)
    }

    /// `nodes` HyParView nodes with `config`, each overlay seeded from its node's seed.
    pub fn hyparview(nodes: u32, seed: u64, config: HyParViewConfig) -> Setup {
        let overlay = seeded(move |info, rng| Box::new(HyParView::new(info, config.clone(), rng)));
        Setup::new(nodes, seed, overlay)
    }

    /// `nodes` client-server nodes: nodes `0..servers` are servers (tag `server`), the others
    /// clients (tag `client`).
    pub fn client_server(nodes: u32, seed: u64, servers: u32) -> Setup {
        let role = move |i: NodeId| {
            if i < servers {
                Role::Server
            } else {
                Role::Client
            }
        };
        let mut setup = Setup::new(
            nodes,
            seed,
            Arc::new(move |i, info: &PeerInfo, _| {
                Box::new(ClientServer::new(info.clone(), role(i))) as Box<dyn Overlay>
            }),
        );
        setup.tags = (0..nodes)
            .map(|i| {
                let tag = match role(i) {
                    Role::Server => "server",
                    Role::Client => "client",
                };
                Some(Tag::new(tag).expect("valid tag"))
            })
            .collect();
        setup
    }

    /// `nodes` static nodes, each configured with every node's spec (at its first address).
    pub fn static_members(nodes: u32, seed: u64) -> Setup {
        Setup::new(
            nodes,
            seed,
            Arc::new(move |_, info: &PeerInfo, _| {
                let all: Vec<NodeSpec> = (0..nodes)
                    .map(|j| {
                        NodeSpec::new(
                            node_name(j),
                            vec![node_addr(j)],
                            info.spec.channels().clone(),
                        )
                        .expect("valid simulated spec")
                    })
                    .collect();
                Box::new(StaticMembership::new(info.clone(), all)) as Box<dyn Overlay>
            }),
        )
    }
}

/// Overlays `make` builds from a node's info and an RNG seeded from the node's seed.
fn seeded(
    make: impl Fn(PeerInfo, Box<dyn RngCore + Send>) -> Box<dyn Overlay> + Send + Sync + 'static,
) -> OverlayFactory {
    Arc::new(move |_, info: &PeerInfo, seed| {
        make(info.clone(), Box::new(ChaCha8Rng::seed_from_u64(seed)))
    })
}
