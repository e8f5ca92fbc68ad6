//! How a test network behaves, and how its nodes are set up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::connection_plan::Backoff;
use crate::engine::Keepalive;
use crate::id::{ChannelName, ChannelOpts};
use crate::overlay::{Overlay, PeerInfo, Tag};

use super::NodeId;

/// The network model. Every random draw comes from the network's seeded RNG.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// Smallest one-way latency.
    pub latency_min: Duration,
    /// Largest one-way latency.
    pub latency_max: Duration,
    /// Probability that a control frame is lost (as a full lane queue drops it).
    pub loss: f64,
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
    /// Keepalive of every lane (the runtime's default unless set).
    pub keepalive: Option<Keepalive>,
    /// Redial backoff.
    pub backoff: Backoff,
    /// Lifetime of temporary connections.
    pub transient_ttl: Duration,
    /// Lifetime of a connection to a join contact the overlay did not keep.
    pub join_ttl: Duration,
    /// Tags by node id (missing entries: no tag).
    pub tags: Vec<Option<Tag>>,
    /// Each node's overlay.
    pub overlay: OverlayFactory,
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
            keepalive: Some(Keepalive::default()),
            backoff: Backoff::default(),
            transient_ttl: Duration::from_secs(10),
            join_ttl: Duration::from_secs(30),
            tags: Vec::new(),
            overlay,
        }
    }
}
